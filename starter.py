"""Operator CLI: run the embedded Temporal server, start/watch audits, compute verdicts.

    python starter.py server                                   # embedded Temporal + Web UI
    python starter.py run                                      # start (or attach to) the round loop
    python starter.py audit --round 1 --hotkey HOTKEY          # start (or attach to) an audit
    python starter.py cancel --round 1 --hotkey HOTKEY         # cancel it (pods are deleted)
    python starter.py status [--round N] [--once]              # the live status board
    python starter.py report --round N --hotkey H -o out.html  # an audit's HTML report
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
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError

from competition.repo import (
    CompetitionRepo,
    CompetitionRepoError,
    CompetitionSource,
    DirectorySource,
)
from competition.rounds import load_round_files
from embedded_temporal import (
    DevServerError,
    TemporalUnavailableError,
    connect,
    ensure_server,
    workflow_url,
)
from models.audit import AuditInput, AuditPolicy, AuditProgress, AuditResult
from models.competition import GenerationAudit
from models.constants import ROUND_WORKFLOW_ID, TASK_QUEUE, audit_workflow_id
from models.errors import CompetitionFileError, ErrorType
from models.rounds import RoundInput, RoundPolicy, RoundStatus
from models.settings import Settings, SettingsError, load_settings
from pods_cli import add_pods_parser, pods_main
from workflows.policy import verdict

logger = logging.getLogger("starter")

PROGRESS_INTERVAL_SECONDS = 1.0

WORKER_CHECK_INTERVAL_SECONDS = 10.0
"""How often `watch_audit` asks the server whether a worker polls the audit's queues."""

POLLER_STALE_AFTER = timedelta(minutes=2)
"""A poller not seen for this long is gone (a worker's long poll lasts about a minute)."""


