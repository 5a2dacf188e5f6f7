"""build_providers: one client per configured provider, clear errors for missing credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.audit import ProviderName
from models.settings import Settings, SettingsError
from providers.local import LocalProvider
from providers.registry import build_providers
from providers.targon import TargonProvider
from providers.verda import VerdaProvider


def settings(**values: object) -> Settings:
    """Settings from exactly these values (model_validate reads no environment or .env)."""
    return Settings.model_validate(values)


async def test_builds_every_named_provider_in_priority_order(tmp_path: Path) -> None:
    """targon, verda and local are built from their settings, keeping GPU_PROVIDERS order."""
    providers = build_providers(
        settings(
            GPU_PROVIDERS="verda,local,targon",
            TARGON_API_KEY="k",
            VERDA_CLIENT_ID="id",
            VERDA_CLIENT_SECRET="secret",
            VERDA_GENERATION_TOKEN="gen",
            LOCAL_PODS_DIR=str(tmp_path),
        )
    )
    try:
        assert list(providers) == [ProviderName.VERDA, ProviderName.LOCAL, ProviderName.TARGON]
        assert isinstance(providers[ProviderName.TARGON], TargonProvider)
        assert isinstance(providers[ProviderName.VERDA], VerdaProvider)
        assert isinstance(providers[ProviderName.LOCAL], LocalProvider)
        assert providers[ProviderName.VERDA].auth_headers() == {"Authorization": "Bearer gen"}
        for name, provider in providers.items():
            assert provider.name is name
    finally:
        for provider in providers.values():
            await provider.aclose()


async def test_hf_token_reaches_every_provider(tmp_path: Path) -> None:
    """HF_TOKEN from settings is the pod environment of every built provider."""
    providers = build_providers(
        settings(
            GPU_PROVIDERS="targon,verda,local",
            TARGON_API_KEY="k",
            VERDA_CLIENT_ID="id",
            VERDA_CLIENT_SECRET="secret",
            VERDA_GENERATION_TOKEN="gen",
            LOCAL_PODS_DIR=str(tmp_path),
            HF_TOKEN="hf_registry",
        )
    )
    try:
        for provider in providers.values():
            env = provider._env  # type: ignore[attr-defined]
            assert {k: v.get_secret_value() for k, v in env.items()} == {"HF_TOKEN": "hf_registry"}
    finally:
        for provider in providers.values():
            await provider.aclose()
    empty = build_providers(settings(GPU_PROVIDERS="local", LOCAL_PODS_DIR=str(tmp_path)))
    assert empty[ProviderName.LOCAL]._env == {}  # type: ignore[attr-defined]


def test_local_needs_no_credentials(tmp_path: Path) -> None:
    """GPU_PROVIDERS=local works with no secrets at all."""
    providers = build_providers(settings(GPU_PROVIDERS="local", LOCAL_PODS_DIR=str(tmp_path)))
    assert list(providers) == [ProviderName.LOCAL]


def test_missing_credentials_name_every_variable() -> None:
    """One error lists each missing variable of each named provider."""
    with pytest.raises(SettingsError) as e:
        build_providers(settings(GPU_PROVIDERS="targon,verda", VERDA_CLIENT_ID="id"))
    message = str(e.value)
    assert "TARGON_API_KEY" in message
    assert "VERDA_CLIENT_SECRET" in message
    assert "VERDA_GENERATION_TOKEN" in message
    assert "VERDA_CLIENT_ID" not in message
