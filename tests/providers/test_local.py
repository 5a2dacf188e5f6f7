"""LocalProvider: real reference-miner subprocesses, a registry that survives worker restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from models.audit import ProviderName
from providers.base import (
    ContainerNotFound,
    ContainerState,
    GpuProvider,
    ProviderRejected,
    pod_env,
)
from providers.local import LocalProvider, MinerOptions, parse_image
from tests.providers.local_helpers import (
    PROJECT_ROOT,
    local_provider,
    pid_alive,
    wait_healthy,
    wait_until,
)

IMAGE = "local/reference-miner"


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[LocalProvider]:
    async with local_provider(tmp_path / "pods", call_log=tmp_path / "calls.jsonl") as p:
        yield p


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def test_parse_image_reads_every_option() -> None:
    """All four options parse; none given means defaults."""
    assert parse_image(IMAGE) == MinerOptions()
    options = parse_image(f"{IMAGE}?delay=0.2&fail_rate=0.1&variant=3&startup=1.5")
    assert options == MinerOptions(delay=0.2, fail_rate=0.1, variant=3, startup=1.5)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("europe-west3-docker.pkg.dev/gen/active/abc:1234567-mesh-4", "only runs"),
        (f"{IMAGE}:latest", "only runs"),
        (f"{IMAGE}?speed=2", "unknown option(s) speed"),
        (f"{IMAGE}?delay=fast", "invalid options: delay"),
        (f"{IMAGE}?fail_rate=2", "invalid options: fail_rate"),
        (f"{IMAGE}?variant=-1", "invalid options: variant"),
        (f"{IMAGE}?delay=1&delay=2", "repeats option 'delay'"),
        (f"{IMAGE}?delay", "malformed query"),
    ],
)
def test_bad_images_are_rejected_naming_the_image(image: str, message: str) -> None:
    """Anything but a well-formed local/reference-miner reference is ProviderRejected."""
    with pytest.raises(ProviderRejected) as e:
        parse_image(image)
    assert message in str(e.value)
    assert repr(image) in str(e.value)


async def test_deploy_get_health_list_delete(
    provider: LocalProvider, http: httpx.AsyncClient
) -> None:
    """A deployed pod is RUNNING with a URL that answers /health 200, listed, then deleted."""
    assert isinstance(provider, GpuProvider)
    info = await provider.deploy("miner-01-abc-0-0", IMAGE)
    assert info.provider is ProviderName.LOCAL
    assert info.state is ContainerState.RUNNING
    assert info.url is not None and info.url.startswith("http://127.0.0.1:")
    assert (await provider.get("miner-01-abc-0-0")) == info
    await wait_healthy(http, info.url)
    await provider.deploy("other-pod", IMAGE)
    assert [c.name for c in await provider.list("miner-01-")] == ["miner-01-abc-0-0"]
    assert provider.auth_headers() == {}

    await provider.delete("miner-01-abc-0-0")
    assert not pid_alive(int(info.container_id))
    with pytest.raises(ContainerNotFound):
        await provider.get("miner-01-abc-0-0")
    with pytest.raises(ContainerNotFound):
        await provider.delete("miner-01-abc-0-0")
    assert [c.name for c in await provider.list("")] == ["other-pod"]


async def test_deploy_twice_returns_the_same_process(provider: LocalProvider) -> None:
    """deploy is idempotent by name: same pid, one process, also under concurrent calls."""
    first = await provider.deploy("pod-a", IMAGE)
    again = await provider.deploy("pod-a", IMAGE)
    assert again.container_id == first.container_id
    racing = await asyncio.gather(*(provider.deploy("pod-b", IMAGE) for _ in range(4)))
    assert len({info.container_id for info in racing}) == 1
    assert len(await provider.list("pod-")) == 2


async def test_restarted_worker_finds_the_pod_it_made(
    provider: LocalProvider, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """A worker process killed with -9 after deploying: the next one reuses its pod."""
    script = (
        "import asyncio, os, signal, sys; from pathlib import Path\n"
        "from providers.local import LocalProvider\n"
        "info = asyncio.run(LocalProvider(Path(sys.argv[1])).deploy('pod-r', sys.argv[2]))\n"
        "print(info.container_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    worker = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pods"), IMAGE],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    pid = int(worker.stdout.strip())
    assert pid_alive(pid)

    found = await provider.get("pod-r")
    assert found.container_id == str(pid)
    assert found.state is ContainerState.RUNNING
    assert (await provider.deploy("pod-r", IMAGE)).container_id == str(pid)
    assert found.url is not None
    await wait_healthy(http, found.url)
    await provider.delete("pod-r")
    assert not pid_alive(pid)


async def test_second_instance_shares_the_registry(provider: LocalProvider, tmp_path: Path) -> None:
    """Another LocalProvider on the same state_dir sees, reuses and can delete the pod."""
    info = await provider.deploy("pod-s", IMAGE)
    other = LocalProvider(tmp_path / "pods")
    assert (await other.get("pod-s")).container_id == info.container_id
    assert (await other.deploy("pod-s", IMAGE)).container_id == info.container_id
    await other.delete("pod-s")
    with pytest.raises(ContainerNotFound):
        await provider.get("pod-s")


async def test_killed_process_is_failed_and_redeploy_replaces_it(provider: LocalProvider) -> None:
    """A pod whose process died reports FAILED (no URL); deploy starts a fresh one."""
    info = await provider.deploy("pod-k", IMAGE)
    pid = int(info.container_id)
    os.kill(pid, signal.SIGKILL)

    async def failed() -> bool:
        return (await provider.get("pod-k")).state is ContainerState.FAILED

    await wait_until(failed, "the killed pod to report FAILED")
    assert (await provider.get("pod-k")).url is None
    assert [c.state for c in await provider.list("pod-k")] == [ContainerState.FAILED]
    fresh = await provider.deploy("pod-k", IMAGE)
    assert fresh.container_id != info.container_id
    assert fresh.state is ContainerState.RUNNING
    await provider.delete("pod-k")


async def test_options_and_call_log_reach_the_miner(
    provider: LocalProvider, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """Image options become miner flags (variant shows in /stats); --call-log is passed."""
    info = await provider.deploy("pod-o", f"{IMAGE}?variant=2&delay=0&fail_rate=0")
    assert info.url is not None
    await wait_healthy(http, info.url)
    stats = (await http.get(f"{info.url}/stats")).json()
    assert stats["variant"] == 2
    assert stats["pid"] == int(info.container_id)
    registry = json.loads((tmp_path / "pods" / "pods.json").read_text())
    assert registry["pods"]["pod-o"]["image"] == f"{IMAGE}?variant=2&delay=0&fail_rate=0"
    log = (tmp_path / "pods" / "logs" / "pod-o.log").read_text()
    assert "listening" in log


async def test_bad_image_starts_nothing(provider: LocalProvider, tmp_path: Path) -> None:
    """A rejected image leaves no pod behind."""
    with pytest.raises(ProviderRejected, match="unknown option"):
        await provider.deploy("pod-x", f"{IMAGE}?gpu=h200")
    assert await provider.list("") == []


async def test_delete_all_kills_everything(tmp_path: Path) -> None:
    """delete_all (test teardown) kills every registered pod; aclose alone kills none."""
    async with local_provider(tmp_path / "pods"):  # cleans up even if an assert fails
        provider = LocalProvider(tmp_path / "pods")
        pids = [int((await provider.deploy(f"pod-{i}", IMAGE)).container_id) for i in range(2)]
        await provider.aclose()
        assert all(pid_alive(pid) for pid in pids)
        assert await provider.delete_all() == ["pod-0", "pod-1"]
        assert not any(pid_alive(pid) for pid in pids)
        assert await provider.list("") == []


async def test_deploy_with_another_image_replaces_the_pod(provider: LocalProvider) -> None:
    """A pod of the same name running another image (an earlier audit's) is never reused."""
    first = await provider.deploy("pod-a", IMAGE)
    other = await provider.deploy("pod-a", f"{IMAGE}?variant=1")
    assert other.container_id != first.container_id
    assert not pid_alive(int(first.container_id))
    assert [c.name for c in await provider.list("pod-")] == ["pod-a"]


def _process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(): value.decode() for key, _, value in pairs}