class CliError(Exception):
    """A failure the CLI reports as one line (exit status 2)."""


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


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h03m`: short enough for a progress line."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def estimate_remaining(progress: AuditProgress, elapsed: float) -> float | None:
    """Seconds until every prompt is done at the pace so far (prompts done per second since the
    audit's run started, warm-up and render/score included); None before the first is done."""
    left = progress.total - progress.done
    if left <= 0:
        return 0.0
    if progress.done == 0 or elapsed <= 0:
        return None
    return left * elapsed / progress.done


def describe_progress(progress: AuditProgress, elapsed: float | None = None) -> str:
    """One progress line: counts, median so far, elapsed time and ETA."""
    timing = f" [{format_duration(elapsed)} elapsed]" if elapsed is not None else ""
    if progress.total == 0:
        return f"{progress.status}{timing}"
    median = f"median {progress.median_seconds:.1f}s" if progress.median_seconds is not None else ""
    remaining = None if elapsed is None else estimate_remaining(progress, elapsed)
    eta = "ETA ?" if remaining is None else f"ETA {format_duration(remaining)}"
    parts = [
        f"{progress.done}/{progress.total} prompts done",
        f"{progress.in_flight} in flight",
        f"mismatches {progress.mismatches} (critical {progress.critical_mismatches})",
        f"pods {progress.pods_active} active / {progress.pods_started} started",
        *([median] if median else []),
    ]
    if elapsed is not None:
        parts += [f"{format_duration(elapsed)} elapsed", eta]
    return f"{progress.status}: {', '.join(parts)}"


async def queue_has_worker(client: Client, task_queue: str, *, activities: bool = False) -> bool:
    """True when a worker polled `task_queue` (its workflow or activity side) recently."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=(
                TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
                if activities
                else TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
            ),
        )
    )
    cutoff = datetime.now(UTC) - POLLER_STALE_AFTER
    return any(
        poller.last_access_time.ToDatetime(tzinfo=UTC) >= cutoff for poller in response.pollers
    )


async def missing_workers(client: Client, task_queue: str, gpu_task_queue: str) -> list[str]:
    """The queues an audit needs that no worker serves (empty when all are served)."""
    missing = []
    if not await queue_has_worker(client, task_queue):
        missing.append(task_queue)
    if not await queue_has_worker(client, gpu_task_queue, activities=True):
        missing.append(gpu_task_queue)
    return missing


async def watch_audit(
    handle: WorkflowHandle[object, AuditResult],
    out: Callable[[str], None],
    interval: float = PROGRESS_INTERVAL_SECONDS,
    *,
    unserved: Callable[[], Awaitable[list[str]]] | None = None,
) -> AuditResult:
    """Print progress lines as they change until the audit completes; return its result.

    Each line carries the elapsed time (since the audit's current run started) and an ETA;
    with `unserved` (the queues no worker serves, e.g. `missing_workers`) it also says when
    the audit waits for a worker.
    """
    result_task = asyncio.ensure_future(handle.result())
    last = ""
    started: datetime | None = None
    warned: list[str] = []
    next_worker_check = 0.0
    loop = asyncio.get_running_loop()
    while not result_task.done():
        try:
            if started is None:
                started = (await handle.describe()).start_time
            if unserved is not None and loop.time() >= next_worker_check:
                next_worker_check = loop.time() + WORKER_CHECK_INTERVAL_SECONDS
                missing = await unserved()
                if missing and missing != warned:
                    out(
                        f"[{handle.id}] no worker serves task queue {', '.join(missing)}: the "
                        "audit waits; start one with `.venv/bin/python worker.py`"
                    )
                elif warned and not missing:
                    out(f"[{handle.id}] a worker serves every queue again")
                warned = missing
            progress = await handle.query("progress", result_type=AuditProgress)
            elapsed = (datetime.now(UTC) - started).total_seconds()
            line = describe_progress(progress, elapsed)
            key = describe_progress(progress)  # print on change, not on every tick
            if key != last:
                out(f"[{handle.id}] {line}")
                last = key
        except RPCError as e:  # a closed or not yet started workflow answers queries late
            logger.debug("progress query failed: %s", e)
        await asyncio.wait({result_task}, timeout=interval)
    try:
        return result_task.result()
    except WorkflowFailureError as e:
        raise CliError(f"audit {handle.id} failed: {deepest_message(e)}") from e


def deepest_message(error: BaseException) -> str:
    """The message that says why: the first error of ours (an `ErrorType`) in the cause chain,
    else the innermost application error, else the innermost cause."""
    chain: list[BaseException] = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    ours = {kind.value for kind in ErrorType}
    app = [e for e in chain if isinstance(e, ApplicationError)]
    for e in app:
        if e.type in ours:
            return e.message
    if app:
        return app[-1].message
    return str(chain[-1]) or type(chain[-1]).__name__


def interrupted_message(
    settings: Settings, workflow_id: str, round_number: int, hotkey: str
) -> str:
    """What Ctrl-C on `starter.py audit` prints: the audit goes on, and how to cancel it."""
    return (
        f"stopped watching; the audit {workflow_id} goes on (workers run it). Watch again: "
        f"`.venv/bin/python starter.py audit --round {round_number} --hotkey {hotkey}`; cancel "
        f"it: `.venv/bin/python starter.py cancel --round {round_number} --hotkey {hotkey}`; "
        f"history: {workflow_url(settings, workflow_id)}"
    )


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
    print(f"history: {workflow_url(settings, handle.id)}", flush=True)
    if not wait:
        return 0
    try:
        result = await watch_audit(
            handle,
            _print_flushed,
            unserved=lambda: missing_workers(client, settings.task_queue, settings.gpu_task_queue),
        )
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises KeyboardInterrupt
        print(interrupted_message(settings, handle.id, round_number, hotkey), file=sys.stderr)
        raise
    print(json.dumps(result.audit.model_dump(mode="json"), indent=2))
    return 0


def _print_flushed(line: str) -> None:
    print(line, flush=True)


async def run_status_command(
    settings: Settings, round_number: int | None, *, once: bool, out: TextIO
) -> int:
    """`starter.py status`: the board (status_board.py), once or live until Ctrl-C."""
    from rich.console import Console

    import status_board

    client = await connect(settings)
    console = Console(file=out, width=None if out.isatty() else 160)
    try:
        await status_board.show(client, round_number, once=once, console=console)
    except asyncio.CancelledError:  # Ctrl-C on the live board
        return 0
    return 0


async def run_cancel_command(settings: Settings, round_number: int, hotkey: str) -> int:
    """`starter.py cancel`: request cancellation; the audit deletes its pods, writes nothing."""
    client = await connect(settings)
    handle = client.get_workflow_handle(audit_workflow_id(round_number, hotkey))
    await handle.cancel()
    print(f"cancellation requested for {handle.id}: its pods are deleted, no verdict is written")
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
    print(f"history: {workflow_url(settings, handle.id)}")
    if not watch:
        return 0
    last = ""
    try:
        while True:  # until Ctrl-C: the loop itself runs forever
            try:
                line = describe_round(await handle.query("status", result_type=RoundStatus))
            except Exception as e:  # no worker yet: the query waits for one
                line = f"no answer yet ({e}); is `.venv/bin/python worker.py` running?"
            if line != last:
                print(line, flush=True)
                last = line
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us, then raises KeyboardInterrupt
        print(
            f"stopped watching; the round loop {handle.id} goes on. Stop it with "
            f"`.venv/bin/temporal workflow cancel --address {settings.temporal_address} "
            f"--workflow-id {handle.id}`",
            file=sys.stderr,
        )
        raise


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


