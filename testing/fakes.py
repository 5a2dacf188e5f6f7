"""Fake activities registered under the real names, to test workflow logic without I/O.

Used by the workflow tests (through `tests.workflows.fakes`), `tests/replay/record.py` and
`benchmarks/long_audit.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from models.audit import (
    ArtifactResult,
    AuditPolicy,
    AwaitPodHealthyInput,
    DeletePodInput,
    DeployPodInput,
    FetchArtifactInput,
    FetchPromptInput,
    GenerateInput,
    GenerateResult,
    NotifyInput,
    PodHealthInput,
    PodRef,
    PrefetchPromptsInput,
    PrefetchPromptsResult,
    PublishReportInput,
    PublishReportResult,
    ReadRoundFilesInput,
    RenderPreviewInput,
    ScoreDistanceInput,
    ScoreDistanceResult,
    SweepPodsInput,
    SweepPodsResult,
    WriteFilesInput,
    WriteFilesResult,
)
from models.competition import (
    BuildEntry,
    BuildStatus,
    GenerationEntry,
    Prompt,
    RoundFiles,
)
from models.constants import unkeyed_pod_name
from models.errors import ErrorType
from models.rounds import LeaderFiles, ReadLeaderFilesInput


def round_files(
    n_prompts: int = 6,
    hotkey: str = "5Fake",
    critical: list[str] | None = None,
    build_status: BuildStatus = BuildStatus.SUCCESS,
) -> RoundFiles:
    stems = [f"p{i:03d}" for i in range(n_prompts)]
    return RoundFiles(
        round=1,
        hotkey=hotkey,
        seed=42,
        prompts=[Prompt(url=f"http://prompts/{s}.png", stem=s) for s in stems],
        submitted={
            s: GenerationEntry(glb=f"http://sub/{s}.glb", png=f"http://sub/{s}.png") for s in stems
        },
        critical_prompts=critical or [],
        build=BuildEntry(
            repo="r",
            commit="c" * 40,
            tag="ccccccc-mesh-1",
            status=build_status,
            docker_image="local/reference-miner" if build_status is BuildStatus.SUCCESS else None,
        ),
    )


@dataclass
class FakeWorld:
    """In-memory stand-ins for the repo, providers, miner and scorer."""

    files: RoundFiles
    policy: AuditPolicy = field(default_factory=AuditPolicy)
    generation_time: float = 1.0
    mismatching: set[str] = field(default_factory=set)  # stems whose distance is 0.5
    failing: dict[str, int] = field(default_factory=dict)  # stem -> failures before success
    bad_pods: set[str] = field(default_factory=set)  # pod names whose deploy fails
    errors: dict[str, ErrorType] = field(default_factory=dict)  # stem -> error on every attempt
    generate_calls: list[str] = field(default_factory=list)
    prompt_fetches: list[str] = field(default_factory=list)
    prompt_outages: int = 0  # fetch_prompt fails (retryably) this many times first
    deploy_delay: dict[str, float] = field(default_factory=dict)  # pod name -> seconds
    undeletable: set[str] = field(default_factory=set)  # pods whose delete is rejected
    log: list[tuple[str, str]] = field(default_factory=list)  # ("deploy"|"delete", pod) in order
    rented: list[tuple[str, str]] = field(default_factory=list)
    """("deploy"|"delete", the name the provider saw) in order; the other records and knobs use
    upstream's pod name (the run key of keyed audits dropped)."""
    generate_audit_ids: list[str] = field(default_factory=list)
    deployed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    writes: list[WriteFilesInput] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # stem -> reported generation time
    delays: dict[str, float] = field(default_factory=dict)  # stem -> seconds the call takes
    not_visible: dict[str, int] = field(default_factory=dict)  # pod -> attempts never listed
    builds: list[BuildStatus] = field(default_factory=list)  # statuses read before files.build
    deploy_times: dict[str, float] = field(default_factory=dict)  # pod -> monotonic deploy time
    render_delay: float = 0.0  # seconds every render_preview takes
    prefetched: list[str] = field(default_factory=list)  # prompt URLs prefetch_prompts was given
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(activity, pod url or glb uri, monotonic start, end) of generate and render calls."""
    leader_generated: dict[str, GenerationEntry] = field(default_factory=dict)
    leader_image: str | None = "local/reference-miner?delay=0"  # None: leader.json is empty
    scored: list[str] = field(default_factory=list)  # png_b URIs score_distance was given
    fetched: list[str] = field(default_factory=list)  # URLs fetch_artifact was given
    read_outage: bool = False  # read_round_files fails (retryably) until this is cleared
    stuck_pods: set[str] = field(default_factory=set)  # pods whose generate never answers
    pod_times: dict[str, float] = field(default_factory=dict)
    """pod name -> seconds every generation on it takes and reports (a straggler)."""
    read_repos: list[str | None] = field(default_factory=list)  # competition_repo of each read
    deploy_requests: list[DeployPodInput] = field(default_factory=list)  # every deploy_pod input
    delete_requests: list[PodRef] = field(default_factory=list)  # pods delete_pod deleted
    sweeps: list[SweepPodsInput] = field(default_factory=list)  # every sweep_pods input
    warming_forever: set[str] = field(default_factory=set)  # pods never healthy (until cancelled)
    warming: list[str] = field(default_factory=list)  # pods whose await_pod_healthy started
    unrenderable: set[str] = field(default_factory=set)  # GLB URIs render_preview refuses
    unfetchable: set[str] = field(default_factory=set)  # URLs fetch_artifact cannot download
    scoring_down: bool = False  # score_distance fails (non-retryably)
    pod_health: bool | None = True  # what check_pod_health answers; None: it raises
    health_checks: list[str] = field(default_factory=list)  # pods check_pod_health probed
    notices: list[NotifyInput] = field(default_factory=list)  # every notify input
    reports: list[PublishReportInput] = field(default_factory=list)  # every publish_report input

    def activities(self) -> list[Callable[..., Any]]:
        world = self

        @activity.defn(name="load_audit_policy")
        async def load_audit_policy() -> AuditPolicy:
            return world.policy

        @activity.defn(name="read_round_files")
        async def read_round_files(input: ReadRoundFilesInput) -> RoundFiles:
            world.read_repos.append(input.competition_repo)
            if world.read_outage:
                raise ApplicationError("git fetch failed: connection refused")
            if input.hotkey != world.files.hotkey:
                raise ApplicationError(
                    f"unknown hotkey {input.hotkey}",
                    type=ErrorType.UNKNOWN_HOTKEY,
                    non_retryable=True,
                )
            if world.builds and world.files.build is not None:
                status = world.builds.pop(0)
                build = world.files.build.model_copy(
                    update={"status": status, "docker_image": None}
                )
                return world.files.model_copy(update={"build": build})
            return world.files

        @activity.defn(name="read_leader_files")
        async def read_leader_files(input: ReadLeaderFilesInput) -> LeaderFiles:
            if world.leader_image is None:
                raise ApplicationError(
                    "leader.json: Leader docker image not found",
                    type=ErrorType.COMPETITION_FILE_INVALID,
                    non_retryable=True,
                )
            files = world.files.model_copy(
                update={
                    "hotkey": "leader",
                    "submitted": {},
                    "critical_prompts": [],
                    "build": None,
                    "generated": world.leader_generated,
                }
            )
            return LeaderFiles(files=files, image=world.leader_image)

        @activity.defn(name="deploy_pod")
        async def deploy_pod(input: DeployPodInput) -> PodRef:
            name = unkeyed_pod_name(input.name)
            await asyncio.sleep(world.deploy_delay.get(name, 0.0))
            world.deploy_times.setdefault(name, time.monotonic())
            world.deployed.append(name)
            world.deploy_requests.append(input.model_copy(update={"name": name}))
            world.log.append(("deploy", name))
            world.rented.append(("deploy", input.name))
            return PodRef(
                name=input.name,
                provider=input.provider,
                container_id=input.name,
                deployed_at=datetime.now(UTC),
            )

        @activity.defn(name="await_pod_healthy")
        async def await_pod_healthy(input: AwaitPodHealthyInput) -> PodRef:
            name = unkeyed_pod_name(input.pod.name)
            world.warming.append(name)
            if name in world.warming_forever:
                await asyncio.Event().wait()  # ends when cancelled (or the worker shuts down)
            if name in world.bad_pods:
                raise ApplicationError(
                    "never healthy", type=ErrorType.POD_UNHEALTHY, non_retryable=True
                )
            if world.not_visible.get(name, 0) > 0:
                world.not_visible[name] -= 1
                raise ApplicationError(
                    "not listed in time", type=ErrorType.POD_NOT_VISIBLE, non_retryable=True
                )
            return input.pod.model_copy(
                update={"url": f"http://{name}", "healthy_at": datetime.now(UTC)}
            )

        @activity.defn(name="check_pod_health")
        async def check_pod_health(input: PodHealthInput) -> bool:
            world.health_checks.append(input.pod.name)
            if world.pod_health is None:
                raise ApplicationError(
                    "health probe failed", type=ErrorType.POD_UNHEALTHY, non_retryable=True
                )
            return world.pod_health

        @activity.defn(name="delete_pod")
        async def delete_pod(input: DeletePodInput) -> None:
            name = unkeyed_pod_name(input.pod.name)
            if name in world.undeletable:
                raise ApplicationError(
                    "HTTP 403", type=ErrorType.PROVIDER_REJECTED, non_retryable=True
                )
            world.deleted.append(name)
            world.delete_requests.append(input.pod.model_copy(update={"name": name}))
            world.log.append(("delete", name))
            world.rented.append(("delete", input.pod.name))

        @activity.defn(name="sweep_pods")
        async def sweep_pods(input: SweepPodsInput) -> SweepPodsResult:
            world.swept.append(input.prefix)
            world.sweeps.append(input)
            return SweepPodsResult()

        @activity.defn(name="fetch_prompt")
        async def fetch_prompt(input: FetchPromptInput) -> ArtifactResult:
            stem = input.url.rsplit("/", 1)[1].split(".")[0]
            world.prompt_fetches.append(stem)
            if world.prompt_outages > 0:
                world.prompt_outages -= 1
                raise ApplicationError(f"prompt {input.url}: HTTP 503, will retry")
            if world.errors.get(stem) is ErrorType.PROMPT_UNAVAILABLE:
                raise ApplicationError(
                    f"prompt {input.url} unavailable: HTTP 404",
                    type=ErrorType.PROMPT_UNAVAILABLE,
                    non_retryable=True,
                )
            return ArtifactResult(uri=f"file:///prompts/{stem}.png", size=1)

        @activity.defn(name="prefetch_prompts")
        async def prefetch_prompts(input: PrefetchPromptsInput) -> PrefetchPromptsResult:
            world.prefetched.extend(input.urls)
            unavailable = {}
            for url in input.urls:
                stem = url.rsplit("/", 1)[1].split(".")[0]
                if world.errors.get(stem) is ErrorType.PROMPT_UNAVAILABLE:
                    unavailable[url] = f"prompt {url} unavailable: HTTP 404"
            return PrefetchPromptsResult(unavailable=unavailable)

        @activity.defn(name="generate")
        async def generate(input: GenerateInput) -> GenerateResult:
            stem = input.assignment_id.split("#")[0]
            world.generate_calls.append(input.assignment_id)
            world.generate_audit_ids.append(input.audit_id)
            if stem in world.errors:
                raise ApplicationError(
                    f"{world.errors[stem]} for {stem}", type=world.errors[stem], non_retryable=True
                )
            started = time.monotonic()
            if any(input.pod_url == f"http://{pod}" for pod in world.stuck_pods):
                await asyncio.sleep(3600)  # until cancelled
            pod = unkeyed_pod_name(input.pod_url.removeprefix("http://"))
            await asyncio.sleep(world.pod_times.get(pod, world.delays.get(stem, 0.0)))
            world.spans.append(("generate", input.pod_url, started, time.monotonic()))
            if world.failing.get(stem, 0) > 0:
                world.failing[stem] -= 1
                raise ApplicationError("HTTP 500", type=ErrorType.MINER_FAILED, non_retryable=True)
            return GenerateResult(
                glb_uri=f"file:///gen/{stem}.glb",
                size=100,
                generation_time=world.pod_times.get(
                    pod, world.times.get(stem, world.generation_time)
                ),
            )

        @activity.defn(name="fetch_artifact")
        async def fetch_artifact(input: FetchArtifactInput) -> ArtifactResult:
            world.fetched.append(input.url)
            if input.url in world.unfetchable:
                raise ApplicationError(
                    f"{input.url}: HTTP 404",
                    type=ErrorType.SUBMISSION_UNAVAILABLE,
                    non_retryable=True,
                )
            return ArtifactResult(uri=input.url.replace("http://sub/", "file:///sub/"), size=1)

        @activity.defn(name="render_preview")
        async def render_preview(input: RenderPreviewInput) -> ArtifactResult:
            started = time.monotonic()
            await asyncio.sleep(world.render_delay)
            world.spans.append(("render", input.glb_uri, started, time.monotonic()))
            if input.glb_uri in world.unrenderable:
                raise ApplicationError(
                    "2 objects in the GLB", type=ErrorType.RENDER_FAILED, non_retryable=True
                )
            return ArtifactResult(uri=input.glb_uri.replace(".glb", ".png"), size=1)

        @activity.defn(name="score_distance")
        async def score_distance(input: ScoreDistanceInput) -> ScoreDistanceResult:
            stem = input.png_b_uri.rsplit("/", 1)[1].split(".")[0]
            world.scored.append(f"{input.png_a_uri} {input.png_b_uri}")
            if world.scoring_down:
                raise ApplicationError(
                    "DINOv3 model cannot be loaded",
                    type=ErrorType.SCORING_MODEL_UNAVAILABLE,
                    non_retryable=True,
                )
            return ScoreDistanceResult(distance=0.5 if stem in world.mismatching else 0.01)

        @activity.defn(name="write_files")
        async def write_files(input: WriteFilesInput) -> WriteFilesResult:
            world.writes.append(input)
            return WriteFilesResult(commit="abc")

        @activity.defn(name="notify")
        async def notify(input: NotifyInput) -> None:
            world.notices.append(input)

        @activity.defn(name="publish_report")
        async def publish_report(input: PublishReportInput) -> PublishReportResult:
            world.reports.append(input)
            return PublishReportResult(url=f"https://cdn.test/{input.round}/{input.hotkey}.html")

        return [
            load_audit_policy,
            read_round_files,
            read_leader_files,
            deploy_pod,
            await_pod_healthy,
            check_pod_health,
            delete_pod,
            sweep_pods,
            fetch_prompt,
            prefetch_prompts,
            generate,
            fetch_artifact,
            notify,
            publish_report,
            render_preview,
            score_distance,
            write_files,
        ]
