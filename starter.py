"""Operator CLI: run the embedded Temporal server, start/watch audits, compute verdicts.

    python starter.py server                                   # embedded Temporal + Web UI
    python starter.py run                                      # start (or attach to) the round loop
    python starter.py audit --round 1 --hotkey HOTKEY          # start (or attach to) an audit
    python starter.py verdict --competition-repo PATH --round N --hotkey HOTKEY
    python starter.py preview model.glb -o preview.png          # render a GLB as the audit does
    python starter.py pods list [--round N] [--hotkey H]         # rented pods on every provider
    python starter.py pods cleanup [--round N] [--hotkey H] [--dry-run]   # delete leaked ones

`audit` starts the embedded dev server when nothing answers at a local TEMPORAL_ADDRESS, starts
AuditWorkflow with id `audit-{round}-{hotkey}` (a second start attaches to the running audit,
never a duplicate), prints progress, then the verdict. A worker (`python worker.py`) must run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from competition.repo import (
    CompetitionRepo,
    CompetitionRepoError,
    CompetitionSource,
    DirectorySource,
)
from competition.rounds import load_round_files
from embedded_temporal import UI_ADDRESS, connect, ensure_server
from models.audit import AuditInput, AuditPolicy, AuditProgress, AuditResult, ProviderName
from models.competition import GenerationAudit
from models.constants import (
    AUDIT_WORKFLOW_ID_PREFIX,
    ROUND_WORKFLOW_ID,
    TASK_QUEUE,
    audit_workflow_id,
    pod_name_prefix,
)
from models.errors import CompetitionFileError
from models.rounds import LEADER_HOTKEY, RoundInput, RoundPolicy, RoundStatus
from models.settings import Settings, SettingsError, load_settings
from providers import inventory
from providers.base import ContainerInfo, GpuProvider, ProviderError
from providers.breaker import read_states
from providers.registry import build_providers
from workflows.policy import verdict

logger = logging.getLogger("starter")

PROGRESS_INTERVAL_SECONDS = 1.0


# --- verdict ------------------------------------------------------------------------------------


def open_source(location: str, settings: Settings) -> CompetitionSource:
    """A plain directory (work tree or fixtures) is read as is; a git URL or bare repo is cloned."""
    path = Path(location)
    if path.is_dir() and not (path / "HEAD").is_file():
        return DirectorySource(path)
    repo = CompetitionRepo(location, settings.competition_branch, settings.work_dir / "repos")
    return repo.at_head()  # one fetch, every file from the same commit


def compute_verdict(
    source: CompetitionSource, round_number: int, hotkey: str, policy: AuditPolicy
) -> GenerationAudit:
    """The generation_audits.json entry the repo's files imply, with the configured tolerances.

    As upstream, only the audited set counts: submitted.json entries whose glb or png is null
    are dropped; every other submitted stem is checked, generated or not.
    """
    files = load_round_files(source, round_number, hotkey)
    if files.build is not None and files.build.status.failed:
        return verdict.rejected_without_generation(hotkey, verdict.BUILD_FAILED_REASON)
    return verdict.decide(
        hotkey, files.audited_stems(), files.generated, files.critical_prompts, policy
    )


def describe_thresholds(policy: AuditPolicy) -> str:
    """One line naming every threshold the verdict applies, by its setting name."""
    return (
        f"thresholds: GENERATION_TIMEOUT={policy.generation_timeout_seconds:g}s "
        f"ACCEPTABLE_DISTANCE={policy.acceptable_distance:g} "
        f"GENERATION_MEDIAN_LIMIT={policy.median_limit_seconds:g}s "
        f"GENERATION_MEDIAN_TRIM_COUNT={policy.trim_count} "
        f"MAX_MISMATCHED_PROMPTS={policy.max_mismatched_prompts} "
        f"MAX_MISMATCHED_CRITICAL_PROMPTS={policy.max_mismatched_critical_prompts}"
    )


# --- audit --------------------------------------------------------------------------------------


async def start_audit(
    client: Client,
    round_number: int,
    hotkey: str,
    *,
    task_queue: str = TASK_QUEUE,
    policy: AuditPolicy | None = None,
    resume: bool = True,
) -> WorkflowHandle[object, AuditResult]:
    """Start AuditWorkflow, or attach to the running one with the same id (never a duplicate).

    A finished audit is not repeated: its id is reused only if the earlier run failed.
    """
    workflow_id = audit_workflow_id(round_number, hotkey)
    try:
        handle: WorkflowHandle[object, AuditResult] = await client.start_workflow(
            "AuditWorkflow",
            AuditInput(round=round_number, hotkey=hotkey, policy=policy, resume=resume),
            id=workflow_id,
            task_queue=task_queue,
            result_type=AuditResult,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    except WorkflowAlreadyStartedError:
        # Already completed: show that audit's result instead of running it again.
        handle = client.get_workflow_handle(workflow_id, result_type=AuditResult)
    return handle


def history_url(namespace: str, workflow_id: str) -> str:
    """Web UI page of a workflow's history (embedded server)."""
    return f"{UI_ADDRESS}/namespaces/{namespace}/workflows/{workflow_id}"


