"""The embedded default artifact store: files under ARTIFACTS_DIR on one host.

Owns the async face of `storage.files.FileStore` (its file I/O runs in threads; hashing big
bodies in the worker's bounded CPU pool) and the public URLs of published copies:
`{LOCAL_ARTIFACTS_URL}/{key}`, served from `ARTIFACTS_DIR/public` by `storage.http` (the worker
starts it). Every worker that shares this store must share ARTIFACTS_DIR (one host); many hosts
use `storage.s3`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel

from activities.cpu import CpuPool
from storage.base import M
from storage.files import FileStore


class LocalArtifactStore:
    """`ArtifactStore` over one directory, with public URLs under `public_url`."""

    def __init__(self, root: Path, public_url: str, cpu: CpuPool | None = None) -> None:
        """Serve blobs from `root`; published copies are at `{public_url}/{key}`.

        Args:
            root: ARTIFACTS_DIR.
            public_url: LOCAL_ARTIFACTS_URL (the base the file server answers on).
            cpu: The pool hashing big bodies runs in (default: the loop's threads).
        """
        self.files = FileStore(root)
        self.public_url = public_url.rstrip("/")
        self._cpu = cpu

    @property
    def root(self) -> Path:
        """ARTIFACTS_DIR, resolved."""
        return self.files.root

    def owns(self, uri: str) -> bool:
        """`file://` URIs inside ARTIFACTS_DIR."""
        try:
            self.files.path(uri)
        except ValueError:
            return False
        return True

    async def put_bytes(self, data: bytes, suffix: str) -> str:
        """Hash and store `data` (in the CPU pool); returns its `file://` URI."""
        if self._cpu is not None:
            return await self._cpu.run(self.files.put_bytes, data, suffix)
        return await asyncio.to_thread(self.files.put_bytes, data, suffix)

    async def read_bytes(self, uri: str) -> bytes:
        """The blob's bytes. Raises FileNotFoundError, ArtifactStoreError (outside the store)."""
        return await asyncio.to_thread(self.files.read_bytes, uri)

    async def exists(self, uri: str) -> bool:
        """Whether the file behind `uri` exists."""
        return await asyncio.to_thread(lambda: self.files.path(uri).is_file())

    async def sha256_of(self, uri: str) -> str:
        """The blob's sha256 (its name for blobs written here)."""
        return await asyncio.to_thread(self.files.sha256_of, uri)

    async def put_record(self, namespace: str, key: str, model: BaseModel) -> None:
        """Write the record file atomically."""
        await asyncio.to_thread(self.files.put_record, namespace, key, model)

    async def get_record(self, namespace: str, key: str, model_type: type[M]) -> M | None:
        """Read the record file, or None."""
        return await asyncio.to_thread(self.files.get_record, namespace, key, model_type)

    async def publish(
        self, uri: str, key: str, content_type: str = "application/octet-stream"
    ) -> str:
        """Copy the blob to `public/<key>`; its URL is `{public_url}/{key}` (the file server
        answers with the type its extension names, so `content_type` is not stored)."""
        await asyncio.to_thread(self.files.publish, uri, key)
        return f"{self.public_url}/{quote(key)}"

    async def aclose(self) -> None:
        """Nothing to release."""
