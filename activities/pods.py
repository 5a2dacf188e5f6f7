"""Pod lifecycle activities: deploy, wait for health, probe, delete and sweep GPU pods.

Owns the translation of provider errors into `ApplicationError`s with an `ErrorType`:
`ProviderUnavailable` -> retryable PROVIDER_UNAVAILABLE (after the provider's Retry-After when it
gave one), `ProviderNoCapacity` -> non-retryable NO_CAPACITY (the next acquisition attempt tries
the next provider), `ProviderRejected` (and a provider the
worker has not configured) -> non-retryable PROVIDER_REJECTED, a pod that died or never became
healthy -> non-retryable POD_UNHEALTHY. Every activity is idempotent by pod name: providers
deploy by name (an existing pod is returned), and deleting a pod that is already gone succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from models.audit import (
    AwaitPodHealthyInput,
    DeletePodInput,
    DeployPodInput,
    PodHealthInput,
    PodRef,
    ProviderName,
    SweepPodsInput,
    SweepPodsResult,
)
from models.errors import ErrorType
from models.miner_api import HEALTH_PATH
from providers import inventory
from providers.base import (
    ContainerInfo,
    ContainerNotFound,
    ContainerState,
    GpuProvider,
    ProviderNoCapacity,
    ProviderRejected,
    ProviderUnavailable,
)
from providers.breaker import ProviderBreaker

DEFAULT_POLL_INTERVAL = timedelta(seconds=1)
DEFAULT_PROBE_TIMEOUT = timedelta(seconds=5)
DEFAULT_CHECK_POD_INTERVAL = timedelta(seconds=30)
"""v2 awaits: visibility and health poll period when the input sets none (CHECK_POD_INTERVAL)."""
UPSTREAM_PROBE_TIMEOUT_SECONDS = 30.0
"""v2 awaits: longest /health request (upstream's client timeout); capped by the poll period."""
DEFAULT_HEARTBEAT_INTERVAL = timedelta(seconds=5)
"""v2 awaits: heartbeat period, whatever the poll period (the heartbeat timeout is 30 s)."""
_DEAD_STATES = (ContainerState.FAILED, ContainerState.STOPPED)


@asynccontextmanager
async def _provider_errors(action: str, pod: str, provider: ProviderName) -> AsyncIterator[None]:
    """Translate provider errors raised inside the block into ApplicationErrors."""
    try:
        yield
    except ProviderNoCapacity as e:
        # Not retried on this provider: the pod workflow's next acquisition attempt goes to the
        # next provider in GPU_PROVIDERS (after POD_ACQUISITION_RETRY_INTERVAL).
        raise ApplicationError(
            f"{action} pod {pod!r} on {provider}: no capacity: {e}",
            type=ErrorType.NO_CAPACITY,
            non_retryable=True,
        ) from e
    except ProviderUnavailable as e:
        delay = timedelta(seconds=e.retry_after) if e.retry_after is not None else None
        raise ApplicationError(
            f"{action} pod {pod!r} on {provider}: provider unavailable: {e}",
            type=ErrorType.PROVIDER_UNAVAILABLE,
            next_retry_delay=delay,
        ) from e
    except ProviderRejected as e:
        raise ApplicationError(
            f"{action} pod {pod!r} on {provider}: provider rejected the request: {e}",
            type=ErrorType.PROVIDER_REJECTED,
            non_retryable=True,
        ) from e


class PodActivities:
    """Activities over the configured GPU providers, sharing one HTTP client for health probes.

    Owns nothing it closes: the worker owns the providers and the HTTP client. Register the
    bound methods from `activities()`.
    """

    def __init__(
        self,
        providers: Mapping[ProviderName, GpuProvider],
        http: httpx.AsyncClient,
        poll_interval: timedelta = DEFAULT_POLL_INTERVAL,
        probe_timeout: timedelta = DEFAULT_PROBE_TIMEOUT,
        *,
        check_interval: timedelta = DEFAULT_CHECK_POD_INTERVAL,
        heartbeat_interval: timedelta = DEFAULT_HEARTBEAT_INTERVAL,
        breaker: ProviderBreaker | None = None,
    ) -> None:
        """Create the activities.

        Args:
            providers: Configured providers by name (`providers.registry.build_providers`).
            http: Client for miner health probes.
            poll_interval: Pause between polls in `await_pod_healthy` (v1 awaits).
            probe_timeout: Timeout of one health request (v1 awaits, `check_pod_health`).
            check_interval: Poll period of v2 awaits whose input sets no `poll_interval`
                (CHECK_POD_INTERVAL).
            heartbeat_interval: Heartbeat period of v2 awaits (keep well under 30 s).
            breaker: The worker's circuit breaker over deploys (one per process, shared by
                every audit); default: a private one with the default thresholds.
        """
        self._breaker = breaker or ProviderBreaker()
        self._providers = providers
        self._http = http
        self._poll = poll_interval.total_seconds()
        self._probe_timeout = probe_timeout.total_seconds()
        self._check_interval = check_interval.total_seconds()
        self._heartbeat = heartbeat_interval.total_seconds()

    def activities(self) -> list[Callable[..., Any]]:
        """The bound activity methods, for `Worker(activities=...)`."""
        return [
            self.deploy_pod,
            self.await_pod_healthy,
            self.check_pod_health,
            self.delete_pod,
            self.sweep_pods,
        ]

    @activity.defn(name="deploy_pod")
    async def deploy_pod(self, input: DeployPodInput) -> PodRef:
        """Deploy pod `input.name` running `input.image`, or find the one already deployed.

        Idempotent: providers deploy by name and return an existing pod of that name, so a retry
        after a lost response never rents a second GPU. Every failure counts against the
        provider's circuit breaker; while it is open the deploy fails at once, without calling
        the provider. Permanent: PROVIDER_REJECTED, NO_CAPACITY, PROVIDER_CIRCUIT_OPEN.
        """
        provider = self._provider(input.provider, input.name, "deploy")
        refusal = self._breaker.refusal(input.provider)
        if refusal is not None:
            raise ApplicationError(
                f"deploy pod {input.name!r}: {refusal}",
                type=ErrorType.PROVIDER_CIRCUIT_OPEN,
                non_retryable=True,
            )
        try:
            async with _provider_errors("deploy", input.name, input.provider):
                info = await provider.deploy(input.name, input.image)
        except ApplicationError as e:
            self._breaker.failed(input.provider, str(e))
            raise
        self._breaker.succeeded(input.provider)
        activity.logger.info(
            "deployed pod %s on %s (%s)", input.name, input.provider, info.container_id
        )
        # The rental starts here (cost accounting); a retry that finds the pod restarts the
        # clock a little late, never early.
        return _pod_ref(info, url=info.url).model_copy(update={"deployed_at": datetime.now(UTC)})

    @activity.defn(name="await_pod_healthy")
    async def await_pod_healthy(self, input: AwaitPodHealthyInput) -> PodRef:
        """Poll until the pod answers 200 on /health; heartbeats every poll.

        Without `input.visibility_timeout` (v1 pods): each poll asks the provider for the pod,
        then probes its /health; a pod the provider does not list yet is treated as still
        starting. One deadline, `input.timeout`, covers listing and health.

        With `input.visibility_timeout` (v2 pods, upstream's acquisition): see
        `_await_visible_then_healthy`.

        Deadlines count from the first attempt: they are kept in the heartbeat details, so a
        retry after a worker restart does not wait afresh. Idempotent (read-only). Permanent:
        POD_UNHEALTHY (pod failed/stopped, or not healthy in time), POD_NOT_VISIBLE (v2 only),
        PROVIDER_REJECTED. Retryable: PROVIDER_UNAVAILABLE.
        """
        pod = input.pod
        provider = self._provider(pod.provider, pod.name, "await")
        if input.visibility_timeout is not None:
            return await self._await_visible_then_healthy(input, input.visibility_timeout, provider)
        started = _first_started_at()
        # Beats in the background: a slow provider or /health call never outlasts the heartbeat
        # timeout, whatever its own timeout.
        async with heartbeating(self._heartbeat, lambda: (started,)):
            return await self._await_healthy_v1(input, provider, started)

    async def _await_healthy_v1(
        self, input: AwaitPodHealthyInput, provider: GpuProvider, started: float
    ) -> PodRef:
        pod = input.pod
        deadline = started + input.timeout.total_seconds()
        polls = 0
        while True:
            polls += 1
            poll = await self._poll_once(pod, provider, deadline)
            waited = time.time() - started
            if poll.ready is not None:
                activity.logger.info(
                    "pod %s on %s healthy after %.1fs", pod.name, pod.provider, waited
                )
                return poll.ready
            if poll.dead:
                raise ApplicationError(
                    f"pod {pod.name!r} on {pod.provider} is {poll.status} "
                    f"(after waiting {waited:.1f}s, {polls} polls)",
                    type=ErrorType.POD_UNHEALTHY,
                    non_retryable=True,
                )
            if time.time() >= deadline:
                raise ApplicationError(
                    f"pod {pod.name!r} on {pod.provider} not healthy after waiting {waited:.1f}s "
                    f"(timeout {input.timeout.total_seconds():.0f}s, {polls} polls; "
                    f"last: {poll.status})",
                    type=ErrorType.POD_UNHEALTHY,
                    non_retryable=True,
                )
            await asyncio.sleep(min(self._poll, max(deadline - time.time(), 0.0)))

    async def _await_visible_then_healthy(
        self, input: AwaitPodHealthyInput, visibility_timeout: timedelta, provider: GpuProvider
    ) -> PodRef:
        """The v2 await, as upstream's `_try_deploy_pod` visibility loop and `wait_for_healthy`.

        Phase 1 (visibility): ask the provider for the pod every poll period until it is listed
        with a URL. Not within `visibility_timeout` of the first attempt's start:
        POD_NOT_VISIBLE. A pod the provider reports failed or stopped: POD_UNHEALTHY at once.
        Phase 2 (warm-up): `GET {url}/health` every poll period (probe timeout min(30 s,
        period), redirects not followed, the provider's auth headers), healthy on 200, and no
        provider calls at all. Not healthy within `input.timeout` of visibility: POD_UNHEALTHY.

        A background task heartbeats every few seconds whatever the poll period, with details
        (first start, visible at, URL, container id) from which a retry resumes its phase.
        """
        pod = input.pod
        interval = (
            input.poll_interval.total_seconds()
            if input.poll_interval is not None
            else self._check_interval
        )
        progress = _Progress.resume(activity.info().heartbeat_details)
        async with heartbeating(self._heartbeat, progress.details):
            if progress.visible_at is not None and progress.url is not None:
                visible_at, url = progress.visible_at, progress.url  # a retry, already visible
            else:
                visible_at, url = await self._await_visible(
                    pod, provider, progress, visibility_timeout, interval
                )
            deadline = visible_at + input.timeout.total_seconds()
            probe_timeout = min(UPSTREAM_PROBE_TIMEOUT_SECONDS, interval)
            headers = provider.auth_headers()
            probes = 0
            while True:
                probes += 1
                status = await self._probe_url(url, headers, probe_timeout)
                waited = time.time() - visible_at
                if status == httpx.codes.OK:
                    activity.logger.info(
                        "pod %s on %s healthy %.1fs after it became visible (%d probes)",
                        pod.name,
                        pod.provider,
                        waited,
                        probes,
                    )
                    return PodRef(
                        name=pod.name,
                        provider=pod.provider,
                        container_id=progress.container_id or pod.container_id,
                        url=url,
                        deployed_at=pod.deployed_at,
                        healthy_at=datetime.now(UTC),
                    )
                if time.time() >= deadline:
                    raise ApplicationError(
                        f"pod {pod.name!r} on {pod.provider} not healthy {waited:.1f}s after it "
                        f"became visible (warm-up timeout {input.timeout.total_seconds():g}s, "
                        f"{probes} probes; last: {status})",
                        type=ErrorType.POD_UNHEALTHY,
                        non_retryable=True,
                    )
                await asyncio.sleep(min(interval, max(deadline - time.time(), 0.0)))

    async def _await_visible(
        self,
        pod: PodRef,
        provider: GpuProvider,
        progress: _Progress,
        visibility_timeout: timedelta,
        interval: float,
    ) -> tuple[float, str]:
        """Phase 1 of the v2 await: poll the provider until the pod is listed with a URL.

        Returns (wall-clock time it was first seen visible, its URL), also kept in `progress`.
        """
        deadline = progress.started + visibility_timeout.total_seconds()
        polls = 0
        while True:
            polls += 1
            async with _provider_errors("await", pod.name, pod.provider):
                try:
                    info: ContainerInfo | None = await provider.get(pod.name)
                except ContainerNotFound:
                    info = None
            waited = time.time() - progress.started
            if info is not None and info.state in _DEAD_STATES:
                raise ApplicationError(
                    f"pod {pod.name!r} on {pod.provider} is {info.state} before it became "
                    f"visible (after waiting {waited:.1f}s, {polls} polls)",
                    type=ErrorType.POD_UNHEALTHY,
                    non_retryable=True,
                )
            if info is not None and info.url:
                visible_at = progress.visible(info.url, info.container_id)
                activity.heartbeat(*progress.details())
                activity.logger.info(
                    "pod %s on %s visible after %.1fs at %s",
                    pod.name,
                    pod.provider,
                    waited,
                    info.url,
                )
                return visible_at, info.url
            if time.time() >= deadline:
                last = "not listed" if info is None else f"listed ({info.state}) without a URL"
                raise ApplicationError(
                    f"pod {pod.name!r} on {pod.provider} not visible after waiting {waited:.1f}s "
                    f"(visibility timeout {visibility_timeout.total_seconds():g}s, {polls} "
                    f"polls; last: {last})",
                    type=ErrorType.POD_NOT_VISIBLE,
                    non_retryable=True,
                )
            await asyncio.sleep(min(interval, max(deadline - time.time(), 0.0)))

    @activity.defn(name="check_pod_health")
    async def check_pod_health(self, input: PodHealthInput) -> bool:
        """One health probe: True iff the pod answers 200 on /health within the probe timeout.

        A pod that is gone, failed or unreachable is False (the caller decides to replace it).
        Read-only, so idempotent. Permanent: PROVIDER_REJECTED.
        """
        pod = input.pod
        provider = self._provider(pod.provider, pod.name, "probe")
        url = pod.url
        if url is None:
            async with _provider_errors("probe", pod.name, pod.provider):
                try:
                    info = await provider.get(pod.name)
                except ContainerNotFound:
                    return False
            if info.state in _DEAD_STATES or info.url is None:
                return False
            url = info.url
        return await self._probe(url, provider, self._probe_timeout) == httpx.codes.OK

    @activity.defn(name="delete_pod")
    async def delete_pod(self, input: DeletePodInput) -> None:
        """Delete the pod; a pod that is already gone counts as deleted (idempotent).

        Permanent: PROVIDER_REJECTED.
        """
        pod = input.pod
        provider = self._provider(pod.provider, pod.name, "delete")
        async with _provider_errors("delete", pod.name, pod.provider):
            try:
                await provider.delete(pod.name)
            except ContainerNotFound:
                activity.logger.info("pod %s on %s already gone", pod.name, pod.provider)
                return
        activity.logger.info("deleted pod %s on %s", pod.name, pod.provider)

    @activity.defn(name="sweep_pods")
    async def sweep_pods(self, input: SweepPodsInput) -> SweepPodsResult:
        """Delete every pod whose name starts with `input.prefix` on each named provider.

        Idempotent: a rerun lists what is left and deletes that; pods already gone are skipped.
        An empty prefix is refused (it would delete every pod). Permanent: INVALID_INPUT,
        PROVIDER_REJECTED.
        """
        if not input.prefix:
            raise ApplicationError(
                "sweep_pods needs a non-empty prefix (an empty one would delete every pod)",
                type=ErrorType.INVALID_INPUT,
                non_retryable=True,
            )
        deleted: list[str] = []
        for name in input.providers:
            provider = self._provider(name, f"{input.prefix}*", "sweep")
            async with _provider_errors("sweep", f"{input.prefix}*", name):
                swept = await inventory.sweep(
                    provider, input.prefix, on_pod=lambda info: activity.heartbeat(info.name)
                )
            for pod in swept:
                activity.logger.info("swept pod %s on %s", pod, name)
            deleted += swept
        return SweepPodsResult(deleted=deleted)

    # --- helpers -----------------------------------------------------------------------------

    def _provider(self, name: ProviderName, pod: str, action: str) -> GpuProvider:
        provider = self._providers.get(name)
        if provider is None:
            configured = ", ".join(sorted(self._providers)) or "none"
            raise ApplicationError(
                f"{action} pod {pod!r}: provider {name!r} is not configured on this worker "
                f"(configured: {configured}; see GPU_PROVIDERS)",
                type=ErrorType.PROVIDER_REJECTED,
                non_retryable=True,
            )
        return provider

    async def _poll_once(self, pod: PodRef, provider: GpuProvider, deadline: float) -> _Poll:
        """Ask the provider for the pod's state, then its /health once a URL is known."""
        async with _provider_errors("await", pod.name, pod.provider):
            try:
                info = await provider.get(pod.name)
            except ContainerNotFound:
                return _Poll(status="not listed by the provider")
        if info.state in _DEAD_STATES:
            return _Poll(status=str(info.state), dead=True)
        url = info.url or pod.url
        if url is None:
            return _Poll(status=f"state {info.state}, no URL yet")
        wait = min(self._probe_timeout, max(deadline - time.time(), 0.1))
        status = await self._probe(url, provider, wait)
        if status == httpx.codes.OK:
            return _Poll(status="healthy", ready=_pod_ref(info, url=url))
        return _Poll(status=f"state {info.state}, health: {status}")

    async def _probe_url(
        self, url: str, headers: Mapping[str, str], wait_seconds: float
    ) -> int | str:
        """v2 probe, as upstream: GET {url}/health without following redirects."""
        try:
            response = await self._http.get(
                f"{url.rstrip('/')}{HEALTH_PATH}",
                headers=dict(headers),
                timeout=wait_seconds,
                follow_redirects=False,
            )
        except httpx.HTTPError as e:
            return type(e).__name__
        return response.status_code

    async def _probe(self, url: str, provider: GpuProvider, wait_seconds: float) -> int | str:
        """GET {url}/health: the status code, or a short description of why there is none."""
        try:
            response = await self._http.get(
                f"{url.rstrip('/')}{HEALTH_PATH}",
                headers=provider.auth_headers(),
                timeout=wait_seconds,
            )
        except httpx.HTTPError as e:
            return type(e).__name__
        return response.status_code


@dataclass(frozen=True)
class _Poll:
    """Outcome of one poll of `await_pod_healthy`."""

    status: str  # what was seen, for logs and the timeout message
    ready: PodRef | None = None  # set once /health answered 200
    dead: bool = False  # the provider reports the pod failed or stopped


def _pod_ref(info: ContainerInfo, url: str | None) -> PodRef:
    return PodRef(name=info.name, provider=info.provider, container_id=info.container_id, url=url)


def _first_started_at() -> float:
    """Wall-clock start of the first attempt (from heartbeat details), else now."""
    details = activity.info().heartbeat_details
    if details and isinstance(details[0], int | float):
        return float(details[0])
    return time.time()


@dataclass
class _Progress:
    """Where a v2 await is; mirrored in its heartbeat details so a retry resumes there."""

    started: float  # wall clock of the first attempt's start
    visible_at: float | None = None  # wall clock when the pod was first listed with a URL
    url: str | None = None
    container_id: str | None = None

    @classmethod
    def resume(cls, details: Sequence[Any]) -> _Progress:
        """From the last attempt's heartbeat details (none: a fresh start now)."""
        if not details or not isinstance(details[0], int | float):
            return cls(started=time.time())
        progress = cls(started=float(details[0]))
        rest = [*details[1:4], None, None, None]
        visible_at, url, container_id = rest[0], rest[1], rest[2]
        if isinstance(visible_at, int | float) and isinstance(url, str) and url:
            progress.visible_at = float(visible_at)
            progress.url = url
            progress.container_id = container_id if isinstance(container_id, str) else None
        return progress

    def visible(self, url: str, container_id: str | None) -> float:
        """Record that the pod is visible at `url` now; returns now."""
        self.visible_at = time.time()
        self.url = url
        self.container_id = container_id
        return self.visible_at

    def details(self) -> tuple[float, float | None, str | None, str | None]:
        return (self.started, self.visible_at, self.url, self.container_id)
