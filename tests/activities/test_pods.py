"""PodActivities under ActivityEnvironment: the local provider end to end, a fake for errors."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.pods import PodActivities
from models.audit import (
    AwaitPodHealthyInput,
    DeletePodInput,
    DeployPodInput,
    PodHealthInput,
    PodRef,
    ProviderName,
    SweepPodsInput,
)
from models.errors import ErrorType
from providers.base import (
    ContainerInfo,
    ContainerNotFound,
    ContainerState,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.local import LocalProvider
from tests.providers.local_helpers import local_provider, pid_alive, wait_until

LOCAL = ProviderName.LOCAL
IMAGE = "local/reference-miner"
POLL = timedelta(milliseconds=50)
WARMUP = timedelta(seconds=30)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalProvider]:
    async with local_provider(tmp_path / "pods") as provider:
        yield provider


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def pods(local: LocalProvider, http: httpx.AsyncClient) -> PodActivities:
    return PodActivities({LOCAL: local}, http, poll_interval=POLL)


class Heartbeats:
    def __init__(self) -> None:
        self.details: list[Any] = []

    def __call__(self, *details: Any) -> None:
        self.details.append(details)


def environment() -> tuple[ActivityEnvironment, Heartbeats]:
    env = ActivityEnvironment()
    beats = Heartbeats()
    env.on_heartbeat = beats
    return env, beats


async def deploy(pods: PodActivities, name: str, image: str = IMAGE) -> PodRef:
    env, _ = environment()
    ref: PodRef = await env.run(
        pods.deploy_pod, DeployPodInput(name=name, provider=LOCAL, image=image)
    )
    return ref


def assert_app_error(
    error: BaseException, error_type: ErrorType, retryable: bool
) -> ApplicationError:
    assert isinstance(error, ApplicationError)
    assert error.type == error_type
    assert error.non_retryable is (not retryable)
    return error


async def test_deploy_await_probe_delete(pods: PodActivities, local: LocalProvider) -> None:
    """deploy -> await healthy -> probe True -> delete -> probe False; delete again is fine."""
    ref = await deploy(pods, "miner-01-abc-0-0")
    assert ref.name == "miner-01-abc-0-0"
    assert ref.provider is LOCAL
    assert ref.container_id is not None
    env, beats = environment()
    healthy = await env.run(pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP))
    assert healthy.url is not None and healthy.url.startswith("http://127.0.0.1:")
    assert healthy.container_id == ref.container_id
    assert beats.details  # heartbeated while polling
    assert await env.run(pods.check_pod_health, PodHealthInput(pod=healthy)) is True
    # without a URL the probe asks the provider first
    assert await env.run(
        pods.check_pod_health, PodHealthInput(pod=ref.model_copy(update={"url": None}))
    )

    await env.run(pods.delete_pod, DeletePodInput(pod=healthy))
    assert not pid_alive(int(ref.container_id))
    assert await env.run(pods.check_pod_health, PodHealthInput(pod=healthy)) is False
    assert (
        await env.run(
            pods.check_pod_health, PodHealthInput(pod=ref.model_copy(update={"url": None}))
        )
        is False
    )
    await env.run(pods.delete_pod, DeletePodInput(pod=healthy))  # already gone: success


async def test_deploy_is_idempotent(pods: PodActivities) -> None:
    """A retried deploy_pod returns the pod the first attempt made."""
    first = await deploy(pods, "pod-i")
    again = await deploy(pods, "pod-i")
    assert again.container_id == first.container_id


async def test_startup_delay_is_waited_out(local: LocalProvider, http: httpx.AsyncClient) -> None:
    """A miner that answers 503 for a while is polled until it turns healthy; heartbeats come
    from the shared background helper, between polls and during slow calls alike."""
    pods = PodActivities(
        {LOCAL: local}, http, poll_interval=POLL, heartbeat_interval=timedelta(seconds=0.05)
    )
    ref = await deploy(pods, "pod-slow", f"{IMAGE}?startup=1")
    env, beats = environment()
    healthy = await env.run(pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP))
    assert healthy.url is not None
    assert len(beats.details) >= 10  # ~1 s of 503s at a 0.05 s heartbeat period


async def test_dead_pod_is_permanently_unhealthy(pods: PodActivities) -> None:
    """A pod whose process died fails await_pod_healthy at once, non-retryable, naming it."""
    ref = await deploy(pods, "pod-dead", f"{IMAGE}?startup=60")
    assert ref.container_id is not None
    os.kill(int(ref.container_id), signal.SIGKILL)
    await wait_until(_process_gone(int(ref.container_id)), "the pod process to die")
    env, _ = environment()
    with pytest.raises(ApplicationError) as e:
        await env.run(pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP))
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "pod-dead" in str(error) and "failed" in str(error)


def _process_gone(pid: int) -> Any:
    async def gone() -> bool:
        return not pid_alive(pid)

    return gone


async def test_warmup_timeout_is_permanently_unhealthy(pods: PodActivities) -> None:
    """A pod still 503 at the deadline fails non-retryably, saying how long it waited."""
    ref = await deploy(pods, "pod-late", f"{IMAGE}?startup=60")
    env, _ = environment()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=timedelta(seconds=1))
        )
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "pod-late" in str(error)
    assert "not healthy after waiting" in str(error)


async def test_deadline_counts_from_the_first_attempt(pods: PodActivities) -> None:
    """A retried await (heartbeat details hold the first start) does not wait afresh."""
    ref = await deploy(pods, "pod-retry", f"{IMAGE}?startup=60")
    env, _ = environment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[time.time() - 120])
    start = time.monotonic()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=timedelta(seconds=60))
        )
    assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert time.monotonic() - start < 10


async def test_cancellation_reaches_the_poll_loop(pods: PodActivities) -> None:
    """Cancelling the activity (delivered via heartbeat) stops the poll loop promptly."""
    ref = await deploy(pods, "pod-cancel", f"{IMAGE}?startup=60")
    env, beats = environment()
    task = asyncio.create_task(
        env.run(pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP))
    )

    async def polling() -> bool:
        return len(beats.details) >= 2

    await wait_until(polling, "the poll loop to heartbeat")
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_sweep_deletes_only_the_prefix(pods: PodActivities, local: LocalProvider) -> None:
    """sweep_pods deletes every pod under the prefix and nothing else."""
    for name in ("miner-03-abc-0-0", "miner-03-abc-1-0", "miner-03-abcd-0-0", "miner-03-xyz-0-0"):
        await deploy(pods, name)
    env, _ = environment()
    result = await env.run(
        pods.sweep_pods, SweepPodsInput(prefix="miner-03-abc-", providers=[LOCAL])
    )
    assert result.deleted == ["miner-03-abc-0-0", "miner-03-abc-1-0"]
    assert [c.name for c in await local.list("")] == ["miner-03-abcd-0-0", "miner-03-xyz-0-0"]
    again = await env.run(
        pods.sweep_pods, SweepPodsInput(prefix="miner-03-abc-", providers=[LOCAL])
    )
    assert again.deleted == []


async def test_sweep_refuses_an_empty_prefix(pods: PodActivities) -> None:
    """An empty prefix would delete every pod: INVALID_INPUT, non-retryable."""
    env, _ = environment()
    with pytest.raises(ApplicationError) as e:
        await env.run(pods.sweep_pods, SweepPodsInput(prefix="", providers=[LOCAL]))
    assert_app_error(e.value, ErrorType.INVALID_INPUT, retryable=False)


async def test_unconfigured_provider_is_rejected(pods: PodActivities) -> None:
    """A provider the worker was not configured with is PROVIDER_REJECTED, non-retryable."""
    env, _ = environment()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.deploy_pod, DeployPodInput(name="pod-t", provider=ProviderName.TARGON, image="img")
        )
    error = assert_app_error(e.value, ErrorType.PROVIDER_REJECTED, retryable=False)
    assert "targon" in str(error) and "pod-t" in str(error) and "local" in str(error)


async def test_bad_local_image_is_rejected(pods: PodActivities) -> None:
    """ProviderRejected from the provider becomes a non-retryable PROVIDER_REJECTED."""
    env, _ = environment()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.deploy_pod, DeployPodInput(name="pod-b", provider=LOCAL, image="docker.io/x:1")
        )
    error = assert_app_error(e.value, ErrorType.PROVIDER_REJECTED, retryable=False)
    assert "pod-b" in str(error)
    assert isinstance(error.__cause__, ProviderRejected)


class FlakyProvider:
    """A fake GpuProvider whose every call raises the configured error."""

    name = ProviderName.TARGON

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[str] = []

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        self.calls.append("deploy")
        raise self.error

    async def get(self, name: str) -> ContainerInfo:
        self.calls.append("get")
        raise self.error

    async def delete(self, name: str) -> None:
        self.calls.append("delete")
        raise self.error

    async def list(self, prefix: str) -> list[ContainerInfo]:
        self.calls.append("list")
        raise self.error

    def auth_headers(self) -> dict[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "error_type", "retryable"),
    [
        (ProviderUnavailable("no H200 capacity"), ErrorType.PROVIDER_UNAVAILABLE, True),
        (ProviderRejected("image not found"), ErrorType.PROVIDER_REJECTED, False),
    ],
)
async def test_provider_errors_are_translated(
    http: httpx.AsyncClient, error: Exception, error_type: ErrorType, retryable: bool
) -> None:
    """Every activity maps ProviderUnavailable -> retryable, ProviderRejected -> permanent."""
    fake = FlakyProvider(error)
    pods = PodActivities({ProviderName.TARGON: fake}, http, poll_interval=POLL)
    ref = PodRef(name="pod-f", provider=ProviderName.TARGON)
    env, _ = environment()
    calls: list[tuple[Callable[[Any], Awaitable[Any]], Any]] = [
        (pods.deploy_pod, DeployPodInput(name="pod-f", provider=ProviderName.TARGON, image="img")),
        (pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP)),
        (pods.check_pod_health, PodHealthInput(pod=ref)),
        (pods.delete_pod, DeletePodInput(pod=ref)),
        (pods.sweep_pods, SweepPodsInput(prefix="pod-", providers=[ProviderName.TARGON])),
    ]
    for fn, arg in calls:
        with pytest.raises(ApplicationError) as e:
            await env.run(fn, arg)
        translated = assert_app_error(e.value, error_type, retryable)
        assert "targon" in str(translated)
        assert "pod-" in str(translated)
        assert translated.__cause__ is error
    assert fake.calls == ["deploy", "get", "get", "delete", "list"]


async def test_not_found_on_delete_is_success(http: httpx.AsyncClient) -> None:
    """delete_pod of a pod the provider no longer knows succeeds."""
    fake = FlakyProvider(ContainerNotFound("gone"))
    pods = PodActivities({ProviderName.TARGON: fake}, http)
    env, _ = environment()
    await env.run(
        pods.delete_pod, DeletePodInput(pod=PodRef(name="pod-g", provider=ProviderName.TARGON))
    )
    assert (
        await env.run(
            pods.check_pod_health,
            PodHealthInput(pod=PodRef(name="pod-g", provider=ProviderName.TARGON)),
        )
        is False
    )


async def test_unlisted_pod_is_polled_until_timeout(http: httpx.AsyncClient) -> None:
    """A pod the provider does not list yet counts as starting, not as dead."""
    fake = FlakyProvider(ContainerNotFound("not visible yet"))
    pods = PodActivities({ProviderName.TARGON: fake}, http, poll_interval=POLL)
    env, _ = environment()
    ref = PodRef(name="pod-v", provider=ProviderName.TARGON)
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy,
            AwaitPodHealthyInput(pod=ref, timeout=timedelta(milliseconds=300)),
        )
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "not listed" in str(error)
    assert fake.calls.count("get") >= 3


def test_activities_are_registered_by_name(pods: PodActivities) -> None:
    """activities() lists the five bound methods under their public names."""
    names = [activity._Definition.must_from_callable(fn).name for fn in pods.activities()]
    assert names == [
        "deploy_pod",
        "await_pod_healthy",
        "check_pod_health",
        "delete_pod",
        "sweep_pods",
    ]


class StoppedProvider(FlakyProvider):
    """A provider reporting the pod as STOPPED (e.g. a Verda deployment that was paused)."""

    async def get(self, name: str) -> ContainerInfo:
        self.calls.append("get")
        return ContainerInfo(
            name=name, provider=self.name, container_id="c1", state=ContainerState.STOPPED
        )


async def test_stopped_pod_is_permanently_unhealthy(http: httpx.AsyncClient) -> None:
    """A STOPPED pod ends the wait at once with a non-retryable POD_UNHEALTHY."""
    pods = PodActivities(
        {ProviderName.TARGON: StoppedProvider(ProviderUnavailable("unused"))}, http
    )
    env, _ = environment()
    ref = PodRef(name="pod-p", provider=ProviderName.TARGON)
    with pytest.raises(ApplicationError) as e:
        await env.run(pods.await_pod_healthy, AwaitPodHealthyInput(pod=ref, timeout=WARMUP))
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "stopped" in str(error)
    assert await env.run(pods.check_pod_health, PodHealthInput(pod=ref)) is False


# --- v2 awaits (input.visibility_timeout set): upstream's visibility, then warm-up -----------


class FakePod:
    """A loopback /health: 503 for the first `ready_after` probes, then 200 (or a redirect)."""

    def __init__(self) -> None:
        self.url = ""
        self.ready_after: int | None = 0  # None: never healthy
        self.redirect = False
        self.probes = 0
        self.authorization: list[str | None] = []

    async def health(self, request: web.Request) -> web.StreamResponse:
        self.probes += 1
        self.authorization.append(request.headers.get("Authorization"))
        if self.redirect:
            raise web.HTTPFound(f"{self.url}/elsewhere")
        if self.ready_after is None or self.probes <= self.ready_after:
            return web.Response(status=503, text="loading")
        return web.json_response({"status": "ready"})

    async def elsewhere(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})


@pytest.fixture
async def fake_pod() -> AsyncIterator[FakePod]:
    pod = FakePod()
    app = web.Application()
    app.router.add_get("/health", pod.health)
    app.router.add_get("/elsewhere", pod.elsewhere)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pod.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield pod
    finally:
        await runner.cleanup()


class ScriptedProvider(FlakyProvider):
    """Lists the pod (with `url`) once `visible_after` seconds have passed; counts every call."""

    name = ProviderName.VERDA

    def __init__(
        self, url: str | None, visible_after: float | None = 0.0, listed_early: bool = False
    ) -> None:
        super().__init__(ProviderUnavailable("unused"))
        self.url = url
        self.visible_after = visible_after  # None: never visible
        self.listed_early = listed_early  # listed without a URL until visible
        self.created = time.monotonic()

    async def get(self, name: str) -> ContainerInfo:
        self.calls.append("get")
        age = time.monotonic() - self.created
        visible = self.visible_after is not None and age >= self.visible_after
        if not visible and not self.listed_early:
            raise ContainerNotFound(f"{name} not listed yet")
        return ContainerInfo(
            name=name,
            provider=self.name,
            container_id="dep-1",
            state=ContainerState.PENDING,
            url=self.url if visible else None,
        )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer gen-token"}


class CountingProvider:
    """Wraps a real provider and records each call it forwards."""

    def __init__(self, inner: LocalProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    async def deploy(self, name: str, image: str) -> ContainerInfo:
        self.calls.append("deploy")
        return await self.inner.deploy(name, image)

    async def get(self, name: str) -> ContainerInfo:
        self.calls.append("get")
        return await self.inner.get(name)

    async def delete(self, name: str) -> None:
        self.calls.append("delete")
        await self.inner.delete(name)

    async def list(self, prefix: str) -> list[ContainerInfo]:
        self.calls.append("list")
        return await self.inner.list(prefix)

    def auth_headers(self) -> dict[str, str]:
        return self.inner.auth_headers()

    async def aclose(self) -> None:
        await self.inner.aclose()


def v2_input(
    name: str,
    provider: ProviderName,
    *,
    visibility: float,
    warmup: float,
    poll: float = 0.05,
) -> AwaitPodHealthyInput:
    return AwaitPodHealthyInput(
        pod=PodRef(name=name, provider=provider, container_id="deploy-id"),
        timeout=timedelta(seconds=warmup),
        visibility_timeout=timedelta(seconds=visibility),
        poll_interval=timedelta(seconds=poll),
    )


@pytest.mark.parametrize("listed_early", [False, True], ids=["not-listed", "listed-no-url"])
async def test_pod_not_visible_in_time_fails_with_pod_not_visible(
    http: httpx.AsyncClient, fake_pod: FakePod, listed_early: bool
) -> None:
    """Not listed with a URL within visibility_timeout -> non-retryable POD_NOT_VISIBLE."""
    provider = ScriptedProvider(fake_pod.url, visible_after=None, listed_early=listed_early)
    pods = PodActivities({ProviderName.VERDA: provider}, http)
    env, _ = environment()
    started = time.monotonic()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy,
            v2_input("pod-nv", ProviderName.VERDA, visibility=0.4, warmup=30),
        )
    error = assert_app_error(e.value, ErrorType.POD_NOT_VISIBLE, retryable=False)
    assert "pod-nv" in str(error) and "not visible" in str(error)
    assert 0.4 <= time.monotonic() - started < 5
    assert provider.calls.count("get") >= 3
    assert fake_pod.probes == 0  # never probed a pod it could not see


async def test_visibility_deadline_counts_from_the_first_attempt(
    http: httpx.AsyncClient, fake_pod: FakePod
) -> None:
    """A retry (heartbeat details hold the first start) does not get a fresh visibility window."""
    provider = ScriptedProvider(fake_pod.url, visible_after=None)
    pods = PodActivities({ProviderName.VERDA: provider}, http)
    env, _ = environment()
    env.info = dataclasses.replace(env.info, heartbeat_details=[time.time() - 120])
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy,
            v2_input("pod-nv2", ProviderName.VERDA, visibility=60, warmup=30),
        )
    assert_app_error(e.value, ErrorType.POD_NOT_VISIBLE, retryable=False)
    assert provider.calls == ["get"]


async def test_warmup_timeout_counts_from_visibility(
    http: httpx.AsyncClient, fake_pod: FakePod
) -> None:
    """The warm-up window starts when the pod becomes visible, not when the await started."""
    fake_pod.ready_after = None  # never healthy
    provider = ScriptedProvider(fake_pod.url, visible_after=0.8)
    pods = PodActivities({ProviderName.VERDA: provider}, http)
    env, beats = environment()
    started = time.monotonic()
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy,
            v2_input("pod-w", ProviderName.VERDA, visibility=10, warmup=0.6),
        )
    elapsed = time.monotonic() - started
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "pod-w" in str(error) and "after it became visible" in str(error)
    assert elapsed >= 0.8 + 0.6  # visibility, then the full warm-up window
    assert fake_pod.probes >= 5
    # the heartbeat details recorded the visibility, for a retry to resume from
    visible = [d for d in beats.details if d[1] is not None]
    assert visible and visible[-1][2:] == (fake_pod.url, "dep-1")


async def test_retry_resumes_the_warmup_without_provider_calls(
    http: httpx.AsyncClient, fake_pod: FakePod
) -> None:
    """A retry whose details say the pod was visible goes straight to /health, same deadline."""
    fake_pod.ready_after = None
    provider = ScriptedProvider(fake_pod.url)
    pods = PodActivities({ProviderName.VERDA: provider}, http)
    env, _ = environment()
    now = time.time()
    env.info = dataclasses.replace(
        env.info, heartbeat_details=[now - 200, now - 100, fake_pod.url, "dep-1"]
    )
    with pytest.raises(ApplicationError) as e:
        await env.run(
            pods.await_pod_healthy,
            v2_input("pod-r2", ProviderName.VERDA, visibility=300, warmup=60),
        )
    assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert provider.calls == []
    assert fake_pod.probes == 1

    fake_pod.ready_after = 0
    env.info = dataclasses.replace(
        env.info, heartbeat_details=[now - 20, now - 10, fake_pod.url, "dep-1"]
    )
    ready = await env.run(
        pods.await_pod_healthy, v2_input("pod-r2", ProviderName.VERDA, visibility=300, warmup=60)
    )
    assert ready.url == fake_pod.url and ready.container_id == "dep-1"
    assert provider.calls == []


async def test_no_provider_calls_during_warmup(
    local: LocalProvider, http: httpx.AsyncClient
) -> None:
    """Once the pod is visible only /health is polled: one provider call for the whole await."""
    ref = await deploy(pods_for(local, http), "pod-v2", f"{IMAGE}?startup=1.5")
    counting = CountingProvider(local)
    pods = PodActivities({LOCAL: counting}, http)
    env, beats = environment()
    arg = AwaitPodHealthyInput(
        pod=ref,
        timeout=timedelta(seconds=30),
        visibility_timeout=timedelta(seconds=30),
        poll_interval=timedelta(seconds=0.2),
    )
    started = time.monotonic()
    healthy = await env.run(pods.await_pod_healthy, arg)

    assert time.monotonic() - started >= 1.0  # it really warmed up through 503s
    assert counting.calls == ["get"]
    assert healthy.url is not None and healthy.url.startswith("http://127.0.0.1:")
    assert healthy.container_id == ref.container_id
    assert beats.details


def pods_for(local: LocalProvider, http: httpx.AsyncClient) -> PodActivities:
    return PodActivities({LOCAL: local}, http, poll_interval=POLL)


async def test_warmup_probes_carry_auth_and_do_not_follow_redirects(
    fake_pod: FakePod,
) -> None:
    """/health gets the provider's bearer; a redirect is not healthy, even on a following client."""
    provider = ScriptedProvider(fake_pod.url)
    async with httpx.AsyncClient(follow_redirects=True) as following:
        pods = PodActivities({ProviderName.VERDA: provider}, following)
        env, _ = environment()
        fake_pod.ready_after = 2
        ready = await env.run(
            pods.await_pod_healthy, v2_input("pod-a", ProviderName.VERDA, visibility=5, warmup=5)
        )
        assert ready.url == fake_pod.url
        assert fake_pod.authorization == ["Bearer gen-token"] * 3

        fake_pod.redirect = True
        with pytest.raises(ApplicationError) as e:
            await env.run(
                pods.await_pod_healthy,
                v2_input("pod-a", ProviderName.VERDA, visibility=5, warmup=0.3),
            )
    error = assert_app_error(e.value, ErrorType.POD_UNHEALTHY, retryable=False)
    assert "302" in str(error)


