"""The S3-compatible artifact store (Cloudflare R2, AWS S3, MinIO): workers on many hosts share
nothing but Temporal and one bucket.

Owns the bucket layout and the client. Blobs are content addressed at
`orchestrator/blobs/<sha[:2]>/<sha><suffix>` (URI `s3://<bucket>/<key>`), records at
`orchestrator/records/<namespace>/<sha256(key)>.json`, and `publish` copies a blob server-side
to upstream's public key (`rounds/{round}/{hotkey}/generated/{stem}.{ext}` from
STORAGE_PATH_TEMPLATE) with content type `application/octet-stream`, whose URL is
`{CDN_URL}/{key}`, as upstream's r2_client writes it. A bounded local cache under ARTIFACTS_DIR
(content addressed, least recently used blobs trimmed) keeps a host from downloading a blob twice.

Client: aioboto3, upstream's own choice (`shared/subnet_common/r2_client.py`), so requests are
the same as the real orchestrator's; it is async (no thread per request) and botocore's standard
retry mode backs off on 5xx/throttling. Credentials live only in the session object: errors name
the endpoint, bucket, operation and key, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from activities.cpu import CpuPool
from storage.base import ArtifactUnavailableError, M
from storage.files import ArtifactStoreError, FileStore, check_public_key, record_name

logger = logging.getLogger(__name__)

PREFIX = "orchestrator"
"""Our own objects live under this prefix, apart from the public `rounds/...` layout."""
CONTENT_TYPE = "application/octet-stream"
"""Upstream uploads GLBs and PNGs alike with this type (`r2_client.py:47`)."""
_BLOB_KEY_RE = re.compile(
    rf"^{PREFIX}/blobs/[0-9a-f]{{2}}/([0-9a-f]{{64}})(\.[A-Za-z0-9]{{1,16}})?$"
)
_MISSING = {"NoSuchKey", "404", "NotFound"}
_REFUSED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


class S3ArtifactStore:
    """`ArtifactStore` in one bucket of an S3-compatible endpoint, with a local blob cache."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        public_url: str,
        cache_dir: Path,
        cache_bytes: int,
        object_acl: str | None = None,
        cpu: CpuPool | None = None,
        patience_seconds: float = 120.0,
    ) -> None:
        """Configure the store; the client connects on first use.

        Args:
            endpoint: R2_ENDPOINT (e.g. `https://<account>.r2.cloudflarestorage.com`).
            bucket: R2_BUCKET (upstream's is `404-gen`).
            access_key_id: R2_ACCESS_KEY_ID.
            secret_access_key: R2_SECRET_ACCESS_KEY.
            region: R2_REGION (`auto` for R2).
            public_url: CDN_URL, the base of every public URL.
            cache_dir: ARTIFACTS_DIR, the local cache.
            cache_bytes: ARTIFACT_CACHE_BYTES, the cache's bound.
            object_acl: R2_OBJECT_ACL for published objects (e.g. `public-read`), or None.
            cpu: The pool hashing big bodies runs in.
            patience_seconds: How long one write retries an unreachable store before the
                activity fails (and Temporal retries it).
        """
        self.endpoint = endpoint
        self.bucket = bucket
        self.public_url = public_url.rstrip("/")
        self.cache = FileStore(cache_dir)
        self._cache_bytes = cache_bytes
        self._added_since_trim = 0
        self._acl = object_acl
        self._cpu = cpu
        self._patience = patience_seconds
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._config = Config(
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            s3={"addressing_style": "path"},
        )
        self._client: Any = None
        self._client_cm: Any = None
        self._lock = asyncio.Lock()

    # --- the interface ---------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The local cache directory (ARTIFACTS_DIR)."""
        return self.cache.root

    def owns(self, uri: str) -> bool:
        """`s3://<bucket>/orchestrator/blobs/...` URIs, and this host's cache files."""
        if uri.startswith(f"s3://{self.bucket}/"):
            return bool(_BLOB_KEY_RE.match(uri.removeprefix(f"s3://{self.bucket}/")))
        try:
            self.cache.path(uri)
        except ValueError:
            return False
        return True

    async def put_bytes(self, data: bytes, suffix: str) -> str:
        """Cache `data` locally, upload it once (HEAD first), return its `s3://` URI."""
        local = await self._offload(self.cache.put_bytes, data, suffix)
        digest = self.cache.path(local).name.removesuffix(suffix)
        key = f"{PREFIX}/blobs/{digest[:2]}/{digest}{suffix}"
        if not await self._exists_key(key):
            await self._write(
                "put_object", key, Bucket=self.bucket, Key=key, Body=data, ContentType=CONTENT_TYPE
            )
        await self._cached(len(data))
        return f"s3://{self.bucket}/{key}"

    async def read_bytes(self, uri: str) -> bytes:
        """From the cache, else downloaded (and checked against its hash) and cached."""
        key = self._key(uri)
        if key is None:  # a local cache file (e.g. from before the store moved to S3)
            return await asyncio.to_thread(self.cache.read_bytes, uri)
        match = _BLOB_KEY_RE.match(key)
        if match is None:
            raise ArtifactStoreError(f"not a blob of this store: {uri!r}")
        digest, suffix = match.group(1), match.group(2) or ""
        local = await asyncio.to_thread(self.cache.blob_uri, digest, suffix)
        if local is not None:
            await asyncio.to_thread(self.cache.touch, local)
            return await asyncio.to_thread(self.cache.read_bytes, local)
        data = await self._get(key)
        if data is None:
            raise FileNotFoundError(f"no such object in {self._where()}: {key}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactUnavailableError(f"{self._where()}: {key} does not match its hash")
        await self._offload(self.cache.put_bytes, data, suffix)
        await self._cached(len(data))
        return data

    async def exists(self, uri: str) -> bool:
        """In the cache or in the bucket."""
        key = self._key(uri)
        if key is None:
            return await asyncio.to_thread(lambda: self.cache.path(uri).is_file())
        return await self._exists_key(key)

    async def sha256_of(self, uri: str) -> str:
        """A blob's name is its hash (only this class writes blobs)."""
        key = self._key(uri)
        if key is None:
            return await asyncio.to_thread(self.cache.sha256_of, uri)
        match = _BLOB_KEY_RE.match(key)
        if match is None:
            raise ArtifactStoreError(f"not a blob of this store: {uri!r}")
        if not await self._exists_key(key):
            raise FileNotFoundError(f"no such object in {self._where()}: {key}")
        return match.group(1)

    async def put_record(self, namespace: str, key: str, model: BaseModel) -> None:
        """One small JSON object per record."""
        body = json.dumps({"key": key, "value": model.model_dump(mode="json")}).encode()
        object_key = _record_key(namespace, key)
        await self._write(
            "put_object",
            object_key,
            Bucket=self.bucket,
            Key=object_key,
            Body=body,
            ContentType="application/json",
        )

    async def get_record(self, namespace: str, key: str, model_type: type[M]) -> M | None:
        """The record, or None when there is none."""
        raw = await self._get(_record_key(namespace, key))
        if raw is None:
            return None
        return model_type.model_validate(json.loads(raw)["value"])

    async def publish(self, uri: str, key: str, content_type: str = CONTENT_TYPE) -> str:
        """Server-side copy of the blob to `key` (or an upload of a cache file); `CDN_URL/key`."""
        check_public_key(key)
        extra: dict[str, Any] = {"ContentType": content_type}
        if self._acl:
            extra["ACL"] = self._acl
        source = self._key(uri)
        if source is None:
            data = await asyncio.to_thread(self.cache.read_bytes, uri)
            await self._write("put_object", key, Bucket=self.bucket, Key=key, Body=data, **extra)
        else:
            await self._write(
                "copy_object",
                key,
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="REPLACE",
                **extra,
            )
        return f"{self.public_url}/{key}"

    async def aclose(self) -> None:
        """Close the client's connections."""
        if self._client_cm is not None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            await cm.__aexit__(None, None, None)

    # --- internals -------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"S3 store {self.endpoint} bucket {self.bucket}"

    def _key(self, uri: str) -> str | None:
        """The object key of an `s3://` URI of our bucket; None for a cache file URI."""
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            if bucket != self.bucket or not key:
                raise ArtifactStoreError(f"not an object of bucket {self.bucket}: {uri!r}")
            return key
        self.cache.path(uri)  # raises ArtifactStoreError for anything else
        return None

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client_cm = self._session.client(
                    "s3", endpoint_url=self.endpoint, config=self._config
                )
                self._client = await self._client_cm.__aenter__()
            return self._client

    def _unavailable(self, operation: str, key: str, error: Exception) -> ArtifactUnavailableError:
        if isinstance(error, ClientError):
            info = error.response.get("Error", {})
            code = str(info.get("Code", "?"))
            detail = f"{code}: {info.get('Message', '')}".strip()
            if code in _REFUSED:
                detail += " (refused: check R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY and R2_BUCKET)"
        else:
            detail = type(error).__name__ + (f": {error}" if str(error) else "")
        return ArtifactUnavailableError(f"{self._where()}: {operation} {key} failed: {detail}")

    async def _exists_key(self, key: str) -> bool:
        client = await self._s3()
        try:
            await client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in _MISSING:
                return False
            raise self._unavailable("head_object", key, e) from e
        except BotoCoreError as e:
            raise self._unavailable("head_object", key, e) from e
        return True

    async def _get(self, key: str) -> bytes | None:
        client = await self._s3()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in _MISSING:
                return None
            raise self._unavailable("get_object", key, e) from e
        except BotoCoreError as e:
            raise self._unavailable("get_object", key, e) from e
        return data

    async def _write(self, operation: str, key: str, **kwargs: Any) -> None:
        """A write, retried with backoff for up to `patience` seconds: the bytes it carries were
        paid for (a generation), so a short outage must not lose them."""
        deadline = time.monotonic() + self._patience
        delay = 1.0
        while True:
            client = await self._s3()
            try:
                await getattr(client, operation)(**kwargs)
                return
            except (ClientError, BotoCoreError) as e:
                error = self._unavailable(operation, key, e)
                if time.monotonic() + delay > deadline:
                    raise error from e
                logger.warning("%s; retrying in %.0f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _offload(self, fn: Any, *args: Any) -> Any:
        if self._cpu is not None:
            return await self._cpu.run(fn, *args)
        return await asyncio.to_thread(fn, *args)

    async def _cached(self, size: int) -> None:
        """Trim the cache after every tenth of its bound was added."""
        self._added_since_trim += size
        if self._added_since_trim * 10 < self._cache_bytes:
            return
        self._added_since_trim = 0
        with contextlib.suppress(OSError):
            freed = await asyncio.to_thread(self.cache.trim, self._cache_bytes)
            if freed:
                logger.info("artifact cache: freed %d bytes", freed)


def _record_key(namespace: str, key: str) -> str:
    return f"{PREFIX}/{record_name(namespace, key)}"
