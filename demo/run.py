"""The demo: a whole round on one machine, no GPU, no cloud account, no GitHub.

    python -m demo                  (what `make demo` runs)
    python -m demo --keep-running   (`make playground`: the same, then keeps the whole local
                                     world up until Ctrl-C: Temporal, prompt server, workers)
    python -m demo --provider targon-fake   (the same round, pods rented from a fake Targon)

Opens a new round in a local bare git repo (.demo/competition.git; prompt images and submitted
outputs served over loopback HTTP) with five kinds of miner and a leader, starts its own
Temporal server (data in .demo/temporal, port 7234, Web UI 8234: never the operator's) and the
workers in this process, and starts the round loop (RoundWorkflow `competition`). Then, as in
production:
  - a fake GitHub Actions API (demo/fake_github.py) takes the builds from queued to in_progress
    to success (one fails); BuildTrackingWorkflow writes each change to builds.json;
  - LeaderGenerationWorkflow generates the leader's outputs for every prompt;
  - "judge-service" (this script) requires audits of three miners, then of two more while the
    round runs; the loop starts each audit once its build settled, at most
    MAX_CONCURRENT_MINERS at once (the leader counts);
  - every verdict lands in rounds/{n}/generation_audits.json; this script prints the ones this
    run wrote, moves the round to `finalizing` (the loop leaves the round) and stops the loop.
The Temporal server keeps running so the histories can be read in the Web UI.

`--provider targon-fake` (or `verda-fake`, `runpod-fake`; env DEMO_PROVIDER) rents every pod
through that provider's real client from the fake API server of testing/fake_providers.py on
loopback (which runs the same reference miners), instead of the local provider.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError

from demo.competition import (
    DemoMiner,
    miner_commit,
    next_round,
    publish_round,
    read_json,
    require_audits,
    round_tag,
    set_stage,
)
from demo.fake_github import FakeGitHub
from demo.static_server import StaticServer
from demo.tiny_model import build_tiny_dinov3
from embedded_temporal import DevServer, connect, ensure_server
from models.audit import AuditResult, ProviderName
from models.competition import AuditOutcome, CompetitionPaths
from models.constants import ROUND_WORKFLOW_ID, audit_workflow_id, leader_workflow_id
from models.rounds import LeaderResult, RoundStatus
from models.settings import Settings, load_settings
from starter import describe_round, start_round_loop
from testing.fake_providers import FAKES
from worker import running_workers
from workflows.policy.builds import build_tag, docker_image

DEMO_ROOT = Path(".demo")
N_PROMPTS = int(os.environ.get("DEMO_PROMPTS", "12"))
DEMO_TEMPORAL_PORT = int(os.environ.get("DEMO_TEMPORAL_PORT", "7234"))
"""Several checkouts on one machine each run their demo on another port (DEMO_TEMPORAL_PORT)."""
DEMO_UI_PORT = DEMO_TEMPORAL_PORT + 1000
DEMO_WWW_PORT = DEMO_TEMPORAL_PORT + 2000
"""The prompt server's fixed port: prompts.txt of every demo round names it, so audits of
earlier rounds (a re-audit, a report) still reach their prompts while a playground runs."""
LEADER_IMAGE = "local/reference-miner?delay=0.2"
FIRST_REQUIRED = 3  # judge-service requires these at once, the rest while the round runs

MINERS = [
    DemoMiner(
        hotkey="5HonestMinerDemo",
        label="honest",
        image="local/reference-miner?delay=0.2",
        critical=2,
        expect=AuditOutcome.PASSED,
    ),
    DemoMiner(
        hotkey="5CopycatMinerDemo",
        label="does-not-reproduce",
        image="local/reference-miner?delay=0.2&variant=1",
        critical=1,
        expect=AuditOutcome.REJECTED,
    ),
    DemoMiner(
        hotkey="5SlowMinerDemo",
        label="too-slow",
        image="local/reference-miner?delay=1.5",
        expect=AuditOutcome.REJECTED,
    ),
    DemoMiner(
        hotkey="5FlakyMinerDemo",
        label="fails-often",
        image="local/reference-miner?delay=0.2&fail_rate=0.5",
    ),
    DemoMiner(
        hotkey="5BrokenBuildDemo",
        label="build-failed",
        image=None,
        expect=AuditOutcome.REJECTED,
    ),
]


def demo_settings(root: Path) -> Settings:
    """Demo defaults (scaled-down timings); the environment still overrides anything."""
    model_dir = root / "dinov3-tiny"
    if not (model_dir / "config.json").is_file():
        build_tiny_dinov3(model_dir)
    defaults: dict[str, object] = {
        # Its own server and data: never the operator's .temporal/dev.db and its workflows.
        "TEMPORAL_ADDRESS": f"localhost:{DEMO_TEMPORAL_PORT}",
        "GPU_PROVIDERS": "local",
        "COMPETITION_REPO": str((root / "competition.git").resolve()),
        "GITHUB_REPO": "demo/competition",
        "WORK_DIR": str(root / "work"),
        "ARTIFACTS_DIR": str(root / "artifacts"),
        # generated.json's URLs: the worker serves the published copies here.
        "LOCAL_ARTIFACTS_URL": f"http://127.0.0.1:{DEMO_TEMPORAL_PORT + 566}",
        "LOCAL_PODS_DIR": str(root / "pods"),
        "DINOV3_MODEL": str(model_dir),
        "PODS_PER_MINER": "2",
        "INITIAL_POD_COUNT": "1",
        "MAX_PROMPT_ATTEMPTS": "2",
        "POD_START_DELAY": "0",
        "CHECK_POD_INTERVAL": "0.5",
        "POD_ACQUISITION_RETRY_INTERVAL": "1",
        "POD_MIN_SAMPLES": "4",
        "POD_FAILURE_THRESHOLD": "3",
        "MAX_POD_ATTEMPTS": "3",
        "GENERATION_MEDIAN_LIMIT": "1.0",
        "GENERATION_MEDIAN_TRIM_COUNT": "2",
        "GENERATION_TIMEOUT": "10",
        # Random tiny DINOv3 weights: identical renders score 0, the
        # reference miner's other variants 0.016-0.45 (measured over 32 prompts).
        "ACCEPTABLE_DISTANCE": "0.005",
        "MAX_MISMATCHED_PROMPTS": "2",
        "MAX_MISMATCHED_CRITICAL_PROMPTS": "1",
        "POD_WARMUP_TIMEOUT": "60",
        # The round loop, scaled down from minutes to seconds.
        "CHECK_BUILD_INTERVAL": "1",
        "CHECK_AUDIT_INTERVAL": "2",
        "MIN_CHECK_STATE_INTERVAL": "1",
        "MAX_CHECK_STATE_INTERVAL": "5",
        "MINER_START_STAGGER": "0.5",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, str(value))
    return load_settings()


def local_images(settings: Settings, round_number: int) -> dict[str, str]:
    """The docker image the build tracker will name for each demo miner -> the local miner it
    stands for (LOCAL_IMAGES: the local provider "pulls" it)."""
    images = {}
    for miner in MINERS:
        if miner.image is not None:
            tag = build_tag(miner_commit(miner), round_tag(round_number))
            images[docker_image(miner.hotkey, tag, settings.docker_image_format)] = miner.image
    return images


async def drive_builds(github: FakeGitHub, round_number: int) -> None:
    """GitHub Actions' part: queued -> in_progress -> success (or failure), a little apart."""
    run_id = github.add_run(f"Add submissions for round {round_number}", [m.hotkey for m in MINERS])
    await asyncio.sleep(1.0)
    for miner in MINERS:
        github.set_job(run_id, miner.hotkey, "in_progress")
    for miner in MINERS:
        await asyncio.sleep(0.7)
        conclusion = "success" if miner.image is not None else "failure"
        github.set_job(run_id, miner.hotkey, "completed", conclusion)