async def test_long_poll_interval_still_heartbeats(
    http: httpx.AsyncClient, fake_pod: FakePod
) -> None:
    """A poll period longer than the heartbeat period: heartbeats keep coming in between."""
    fake_pod.ready_after = 1
    provider = ScriptedProvider(fake_pod.url)
    pods = PodActivities(
        {ProviderName.VERDA: provider}, http, heartbeat_interval=timedelta(seconds=0.05)
    )
    env, beats = environment()
    ready = await env.run(
        pods.await_pod_healthy,
        v2_input("pod-hb", ProviderName.VERDA, visibility=5, warmup=5, poll=1.0),
    )
    assert ready.url == fake_pod.url
    assert fake_pod.probes == 2  # one 503, a 1 s pause, then 200
    assert len(beats.details) >= 10


async def test_default_poll_period_is_the_workers_check_interval(
    http: httpx.AsyncClient, fake_pod: FakePod
) -> None:
    """Without input.poll_interval, a v2 await polls at the worker's CHECK_POD_INTERVAL."""
    provider = ScriptedProvider(fake_pod.url, visible_after=0.3)
    pods = PodActivities(
        {ProviderName.VERDA: provider}, http, check_interval=timedelta(seconds=0.1)
    )
    env, _ = environment()
    arg = v2_input("pod-d", ProviderName.VERDA, visibility=5, warmup=5).model_copy(
        update={"poll_interval": None}
    )
    await env.run(pods.await_pod_healthy, arg)
    assert 3 <= provider.calls.count("get") <= 6
