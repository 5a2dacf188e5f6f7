"""The audit report of a real audit, rendered by headless Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client

import starter
from demo.competition import DemoMiner
from models.competition import AuditOutcome
from tests.e2e.conftest import World

pytestmark = pytest.mark.e2e

N = 4
CHROMIUM_TIMEOUT_SECONDS = 60


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (scripts/install.sh installs it when run as root)")


def headless(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_SECONDS,
        check=True,
    )


async def test_report_of_a_demo_audit_in_chromium(
    client: Client, world: World, workers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`starter.py report` of a finished audit: Chromium shows the verdict, the histogram with
    its limit line, the pods and why they ended, and every prompt with both previews embedded."""
    chromium()
    miner = DemoMiner(
        hotkey="5ReportE2E",
        label="copycat",
        image="local/reference-miner?delay=0.05&variant=1",
        critical=2,
    )
    world.publish(2, [miner], N)
    result = await world.audit(client, 2, miner.hotkey, world.policy(stop_early=False))
    assert result.audit.outcome is AuditOutcome.REJECTED

    for name, value in {
        "GENERATION_MEDIAN_LIMIT": "1",
        "ACCEPTABLE_DISTANCE": "0.005",
        "GENERATION_TIMEOUT": "10",
    }.items():  # the thresholds the audit ran with (the world's policy)
        monkeypatch.setenv(name, value)
    out = tmp_path / "report.html"
    argv = ["report", "--competition-repo", str(world.bare), "--round", "2"]
    argv += ["--hotkey", miner.hotkey, "-o", str(out)]
    # the previews come from the loopback prompt server and the artifact store
    assert await asyncio.to_thread(starter.main, argv) == 0

    dom = (await asyncio.to_thread(headless, "--dump-dom", out.as_uri())).stdout
    assert 'Verdict: <span class="outcome">REJECTED</span>' in dom
    for reason in result.audit.reason.split("; "):
        assert f"<li>{reason}</li>" in dom.replace("&gt;", ">").replace("&lt;", "<")
    assert 'class="limit"' in dom and "limit 1s" in dom
    prompt_rows = re.findall(r'<tr class="(?:mismatch|match)[^"]*">', dom)
    assert len(prompt_rows) == N
    assert dom.count("mismatch: too different") == N
    assert dom.count('src="data:image/png;base64,') == 2 * N  # submitted + regenerated
    assert "not embedded" not in dom and "unavailable" not in dom
    assert "why it ended" in dom
    assert dom.count("<td>1</td>") >= N  # one attempt each
    assert '<meta name="viewport"' in dom

    shot = tmp_path / "report.png"
    await asyncio.to_thread(headless, f"--screenshot={shot}", "--window-size=390,844", out.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("REPORT_SCREENSHOT")  # docs/report.png is made this way
    if keep:
        await asyncio.to_thread(
            headless, f"--screenshot={keep}", "--window-size=1000,1500", out.as_uri()
        )
