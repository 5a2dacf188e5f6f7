"""Reference miner HTTP server: the same API as a real miner image (see `models.miner_api`).

Owns request handling, readiness gating, failure injection, the one-at-a-time lock and the call
log. The "model" itself lives in `miner.mesh`. Run it with `python -m miner --port P`.

Call log (`--call-log`): one JSON object per line, `{"pid", "port", "seed", "image_sha256",
"variant", "status", "at"}` (`at`: epoch seconds), appended with a single `write` on an `O_APPEND`
descriptor (so lines from many pods never interleave) and closed at once. A well-formed
`/generate` request writes a `received` line as soon as it arrives, then `ok` or `failed` when
answered; a malformed one writes one `bad_request` line. Count `received` lines: they survive
the pod being killed mid-request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from miner.mesh import generate_glb
from models.miner_api import (
    GENERATE_PATH,
    GLB_CONTENT_TYPE,
    HEALTH_PATH,
    HEALTH_READY_STATUS,
    PROMPT_IMAGE_FIELD,
    SEED_FIELD,
    STATS_PATH,
    CallLogStatus,
)

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_SEED = 2**64 - 1
DIED_EXIT_CODE = 3
"""Exit status of a miner that died on purpose (`--die-after`)."""


def _die() -> None:
    """End this process at once, as a crashed pod does: no answer, no cleanup."""
    logging.shutdown()
    os._exit(DIED_EXIT_CODE)


@dataclass(frozen=True)
class MinerConfig:
    """Command-line configuration of one reference miner process."""

    port: int
    host: str = "127.0.0.1"
    delay: float = 0.0  # seconds each generation takes
    fail_rate: float = 0.0  # probability of answering 500
    startup: float = 0.0  # seconds after start before /health says ready
    variant: int = 0  # which "model": a different variant gives different meshes
    call_log: Path | None = None
    die_after: int | None = None  # answer this many generations, then die during the next one


@dataclass
class MinerStats:
    """Counters served at `/stats`."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    bad_requests: int = 0
    in_flight: int = 0
    health_checks: int = 0


class BadRequest(ValueError):
    """A `/generate` request with missing or invalid fields (answered 400)."""


@dataclass
class _Prompt:
    image_sha256: str
    seed: int


