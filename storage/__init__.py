"""Artifact storage: the `ArtifactStore` interface and its two backends (see `storage.base`)."""

from __future__ import annotations

from activities.cpu import CpuPool
from models.settings import Settings, SettingsError
from storage.base import ArtifactStore, ArtifactStoreError, ArtifactUnavailableError
from storage.local import LocalArtifactStore
from storage.s3 import S3ArtifactStore


def open_artifact_store(
    settings: Settings, *, cpu: CpuPool | None = None, public_url: str | None = None
) -> ArtifactStore:
    """The store Settings configure: S3 when ARTIFACT_STORE says so (or auto + R2_ENDPOINT),
    else the local one under ARTIFACTS_DIR with public URLs at `public_url` (default
    LOCAL_ARTIFACTS_URL; the worker passes the address its file server really answers on)."""
    if settings.uses_s3:
        key_id, secret = settings.r2_access_key_id, settings.r2_secret_access_key
        if not (settings.r2_endpoint and key_id and secret):  # Settings validates this too
            raise SettingsError("R2_ENDPOINT, R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY: required")
        return S3ArtifactStore(
            endpoint=settings.r2_endpoint,
            bucket=settings.r2_bucket,
            access_key_id=key_id.get_secret_value(),
            secret_access_key=secret.get_secret_value(),
            region=settings.r2_region,
            public_url=settings.cdn_url,
            cache_dir=settings.artifacts_dir,
            cache_bytes=settings.artifact_cache_bytes,
            object_acl=settings.r2_object_acl,
            cpu=cpu,
        )
    return LocalArtifactStore(
        settings.artifacts_dir, public_url or settings.local_artifacts_url, cpu=cpu
    )


__all__ = [
    "ArtifactStore",
    "ArtifactStoreError",
    "ArtifactUnavailableError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "open_artifact_store",
]
