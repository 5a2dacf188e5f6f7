"""Worker process: runs the orchestrator and/or GPU task queues until SIGINT/SIGTERM.

    python worker.py                          # both queues (the embedded default)
    python worker.py --queues generation-orchestrator
    python worker.py --queues gpu             # on a GPU host: render + DINOv3 scoring

The orchestrator queue runs every workflow and the I/O activities (git, providers, miner calls,
artifacts); the `gpu` queue runs render + score and is the only place torch is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.worker import Worker

from activities import workflow_status
from activities.competition_repo import CompetitionRepoActivities
from activities.config import ConfigActivities
from activities.cpu import CpuPool
from activities.generation import GenerationActivities
from activities.github import GitHubActivities
from activities.notify import NotifyActivities
from activities.pods import PodActivities
from competition.repo import CompetitionRepo, CompetitionRepoError
from embedded_temporal import connect
from models.constants import GPU_TASK_QUEUE, TASK_QUEUE
from models.settings import Settings, SettingsError, load_settings
from providers.breaker import ProviderBreaker, breaker_state_file
from providers.registry import build_providers
from storage import ArtifactStore, open_artifact_store
from storage.http import is_loopback_url, serve_public
from telemetry import ActivityTelemetry, TelemetryError
from telemetry import configure as configure_telemetry
from workflows import WORKFLOWS

logger = logging.getLogger("worker")

# Without this a killed worker's sticky queue stalls its workflows ~10 s before another takes over.
STICKY_TIMEOUT = timedelta(seconds=2)
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
REPO_CHECK_SECONDS = 120.0
"""How long start-up waits for the competition repo's first fetch."""


@contextlib.asynccontextmanager
async def running_workers(
    client: Client,
    settings: Settings,
    queues: Sequence[str] = (TASK_QUEUE, GPU_TASK_QUEUE),
    *,
    task_queue: str | None = None,
    gpu_task_queue: str | None = None,
) -> AsyncIterator[list[Worker]]:
    """Build and run the workers for `queues` (kinds as in `--queues`) until the block exits.

    The queues' real names come from TASK_QUEUE / GPU_TASK_QUEUE, or from `task_queue` /
    `gpu_task_queue` (tests use unique names).
    """
    task_queue = task_queue or settings.task_queue
    gpu_task_queue = gpu_task_queue or settings.gpu_task_queue
    async with contextlib.AsyncExitStack() as stack:
        cpu = CpuPool(settings.cpu_workers)
        stack.callback(cpu.close)
        store = await stack.enter_async_context(open_store(settings, cpu))
        workers: list[Worker] = []
        if TASK_QUEUE in queues:
            if not settings.competition_repo:
                raise SettingsError(
                    "COMPETITION_REPO: required for the generation-orchestrator queue"
                )
            # No connection cap: a generation must never wait for a pooled connection (that
            # wait would be timed as the miner's) and a health probe never queue behind one.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=50)
            http = await stack.enter_async_context(
                httpx.AsyncClient(follow_redirects=True, limits=limits)
            )
            providers = build_providers(settings)
            for provider in providers.values():
                stack.push_async_callback(provider.aclose)
            repo = CompetitionRepo(
                settings.competition_repo, settings.competition_branch, settings.work_dir / "repos"
            )
            policy = settings.audit_policy().model_copy(update={"gpu_task_queue": gpu_task_queue})
            activities: list[Callable[..., Any]] = [
                *ConfigActivities(policy, settings.round_policy()).activities(),
                *CompetitionRepoActivities(
                    repo, store, settings.storage_path_template
                ).activities(),
                *PodActivities(
                    providers,
                    http,
                    check_interval=timedelta(seconds=settings.check_pod_interval_seconds),
                    breaker=ProviderBreaker(
                        settings.provider_breaker_failures,
                        settings.provider_breaker_cooldown_seconds,
                        state_file=breaker_state_file(settings.work_dir),
                    ),
                ).activities(),
                *GenerationActivities(
                    store,
                    http,
                    {name: p.auth_headers() for name, p in providers.items()},
                    cpu=cpu,
                ).activities(),
                *workflow_status.activities(),
                *NotifyActivities(
                    settings.discord_webhook_url.get_secret_value()
                    if settings.discord_webhook_url
                    else None,
                    http,
                ).activities(),
            ]
            if settings.github_repo is not None:
                token = settings.github_token.get_secret_value() if settings.github_token else None
                activities += GitHubActivities(
                    http, settings.github_api_url, settings.github_repo, token
                ).activities()
            workers.append(
                Worker(
                    client,
                    task_queue=task_queue,
                    workflows=WORKFLOWS,
                    activities=activities,
                    sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
                    graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                    max_concurrent_activities=settings.max_concurrent_activities,
                    max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
                )
            )
        if GPU_TASK_QUEUE in queues:
            from activities.scoring import ScoringActivities  # torch only where it is needed

            scoring = ScoringActivities(
                store, settings.dinov3_model, revision=settings.dinov3_model_revision
            )
            # Load the model and GL context now: a bad DINOV3_MODEL fails the worker at start-up
            # instead of turning every comparison into an "unknown distance" mismatch.
            await scoring.warm_up()
            stack.callback(scoring.close)
            workers.append(
                Worker(
                    client,
                    task_queue=gpu_task_queue,
                    activities=scoring.activities(),
                    graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                    max_concurrent_activities=settings.max_concurrent_gpu_activities,
                )
            )
        if not workers:
            raise SettingsError(
                f"--queues: none of {list(queues)} is {TASK_QUEUE} or {GPU_TASK_QUEUE}"
            )
        for worker in workers:
            await stack.enter_async_context(worker)
        yield workers


