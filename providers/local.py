"""The `local` GPU provider: reference-miner subprocesses on loopback ports, no cloud account.

Owns the pod registry file (`pods.json` in `state_dir`) and the miner processes it lists. Pods
outlive the worker that made them: a new `LocalProvider` on the same `state_dir` (a restarted
worker, even after `kill -9`) finds the pods already running instead of starting second copies.
The registry is read-modify-written under an `fcntl.flock` and replaced atomically.

Image references (the only images this provider runs)::

    local/reference-miner[?delay=S&fail_rate=F&variant=N&startup=S]

`delay` (seconds per generation), `fail_rate` (0..1, share of HTTP 500s), `variant` (integer;
non-zero runs a "different model") and `startup` (seconds before /health is 200) are optional.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atomic import write_atomic
from models.audit import ProviderName
from models.constants import unkeyed_pod_name
from providers.base import (
    HF_TOKEN_ENV,
    ContainerInfo,
    ContainerNotFound,
    ContainerState,
    PodEnv,
    ProviderRejected,
)

logger = logging.getLogger(__name__)

LOCAL_IMAGE = "local/reference-miner"
REGISTRY_FILE = "pods.json"
LOCK_FILE = "pods.lock"
LOG_DIR = "logs"
TERM_GRACE_SECONDS = 3.0
_REAP_POLL_SECONDS = 0.02
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND
_PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where `python -m miner` is importable
POD_NAME_ENV = "LOCAL_POD_NAME"
POD_IMAGE_ENV = "LOCAL_POD_IMAGE"
PODS_DIR_ENV = "LOCAL_PODS_DIR"
"""Set in every miner's environment: a process spawned by a worker killed before it could
register it is still found (in /proc) by `list`, `delete` and a retried `deploy`."""


class MinerOptions(BaseModel):
    """Reference-miner options parsed from a `local/reference-miner?...` image reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    delay: float = Field(0.0, ge=0, description="seconds each generation takes")
    fail_rate: float = Field(0.0, ge=0, le=1, description="probability of HTTP 500")
    variant: int = Field(0, ge=0, description="non-zero: a different model (other meshes)")
    startup: float = Field(0.0, ge=0, description="seconds before /health answers 200")