async def test_miner_process_gets_the_hf_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_TOKEN from the provider's env is in the miner's environment; without one, none is."""
    monkeypatch.setenv("HF_TOKEN", "inherited-from-the-worker")
    async with local_provider(tmp_path / "pods") as plain:
        with_token = LocalProvider(tmp_path / "pods", env=pod_env(SecretStr("hf_local789")))
        info = await with_token.deploy("pod-h", IMAGE)
        assert _process_env(int(info.container_id))["HF_TOKEN"] == "hf_local789"
        bare = await plain.deploy("pod-n", IMAGE)
        assert "HF_TOKEN" not in _process_env(int(bare.container_id))


async def test_miner_of_a_deploy_killed_before_registering_is_found(
    provider: LocalProvider,
) -> None:
    """A worker killed between spawning a miner and registering it: list (the sweep) finds the
    miner, a retried deploy adopts it (no second miner), delete kills it."""
    stray = provider._spawn("miner-01-abc-0-k1", IMAGE, parse_image(IMAGE))  # never registered
    assert pid_alive(stray.pid)
    listed = await provider.list("miner-01-abc-")
    assert [(c.name, c.container_id) for c in listed] == [("miner-01-abc-0-k1", str(stray.pid))]
    adopted = await provider.deploy("miner-01-abc-0-k1", IMAGE)
    assert adopted.container_id == str(stray.pid)
    await provider.delete("miner-01-abc-0-k1")
    assert not pid_alive(stray.pid)
    assert await provider.list("") == []

    again = provider._spawn("miner-01-abc-1-k1", IMAGE, parse_image(IMAGE))
    await provider.delete("miner-01-abc-1-k1")  # delete without any registry entry
    assert not pid_alive(again.pid)


DEPLOY_FOREVER = """
import asyncio, sys
from pathlib import Path
from providers.local import LocalProvider

