"""Finding and deleting pods by name prefix across providers: the audit's sweep (`sweep_pods`)
and the operator's `starter.py pods list|cleanup` share this code.

Owns no client: callers pass the providers (`providers.registry.build_providers`). Never imports
temporalio; the activity translates the provider errors raised here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from models.audit import ProviderName
from models.constants import round_pod_prefix
from providers.base import ContainerInfo, ContainerNotFound, GpuProvider, ProviderError

POD_PREFIX = "miner-"
"""Every pod an audit or the leader rents starts with this (upstream's naming)."""


class PodListing(BaseModel):
    """Pods found on each provider, and the providers that could not be listed (why)."""

    model_config = ConfigDict(frozen=True)

    pods: list[ContainerInfo] = Field(default_factory=list)
    errors: dict[ProviderName, str] = Field(default_factory=dict)


def pods_prefix(round_number: int | None) -> str:
    """The name prefix that selects a round's pods (all rented pods without a round)."""
    return POD_PREFIX if round_number is None else round_pod_prefix(round_number)


def hotkey_matches(pod: str, hotkey: str) -> bool:
    """Whether pod `miner-NN-{hk10}-...` was rented for `hotkey` (its first ten characters)."""
    parts = pod.split("-", 3)
    return len(parts) >= 3 and parts[2] == hotkey[:10].lower()


async def list_pods(
    providers: Mapping[ProviderName, GpuProvider],
    prefix: str,
    hotkey: str | None = None,
) -> PodListing:
    """Pods named `prefix...` (and rented for `hotkey`, if given) on every provider.

    A provider that fails is reported in `errors`; the others are still listed.
    """
    pods: list[ContainerInfo] = []
    errors: dict[ProviderName, str] = {}
    for name, provider in providers.items():
        try:
            found = await provider.list(prefix)
        except ProviderError as e:
            errors[name] = str(e)
            continue
        pods += [p for p in found if hotkey is None or hotkey_matches(p.name, hotkey)]
    return PodListing(pods=pods, errors=errors)


async def delete_pod(provider: GpuProvider, name: str) -> bool:
    """Delete pod `name`: True if deleted now, False if it was already gone."""
    try:
        await provider.delete(name)
    except ContainerNotFound:
        return False
    return True


async def sweep(
    provider: GpuProvider,
    prefix: str,
    on_pod: Callable[[ContainerInfo], None] = lambda _: None,
) -> list[str]:
    """Delete every pod named `prefix...` on `provider`; returns the names deleted now.

    Raises the provider's errors (the caller retries: a rerun deletes what is left).

    Raises:
        ValueError: An empty prefix (it would delete every pod of the account).
    """
    if not prefix:
        raise ValueError("a sweep needs a non-empty prefix")
    deleted = []
    for info in await provider.list(prefix):
        on_pod(info)
        if await delete_pod(provider, info.name):
            deleted.append(info.name)
    return deleted


def owned_by(pod: str, prefixes: Sequence[str]) -> str | None:
    """The first of `prefixes` that `pod` starts with (its running owner), else None."""
    return next((p for p in prefixes if pod.startswith(p)), None)