@contextlib.asynccontextmanager
async def open_store(settings: Settings, cpu: CpuPool) -> AsyncIterator[ArtifactStore]:
    """The configured artifact store; the local one's public copies are served over HTTP by
    this process when LOCAL_ARTIFACTS_URL is a loopback address (port 0: any free port)."""
    public_url = None
    server = None
    if not settings.uses_s3 and is_loopback_url(settings.local_artifacts_url):
        server = await serve_public(
            settings.artifacts_dir.expanduser().resolve() / "public", settings.local_artifacts_url
        )
        public_url = server.url
    store = open_artifact_store(settings, cpu=cpu, public_url=public_url)
    try:
        yield store
    finally:
        await store.aclose()
        if server is not None:
            await server.close()


async def check_competition_repo(settings: Settings) -> str:
    """Read the competition repo's branch head once, so a worker that cannot serve its audits
    stops at start-up with one clear line instead of leaving them waiting in `reading`.

    Returns the head commit. Raises SettingsError naming COMPETITION_REPO / COMPETITION_BRANCH.
    """
    if not settings.competition_repo:
        raise SettingsError("COMPETITION_REPO: required for the generation-orchestrator queue")
    repo = CompetitionRepo(
        settings.competition_repo, settings.competition_branch, settings.work_dir / "repos"
    )
    try:
        source = await asyncio.wait_for(asyncio.to_thread(repo.at_head), REPO_CHECK_SECONDS)
    except (CompetitionRepoError, TimeoutError) as e:
        problem = " ".join(str(e).split()) or f"no answer in {REPO_CHECK_SECONDS:g} s"
        raise SettingsError(
            f"COMPETITION_REPO={settings.competition_repo} "
            f"(COMPETITION_BRANCH={settings.competition_branch}) cannot be read: {problem}"
        ) from e
    return source.commit


async def serve(settings: Settings, queues: Sequence[str]) -> None:
    """Connect and run the workers until SIGINT/SIGTERM, then shut down gracefully."""
    if TASK_QUEUE in queues:
        head = await check_competition_repo(settings)
        logger.info(
            "competition repo %s, branch %s at %s",
            settings.competition_repo,
            settings.competition_branch,
            head[:10],
        )
    telemetry = configure_telemetry()
    tracer = telemetry.tracer_provider.get_tracer("temporalio")
    client = await connect(
        settings,
        interceptors=[TracingInterceptor(tracer), ActivityTelemetry(telemetry)],
        runtime=telemetry.runtime,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_workers(client, settings, queues) as workers:
        logger.info(
            "worker running on %s at %s (namespace %s); Ctrl-C to stop",
            ", ".join(w.task_queue for w in workers),
            settings.temporal_address,
            settings.temporal_namespace,
        )
        await stop.wait()
        logger.info("shutting down (finishing running activities, up to %s)", GRACEFUL_SHUTDOWN)
    telemetry.shutdown()
    logger.info("worker stopped")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--queues",
        default=f"{TASK_QUEUE},{GPU_TASK_QUEUE}",
        help=f"comma list of task queues to serve (default: {TASK_QUEUE},{GPU_TASK_QUEUE})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        asyncio.run(serve(settings, queues))
    except (SettingsError, TelemetryError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