def parse_image(image: str) -> MinerOptions:
    """Parse a local image reference.

    Args:
        image: `local/reference-miner` optionally followed by `?key=value&...`.

    Returns:
        The miner options it names.

    Raises:
        ProviderRejected: Not a local reference-miner image, or an unknown/invalid option.
    """
    base, _, query = image.partition("?")
    if base != LOCAL_IMAGE:
        raise ProviderRejected(
            f"local provider cannot run image {image!r}: it only runs "
            f"'{LOCAL_IMAGE}[?delay=S&fail_rate=F&variant=N&startup=S]'"
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as e:
        raise ProviderRejected(f"local image {image!r} has a malformed query: {e}") from e
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise ProviderRejected(f"local image {image!r} repeats option {key!r}")
        values[key] = value
    unknown = sorted(set(values) - set(MinerOptions.model_fields))
    if unknown:
        known = ", ".join(MinerOptions.model_fields)
        raise ProviderRejected(
            f"local image {image!r} has unknown option(s) {', '.join(unknown)} (known: {known})"
        )
    try:
        return MinerOptions.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ProviderRejected(f"local image {image!r} has invalid options: {problems}") from e


class _PodRecord(BaseModel):
    """One registry entry: enough to find, probe and kill a miner process."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    port: int
    image: str
    start_ticks: int  # /proc/<pid>/stat starttime: tells our process from a reused pid


class _Registry(BaseModel):
    pods: dict[str, _PodRecord] = Field(default_factory=dict)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our own child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _alive(record: _PodRecord) -> bool:
    stat = _proc_stat(record.pid)
    if stat is None or stat[1] != record.start_ticks:
        return False  # gone, or the pid now belongs to another process
    if stat[0] in ("Z", "X", "x"):
        _reap(record.pid)
        return False
    return True


def _stray_processes(state_dir: Path) -> list[_PodRecord]:
    """Live miner processes of `state_dir` found in /proc, registered or not."""
    wanted = str(state_dir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        env = dict(item.decode(errors="replace").partition("=")[::2] for item in environ if item)
        if env.get(PODS_DIR_ENV) != wanted or POD_NAME_ENV not in env:
            continue
        args = [a.decode(errors="replace") for a in argv]
        port = int(args[args.index("--port") + 1]) if "--port" in args[:-1] else 0
        stat = _proc_stat(int(entry.name))
        if stat is None:
            continue
        record = _PodRecord(
            name=env[POD_NAME_ENV],
            pid=int(entry.name),
            port=port,
            image=env.get(POD_IMAGE_ENV, ""),
            start_ticks=stat[1],
        )
        if _alive(record):
            found.append(record)
    return found


def _pod_index(name: str) -> int:
    """Upstream's pod index i of `miner-NN-hk-i` (a run key after it dropped); -1 if none."""
    last = unkeyed_pod_name(name).rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else -1


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalProvider:
    """GpuProvider running the reference miner (`python -m miner`) as local subprocesses.

    Owns the registry and the processes in `state_dir`; `aclose` leaves pods running (they must
    survive a worker restart), `delete_all` kills them (test teardown). Health is probed by the
    activity, not here: `get` reports RUNNING as soon as the process exists.
    """

    name: ProviderName = ProviderName.LOCAL

    def __init__(
        self,
        state_dir: Path,
        call_log: Path | None = None,
        host: str = "127.0.0.1",
        env: PodEnv | None = None,
        images: dict[str, str] | None = None,
        slowdown: dict[int, float] | None = None,
        dies_after: dict[int, int] | None = None,
    ) -> None:
        """Create a provider over `state_dir` (created if missing).

        Args:
            state_dir: Registry, lock and per-pod logs live here; share it across restarts.
            call_log: Passed to every miner as `--call-log` (JSON line per generate call).
            host: Loopback address the miners bind.
            env: Pod environment (`providers.base.pod_env`), set in every miner process's
                environment; HF_TOKEN inherited from the worker is dropped unless it is here.
            images: LOCAL_IMAGES: docker image name -> `local/reference-miner?...` it stands for
                (the demo "pulls" the images its build tracker names this way).
            slowdown: LOCAL_POD_SLOWDOWN: pod index (upstream's i in `miner-NN-hk-i[-key]`) ->
                factor on its miner's delay: a straggler for benchmarks.
            dies_after: LOCAL_POD_DIES_AFTER: pod index -> generations its miner answers before
                it exits half-way through the next (`--die-after`): a pod dying mid-run.
        """
        self._state_dir = state_dir
        self._call_log = call_log
        self._host = host
        self._env = dict(env or {})
        self._images = dict(images or {})
        self._slowdown = dict(slowdown or {})
        self._dies_after = dict(dies_after or {})

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        """Start a miner for `name`, or return the live one already registered under it."""
        options = parse_image(self._images.get(image, image))
        return await asyncio.to_thread(self._deploy_sync, name, image, options)

    async def get(self, name: str) -> ContainerInfo:
        """RUNNING (with url) while the process lives, FAILED once it died."""
        return await asyncio.to_thread(self._get_sync, name)

    async def delete(self, name: str) -> None:
        """SIGTERM the pod's process group, SIGKILL after a grace period, forget it."""
        await asyncio.to_thread(self._delete_sync, name)

    async def list(self, prefix: str) -> list[ContainerInfo]:
        """Registered pods whose name starts with `prefix`, sorted by name."""
        return await asyncio.to_thread(self._list_sync, prefix)

    def auth_headers(self) -> dict[str, str]:
        """Local miners need no credentials."""
        return {}

    async def aclose(self) -> None:
        """Nothing to release: pods keep running for the next worker (see `delete_all`)."""

    async def delete_all(self) -> builtins.list[str]:
        """Kill and forget every pod, unregistered strays included (test teardown); returns
        their names."""
        names = sorted(info.name for info in await self.list(""))
        for pod in names:
            with contextlib.suppress(ContainerNotFound):
                await self.delete(pod)
        return names

    # --- blocking helpers (run in a thread) ------------------------------------------------

    def _info(self, record: _PodRecord) -> ContainerInfo:
        alive = _alive(record)
        return ContainerInfo(
            name=record.name,
            provider=ProviderName.LOCAL,
            container_id=str(record.pid),
            state=ContainerState.RUNNING if alive else ContainerState.FAILED,
            url=f"http://{self._host}:{record.port}" if alive else None,
        )

    def _get_sync(self, name: str) -> ContainerInfo:
        record = self._read().pods.get(name)
        if record is None:
            raise ContainerNotFound(f"local pod {name!r} does not exist")
        return self._info(record)

    def _list_sync(self, prefix: str) -> builtins.list[ContainerInfo]:
        """Registered pods, and miners of unregistered ones (a deploy killed half-way)."""
        pods = dict(self._read().pods)
        for stray in _stray_processes(self._state_dir):
            pods.setdefault(stray.name, stray)
        return [self._info(pods[pod]) for pod in sorted(pods) if pod.startswith(prefix)]

    def _deploy_sync(self, name: str, image: str, options: MinerOptions) -> ContainerInfo:
        with self._locked():
            registry = self._read()
            existing = registry.pods.get(name)
            if existing is None or not _alive(existing):
                # A miner spawned for this name by a deploy killed before registering it.
                strays = [s for s in _stray_processes(self._state_dir) if s.name == name]
                existing = strays[0] if strays else existing
            if existing is not None and _alive(existing):
                if existing.image == image:
                    logger.info("local pod %s already running (pid %s)", name, existing.pid)
                    if registry.pods.get(name) != existing:
                        registry.pods[name] = existing
                        self._write(registry)
                    return self._info(existing)
                # Same name, other image (a leftover of an earlier audit): never reuse it.
                logger.warning("local pod %s runs %s, replacing it", name, existing.image)
                self._kill(existing)
            record = self._spawn(name, image, options)
            registry.pods[name] = record
            self._write(registry)
        logger.info("local pod %s started (pid %s, port %s)", name, record.pid, record.port)
        return self._info(record)

    def _spawn(self, name: str, image: str, options: MinerOptions) -> _PodRecord:
        port = _free_port(self._host)
        argv = [
            sys.executable,
            "-m",
            "miner",
            "--port",
            str(port),
            "--host",
            self._host,
            "--delay",
            repr(options.delay * self._slowdown.get(_pod_index(name), 1.0)),
            "--fail-rate",
            repr(options.fail_rate),
            "--startup",
            repr(options.startup),
            "--variant",
            str(options.variant),
        ]
        if self._call_log is not None:
            argv += ["--call-log", str(self._call_log.resolve())]
        if _pod_index(name) in self._dies_after:
            argv += ["--die-after", str(self._dies_after[_pod_index(name)])]
        env = dict(os.environ)
        env.pop(HF_TOKEN_ENV, None)  # the pod gets the configured token or none, as on a cloud
        env.update({key: value.get_secret_value() for key, value in self._env.items()})
        env.update(
            {
                POD_NAME_ENV: name,
                POD_IMAGE_ENV: image,
                PODS_DIR_ENV: str(self._state_dir.resolve()),
            }
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        log_dir = self._state_dir / LOG_DIR
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        # posix_spawn: no Popen object to warn about on GC; setsid makes pid == process group.
        pid = os.posix_spawn(
            sys.executable,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, str(log_path), _LOG_FLAGS, 0o644),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        stat = _proc_stat(pid)
        if stat is None:  # exited (or was reaped by nobody) before we could look: record it dead
            return _PodRecord(name=name, pid=pid, port=port, image=image, start_ticks=-1)
        return _PodRecord(name=name, pid=pid, port=port, image=image, start_ticks=stat[1])

    def _delete_sync(self, name: str) -> None:
        with self._locked():
            registry = self._read()
            record = registry.pods.get(name)
            strays = [
                s
                for s in _stray_processes(self._state_dir)
                if s.name == name and (record is None or s.pid != record.pid)
            ]
            if record is None and not strays:
                raise ContainerNotFound(f"local pod {name!r} does not exist")
            for process in [*([record] if record is not None else []), *strays]:
                self._kill(process)
            if record is not None:
                del registry.pods[name]
                self._write(registry)
        logger.info(
            "local pod %s deleted (pids %s)",
            name,
            [p.pid for p in strays] + ([record.pid] if record is not None else []),
        )

    def _kill(self, record: _PodRecord) -> None:
        if not _alive(record):
            return
        for sig, grace in ((signal.SIGTERM, TERM_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not _alive(record):
                    return
                time.sleep(_REAP_POLL_SECONDS)
        logger.warning("local pod %s (pid %s) survived SIGKILL", record.name, record.pid)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._state_dir.mkdir(parents=True, exist_ok=True)
        with (self._state_dir / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> _Registry:
        path = self._state_dir / REGISTRY_FILE
        try:
            return _Registry.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return _Registry()

    def _write(self, registry: _Registry) -> None:
        data = json.dumps(registry.model_dump(mode="json"), indent=2, sort_keys=True)
        write_atomic(self._state_dir / REGISTRY_FILE, data.encode())
