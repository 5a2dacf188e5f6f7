"""Pod lifecycle activities: deploy, wait for health, probe, delete and sweep GPU pods.

Owns the translation of provider errors into `ApplicationError`s with an `ErrorType`:
`ProviderUnavailable` -> retryable PROVIDER_UNAVAILABLE, `ProviderRejected` (and a provider the
worker has not configured) -> non-retryable PROVIDER_REJECTED, a pod that died or never became
healthy -> non-retryable POD_UNHEALTHY. Every activity is idempotent by pod name: providers
deploy by name (an existing pod is returned), and deleting a pod that is already gone succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

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
from providers.base import (
    ContainerInfo,
    ContainerNotFound,
    ContainerState,
    GpuProvider,
    ProviderRejected,
    ProviderUnavailable,
)

DEFAULT_POLL_INTERVAL = timedelta(seconds=1)
DEFAULT_PROBE_TIMEOUT = timedelta(seconds=5)
_DEAD_STATES = (ContainerState.FAILED, ContainerState.STOPPED)


@asynccontextmanager
async def _provider_errors(action: str, pod: str, provider: ProviderName) -> AsyncIterator[None]:
    """Translate provider errors raised inside the block into ApplicationErrors."""
    try:
        yield
    except ProviderUnavailable as e:
        raise ApplicationError(
            f"{action} pod {pod!r} on {provider}: provider unavailable: {e}",
            type=ErrorType.PROVIDER_UNAVAILABLE,
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
    ) -> None:
        """Create the activities.

        Args:
            providers: Configured providers by name (`providers.registry.build_providers`).
            http: Client for miner health probes.
            poll_interval: Pause between polls in `await_pod_healthy`.
            probe_timeout: Timeout of one health request.
        """
        self._providers = providers
        self._http = http
        self._poll = poll_interval.total_seconds()
        self._probe_timeout = probe_timeout.total_seconds()

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
        after a lost response never rents a second GPU. Permanent: PROVIDER_REJECTED.
        """
        provider = self._provider(input.provider, input.name, "deploy")
        async with _provider_errors("deploy", input.name, input.provider):
            info = await provider.deploy(input.name, input.image)
        activity.logger.info(
            "deployed pod %s on %s (%s)", input.name, input.provider, info.container_id
        )
        return _pod_ref(info, url=info.url)

    @activity.defn(name="await_pod_healthy")
    async def await_pod_healthy(self, input: AwaitPodHealthyInput) -> PodRef:
        """Poll until the pod answers 200 on /health; heartbeats every poll.

        A pod the provider does not list yet is treated as still starting (providers can take a
        while to show a new container). The deadline counts from the first attempt: it is kept
        in the heartbeat details, so a retry after a worker restart does not wait afresh.
        Idempotent (read-only). Permanent: POD_UNHEALTHY (pod failed/stopped, or not healthy
        within `input.timeout`), PROVIDER_REJECTED.
        """
        pod = input.pod
        provider = self._provider(pod.provider, pod.name, "await")
        started = _first_started_at()
        deadline = started + input.timeout.total_seconds()
        polls = 0
        while True:
            polls += 1
            activity.heartbeat(started)
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
                found = await provider.list(input.prefix)
            for info in found:
                activity.heartbeat(info.name)
                async with _provider_errors("sweep", info.name, name):
                    try:
                        await provider.delete(info.name)
                    except ContainerNotFound:
                        continue
                deleted.append(info.name)
                activity.logger.info("swept pod %s on %s", info.name, name)
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