async def started_by_loop(
    client: Client, workflow_id: str, limit_s: float
) -> WorkflowHandle[object, object]:
    """The handle of `workflow_id` once the round loop has started it (waits up to `limit_s`)."""
    deadline = time.monotonic() + limit_s
    handle: WorkflowHandle[object, object] = client.get_workflow_handle(workflow_id)
    while True:
        try:
            await handle.describe()
            return handle
        except RPCError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the round loop did not start {workflow_id}") from None
            await asyncio.sleep(0.5)


async def watch_round(handle: WorkflowHandle[object, None], stop: asyncio.Event) -> None:
    """Print the round loop's status as it changes."""
    last = ""
    while not stop.is_set():
        try:
            line = describe_round(await handle.query("status", result_type=RoundStatus))
        except Exception:  # not answering yet
            line = last
        if line != last:
            print(f"[{handle.id}] {line}")
            last = line
        await asyncio.sleep(1.0)


def _print_verdict(miner: DemoMiner, result: AuditResult, url: str) -> None:
    audit = result.audit
    median = f"{audit.generation_time:.2f}s" if audit.generation_time is not None else "-"
    print(
        f"\n{miner.label:>20}  {audit.outcome.value.upper():8}  checked {audit.checked_prompts}, "
        f"mismatches {audit.failed_prompts} (+{audit.failed_critical} critical), median {median}, "
        f"{result.generations} generations on {result.pods_started} pods"
        + (", stopped early" if result.early_exit else "")
    )
    if audit.reason:
        print(f"{'':>22}reason: {audit.reason}")
    print(f"{'':>22}history: {url}")


