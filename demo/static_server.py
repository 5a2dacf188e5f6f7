"""A loopback HTTP file server for the demo's prompt images and submitted GLBs (in a thread)."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not worth a line each in the demo's output."""


class LoopbackServer:
    """A `ThreadingHTTPServer` on loopback, served from a daemon thread while in a `with` block
    (the demo's and tests' stand-ins for the web: static files, the GitHub API)."""

    def __init__(self, handler: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """http://host:port, without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class StaticServer(LoopbackServer):
    """Serves `root` on http://127.0.0.1:<free port>/ until closed."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(functools.partial(_QuietHandler, directory=str(root)), host, port)