def describe_progress(progress: AuditProgress) -> str:
    """One progress line."""
    if progress.total == 0:
        return f"{progress.status}"
    return (
        f"{progress.status}: {progress.done}/{progress.total} prompts done, "
        f"{progress.in_flight} in flight, mismatches {progress.mismatches} "
        f"(critical {progress.critical_mismatches}), pods {progress.pods_active} active / "
        f"{progress.pods_started} started"
    )


async def watch_audit(
    handle: WorkflowHandle[object, AuditResult],
    out: Callable[[str], None],
    interval: float = PROGRESS_INTERVAL_SECONDS,
) -> AuditResult:
    """Print progress lines as they change until the audit completes; return its result."""
    result_task = asyncio.ensure_future(handle.result())
    last = ""
    while not result_task.done():
        try:
            progress = await handle.query("progress", result_type=AuditProgress)
            line = describe_progress(progress)
            if line != last:
                out(f"[{handle.id}] {line}")
                last = line
        except Exception as e:  # a closed or not yet started workflow answers queries late
            logger.debug("progress query failed: %s", e)
        await asyncio.wait({result_task}, timeout=interval)
    return result_task.result()


async def run_audit_command(
    settings: Settings, round_number: int, hotkey: str, wait: bool, resume: bool = True
) -> int:
    """`starter.py audit`."""
    server = await ensure_server(settings)
    if server is not None:
        print(f"started the embedded Temporal server at {settings.temporal_address}")
    client = await connect(settings)
    handle = await start_audit(
        client, round_number, hotkey, task_queue=settings.task_queue, resume=resume
    )
    print(f"audit {handle.id} on task queue {settings.task_queue}")
    print(f"history: {history_url(settings.temporal_namespace, handle.id)}")
    if not wait:
        return 0
    result = await watch_audit(handle, print)
    print(json.dumps(result.audit.model_dump(mode="json"), indent=2))
    return 0


# --- the round loop -----------------------------------------------------------------------------


async def start_round_loop(
    client: Client,
    *,
    task_queue: str = TASK_QUEUE,
    workflow_id: str = ROUND_WORKFLOW_ID,
    policy: RoundPolicy | None = None,
    audit_policy: AuditPolicy | None = None,
) -> WorkflowHandle[object, None]:
    """Start RoundWorkflow (`competition`), or attach to the one already running."""
    handle: WorkflowHandle[object, None] = await client.start_workflow(
        "RoundWorkflow",
        RoundInput(policy=policy, audit_policy=audit_policy),
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="the competition loop: builds, leader outputs, audits, round after round",
    )
    return handle


def describe_round(status: RoundStatus) -> str:
    """One status line of the round loop."""
    line = f"round {status.round} stage {status.stage}: {status.phase}"
    if status.running:
        line += f"; running {', '.join(status.running)}"
    if status.waiting:
        line += f"; waiting for builds/slots: {', '.join(status.waiting)}"
    return line


async def run_round_command(settings: Settings, watch: bool) -> int:
    """`starter.py run`."""
    server = await ensure_server(settings)
    if server is not None:
        print(f"started the embedded Temporal server at {settings.temporal_address}")
    client = await connect(settings)
    handle = await start_round_loop(client, task_queue=settings.task_queue)
    print(
        f"round loop {handle.id} (run {handle.result_run_id}) on task queue {settings.task_queue}"
    )
    print(f"history: {history_url(settings.temporal_namespace, handle.id)}")
    if not watch:
        return 0
    last = ""
    while True:  # until Ctrl-C: the loop itself runs forever
        try:
            line = describe_round(await handle.query("status", result_type=RoundStatus))
        except Exception as e:  # no worker yet: the query waits for one
            line = f"no answer yet ({e}); is `python worker.py` running?"
        if line != last:
            print(line)
            last = line
        await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)


# --- preview ------------------------------------------------------------------------------------