async def main() -> None:
    provider = LocalProvider(Path(sys.argv[1]))
    for i in range(1000):
        await provider.deploy(f"miner-01-kill-{i}", "local/reference-miner")

asyncio.run(main())
"""


async def test_deployer_killed_many_times_leaves_no_miner_after_the_sweep(
    tmp_path: Path,
) -> None:
    """kill -9 of the deploying process at many points of its deploys, then one sweep by prefix
    (what the audit's sweep does): no miner process of the state dir is left."""
    pods = tmp_path / "pods"
    async with local_provider(pods) as sweeper:  # kills everything on the way out, too
        for kill_after in [0.15 + 0.05 * i for i in range(12)]:
            deployer = subprocess.Popen(
                [sys.executable, "-c", DEPLOY_FOREVER, str(pods)],
                cwd=PROJECT_ROOT,
                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            )
            await asyncio.sleep(kill_after)
            deployer.send_signal(signal.SIGKILL)
            deployer.wait()
        for pod in await sweeper.list("miner-01-kill-"):
            await sweeper.delete(pod.name)
        assert _miners_of(pods) == []


def _miners_of(state_dir: Path) -> list[int]:
    """Pids of live processes whose environment names `state_dir` as their pods dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = _process_env(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if env.get("LOCAL_PODS_DIR") == str(state_dir.resolve()) and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
    return pids


async def test_slowdown_makes_one_pod_a_straggler(tmp_path: Path) -> None:
    """LOCAL_POD_SLOWDOWN: the pod with that upstream index (a run key after it or not) runs its
    miner with the delay multiplied; the others keep the image's delay."""
    async with local_provider(tmp_path / "pods") as cleanup:
        provider = LocalProvider(tmp_path / "pods", slowdown={1: 3.0})
        slow = await provider.deploy("miner-01-abc-1-0a1b2c3d", f"{IMAGE}?delay=0.5")
        fast = await provider.deploy("miner-01-abc-0-0a1b2c3d", f"{IMAGE}?delay=0.5")

        def delay_of(pid: str) -> float:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            return float(argv[argv.index("--delay") + 1])

        assert delay_of(slow.container_id or "") == 1.5
        assert delay_of(fast.container_id or "") == 0.5
        await cleanup.delete_all()


async def test_dies_after_reaches_only_that_pod(tmp_path: Path) -> None:
    """LOCAL_POD_DIES_AFTER: the pod with that upstream index gets `--die-after N`; the others,
    and its replacement (the next index), run a miner that never dies."""
    async with local_provider(tmp_path / "pods") as cleanup:
        provider = LocalProvider(tmp_path / "pods", dies_after={1: 4})
        dying = await provider.deploy("miner-01-abc-1-0a1b2c3d", f"{IMAGE}?delay=0")
        healthy = await provider.deploy("miner-01-abc-2-0a1b2c3d", f"{IMAGE}?delay=0")

        def argv_of(pid: str) -> list[str]:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")

        dying_argv = argv_of(dying.container_id or "")
        assert dying_argv[dying_argv.index("--die-after") + 1] == "4"
        assert "--die-after" not in argv_of(healthy.container_id or "")
        await cleanup.delete_all()
