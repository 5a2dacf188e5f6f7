"""The demo: audit five kinds of miner end to end on one machine, no GPU, no cloud account.

    python -m demo          (what `make demo` runs)

Builds a round in a local bare git repo (.demo/competition.git) with prompt images served over
loopback HTTP, starts the embedded Temporal server (unless one answers at TEMPORAL_ADDRESS) and
the workers in this process, audits every miner at once through the `local` provider (the
reference miner as a subprocess per pod), prints each verdict with its reasons, and leaves the
Temporal server running so the histories can be read in the Web UI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path

from demo.competition import DemoMiner, next_round, publish_round
from demo.static_server import StaticServer
from demo.tiny_model import build_tiny_dinov3
from embedded_temporal import UI_ADDRESS, connect, ensure_server
from models.audit import AuditResult, ProviderName
from models.competition import AuditOutcome
from models.settings import Settings, load_settings
from starter import history_url, start_audit, watch_audit
from worker import running_workers

DEMO_ROOT = Path(".demo")
N_PROMPTS = int(os.environ.get("DEMO_PROMPTS", "12"))

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
        "GPU_PROVIDERS": "local",
        "COMPETITION_REPO": str((root / "competition.git").resolve()),
        "WORK_DIR": str(root / "work"),
        "ARTIFACTS_DIR": str(root / "artifacts"),
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
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, str(value))
    return load_settings()


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


async def run_demo(settings: Settings, root: Path = DEMO_ROOT) -> int:
    """Build the round, run the audits, print verdicts."""
    started = time.monotonic()
    if settings.gpu_providers != [ProviderName.LOCAL]:
        print("the demo runs on the local provider: unset GPU_PROVIDERS", file=sys.stderr)
        return 2
    server = await ensure_server(settings)
    print(
        f"Temporal: {'started the embedded server' if server else 'using the server'} at "
        f"{settings.temporal_address}; Web UI {UI_ADDRESS}"
    )
    client = await connect(settings)
    results: dict[str, AuditResult] = {}
    with StaticServer(root / "www") as www:
        bare = Path(settings.competition_repo or "")
        round_number = next_round(bare) if (bare / "HEAD").is_file() else 1
        publish_round(bare, root / "www", www.base_url, round_number, MINERS, N_PROMPTS)
        print(f"round {round_number}: {N_PROMPTS} prompts, {len(MINERS)} miners, repo {bare}")
        async with running_workers(client, settings):
            handles = [await start_audit(client, round_number, m.hotkey) for m in MINERS]
            outcomes = await asyncio.gather(*(watch_audit(h, print, interval=2.0) for h in handles))
        results = {m.hotkey: r for m, r in zip(MINERS, outcomes, strict=True)}
    print(f"\n=== verdicts (written to rounds/{round_number}/generation_audits.json) ===")
    for miner, handle in zip(MINERS, handles, strict=True):
        url = history_url(settings.temporal_namespace, handle.id)
        _print_verdict(miner, results[miner.hotkey], url)
    summary = {m.label: results[m.hotkey].audit.outcome.value for m in MINERS}
    print(f"\nsummary: {json.dumps(summary)}")
    print(f"demo finished in {time.monotonic() - started:.0f}s")
    wrong = [
        m.label
        for m in MINERS
        if m.expect is not None and results[m.hotkey].audit.outcome is not m.expect
    ]
    print(f"Web UI: {UI_ADDRESS}/namespaces/{settings.temporal_namespace}/workflows")
    if server is not None:
        print(
            "The embedded Temporal server keeps running so you can read the histories; "
            f"stop it with: kill $(cat {server.pid_file})"
        )
    if wrong:
        print(f"UNEXPECTED verdicts for: {', '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    """Entry point of `python -m demo`."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    DEMO_ROOT.mkdir(parents=True, exist_ok=True)
    settings = demo_settings(DEMO_ROOT)
    return asyncio.run(run_demo(settings))