PROVIDERS = {"local": None, **{f"{kind}-fake": kind for kind in FAKES}}
"""--provider choices: the local provider, or a provider's fake API server."""


async def run_demo(
    settings: Settings, root: Path = DEMO_ROOT, keep_running: bool = False, provider: str = "local"
) -> int:
    """Open a round, let the round loop run it, print what it wrote; with `keep_running`, keep
    the prompt server and the workers up afterwards until Ctrl-C (the playground)."""
    started = time.monotonic()
    if settings.gpu_providers != [ProviderName.LOCAL]:
        print("the demo runs on the local provider: unset GPU_PROVIDERS", file=sys.stderr)
        return 2
    server = await ensure_server(
        settings, db_file=root / "temporal" / "dev.db", ui_port=DEMO_UI_PORT
    )
    ui = f"http://localhost:{DEMO_UI_PORT}/namespaces/{settings.temporal_namespace}/workflows"
    print(
        f"Temporal: {'started the demo server' if server else 'using the server'} at "
        f"{settings.temporal_address}; Web UI {ui}"
    )
    client = await connect(settings)
    bare = Path(settings.competition_repo or "")
    round_number = next_round(bare) if (bare / "HEAD").is_file() else 1
    async with contextlib.AsyncExitStack() as stack:
        www = stack.enter_context(StaticServer(root / "www", port=DEMO_WWW_PORT))
        github = stack.enter_context(FakeGitHub(repo="demo/competition"))
        os.environ["GITHUB_API_URL"] = github.api_url
        images = local_images(settings, round_number)
        os.environ["LOCAL_IMAGES"] = json.dumps(images)
        fake_kind = PROVIDERS[provider]
        if fake_kind is not None:
            fake = FAKES[fake_kind](root / "fake-provider-pods", images=images)
            await fake.start()
            stack.push_async_callback(fake.aclose)
            os.environ.update({"GPU_PROVIDERS": str(fake_kind), **fake.settings()})
            print(f"pods come from a fake {fake_kind} API at {fake.base_url}")
        settings = load_settings()
        stems = publish_round(
            bare,
            root / "www",
            www.base_url,
            round_number,
            MINERS,
            N_PROMPTS,
            stage="miner_generation",
            builds_json=False,
            require_audit_json=False,
            leader_image=LEADER_IMAGE,
        )
        print(
            f"round {round_number}: {N_PROMPTS} prompts, {len(MINERS)} miners + the leader, "
            f"repo {bare}"
        )
        async with running_workers(client, settings):
            loop = await start_round_loop(client, task_queue=settings.task_queue)
            stop = asyncio.Event()
            watcher = asyncio.ensure_future(watch_round(loop, stop))
            builds = asyncio.ensure_future(drive_builds(github, round_number))
            require_audits(bare, round_number, MINERS[:FIRST_REQUIRED], stems)
            await asyncio.sleep(3.0)
            require_audits(bare, round_number, MINERS, stems)  # two more, mid-round
            await loop.signal("wake")
            leader = await started_by_loop(client, leader_workflow_id(round_number), 120)
            handles = [
                await started_by_loop(client, audit_workflow_id(round_number, m.hotkey), 300)
                for m in MINERS
            ]
            results: dict[str, AuditResult] = {}
            for miner, handle in zip(MINERS, handles, strict=True):
                results[miner.hotkey] = await client.get_workflow_handle(
                    handle.id, result_type=AuditResult
                ).result()
            leader_result = await client.get_workflow_handle(
                leader.id, result_type=LeaderResult
            ).result()
            await builds
            set_stage(bare, round_number, "finalizing")
            await loop.signal("wake")
            await asyncio.sleep(2.0)
            stop.set()
            await watcher
            await loop.cancel()
            # While the worker still runs: a cancel request left unprocessed would leave the
            # next demo run attached to this loop, which then ends at once.
            with contextlib.suppress(WorkflowFailureError):
                await loop.result()
            # While the worker (which serves the local store's copies) still runs.
            links = await check_public_urls(
                bare, round_number, [m.hotkey for m in MINERS] + ["leader"]
            )
            code = summarize(
                bare, round_number, results, leader_result, handles, ui, server, started, links
            )
            if keep_running:
                await keep_playground_up(settings, round_number, www.base_url)
    return code