# --- report -------------------------------------------------------------------------------------


def write_report(source: CompetitionSource, args: argparse.Namespace, policy: AuditPolicy) -> None:
    """`starter.py report`: the audit's HTML page from the repo's files."""
    from reporting.html_report import ImageFetcher, load_report_data, render_html

    data = load_report_data(source, args.round, args.hotkey, policy)
    with ImageFetcher() as images:
        page = render_html(data, images)
    args.output.write_text(page, encoding="utf-8")


# --- CLI ----------------------------------------------------------------------------------------


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
    report = sub.add_parser("report", help="write an audit's self-contained HTML report")
    report.add_argument("--round", type=int, required=True)
    report.add_argument("--hotkey", required=True)
    report.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    report.add_argument(
        "--competition-repo", help="directory, bare repo or git URL (default: COMPETITION_REPO)"
    )
    status = sub.add_parser(
        "status", help="the live status board: every audit of a round, refreshed until Ctrl-C"
    )
    status.add_argument("--round", type=int, help="the round (default: the latest)")
    status.add_argument("--once", action="store_true", help="print the board once and exit")
    cancel = sub.add_parser("cancel", help="cancel an audit: its pods are deleted, nothing written")
    cancel.add_argument("--round", type=int, required=True)
    cancel.add_argument("--hotkey", required=True)
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
    add_pods_parser(sub)
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
        if args.command == "report":
            location = args.competition_repo or settings.competition_repo
            if not location:
                raise CliError("set COMPETITION_REPO or pass --competition-repo")
            write_report(open_source(location, settings), args, settings.audit_policy())
            print(f"wrote {args.output}")
            return 0
        if args.command == "status":
            return asyncio.run(run_status_command(settings, args.round, once=args.once, out=stdout))
        if args.command == "cancel":
            return asyncio.run(run_cancel_command(settings, args.round, args.hotkey))
        if args.command == "pods":
            return asyncio.run(pods_main(settings, args))
        return asyncio.run(
            run_audit_command(
                settings, args.round, args.hotkey, wait=not args.no_wait, resume=not args.no_resume
            )
        )
    except (
        CliError,
        SettingsError,
        CompetitionFileError,
        LookupError,
        ValueError,
        CompetitionRepoError,
        OSError,
        DevServerError,
        TemporalUnavailableError,
    ) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except RPCError as e:
        print(f"error: Temporal refused the request: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def one_line(error: BaseException) -> str:
    """One line for an error: a settings error's lines joined (each names a variable); of any
    other, the first line (a server's log tail stays in its log file)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if isinstance(error, SettingsError):
        return " ".join(lines)
    return lines[0]


if __name__ == "__main__":
    raise SystemExit(main())