@dataclass
class MinerServer:
    """One miner: its aiohttp application, readiness clock, lock and counters.

    Owns the request handlers and the call log; does not own the listening socket (`serve`).
    """

    config: MinerConfig
    clock: Callable[[], float] = time.monotonic
    stats: MinerStats = field(default_factory=MinerStats)
    die: Callable[[], None] = _die

    def __post_init__(self) -> None:
        self._started = self.clock()
        self._lock = asyncio.Lock()
        self._request_counter = 0

    def app(self) -> web.Application:
        """The aiohttp application serving the miner API."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get(HEALTH_PATH, self.health)
        app.router.add_post(GENERATE_PATH, self.generate)
        app.router.add_get(STATS_PATH, self.get_stats)
        return app

    def ready(self) -> bool:
        """Whether `startup` seconds have passed since the server was created."""
        return self.clock() - self._started >= self.config.startup

    async def health(self, request: web.Request) -> web.Response:
        """GET /health: 503 while starting up, then 200 `{"status": "ready"}`."""
        self.stats.health_checks += 1
        if not self.ready():
            remaining = self.config.startup - (self.clock() - self._started)
            return web.json_response(
                {"status": "starting", "ready_in_seconds": round(remaining, 3)}, status=503
            )
        return web.json_response({"status": HEALTH_READY_STATUS})

    async def get_stats(self, request: web.Request) -> web.Response:
        """GET /stats: counters and configuration of this process."""
        return web.json_response(
            {
                "pid": os.getpid(),
                "port": self.config.port,
                "variant": self.config.variant,
                "ready": self.ready(),
                "received": self.stats.received,
                "succeeded": self.stats.succeeded,
                "failed": self.stats.failed,
                "bad_requests": self.stats.bad_requests,
                "in_flight": self.stats.in_flight,
                "health_checks": self.stats.health_checks,
            }
        )

    async def generate(self, request: web.Request) -> web.Response:
        """POST /generate: multipart prompt image + seed -> GLB bytes, one request at a time."""
        try:
            prompt = await _parse_prompt(request)
        except BadRequest as e:
            self.stats.bad_requests += 1
            await self._log_call(None, CallLogStatus.BAD_REQUEST)
            return web.json_response({"error": str(e)}, status=400)

        self.stats.received += 1
        self._request_counter += 1
        counter = self._request_counter
        await self._log_call(prompt, CallLogStatus.RECEIVED)
        self.stats.in_flight += 1
        try:
            async with self._lock:
                answered = self.stats.succeeded + self.stats.failed
                if self.config.die_after is not None and answered >= self.config.die_after:
                    # A pod that dies mid-run: half-way through this generation, no answer.
                    logger.warning("dying after %d generations (--die-after)", answered)
                    await asyncio.sleep(self.config.delay / 2)
                    self.die()
                # The whole generation takes `delay` (the mesh is built within it, not after).
                started = time.monotonic()
                glb = await asyncio.to_thread(
                    generate_glb, prompt.image_sha256, prompt.seed, self.config.variant
                )
                await asyncio.sleep(max(0.0, self.config.delay - (time.monotonic() - started)))
                if self._should_fail(prompt, counter):
                    self.stats.failed += 1
                    await self._log_call(prompt, CallLogStatus.FAILED)
                    return web.json_response({"error": "injected generation failure"}, status=500)
        finally:
            self.stats.in_flight -= 1
        self.stats.succeeded += 1
        await self._log_call(prompt, CallLogStatus.OK)
        return web.Response(body=glb, content_type=GLB_CONTENT_TYPE)

    def _should_fail(self, prompt: _Prompt, counter: int) -> bool:
        if self.config.fail_rate <= 0:
            return False
        # Seeded from the inputs and this process's request count: reruns are reproducible.
        key = f"{prompt.image_sha256}:{prompt.seed}:{self.config.variant}:{counter}"
        return random.Random(key).random() < self.config.fail_rate

    async def _log_call(self, prompt: _Prompt | None, status: CallLogStatus) -> None:
        path = self.config.call_log
        if path is None:
            return
        line = {
            "pid": os.getpid(),
            "port": self.config.port,
            "seed": prompt.seed if prompt else None,
            "image_sha256": prompt.image_sha256 if prompt else None,
            "variant": self.config.variant,
            "status": str(status),
            "at": time.time(),
        }
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        await asyncio.to_thread(_append, path, data)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def _parse_prompt(request: web.Request) -> _Prompt:
    if not request.content_type.startswith("multipart/"):
        raise BadRequest(
            f"expected a multipart/form-data body with fields '{PROMPT_IMAGE_FIELD}' (file) and "
            f"'{SEED_FIELD}', got content type {request.content_type!r}"
        )
    try:
        form = await request.post()
    except ValueError as e:
        raise BadRequest(f"unreadable multipart body: {e}") from e
    image = form.get(PROMPT_IMAGE_FIELD)
    if image is None:
        raise BadRequest(f"missing file field '{PROMPT_IMAGE_FIELD}'")
    if not isinstance(image, web.FileField):
        raise BadRequest(f"field '{PROMPT_IMAGE_FIELD}' must be a file upload, not a plain value")
    image_bytes = await asyncio.to_thread(image.file.read)
    if not image_bytes:
        raise BadRequest(f"file field '{PROMPT_IMAGE_FIELD}' is empty")
    raw_seed = form.get(SEED_FIELD)
    if raw_seed is None:
        raise BadRequest(f"missing form field '{SEED_FIELD}'")
    if not isinstance(raw_seed, str):
        raise BadRequest(f"form field '{SEED_FIELD}' must be a plain value, not a file")
    try:
        seed = int(raw_seed.strip())
    except ValueError:
        raise BadRequest(
            f"form field '{SEED_FIELD}' must be a decimal integer, got {raw_seed[:40]!r}"
        ) from None
    if not 0 <= seed <= MAX_SEED:
        raise BadRequest(f"form field '{SEED_FIELD}' must be in 0..{MAX_SEED}, got {seed}")
    return _Prompt(image_sha256=hashlib.sha256(image_bytes).hexdigest(), seed=seed)


async def serve(config: MinerConfig) -> None:
    """Serve the miner API until SIGTERM or SIGINT, then shut down cleanly."""
    server = MinerServer(config)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    logger.info(
        "reference miner listening on %s:%s (pid %s)",
        config.host,
        config.port,
        os.getpid(),
        extra={"variant": config.variant, "startup": config.startup, "delay": config.delay},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("reference miner on port %s shutting down", config.port)
        await runner.cleanup()