def render_preview_file(glb: Path, output: Path) -> str | None:
    """Render `glb` to `output` exactly as the audit does; the one-line reason if refused."""
    # Imported here: rendering pulls in pyrender, which no other command needs.
    from activities.preview import MeshLoadError, PreviewRenderer, load_mesh_as_upstream

    try:
        mesh = load_mesh_as_upstream(glb.read_bytes())
    except MeshLoadError as e:
        return str(e)

    renderer = PreviewRenderer()
    try:
        output.write_bytes(renderer.render_blocking(mesh))
    finally:
        renderer.close()
    return None


# --- CLI ----------------------------------------------------------------------------------------


# --- pods -----------------------------------------------------------------------------------------

RUNNING_OWNERS_QUERY = (
    "ExecutionStatus = 'Running' AND (WorkflowType = 'AuditWorkflow' OR "
    "WorkflowType = 'LeaderGenerationWorkflow' OR WorkflowType = 'PodWorkflow')"
)


def owner_pod_prefix(workflow_id: str) -> str | None:
    """The pod-name prefix of an audit (`audit-{round}-{hotkey}`), leader (`leader-{round}`) or
    one of their pod children (`...-pod-...`); None for any other id. Hotkeys (SS58) have no
    dash."""
    kind, _, rest = workflow_id.partition("-")
    round_text, _, tail = rest.partition("-")
    if not round_text.isdigit():
        return None
    hotkey = tail.partition("-")[0]
    if kind == AUDIT_WORKFLOW_ID_PREFIX and hotkey:
        return pod_name_prefix(int(round_text), hotkey)
    if kind == "leader":
        return pod_name_prefix(int(round_text), LEADER_HOTKEY)
    return None


async def running_pod_owners(client: Client) -> dict[str, str]:
    """Pod-name prefix -> id of a running audit, leader or pod workflow whose pods start with it
    (a pod workflow outliving its audit still deletes its own pod)."""
    owners: dict[str, str] = {}
    async for execution in client.list_workflows(RUNNING_OWNERS_QUERY):
        prefix = owner_pod_prefix(execution.id)
        if prefix is not None:
            owners[prefix] = execution.id
    return owners


class PodReport(inventory.PodListing):
    """`pods list`: every rented pod, and the running workflow owning each (absent: leaked)."""

    owners: dict[str, str] = {}  # pod name -> id of a running audit/leader/pod workflow

    def leaked(self) -> list[ContainerInfo]:
        """Pods no running audit, leader or pod workflow owns."""
        return [pod for pod in self.pods if pod.name not in self.owners]


async def find_pods(
    client: Client,
    providers: dict[ProviderName, GpuProvider],
    round_number: int | None = None,
    hotkey: str | None = None,
) -> PodReport:
    """Rented pods (of a round / hotkey) on every provider, each with its running owner."""
    listing = await inventory.list_pods(providers, inventory.pods_prefix(round_number), hotkey)
    running = await running_pod_owners(client)
    owners = {}
    for pod in listing.pods:
        prefix = inventory.owned_by(pod.name, list(running))
        if prefix is not None:
            owners[pod.name] = running[prefix]
    pods = sorted(listing.pods, key=lambda p: (p.name, p.provider, p.container_id))
    return PodReport(pods=pods, errors=listing.errors, owners=owners)


async def cleanup_pods(
    providers: dict[ProviderName, GpuProvider], report: PodReport, dry_run: bool = False
) -> list[ContainerInfo]:
    """Delete the leaked pods of `report` (none with `dry_run`); returns those (to be) deleted.

    Raises the first provider error after trying every pod (a rerun deletes what is left).
    """
    done: list[ContainerInfo] = []
    problems: list[ProviderError] = []
    for pod in report.leaked():
        if dry_run:
            done.append(pod)
            continue
        try:
            if await inventory.delete_pod(providers[pod.provider], pod.name):
                done.append(pod)
        except ProviderError as e:
            problems.append(e)
    if problems:
        raise problems[0]
    return done


def describe_pod(pod: ContainerInfo, owner: str | None) -> str:
    """One line of `pods list`."""
    return f"{pod.provider}\t{pod.name}\t{pod.container_id}\t{pod.state}\t{owner or 'LEAKED'}"