def summarize(
    bare: Path,
    round_number: int,
    results: dict[str, AuditResult],
    leader_result: LeaderResult,
    handles: list[WorkflowHandle[object, object]],
    ui: str,
    server: DevServer | None,
    started: float,
    links: tuple[int, list[str]],
) -> int:
    """Print what the round wrote; 1 when a verdict differs from the expected one or a
    generated.json URL (`links`: how many, those that do not answer) is broken."""
    written = read_json(bare, CompetitionPaths.generation_audits(round_number))
    if not isinstance(written, dict) or set(written) != {m.hotkey for m in MINERS}:
        print(f"generation_audits.json does not hold this run's verdicts: {written}")
        return 1
    builds_json = read_json(bare, CompetitionPaths.builds(round_number))
    print(f"\n=== builds (rounds/{round_number}/builds.json, from the fake GitHub Actions) ===")
    if isinstance(builds_json, dict):
        for hotkey, build in builds_json.items():
            print(f"{hotkey:>20}  {build['status']:10} {build['docker_image']}")
    print(
        f"\n=== leader (rounds/{round_number}/leader/generated.json) ===\n"
        f"{leader_result.generated}/{leader_result.prompts} prompts generated with "
        f"{leader_result.image} on {leader_result.pods_started} pods"
    )
    print(f"\n=== verdicts this run wrote (rounds/{round_number}/generation_audits.json) ===")
    for miner, handle in zip(MINERS, handles, strict=True):
        _print_verdict(miner, results[miner.hotkey], f"{ui}/{handle.id}")
    urls, broken = links
    print(
        f"\n{urls} public URLs in this round's generated.json files"
        + (f"; {len(broken)} do not answer: {broken[:3]}" if broken else ", each answers")
    )
    summary = {m.label: results[m.hotkey].audit.outcome.value for m in MINERS}
    print(f"\nsummary: {json.dumps(summary)}")
    print(f"demo finished in {time.monotonic() - started:.0f}s")
    wrong = [
        m.label
        for m in MINERS
        if m.expect is not None and results[m.hotkey].audit.outcome is not m.expect
    ]
    print(f"Web UI: {ui} (the round loop: {ui}/{ROUND_WORKFLOW_ID})")
    if server is not None:
        print(
            "The demo's Temporal server keeps running so you can read the histories; "
            f"stop it with: kill $(cat {server.pid_file})"
        )
    if wrong:
        print(f"UNEXPECTED verdicts for: {', '.join(wrong)}", file=sys.stderr)
        return 1
    if broken:
        print("generated.json holds URLs that do not answer", file=sys.stderr)
        return 1
    return 0


