"""Serves the embedded store's published copies (`ARTIFACTS_DIR/public`) over HTTP on loopback,
so generated.json holds http URLs that answer even without an S3 store.

Owns one aiohttp site in the worker's event loop, read-only, files only (no listing). A second
worker on the same host finds the port taken and leaves the serving to the first (both share
ARTIFACTS_DIR on one host).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

logger = logging.getLogger(__name__)


@dataclass
class PublicServer:
    """A running file server and the base URL it answers on."""

    url: str
    runner: web.AppRunner | None

    async def close(self) -> None:
        """Stop serving."""
        if self.runner is not None:
            await self.runner.cleanup()


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this host's loopback interface (what the worker may serve)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve_public(root: Path, url: str) -> PublicServer:
    """Serve `root` at `url` (a loopback http URL; port 0 picks a free port).

    Returns the server with the URL it really answers on. When the port is already taken
    (another worker on this host serves the same ARTIFACTS_DIR), returns `url` with no server.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    app = web.Application()
    app.router.add_static(parts.path.rstrip("/") + "/", root, show_index=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, parts.port or 80)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        if e.errno != errno.EADDRINUSE:
            raise
        logger.warning(
            "LOCAL_ARTIFACTS_URL %s: port in use, assuming another worker on this host serves "
            "ARTIFACTS_DIR/public there",
            url,
        )
        return PublicServer(url=url, runner=None)
    port = runner.addresses[0][1]
    netloc = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    real = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    logger.info("serving published artifacts %s at %s", root, real)
    return PublicServer(url=real, runner=runner)
