"""GenerationActivities against a real loopback HTTP server: generate and fetch_artifact."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import trimesh
from aiohttp import web
from PIL import Image
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.generation import GenerationActivities
from models.audit import (
    FetchArtifactInput,
    FetchPromptInput,
    GenerateInput,
    PrefetchPromptsInput,
    ProviderName,
)
from models.errors import ErrorType
from storage import LocalArtifactStore
from tests.helpers import assert_eventually, free_port


def make_png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_glb() -> bytes:
    data: bytes = trimesh.creation.box(extents=(1.0, 0.5, 0.3)).export(file_type="glb")
    return data


PROMPT_PNG = make_png()
VALID_GLB = make_glb()


@dataclass
class FakeMiner:
    """Loopback server: prompt images under /prompts, a configurable /generate, GLBs under /cdn."""

    base_url: str = ""
    mode: str = "ok"
    requests: Counter[str] = field(default_factory=Counter)
    received: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    huge_bytes: int = 4 * 1024 * 1024
    delay: float = 0.0

    async def prompt(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests[f"prompt/{name}"] += 1
        if name == "missing.png":
            return web.Response(status=404, text="no such prompt")
        if name == "text.png":
            return web.Response(body=b"this is not an image", content_type="image/png")
        if name == "down.png":
            return web.Response(status=503, text="try later")
        return web.Response(body=PROMPT_PNG, content_type="image/png")

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests[f"cdn/{name}"] += 1
        if name == "missing.glb":
            return web.Response(status=404, text="gone")
        if name == "broken.glb":
            return web.Response(status=502, text="bad gateway")
        return web.Response(body=VALID_GLB, content_type="model/gltf-binary")

    async def generate(self, request: web.Request) -> web.StreamResponse:
        self.requests["generate"] += 1
        form = await request.post()
        upload = form["prompt_image_file"]
        assert isinstance(upload, web.FileField)
        self.received.append(
            {
                "filename": upload.filename,
                "content_type": upload.content_type,
                "image": upload.file.read(),
                "seed": form["seed"],
                "authorization": request.headers.get("Authorization"),
            }
        )
        if self.mode == "ok":
            return web.Response(body=VALID_GLB, content_type="model/gltf-binary")
        if self.mode == "500":
            return web.Response(status=500, text="CUDA out of memory " + "x" * 5000)
        if self.mode == "empty":
            return web.Response(body=b"", content_type="model/gltf-binary")
        if self.mode == "not_glb":
            return web.Response(body=b"<html>hello</html>", content_type="text/html")
        if self.mode == "bad_glb":
            return web.Response(body=b"glTF\x02\x00\x00\x00" + b"\xff" * 64)
        if self.mode == "huge":
            # Chunked (no Content-Length): the client must cut it off while streaming.
            response = web.StreamResponse()
            await response.prepare(request)
            chunk = b"glTF" + b"\x00" * (64 * 1024 - 4)
            try:
                for _ in range(self.huge_bytes // len(chunk)):
                    await response.write(chunk)
            except (ConnectionError, RuntimeError):
                return response
            await response.write_eof()
            return response
        if self.mode == "slow":
            await self.release.wait()
            return web.Response(body=VALID_GLB)
        if self.mode == "redirect":
            raise web.HTTPTemporaryRedirect(f"{self.base_url}/cdn/moved.glb")
        if self.mode == "delayed":
            await asyncio.sleep(self.delay)
            return web.Response(body=VALID_GLB)
        if self.mode == "stall_body":
            # Headers and the first bytes at once, then silence until released.
            response = web.StreamResponse()
            response.content_length = len(VALID_GLB)
            await response.prepare(request)
            await response.write(VALID_GLB[:16])
            await self.release.wait()
            await response.write(VALID_GLB[16:])
            await response.write_eof()
            return response
        raise AssertionError(f"unknown mode {self.mode}")


@pytest_asyncio.fixture
async def miner() -> AsyncIterator[FakeMiner]:
    fake = FakeMiner()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/prompts/{name}", fake.prompt)
    app.router.add_get("/cdn/{name}", fake.cdn)
    app.router.add_post("/generate", fake.generate)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts", "http://127.0.0.1:9")


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def acts(store: LocalArtifactStore, http: httpx.AsyncClient) -> GenerationActivities:
    return GenerationActivities(
        store,
        http,
        {ProviderName.VERDA: {"Authorization": "Bearer generation-token"}},
        heartbeat_interval=0.05,
    )


def gen_input(miner: FakeMiner, **overrides: Any) -> GenerateInput:
    values: dict[str, Any] = {
        "audit_id": "audit-1-hk",
        "assignment_id": "chair#0",
        "round": 1,
        "provider": ProviderName.TARGON,
        "pod_url": miner.base_url,
        "prompt_url": f"{miner.base_url}/prompts/chair.png",
        "seed": 3035696319,
        "timeout": timedelta(seconds=30),
        "max_bytes": 1024 * 1024,
    }
    values.update(overrides)
    return GenerateInput(**values)


async def run_failing(env: ActivityEnvironment, fn: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await env.run(fn, arg)
    return info.value


async def test_generate_stores_glb_and_sends_the_miner_contract(
    miner: FakeMiner, acts: GenerationActivities, store: LocalArtifactStore
) -> None:
    """Success: multipart fields and seed arrive, the GLB is stored, generation_time > 0."""
    result = await ActivityEnvironment().run(acts.generate, gen_input(miner))

    assert store.files.read_bytes(result.glb_uri) == VALID_GLB
    assert result.size == len(VALID_GLB)
    assert result.generation_time > 0
    assert result.glb_uri.endswith(".glb")
    [received] = miner.received
    assert received["filename"] == "chair.png"
    assert received["content_type"] == "image/png"
    assert received["image"] == PROMPT_PNG
    assert received["seed"] == "3035696319"
    assert received["authorization"] is None


async def test_generate_sends_the_providers_auth_headers(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """Miner calls carry the headers configured for the pod's provider."""
    await ActivityEnvironment().run(acts.generate, gen_input(miner, provider=ProviderName.VERDA))

    assert miner.received[0]["authorization"] == "Bearer generation-token"