async def run_pods_command(
    client: Client,
    providers: dict[ProviderName, GpuProvider],
    args: argparse.Namespace,
    out: Callable[[str], None] = print,
    breaker_dir: Path | None = None,
) -> int:
    """`starter.py pods list|cleanup`: 0 when every provider answered, else 1.

    With `breaker_dir` (WORK_DIR), also prints each worker's open provider breakers.
    """
    report = await find_pods(client, providers, args.round, args.hotkey)
    for pod in report.pods:
        out(describe_pod(pod, report.owners.get(pod.name)))
    for name, problem in sorted(report.errors.items()):
        out(f"error: {name} could not be listed: {problem}")
    if args.pods_command == "cleanup":
        verb = "would delete" if args.dry_run else "deleted"
        try:
            for pod in await cleanup_pods(providers, report, dry_run=args.dry_run):
                out(f"{verb} {pod.provider} {pod.name}")
        except ProviderError as e:
            out(f"error: {e}")
            return 1
    out(f"{len(report.pods)} pods, {len(report.leaked())} leaked")
    if breaker_dir is not None:
        for worker, states in read_states(breaker_dir).items():
            for state in states:
                if state.is_open(time.time()):
                    out(f"breaker open on {worker}: {state.provider} ({state.last_error})")
    return 1 if report.errors else 0


async def pods_main(settings: Settings, args: argparse.Namespace) -> int:
    """Connect, build every configured provider, run the pods command, close the clients."""
    client = await connect(settings)
    providers = build_providers(settings)
    try:
        return await run_pods_command(client, providers, args, breaker_dir=settings.work_dir)
    finally:
        for provider in providers.values():
            await provider.aclose()


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("server", help="run the embedded Temporal dev server in the foreground")
    run = sub.add_parser(
        "run", help="start (or attach to) the round loop that runs every round by itself"
    )
    run.add_argument("--watch", action="store_true", help="print its status until Ctrl-C")
    audit = sub.add_parser("audit", help="start (or attach to) an audit and print its verdict")
    audit.add_argument("--round", type=int, required=True)
    audit.add_argument("--hotkey", required=True)
    audit.add_argument("--no-wait", action="store_true", help="start and return at once")
    audit.add_argument(
        "--no-resume",
        action="store_true",
        help="a deliberate re-audit: regenerate everything instead of resuming from generated.json",
    )
    check = sub.add_parser(
        "verdict",
        help="print the verdict implied by a repo's files (JSON; the thresholds go to stderr)",
    )
    check.add_argument("--competition-repo", required=True, help="directory, bare repo or git URL")
    check.add_argument("--round", type=int, required=True)
    check.add_argument("--hotkey", required=True)
    preview = sub.add_parser(
        "preview", help="render a GLB to the 2x2 preview PNG exactly as the audit does"
    )
    preview.add_argument("glb", type=Path, help="the GLB file")
    preview.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    pods = sub.add_parser(
        "pods", help="rented pods on every provider in GPU_PROVIDERS; delete leaked ones"
    )
    pods_sub = pods.add_subparsers(dest="pods_command", required=True)
    for name, text in (
        ("list", "print each pod: provider, name, id, state, owning audit (or LEAKED)"),
        ("cleanup", "delete every pod no running audit, leader or pod workflow owns"),
    ):
        command = pods_sub.add_parser(name, help=text)
        command.add_argument("--round", type=int, default=None)
        command.add_argument("--hotkey", default=None)
        if name == "cleanup":
            command.add_argument(
                "--dry-run", action="store_true", help="print what would be deleted"
            )
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO = sys.stdout) -> int:
    """CLI entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        if args.command == "server":
            from embedded_temporal import run_foreground

            run_foreground(settings)
        if args.command == "preview":
            problem = render_preview_file(args.glb, args.output)
            if problem is not None:
                print(f"refused: {args.glb}: {problem}", file=sys.stderr)
                return 1
            print(f"wrote {args.output}")
            return 0
        if args.command == "verdict":
            source = open_source(args.competition_repo, settings)
            policy = settings.audit_policy()
            audit = compute_verdict(source, args.round, args.hotkey, policy)
            print(describe_thresholds(policy), file=sys.stderr)
            stdout.write(json.dumps(audit.model_dump(mode="json"), indent=2) + "\n")
            return 0
        if args.command == "run":
            return asyncio.run(run_round_command(settings, watch=args.watch))
        if args.command == "pods":
            return asyncio.run(pods_main(settings, args))
        return asyncio.run(
            run_audit_command(
                settings, args.round, args.hotkey, wait=not args.no_wait, resume=not args.no_resume
            )
        )
    except (
        SettingsError,
        CompetitionFileError,
        LookupError,
        ValueError,
        CompetitionRepoError,
        OSError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
