"""Files on one host: content-addressed blobs (GLB, PNG), JSON records and published copies.

Owns everything under its root directory: `blobs/<sha[:2]>/<sha><suffix>` for bytes,
`records/<namespace>/<sha256(key)>.json` for idempotency records and caches, and `public/<key>`
for the copies published at public URLs. It is the embedded default's whole store and the S3
store's local cache (`storage.local`, `storage.s3`). It does not own the network, the miner
contract or Temporal: it is plain synchronous file I/O, which the stores run in threads.

Every write goes through `atomic.write_atomic` (a temporary file published with `os.replace`),
so a reader never sees a half-written blob or record, and a crash mid-write leaves only a stray
temporary file. Writes are idempotent: the same bytes always land at the same path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from atomic import write_atomic

M = TypeVar("M", bound=BaseModel)

_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9]{1,16})?$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_BLOB_NAME_RE = re.compile(r"^([0-9a-f]{64})(\.[A-Za-z0-9]{1,16})?$")
_HASH_CHUNK_BYTES = 1024 * 1024


class ArtifactStoreError(ValueError):
    """A URI, suffix, key or namespace the store refuses (outside the root, malformed, ...)."""


_PUBLIC_KEY_RE = re.compile(r"^[A-Za-z0-9._=+@-]+(/[A-Za-z0-9._=+@-]+)*$")


def check_public_key(key: str) -> str:
    """`key` if it is a safe relative object key (no `..`, no empty or hidden segment).

    Raises:
        ArtifactStoreError: naming the key.
    """
    if not _PUBLIC_KEY_RE.match(key) or any(part.startswith(".") for part in key.split("/")):
        raise ArtifactStoreError(f"invalid public artifact key {key!r}")
    return key


def record_name(namespace: str, key: str) -> str:
    """`records/<namespace>/<sha256(key)>.json`: where a record lives, on disk or in a bucket.

    Raises:
        ArtifactStoreError: Invalid namespace.
    """
    if not _NAMESPACE_RE.match(namespace):
        raise ArtifactStoreError(f"invalid record namespace {namespace!r}")
    name = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"records/{namespace}/{name}.json"


class FileStore:
    """Content-addressed blob store plus a JSON record store, rooted at one directory.

    Owns: the layout under `root`, atomic publication of files, and the guarantee that no URI or
    record key can address a path outside `root`. Does not own: retention (nothing is deleted),
    downloads, or any knowledge of what the blobs mean.
    """

    def __init__(self, root: Path) -> None:
        """Create the store (directories are made on first write).

        Args:
            root: Directory that holds every blob and record; resolved to an absolute path.
        """
        self._root = root.expanduser().resolve()

    @property
    def root(self) -> Path:
        """Absolute, resolved root directory."""
        return self._root

    # --- blobs ----------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, suffix: str) -> str:
        """Store `data` under its sha256 and return its `file://` URI (idempotent).

        Args:
            data: The blob.
            suffix: File extension including the dot (".glb", ".png") or "" for none.

        Returns:
            `file://<root>/blobs/<sha[:2]>/<sha><suffix>`.

        Raises:
            ArtifactStoreError: `suffix` is not a dot plus 1-16 alphanumerics.
        """
        if not _SUFFIX_RE.match(suffix):
            raise ArtifactStoreError(f"invalid blob suffix {suffix!r}")
        digest = hashlib.sha256(data).hexdigest()
        target = self._root / "blobs" / digest[:2] / f"{digest}{suffix}"
        if not target.is_file():
            write_atomic(target, data)
        return target.as_uri()

    def path(self, uri: str) -> Path:
        """The local path of a store URI.

        Args:
            uri: A `file://` URI as returned by `put_bytes`.

        Returns:
            The resolved absolute path (it may not exist).

        Raises:
            ArtifactStoreError: Not a local `file://` URI, or it resolves outside the root
                (`..`, symlinks and percent-encoded escapes included).
        """
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ArtifactStoreError(f"not a local file:// URI: {uri!r}")
        if parsed.query or parsed.fragment or parsed.params:
            raise ArtifactStoreError(f"file URI must not carry a query or fragment: {uri!r}")
        raw = unquote(parsed.path)
        if not raw.startswith("/") or "\x00" in raw:
            raise ArtifactStoreError(f"not an absolute file URI: {uri!r}")
        resolved = Path(raw).resolve()
        if resolved == self._root or not resolved.is_relative_to(self._root):
            raise ArtifactStoreError(f"URI outside the artifact store {self._root}: {uri!r}")
        return resolved

    def blob_uri(self, digest: str, suffix: str) -> str | None:
        """The `file://` URI of the blob with this sha256 and suffix, if it is stored here."""
        if not _SUFFIX_RE.match(suffix) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ArtifactStoreError(f"invalid blob name {digest!r}{suffix!r}")
        target = self._root / "blobs" / digest[:2] / f"{digest}{suffix}"
        return target.as_uri() if target.is_file() else None

    def publish(self, uri: str, key: str) -> Path:
        """Copy the blob at `uri` to `public/<key>` (replacing what was there) and return it.

        Raises:
            ArtifactStoreError: Invalid key or URI outside the store.
            FileNotFoundError: No such blob.
        """
        target = self._root / "public" / check_public_key(key)
        data = self.read_bytes(uri)
        if not (target.is_file() and target.read_bytes() == data):
            write_atomic(target, data)
        return target

    @property
    def public_root(self) -> Path:
        """The directory the published copies live in (what a file server serves)."""
        return self._root / "public"

    def read_bytes(self, uri: str) -> bytes:
        """The bytes behind a store URI.

        Raises:
            ArtifactStoreError: The URI is outside the store.
            FileNotFoundError: No such blob.
        """
        return self.path(uri).read_bytes()

    def sha256_of(self, uri: str) -> str:
        """Hex sha256 of the blob behind `uri`.

        Blobs written by `put_bytes` are named by their hash, so that name is trusted (only this
        class writes under `blobs/`); any other file in the store is hashed.

        Raises:
            ArtifactStoreError: The URI is outside the store.
            FileNotFoundError: No such file.
        """
        path = self.path(uri)
        match = _BLOB_NAME_RE.match(path.name)
        blobs = self._root / "blobs"
        if match and path.parent.parent == blobs and path.parent.name == match.group(1)[:2]:
            if not path.is_file():
                raise FileNotFoundError(path)
            return match.group(1)
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
        return digest.hexdigest()

    def touch(self, uri: str) -> None:
        """Mark a blob as just used, so `trim` keeps it longer (a cache's LRU order)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(uri))

    def trim(self, max_bytes: int) -> int:
        """Delete the least recently used blobs until they take at most `max_bytes`.

        Only `blobs/` is a cache; records and published copies are never trimmed. Returns the
        number of bytes freed.
        """
        entries: list[tuple[float, int, Path]] = []
        for path in (self._root / "blobs").glob("*/*"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        freed = 0
        for _, size, path in sorted(entries):
            if total - freed <= max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                freed += size
        return freed

    # --- records --------------------------------------------------------------------------------

    def put_record(self, namespace: str, key: str, model: BaseModel) -> None:
        """Store `model` as the record of (`namespace`, `key`), replacing any previous one.

        Args:
            namespace: A short identifier (letters, digits, `_`, `-`), e.g. "generate".
            key: Any string (URL, assignment id, ...); only its sha256 reaches the file system.
            model: The pydantic model to store as JSON.

        Raises:
            ArtifactStoreError: Invalid namespace.
        """
        payload = {"key": key, "value": model.model_dump(mode="json")}
        write_atomic(self._record_path(namespace, key), json.dumps(payload).encode())

    def get_record(self, namespace: str, key: str, model_type: type[M]) -> M | None:
        """The record of (`namespace`, `key`) parsed as `model_type`, or None if there is none.

        Raises:
            ArtifactStoreError: Invalid namespace.
            pydantic.ValidationError: The stored record does not fit `model_type`.
        """
        path = self._record_path(namespace, key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        payload = json.loads(raw)
        return model_type.model_validate(payload["value"])

    def _record_path(self, namespace: str, key: str) -> Path:
        return self._root / record_name(namespace, key)
