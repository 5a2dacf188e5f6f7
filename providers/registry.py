"""Builds the configured GPU providers from settings: one client per name in GPU_PROVIDERS.

The only place that reads provider credentials and the pods' environment (HF_TOKEN, given to
every provider at construction) out of `Settings`; the worker calls it once at start-up and hands
the dict to `PodActivities`. Missing credentials fail here, at start-up, with one message naming
every missing environment variable.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from models.audit import ProviderName
from models.settings import Settings, SettingsError
from providers.base import GpuProvider, pod_env
from providers.local import LocalProvider
from providers.runpod import GPU_TYPE_IDS, RunpodProvider
from providers.targon import TargonProvider
from providers.verda import VerdaCredentials, VerdaProvider


def _targon_env(settings: Settings) -> dict[str, object]:
    return {"TARGON_API_KEY": settings.targon_api_key}


def _verda_env(settings: Settings) -> dict[str, object]:
    return {
        "VERDA_CLIENT_ID": settings.verda_client_id,
        "VERDA_CLIENT_SECRET": settings.verda_client_secret,
        "VERDA_GENERATION_TOKEN": settings.verda_generation_token,
    }


def _runpod_env(settings: Settings) -> dict[str, object]:
    return {"RUNPOD_PROVIDER_API_KEY": settings.runpod_api_key}


def _local_env(settings: Settings) -> dict[str, object]:
    return {}


REQUIRED_ENV: dict[ProviderName, Callable[[Settings], dict[str, object]]] = {
    ProviderName.TARGON: _targon_env,
    ProviderName.VERDA: _verda_env,
    ProviderName.RUNPOD: _runpod_env,
    ProviderName.LOCAL: _local_env,
}
"""Environment variable -> its value, for every variable a provider cannot work without."""


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _targon(settings: Settings) -> GpuProvider:
    return TargonProvider(
        api_key=_secret(settings.targon_api_key),
        base_url=settings.targon_base_url,
        port=settings.generation_port,
        env=pod_env(settings.hf_token),
        concurrency=_provider_concurrency(settings),
    )


def _provider_concurrency(settings: Settings) -> int:
    """Requests a pod takes at once: the prompt loops plus one (upstream)."""
    return settings.max_concurrent_prompts_per_pod + 1


def _verda(settings: Settings) -> GpuProvider:
    credentials = VerdaCredentials(
        client_id=settings.verda_client_id or "",
        client_secret=_secret(settings.verda_client_secret),
        generation_token=_secret(settings.verda_generation_token),
    )
    return VerdaProvider(
        credentials,
        base_url=settings.verda_base_url,
        port=settings.generation_port,
        env=pod_env(settings.hf_token),
        concurrency=_provider_concurrency(settings),
    )


def _runpod(settings: Settings) -> GpuProvider:
    if settings.runpod_gpu_type not in GPU_TYPE_IDS:
        known = ", ".join(sorted(GPU_TYPE_IDS))
        raise SettingsError(f"RUNPOD_GPU_TYPE: {settings.runpod_gpu_type!r} is not one of {known}")
    return RunpodProvider(
        api_key=_secret(settings.runpod_api_key),
        base_url=settings.runpod_base_url,
        port=settings.generation_port,
        gpu_type=settings.runpod_gpu_type,
        gpu_count=settings.runpod_gpu_count,
        proxy_url_template=settings.runpod_proxy_url,
        env=pod_env(settings.hf_token),
    )


def _local(settings: Settings) -> GpuProvider:
    return LocalProvider(
        settings.local_pods_dir,
        call_log=settings.local_miner_call_log,
        env=pod_env(settings.hf_token),
        images=settings.local_images,
        slowdown=settings.local_pod_slowdown,
        dies_after=settings.local_pod_dies_after,
    )


BUILDERS: dict[ProviderName, Callable[[Settings], GpuProvider]] = {
    ProviderName.TARGON: _targon,
    ProviderName.VERDA: _verda,
    ProviderName.RUNPOD: _runpod,
    ProviderName.LOCAL: _local,
}


def build_providers(settings: Settings) -> dict[ProviderName, GpuProvider]:
    """One provider client per name in `settings.gpu_providers`, in priority order.

    Credentials are checked for every named provider before any client is made, so a failure
    leaks no open HTTP client.

    Args:
        settings: The worker's settings (credentials, base URLs, GENERATION_PORT, local dirs).

    Returns:
        Provider name -> client. The caller owns the clients (`aclose` them at shutdown).

    Raises:
        SettingsError: A named provider lacks credentials; the message names every missing
            environment variable of every named provider.
    """
    names = list(dict.fromkeys(settings.gpu_providers))
    problems = []
    for name in names:
        missing = [env for env, value in REQUIRED_ENV[name](settings).items() if not value]
        if missing:
            problems.append(f"GPU_PROVIDERS includes {name} but {', '.join(missing)} not set")
    if problems:
        raise SettingsError("; ".join(problems))
    return {name: BUILDERS[name](settings) for name in names}
