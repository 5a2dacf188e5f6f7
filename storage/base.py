"""The artifact-store interface every activity uses, whichever backend holds the bytes.

Payloads carry store URIs (`file://` on the embedded default, `s3://bucket/key` on an
S3-compatible store), never bytes; generated.json carries public http(s) URLs made by `publish`.
Backends: `storage.local.LocalArtifactStore` (one host, files under ARTIFACTS_DIR, public URLs
served by the worker) and `storage.s3.S3ArtifactStore` (R2, S3, MinIO; workers on many hosts
share nothing but Temporal and the bucket). `storage.open_artifact_store` picks one from Settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from storage.files import ArtifactStoreError

M = TypeVar("M", bound=BaseModel)


class ArtifactUnavailableError(RuntimeError):
    """The store could not be reached or refused us (network, credentials): retryable, and
    always ours, never the miner's. The message names the endpoint and bucket, never a secret."""


class ArtifactStore(Protocol):
    """Content-addressed blobs, small JSON records, and public copies of chosen blobs."""

    @property
    def root(self) -> Path:
        """This host's directory of the store (the whole store, or the S3 store's cache)."""
        ...

    def owns(self, uri: str) -> bool:
        """Whether `uri` is one of this store's internal blob URIs (not a public URL)."""
        ...

    async def put_bytes(self, data: bytes, suffix: str) -> str:
        """Store `data` under its sha256 and return its URI (idempotent)."""
        ...

    async def read_bytes(self, uri: str) -> bytes:
        """The bytes behind a URI. Raises FileNotFoundError if there is no such blob."""
        ...

    async def exists(self, uri: str) -> bool:
        """Whether the blob behind `uri` is stored."""
        ...

    async def sha256_of(self, uri: str) -> str:
        """Hex sha256 of the blob behind `uri`."""
        ...

    async def put_record(self, namespace: str, key: str, model: BaseModel) -> None:
        """Store `model` as the record of (`namespace`, `key`), replacing any previous one."""
        ...

    async def get_record(self, namespace: str, key: str, model_type: type[M]) -> M | None:
        """The record of (`namespace`, `key`), or None."""
        ...

    async def publish(
        self, uri: str, key: str, content_type: str = "application/octet-stream"
    ) -> str:
        """Copy the blob at `uri` to the public object `key` and return its public URL
        (`content_type`: upstream's octet-stream for GLB/PNG; text/html for a report)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


__all__ = ["ArtifactStore", "ArtifactStoreError", "ArtifactUnavailableError"]
