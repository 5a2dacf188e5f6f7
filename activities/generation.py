"""Miner-facing activities: regenerate a prompt on a pod, and download submitted artifacts.

Owns the miner HTTP contract as the orchestrator uses it (REFERENCE.md "Miner HTTP API"): the
multipart `POST {pod_url}/generate`, how generation time is measured, and how each way a miner
can fail maps to an `ErrorType`. Owns the download of prompt images and submitted GLBs into the
`ArtifactStore`. Does not own pods (activities/pods.py), rendering or scoring
(activities/scoring.py), or the decision what a failure means for an audit (workflows).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import trimesh
from PIL import Image
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.cpu import CpuPool
from activities.heartbeat import heartbeating
from models.audit import (
    ArtifactResult,
    FetchArtifactInput,
    FetchPromptInput,
    GenerateInput,
    GenerateResult,
    PrefetchPromptsInput,
    PrefetchPromptsResult,
    ProviderName,
)
from models.errors import ErrorType
from models.miner_api import GENERATE_PATH, PROMPT_IMAGE_FIELD, SEED_FIELD
from storage import ArtifactStore

# A miner failing is an audit outcome, not a fault of ours: BENIGN keeps it out of error logs
# and metrics (the pod workflow records it as a failed prompt).
BENIGN_MODEL_FAILURE = ApplicationErrorCategory.BENIGN

GLB_MAGIC = b"glTF"
"""First four bytes of every binary glTF file."""

PROMPT_MAX_BYTES = 64 * 1024 * 1024
PREFETCH_CONCURRENCY = 10
"""Prompt downloads at once in `prefetch_prompts` (upstream's prompts.py: 10)."""
"""Largest prompt image we download; real prompts are a few MB at most."""

ERROR_BODY_MAX_CHARS = 500
"""How much of an error response body goes into an error message."""

HEARTBEAT_INTERVAL_SECONDS = 2.0
"""Heartbeat period while waiting on the network; keep well under the heartbeat_timeout."""

CONNECT_TIMEOUT_SECONDS = 30.0
"""TCP/TLS connect limit for miner calls; a pod that cannot be reached in this time is dead."""

DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Per-phase (connect/read/write) limit for prompt and submission downloads."""

UPSTREAM_PHASE_TIMEOUT_SECONDS = 30.0
"""v2 calls: httpx connect, write and pool timeouts (upstream generate.py)."""

UPSTREAM_PROMPT_FILENAME = "prompt.jpg"
UPSTREAM_PROMPT_TYPE = "image/jpeg"
"""v2 calls: the prompt part's filename and type as upstream sends them (bytes unchanged)."""

_RETRY_LATER_STATUSES = frozenset({408, 425, 429})
_RECORD_GENERATE = "generate"
_RECORD_PROMPT = "prompt"
_RECORD_FETCH = "fetch"


class _HttpStatusError(Exception):
    """A download answered with an error status (internal; mapped to an ApplicationError)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class _TooLargeError(Exception):
    """A body exceeded its byte cap (internal; mapped to an ApplicationError)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


class GenerationActivities:
    """Activities that talk to miners and to the CDN: `generate` and `fetch_artifact`.

    Owns: an injected `httpx.AsyncClient` (not closed here: the worker owns its lifetime), the
    artifact store it writes to, and per-provider auth headers for miner calls (secrets arrive
    through the constructor, never through workflow inputs). Does not own pods or retries: every
    permanent failure is a non-retryable `ApplicationError` whose type the workflow decides on.
    """

    def __init__(
        self,
        store: ArtifactStore,
        http: httpx.AsyncClient,
        auth_headers: Mapping[ProviderName, Mapping[str, str]] | None = None,
        *,
        file_roots: Sequence[Path] = (),
        heartbeat_interval: float = HEARTBEAT_INTERVAL_SECONDS,
        cpu: CpuPool | None = None,
    ) -> None:
        """Bind the activities to their dependencies.

        Args:
            store: Where GLBs, prompt images and idempotency records go.
            http: Shared client for miner calls and downloads.
            auth_headers: Headers for miner calls per provider (e.g. a Verda bearer token).
            file_roots: Directories from which `fetch_artifact` may read `file://` URLs (besides
                the store itself); for local demos and tests.
            heartbeat_interval: Seconds between heartbeats while waiting on the network.
            cpu: The bounded pool for CPU-heavy steps (CPU_WORKERS); a pool of 2 if not given.
        """
        self._store = store
        self._http = http
        self._notices: dict[str, asyncio.Task[None]] = {}  # gpu_free signals in flight
        self._auth_headers = {name: dict(h) for name, h in (auth_headers or {}).items()}
        self._file_roots = [store.root, *(root.expanduser().resolve() for root in file_roots)]
        self._heartbeat_interval = heartbeat_interval
        self._cpu = cpu or CpuPool(2)

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [self.fetch_prompt, self.prefetch_prompts, self.generate, self.fetch_artifact]

    @activity.defn(name="fetch_prompt")
    async def fetch_prompt(self, input: FetchPromptInput) -> ArtifactResult:
        """Download a prompt image once per (round, URL) into the store.

        Its own activity, retried by Temporal for as long as the prompt server is down, so an
        outage on our side never turns into a failed generation charged to the miner.
        Idempotent: a cached download is returned without a request. Permanent:
        PROMPT_UNAVAILABLE (4xx, not an image, unsupported or missing URL).
        """
        async with heartbeating(self._heartbeat_interval):
            return await self._prompt_record(input.round, input.url)

    @activity.defn(name="prefetch_prompts")
    async def prefetch_prompts(self, input: PrefetchPromptsInput) -> PrefetchPromptsResult:
        """Cache every prompt image of an audit, PREFETCH_CONCURRENCY at a time (upstream
        downloads a round's prompts 10 at a time before generating).

        Returns the prompts that can never be fetched (PROMPT_UNAVAILABLE: upstream drops them
        from the run). Idempotent: cached prompts cost nothing. A prompt server that is down
        (any retryable error) fails the activity after trying all, so Temporal retries it.
        """
        gate = asyncio.Semaphore(PREFETCH_CONCURRENCY)
        unavailable: dict[str, str] = {}
        transient: list[str] = []

        async def one(url: str) -> None:
            async with gate:
                try:
                    await self._prompt_record(input.round, url)
                except ApplicationError as e:
                    if e.non_retryable:
                        unavailable[url] = e.message
                    else:
                        transient.append(f"{url}: {e.message}")

        async with heartbeating(self._heartbeat_interval):
            await asyncio.gather(*(one(url) for url in input.urls))
        if transient:
            raise ApplicationError(
                f"{len(transient)} prompt(s) not fetched yet, will retry; first: {transient[0]}"
            )
        return PrefetchPromptsResult(unavailable=dict(sorted(unavailable.items())))

    @activity.defn(name="generate")
    async def generate(self, input: GenerateInput) -> GenerateResult:
        """Call the miner's `/generate` once for a prompt and store the returned GLB.

        Idempotent by (`audit_id`, `assignment_id`): a finished call is recorded, and a rerun
        (Temporal re-runs an activity whose worker died before reporting) returns the record
        without calling the miner again. The prompt image is downloaded once per (round, URL).

        Generation time runs from sending the request to receiving the response headers. The
        activity heartbeats while it waits, so cancellation reaches it.

        Two timing contracts, chosen by `input.download_timeout`:
            None (v1 pods): `input.timeout` bounds the whole call (upload, generation and body
                download); slower is MINER_TIMEOUT. The prompt goes as `{stem}.png`, image/png.
            set (v2 pods, upstream generate.py): httpx timeouts connect/write/pool 30 s and read
                `timeout + download_timeout` per socket read, no overall deadline. A response
                whose headers arrive after `input.timeout` is returned with its real
                `generation_time` (an overtime for the workflow to judge); only a silence longer
                than the read timeout (or a connect/write/pool timeout) is MINER_TIMEOUT. Only 2xx
                counts, redirects are not followed, and the prompt bytes go unchanged as
                `prompt.jpg`, image/jpeg.

        Raises:
            ApplicationError: Non-retryable, by type:
                PROMPT_UNAVAILABLE: the prompt URL answers 4xx, is too large, or is not an image.
                MINER_TIMEOUT: v1: the whole call took longer than `input.timeout`; v2: an httpx
                    timeout (see above).
                MINER_FAILED: HTTP error status (v2: any non-2xx), or the pod is unreachable
                    (refused, reset, ...).
                MINER_BAD_OUTPUT: a body over `input.max_bytes`; v1 also: empty, not a loadable
                    GLB (v2 stores those; rendering them fails the prompt).
                Retryable (no type): the prompt server is down or answers 5xx/429.
        """
        key = json.dumps([input.audit_id, input.assignment_id])
        done, prompt = await self._prepared(key, input)
        if done is not None:
            activity.logger.info("generate %s already done, not calling the miner", key)
            return done

        try:
            # Heartbeat through all of it: a large GLB takes a while to validate and store too.
            async with heartbeating(self._heartbeat_interval):
                if prompt is None:  # not cached yet (prefetch normally did it)
                    record = await self._prompt_record(input.round, input.prompt_url)
                    prompt = await self._store.read_bytes(record.uri)
                body, generation_time = await self._call_miner(input, prompt)
                if input.download_timeout is None:
                    # v1 only. v2 stores any 2xx body as the GLB, as upstream does: the render step
                    # refuses a bad one with upstream's reason, and nothing slows the GPU slot.
                    await self._cpu.run(_validate_glb, body)
                uri = await self._store.put_bytes(body, ".glb")
                result = GenerateResult(
                    glb_uri=uri, size=len(body), generation_time=generation_time
                )
                await self._store.put_record(_RECORD_GENERATE, key, result)
        finally:
            await self._settle_notice(input.assignment_id)
        activity.logger.info(
            "generated %s: %d bytes in %.2fs", key, result.size, result.generation_time
        )
        return result

    async def _prepared(
        self, key: str, input: GenerateInput
    ) -> tuple[GenerateResult | None, bytes | None]:
        """(the recorded result of an earlier run, None) or (None, the cached prompt bytes or
        None when the prompt is not cached yet)."""
        done = await self._store.get_record(_RECORD_GENERATE, key, GenerateResult)
        if done is not None:
            return done, None
        cached = await self._store.get_record(
            _RECORD_PROMPT, _prompt_key(input.round, input.prompt_url), ArtifactResult
        )
        return None, await self._store.read_bytes(cached.uri) if cached is not None else None

    async def _settle_notice(self, assignment_id: str) -> None:
        """Give the `gpu_free` signal a moment; never let it hold up the result (it is only a
        head start: the pod frees its GPU slot when this activity completes anyway)."""
        notice = self._notices.pop(assignment_id, None)
        if notice is None:
            return
        await asyncio.wait({notice}, timeout=GPU_FREE_WAIT_SECONDS)
        notice.cancel()

    @activity.defn(name="fetch_artifact")
    async def fetch_artifact(self, input: FetchArtifactInput) -> ArtifactResult:
        """Download a URL (a miner's submitted GLB) into the artifact store, once per URL.

        Idempotent: the result is recorded by URL, and later calls return the record. `http(s)`
        URLs are downloaded; `file://` URLs are read only from the store or the configured
        `file_roots`.

        Raises:
            ApplicationError: Non-retryable SUBMISSION_UNAVAILABLE for 4xx (not 408/425/429), a
                missing file or a body over `input.max_bytes`; non-retryable INVALID_INPUT for
                an unsupported URL; retryable (no type) for network errors and 5xx/429.
        """
        cached = await self._fetched(input.url)
        if cached is not None:
            return cached

        scheme = urlparse(input.url).scheme
        if scheme in ("http", "https"):
            data = await self._download_submission(input.url, input.max_bytes)
        elif scheme == "file":
            data = await asyncio.to_thread(self._read_local, input.url, input.max_bytes)
        else:
            raise ApplicationError(
                f"unsupported artifact URL {input.url!r}",
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        uri = await self._store.put_bytes(data, _url_suffix(input.url))
        result = ArtifactResult(uri=uri, size=len(data))
        await self._store.put_record(_RECORD_FETCH, input.url, result)
        return result

    # --- miner call -----------------------------------------------------------------------------

    async def _call_miner(self, input: GenerateInput, prompt: bytes) -> tuple[bytes, float]:
        """POST the prompt to the pod; returns (GLB bytes, seconds until response headers)."""
        if input.download_timeout is not None:
            return await self._call_miner_upstream(input, input.download_timeout, prompt)
        url = input.pod_url.rstrip("/") + GENERATE_PATH
        timeout_s = input.timeout.total_seconds()
        filename = f"{_prompt_stem(input.prompt_url)}.png"
        files = {PROMPT_IMAGE_FIELD: (filename, prompt, "image/png")}
        data = {SEED_FIELD: str(input.seed)}
        headers = self._auth_headers.get(input.provider, {})
        # The overall deadline is asyncio's; httpx only bounds the connect phase, so a slow
        # miner surfaces as MINER_TIMEOUT and an unreachable one as MINER_FAILED.
        http_timeout = httpx.Timeout(None, connect=min(CONNECT_TIMEOUT_SECONDS, timeout_s))
        try:
            async with asyncio.timeout(timeout_s):
                started = time.monotonic()
                async with self._http.stream(
                    "POST", url, files=files, data=data, headers=headers, timeout=http_timeout
                ) as response:
                    generation_time = time.monotonic() - started
                    glb = await _miner_body(response, input.max_bytes)
        except TimeoutError as exc:
            raise _model_failure(
                f"generation exceeded {timeout_s:g}s", ErrorType.MINER_TIMEOUT
            ) from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout) as exc:
            raise _model_failure(
                f"pod unreachable: {type(exc).__name__}: {exc}", ErrorType.MINER_FAILED
            ) from exc
        return glb, generation_time

    async def _call_miner_upstream(
        self, input: GenerateInput, download_timeout: timedelta, prompt: bytes
    ) -> tuple[bytes, float]:
        """Upstream's call (c263c11 generate.py): per-read timeouts, slow answers kept.

        Returns (GLB bytes, seconds from sending the request to the response headers), even when
        that time exceeds `input.timeout`.
        """
        url = input.pod_url.rstrip("/") + GENERATE_PATH
        timeout_s = input.timeout.total_seconds()
        read_s = timeout_s + download_timeout.total_seconds()
        http_timeout = httpx.Timeout(
            connect=UPSTREAM_PHASE_TIMEOUT_SECONDS,
            write=UPSTREAM_PHASE_TIMEOUT_SECONDS,
            pool=UPSTREAM_PHASE_TIMEOUT_SECONDS,
            read=read_s,
        )
        files = {PROMPT_IMAGE_FIELD: (UPSTREAM_PROMPT_FILENAME, prompt, UPSTREAM_PROMPT_TYPE)}
        data = {SEED_FIELD: str(input.seed)}
        headers = self._auth_headers.get(input.provider, {})
        try:
            started = time.monotonic()
            async with self._http.stream(
                "POST",
                url,
                files=files,
                data=data,
                headers=headers,
                timeout=http_timeout,
                follow_redirects=False,
            ) as response:
                generation_time = time.monotonic() - started
                # The GPU is free once the headers are here: let the pod send its next prompt
                # while this body downloads and is stored (upstream frees its GPU slot here).
                self._notices[input.assignment_id] = asyncio.create_task(
                    _tell_gpu_free(input.assignment_id)
                )
                glb = await _miner_body(response, input.max_bytes)
        except httpx.TimeoutException as exc:
            raise _model_failure(_timeout_message(exc, read_s), ErrorType.MINER_TIMEOUT) from exc
        except httpx.RequestError as exc:
            raise _model_failure(
                f"pod unreachable: {type(exc).__name__}: {exc}", ErrorType.MINER_FAILED
            ) from exc
        if generation_time > timeout_s:
            activity.logger.info(
                "generation took %.1fs, over the %gs timeout: kept as an overtime",
                generation_time,
                timeout_s,
            )
        return glb, generation_time

    # --- downloads ------------------------------------------------------------------------------

    async def _prompt_record(self, round_number: int, url: str) -> ArtifactResult:
        """The stored prompt image, downloaded once per (round, URL) and cached in the store."""
        key = _prompt_key(round_number, url)
        cached = await self._store.get_record(_RECORD_PROMPT, key, ArtifactResult)
        if cached is not None:
            return cached

        if urlparse(url).scheme not in ("http", "https"):
            raise ApplicationError(
                f"prompt URL {url!r} is not http(s)",
                type=ErrorType.PROMPT_UNAVAILABLE,
                non_retryable=True,
            )
        async with _download_errors("prompt", url, ErrorType.PROMPT_UNAVAILABLE):
            data = await self._download(url, PROMPT_MAX_BYTES)

        if not await self._cpu.run(_is_image, data):
            raise ApplicationError(
                f"prompt {url} is not an image",
                type=ErrorType.PROMPT_UNAVAILABLE,
                non_retryable=True,
            )
        uri = await self._store.put_bytes(data, ".png")
        record = ArtifactResult(uri=uri, size=len(data))
        await self._store.put_record(_RECORD_PROMPT, key, record)
        return record

    async def _download_submission(self, url: str, max_bytes: int) -> bytes:
        """GET a submitted artifact, mapping failures to SUBMISSION_UNAVAILABLE or retryable."""
        async with (
            _download_errors("submission", url, ErrorType.SUBMISSION_UNAVAILABLE),
            heartbeating(self._heartbeat_interval),
        ):
            return await self._download(url, max_bytes)

    async def _download(self, url: str, max_bytes: int) -> bytes:
        """GET `url` (following redirects) with a byte cap.

        Raises:
            _HttpStatusError: Status >= 400.
            _TooLargeError: Body over `max_bytes`.
            httpx.TransportError: Network failure.
        """
        async with self._http.stream(
            "GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_SECONDS
        ) as response:
            if response.status_code >= 400:
                body = await _read_prefix(response, ERROR_BODY_MAX_CHARS)
                raise _HttpStatusError(response.status_code, body)
            return await _read_capped(response, max_bytes)

    async def _fetched(self, url: str) -> ArtifactResult | None:
        """The recorded download of `url` if its blob is still in the store."""
        cached = await self._store.get_record(_RECORD_FETCH, url, ArtifactResult)
        if cached is None or not await self._store.exists(cached.uri):
            return None
        return cached

    def _read_local(self, url: str, max_bytes: int) -> bytes:
        """Read a `file://` URL that lies inside the store or an allowed root (sync)."""
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ApplicationError(
                f"unsupported artifact URL {url!r}",
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        path = Path(unquote(parsed.path)).resolve()
        if not any(path.is_relative_to(root) for root in self._file_roots):
            raise ApplicationError(
                f"file URL outside the allowed roots: {url!r}",
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ApplicationError(
                    f"submission {url} is larger than {max_bytes} bytes",
                    type=ErrorType.SUBMISSION_UNAVAILABLE,
                    non_retryable=True,
                )
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ApplicationError(
                f"submission {url} unavailable: no such file",
                type=ErrorType.SUBMISSION_UNAVAILABLE,
                non_retryable=True,
            ) from exc


# --- helpers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _download_errors(what: str, url: str, unavailable: ErrorType) -> AsyncIterator[None]:
    """Map a download's failures: 4xx / too large -> non-retryable `unavailable`, else retry."""
    try:
        yield
    except _HttpStatusError as exc:
        if _is_permanent_status(exc.status):
            raise ApplicationError(
                f"{what} {url} unavailable: HTTP {exc.status}", type=unavailable, non_retryable=True
            ) from exc
        raise ApplicationError(f"{what} {url}: HTTP {exc.status}, will retry") from exc
    except _TooLargeError as exc:
        raise ApplicationError(
            f"{what} {url} is larger than {exc.limit} bytes", type=unavailable, non_retryable=True
        ) from exc
    except httpx.TransportError as exc:
        raise ApplicationError(f"{what} {url}: {type(exc).__name__}: {exc}, will retry") from exc


GPU_FREE_WAIT_SECONDS = 1.0
"""How long a finished `generate` waits for its `gpu_free` signal to be delivered."""
GPU_FREE_SIGNAL = "gpu_free"
"""Signal to the calling pod workflow: this assignment's response headers arrived."""


async def _tell_gpu_free(assignment_id: str) -> None:
    """Signal the pod workflow running this activity that its GPU slot is free (best effort:
    without it the slot is freed when the activity completes)."""
    info = activity.info()
    if info.workflow_id is None:
        return
    try:
        handle = activity.client().get_workflow_handle(
            info.workflow_id, run_id=info.workflow_run_id
        )
        await handle.signal(GPU_FREE_SIGNAL, assignment_id)
    except Exception as exc:  # no client (unit tests), workflow gone, server busy: harmless
        activity.logger.debug("gpu_free not signalled for %s: %s", assignment_id, exc)


def _prompt_key(round_number: int, url: str) -> str:
    """The store record key of a cached prompt image."""
    return json.dumps([round_number, url])


def _model_failure(message: str, error_type: ErrorType) -> ApplicationError:
    """A failure the miner caused: non-retryable, and benign (an outcome, not our error)."""
    return ApplicationError(
        message, type=error_type, non_retryable=True, category=BENIGN_MODEL_FAILURE
    )


async def _miner_body(response: httpx.Response, max_bytes: int) -> bytes:
    """The GLB of a /generate response; a non-2xx status or an oversized body is the miner's."""
    if not response.is_success:
        body = await _read_prefix(response, ERROR_BODY_MAX_CHARS)
        raise _model_failure(
            f"miner returned HTTP {response.status_code}: {body}", ErrorType.MINER_FAILED
        )
    try:
        return await _read_capped(response, max_bytes)
    except _TooLargeError as exc:
        raise _model_failure(
            f"response larger than {exc.limit} bytes", ErrorType.MINER_BAD_OUTPUT
        ) from exc


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The whole body, or `_TooLargeError` as soon as it exceeds `max_bytes` (stops reading)."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _TooLargeError(max_bytes)
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > max_bytes:
            raise _TooLargeError(max_bytes)
    return bytes(buffer)


async def _read_prefix(response: httpx.Response, max_chars: int) -> str:
    """The start of an (error) body as text, truncated to `max_chars`; the rest is not read."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > max_chars:
            break
    text = bytes(buffer).decode("utf-8", errors="replace")
    return text if len(text) <= max_chars else text[:max_chars] + "..."


def _timeout_message(exc: httpx.TimeoutException, read_seconds: float) -> str:
    """What an httpx timeout of a v2 miner call means, for the error message."""
    if isinstance(exc, httpx.ReadTimeout):
        return f"miner sent nothing for {read_seconds:g}s (read timeout)"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"pod not reachable within {UPSTREAM_PHASE_TIMEOUT_SECONDS:g}s (connect timeout)"
    if isinstance(exc, httpx.WriteTimeout):
        return f"upload stalled for {UPSTREAM_PHASE_TIMEOUT_SECONDS:g}s (write timeout)"
    return f"no connection within {UPSTREAM_PHASE_TIMEOUT_SECONDS:g}s ({type(exc).__name__})"


def _is_permanent_status(status: int) -> bool:
    """4xx means the resource is not there for us; 5xx and throttling may pass."""
    return 400 <= status < 500 and status not in _RETRY_LATER_STATUSES


def _is_image(data: bytes) -> bool:
    """Whether PIL can open and verify `data` as an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    # PIL raises many exception types (OSError, SyntaxError, ValueError, struct.error, ...) for
    # corrupt input; all of them mean "not an image" here.
    except Exception:
        return False
    return True


def _validate_glb(data: bytes) -> None:
    """Raise non-retryable MINER_BAD_OUTPUT unless `data` is a GLB with geometry (sync, CPU)."""
    if not data:
        raise _model_failure("miner returned an empty body", ErrorType.MINER_BAD_OUTPUT)
    if not data.startswith(GLB_MAGIC):
        raise _model_failure(
            f"response is not a GLB (starts with {data[:8]!r})", ErrorType.MINER_BAD_OUTPUT
        )
    try:
        scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    # trimesh raises many exception types for malformed files; any of them means bad output.
    except Exception as exc:
        raise _model_failure(
            f"GLB cannot be loaded: {type(exc).__name__}: {exc}", ErrorType.MINER_BAD_OUTPUT
        ) from exc
    if not isinstance(scene, trimesh.Scene) or not scene.geometry:
        raise _model_failure("GLB has no geometry", ErrorType.MINER_BAD_OUTPUT)


def _prompt_stem(url: str) -> str:
    """The prompt's stem: the URL's file name without extension (REFERENCE.md)."""
    return PurePosixPath(unquote(urlparse(url).path)).stem or "prompt"


def _url_suffix(url: str) -> str:
    """A safe blob suffix from the URL's file name (".glb"), or "" if it has none usable."""
    suffix = PurePosixPath(unquote(urlparse(url).path)).suffix.lower()
    return suffix if 1 < len(suffix) <= 17 and suffix[1:].isalnum() and suffix.isascii() else ""