async def check_public_urls(
    bare: Path, round_number: int, hotkeys: list[str]
) -> tuple[int, list[str]]:
    """How many glb/png URLs the round's generated.json files hold, and those that are not
    http(s) or do not answer 200 (generated.json's readers fetch every one)."""
    urls: list[str] = []
    for hotkey in hotkeys:
        entries = read_json(bare, CompetitionPaths.generated(round_number, hotkey))
        if isinstance(entries, dict):  # None: no generated.json (a build that failed)
            for entry in entries.values():
                urls += [entry[f] for f in ("glb", "png") if isinstance(entry.get(f), str)]
    broken: list[str] = []
    async with httpx.AsyncClient() as http:
        for url in urls:
            try:
                ok = url.startswith(("http://", "https://")) and (
                    (await http.get(url)).status_code == 200
                )
            except httpx.HTTPError:
                ok = False
            if not ok:
                broken.append(url)
    return len(urls), broken


async def keep_playground_up(settings: Settings, round_number: int, www: str) -> None:
    """Keep the workers and the prompt server up until Ctrl-C; say what to try meanwhile."""
    address = settings.temporal_address
    hotkey = MINERS[0].hotkey
    print(
        f"""
=== the playground keeps running (Ctrl-C stops the workers and the prompt server {www};
    the Temporal server keeps running) ===
In another terminal:
  export TEMPORAL_ADDRESS={address}
  .venv/bin/python starter.py status --round {round_number} --once
  .venv/bin/python starter.py status                      # live board, Ctrl-C to leave
  .venv/bin/python starter.py report --competition-repo {settings.competition_repo} \\
      --round {round_number} --hotkey {hotkey} -o report.html
  .venv/bin/temporal workflow start --address {address} --task-queue {settings.task_queue} \\
      --type AuditWorkflow --workflow-id audit-{round_number}-{hotkey} \\
      --input '{{"round": {round_number}, "hotkey": "{hotkey}", "resume": false}}' \\
      --id-reuse-policy AllowDuplicate               # a deliberate re-audit
  .venv/bin/python starter.py audit --round {round_number} --hotkey {hotkey}   # attach to it
""",
        flush=True,
    )
    stop = asyncio.Event()
    # Ctrl-C cancels this task (asyncio.run); SIGTERM (a service manager, `kill`) stops as well.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("playground stopped (the demo's Temporal server keeps running)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m demo [--keep-running]`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="the playground: keep the prompt server and workers up after the round",
    )
    parser.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default=os.environ.get("DEMO_PROVIDER", "local"),
        help="where pods come from (default: local; *-fake: that provider's fake API server)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    DEMO_ROOT.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(DEMO_ROOT)
    try:
        return asyncio.run(
            run_demo(settings, keep_running=args.keep_running, provider=args.provider)
        )
    except KeyboardInterrupt:
        print("playground stopped (the demo's Temporal server keeps running)")
        return 0