async def test_generate_is_idempotent_by_audit_and_assignment(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """A rerun of a finished (audit_id, assignment_id) returns the record without a miner call."""
    env = ActivityEnvironment()
    first = await env.run(acts.generate, gen_input(miner))
    again = await env.run(acts.generate, gen_input(miner))

    assert again == first
    assert miner.requests["generate"] == 1

    other = await env.run(acts.generate, gen_input(miner, assignment_id="chair#1"))
    assert miner.requests["generate"] == 2
    assert other.glb_uri == first.glb_uri  # same bytes, same content address
    assert miner.requests["prompt/chair.png"] == 1  # prompt downloaded once per (round, url)


async def test_generate_heartbeats_while_waiting(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """The activity heartbeats during the call, so Temporal can deliver cancellation."""
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    miner.mode = "slow"

    task = asyncio.create_task(env.run(acts.generate, gen_input(miner)))
    await assert_eventually(lambda: len(beats) >= 3 and miner.requests["generate"] == 1)
    miner.release.set()
    result = await task

    assert result.size == len(VALID_GLB)


async def test_generate_is_cancelled_through_heartbeats(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """Cancelling the activity stops the waiting miner call (no result is recorded)."""
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    miner.mode = "slow"

    task = asyncio.create_task(env.run(acts.generate, gen_input(miner)))
    await assert_eventually(lambda: beats and miner.requests["generate"] == 1, interval=0.01)
    env.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_generate_http_error_is_miner_failed(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """HTTP 500 -> non-retryable MINER_FAILED with the status and a truncated body."""
    miner.mode = "500"
    error = await run_failing(ActivityEnvironment(), acts.generate, gen_input(miner))

    assert error.type == ErrorType.MINER_FAILED
    assert error.non_retryable
    assert "500" in error.message
    assert "CUDA out of memory" in error.message
    assert len(error.message) < 700


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("empty", "empty"),
        ("not_glb", "not a GLB"),
        ("bad_glb", "cannot be loaded"),
        ("huge", "response larger than 1048576 bytes"),
    ],
)
async def test_generate_bad_output(
    miner: FakeMiner,
    acts: GenerationActivities,
    store: LocalArtifactStore,
    mode: str,
    expected: str,
) -> None:
    """v1: empty, non-GLB, unloadable GLB and over-cap bodies -> non-retryable MINER_BAD_OUTPUT."""
    miner.mode = mode
    error = await run_failing(ActivityEnvironment(), acts.generate, gen_input(miner))

    assert error.type == ErrorType.MINER_BAD_OUTPUT
    assert error.non_retryable
    assert expected in error.message
    glbs = list(store.root.rglob("*.glb"))
    assert glbs == []


async def test_generate_slow_miner_is_timeout(miner: FakeMiner, acts: GenerationActivities) -> None:
    """A miner slower than input.timeout -> non-retryable MINER_TIMEOUT."""
    miner.mode = "slow"
    error = await run_failing(
        ActivityEnvironment(), acts.generate, gen_input(miner, timeout=timedelta(seconds=0.3))
    )

    assert error.type == ErrorType.MINER_TIMEOUT
    assert error.non_retryable
    assert error.message == "generation exceeded 0.3s"


async def test_generate_connection_refused_is_miner_failed(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """Nothing listening on the pod URL -> non-retryable MINER_FAILED 'pod unreachable'."""
    pod_url = f"http://127.0.0.1:{free_port()}"
    error = await run_failing(
        ActivityEnvironment(), acts.generate, gen_input(miner, pod_url=pod_url)
    )

    assert error.type == ErrorType.MINER_FAILED
    assert error.non_retryable
    assert error.message.startswith("pod unreachable: ")


@pytest.mark.parametrize("name", ["missing.png", "text.png"])
async def test_generate_prompt_unavailable(
    miner: FakeMiner, acts: GenerationActivities, name: str
) -> None:
    """A prompt that 404s or is not an image -> permanent PROMPT_UNAVAILABLE; no miner call."""
    url = f"{miner.base_url}/prompts/{name}"
    error = await run_failing(
        ActivityEnvironment(), acts.generate, gen_input(miner, prompt_url=url)
    )

    assert error.type == ErrorType.PROMPT_UNAVAILABLE
    assert error.non_retryable
    assert url in error.message
    assert miner.requests["generate"] == 0


async def test_generate_prompt_server_trouble_is_retryable(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """Prompt host answering 503 or refusing connections -> a retryable error."""
    env = ActivityEnvironment()
    for url in [
        f"{miner.base_url}/prompts/down.png",
        f"http://127.0.0.1:{free_port()}/prompts/chair.png",
    ]:
        error = await run_failing(env, acts.generate, gen_input(miner, prompt_url=url))
        assert not error.non_retryable
        assert url in error.message
    assert miner.requests["generate"] == 0


async def test_fetch_artifact_downloads_once(
    miner: FakeMiner, acts: GenerationActivities, store: LocalArtifactStore
) -> None:
    """A submitted GLB is downloaded into the store once; the second call is a cache hit."""
    env = ActivityEnvironment()
    url = f"{miner.base_url}/cdn/sub.glb"
    first = await env.run(acts.fetch_artifact, FetchArtifactInput(url=url, max_bytes=1 << 20))
    second = await env.run(acts.fetch_artifact, FetchArtifactInput(url=url, max_bytes=1 << 20))

    assert first == second
    assert store.files.read_bytes(first.uri) == VALID_GLB
    assert first.size == len(VALID_GLB)
    assert first.uri.endswith(".glb")
    assert miner.requests["cdn/sub.glb"] == 1


async def test_fetch_artifact_failures(miner: FakeMiner, acts: GenerationActivities) -> None:
    """404 and over-cap are permanent SUBMISSION_UNAVAILABLE; 5xx and network are retryable."""
    env = ActivityEnvironment()

    def fetch(url: str, max_bytes: int = 1 << 20) -> FetchArtifactInput:
        return FetchArtifactInput(url=url, max_bytes=max_bytes)

    missing = await run_failing(
        env, acts.fetch_artifact, fetch(f"{miner.base_url}/cdn/missing.glb")
    )
    assert missing.type == ErrorType.SUBMISSION_UNAVAILABLE
    assert missing.non_retryable

    large = await run_failing(env, acts.fetch_artifact, fetch(f"{miner.base_url}/cdn/a.glb", 10))
    assert large.type == ErrorType.SUBMISSION_UNAVAILABLE
    assert large.non_retryable
    assert "larger than 10 bytes" in large.message

    for url in [f"{miner.base_url}/cdn/broken.glb", f"http://127.0.0.1:{free_port()}/x.glb"]:
        transient = await run_failing(env, acts.fetch_artifact, fetch(url))
        assert not transient.non_retryable

    unsupported = await run_failing(env, acts.fetch_artifact, fetch("ftp://example.com/a.glb"))
    assert unsupported.type == ErrorType.INVALID_INPUT


async def test_fetch_artifact_file_urls_only_inside_allowed_roots(
    acts: GenerationActivities, store: LocalArtifactStore, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """file:// URLs are read from the store or configured roots; anything else is refused."""
    env = ActivityEnvironment()
    inside = store.files.put_bytes(VALID_GLB, ".glb")
    result = await env.run(acts.fetch_artifact, FetchArtifactInput(url=inside, max_bytes=1 << 20))
    assert result.uri == inside

    outside = tmp_path / "elsewhere" / "sub.glb"
    outside.parent.mkdir()
    outside.write_bytes(VALID_GLB)
    refused = await run_failing(
        env, acts.fetch_artifact, FetchArtifactInput(url=outside.as_uri(), max_bytes=1 << 20)
    )
    assert refused.type == ErrorType.INVALID_INPUT

    allowed = GenerationActivities(store, http, file_roots=[outside.parent])
    fetched = await env.run(
        allowed.fetch_artifact, FetchArtifactInput(url=outside.as_uri(), max_bytes=1 << 20)
    )
    assert store.files.read_bytes(fetched.uri) == VALID_GLB

    gone = await run_failing(
        env,
        allowed.fetch_artifact,
        FetchArtifactInput(url=(outside.parent / "nope.glb").as_uri(), max_bytes=1 << 20),
    )
    assert gone.type == ErrorType.SUBMISSION_UNAVAILABLE


async def test_fetch_prompt_downloads_once_per_round(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """fetch_prompt stores the image; a second fetch (or the generate after it) is cached."""
    url = f"{miner.base_url}/prompts/chair.png"
    first = await ActivityEnvironment().run(acts.fetch_prompt, FetchPromptInput(round=1, url=url))
    again = await ActivityEnvironment().run(acts.fetch_prompt, FetchPromptInput(round=1, url=url))
    assert first == again and first.size > 0
    assert miner.requests["prompt/chair.png"] == 1


@pytest.mark.parametrize("url", ["", "ftp://host/chair.png", "file:///etc/passwd"])
async def test_fetch_prompt_without_http_url_is_permanent(
    acts: GenerationActivities, url: str
) -> None:
    """A missing or non-http(s) prompt URL fails at once instead of being retried forever."""
    error = await run_failing(
        ActivityEnvironment(), acts.fetch_prompt, FetchPromptInput(round=1, url=url)
    )
    assert error.type == ErrorType.PROMPT_UNAVAILABLE
    assert error.non_retryable


# --- v2 calls (input.download_timeout set): upstream generate.py's timing --------------------


async def test_slow_generation_keeps_its_real_time(
    miner: FakeMiner, acts: GenerationActivities, store: LocalArtifactStore
) -> None:
    """Headers after `timeout` but within timeout+download: the GLB is kept with its real time."""
    miner.mode = "delayed"
    miner.delay = 0.8
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    arg = gen_input(miner, timeout=timedelta(seconds=0.3), download_timeout=timedelta(seconds=3))

    result = await env.run(acts.generate, arg)

    assert store.files.read_bytes(result.glb_uri) == VALID_GLB
    assert 0.8 <= result.generation_time < 3.3
    assert result.generation_time > arg.timeout.total_seconds()
    assert len(beats) >= 3  # heartbeats kept coming while the miner worked


async def test_silent_pod_fails_with_miner_timeout(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """No bytes for timeout+download_timeout -> MINER_TIMEOUT; not cut at `timeout` alone."""
    miner.mode = "slow"
    arg = gen_input(miner, timeout=timedelta(seconds=0.2), download_timeout=timedelta(seconds=0.6))
    started = time.monotonic()
    error = await run_failing(ActivityEnvironment(), acts.generate, arg)
    elapsed = time.monotonic() - started

    assert error.type == ErrorType.MINER_TIMEOUT
    assert error.non_retryable
    assert "sent nothing for 0.8s" in error.message
    assert elapsed >= 0.75  # the read timeout is timeout + download_timeout


async def test_stalled_download_fails_with_miner_timeout(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """Headers in time, then a body that stops for longer than the read timeout -> timeout."""
    miner.mode = "stall_body"
    arg = gen_input(miner, timeout=timedelta(seconds=0.2), download_timeout=timedelta(seconds=0.3))
    error = await run_failing(ActivityEnvironment(), acts.generate, arg)

    assert error.type == ErrorType.MINER_TIMEOUT
    assert error.non_retryable


async def test_prompt_sent_as_upstream_jpeg_part(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """v2: the file part is named prompt.jpg, typed image/jpeg, and holds the prompt unchanged."""
    arg = gen_input(miner, provider=ProviderName.VERDA, download_timeout=timedelta(seconds=30))
    await ActivityEnvironment().run(acts.generate, arg)

    [received] = miner.received
    assert received["filename"] == "prompt.jpg"
    assert received["content_type"] == "image/jpeg"
    assert received["image"] == PROMPT_PNG  # bytes unchanged (PNG), as upstream
    assert received["seed"] == "3035696319"
    assert received["authorization"] == "Bearer generation-token"


@pytest_asyncio.fixture
async def following_acts(store: LocalArtifactStore) -> AsyncIterator[GenerationActivities]:
    """Activities on a client that follows redirects, as the worker's shared one does."""
    async with httpx.AsyncClient(follow_redirects=True) as client:
        yield GenerationActivities(store, client, heartbeat_interval=0.05)


def v2_input(miner: FakeMiner, assignment_id: str, **overrides: Any) -> GenerateInput:
    values: dict[str, Any] = {
        "assignment_id": assignment_id,
        "download_timeout": timedelta(seconds=30),
    }
    return gen_input(miner, **(values | overrides))


async def test_v2_failures_are_miner_failed(
    miner: FakeMiner, following_acts: GenerationActivities
) -> None:
    """v2: an error status, a redirect (not followed) and a refused pod are MINER_FAILED."""
    env = ActivityEnvironment()
    miner.mode = "500"
    error = await run_failing(env, following_acts.generate, v2_input(miner, "chair#500"))
    assert error.type == ErrorType.MINER_FAILED
    assert "HTTP 500" in error.message

    miner.mode = "redirect"
    error = await run_failing(env, following_acts.generate, v2_input(miner, "chair#307"))
    assert error.type == ErrorType.MINER_FAILED
    assert "HTTP 307" in error.message
    assert miner.requests["cdn/moved.glb"] == 0

    pod_url = f"http://127.0.0.1:{free_port()}"
    refused = v2_input(miner, "chair#refused", pod_url=pod_url)
    error = await run_failing(env, following_acts.generate, refused)
    assert error.type == ErrorType.MINER_FAILED
    assert error.message.startswith("pod unreachable: ")


@pytest.mark.parametrize("mode", ["empty", "not_glb", "bad_glb"])
async def test_v2_stores_any_2xx_body_for_the_render_step_to_judge(
    miner: FakeMiner, acts: GenerationActivities, store: LocalArtifactStore, mode: str
) -> None:
    """v2 (upstream): any 2xx body is stored as the GLB, not refused here; the render step then
    fails it with upstream's reason (the prompt keeps its GLB URL, time and size)."""
    miner.mode = mode
    arg = gen_input(miner, download_timeout=timedelta(seconds=30))
    result = await ActivityEnvironment().run(acts.generate, arg)
    assert result.size == len(store.files.read_bytes(result.glb_uri))
    assert result.generation_time >= 0.0


async def test_prefetch_caches_every_prompt_and_reports_the_unfetchable(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """prefetch_prompts caches every prompt once; a 404 or a non-image is reported, not raised."""
    urls = [f"{miner.base_url}/prompts/{name}" for name in ("a.png", "missing.png", "text.png")]
    result = await ActivityEnvironment().run(
        acts.prefetch_prompts, PrefetchPromptsInput(round=1, urls=urls)
    )
    assert sorted(result.unavailable) == sorted(urls[1:])
    again = await ActivityEnvironment().run(
        acts.prefetch_prompts, PrefetchPromptsInput(round=1, urls=urls[:1])
    )
    assert again.unavailable == {}
    assert miner.requests["prompt/a.png"] == 1


async def test_prefetch_retries_when_the_prompt_server_is_down(
    miner: FakeMiner, acts: GenerationActivities
) -> None:
    """A 5xx prompt server is ours to wait for: the activity fails retryably, naming it."""
    urls = [f"{miner.base_url}/prompts/down.png"]
    error = await run_failing(
        ActivityEnvironment(), acts.prefetch_prompts, PrefetchPromptsInput(round=1, urls=urls)
    )
    assert not error.non_retryable
    assert "down.png" in error.message
