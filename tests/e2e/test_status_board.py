"""`starter.py status --once`: the board of a round with a running, then a finished, audit."""

from __future__ import annotations

import io

import pytest
from temporalio.client import Client

import starter
from demo.competition import DemoMiner
from models.audit import AuditProgress
from starter import start_audit
from tests.e2e.conftest import World
from tests.helpers import make_settings, wait_for_query

pytestmark = pytest.mark.e2e

N = 4


async def board(client: Client, round_number: int) -> str:
    out = io.StringIO()
    settings = make_settings(TEMPORAL_ADDRESS=client.service_client.config.target_host)
    assert await starter.run_status_command(settings, round_number, once=True, out=out) == 0
    return out.getvalue()


def row_of(text: str, hotkey: str) -> str:
    rows = [line for line in text.splitlines() if hotkey[:16] in line]
    assert len(rows) == 1, text
    return rows[0]


async def test_status_once_shows_a_running_audit_then_its_verdict(
    client: Client, world: World, workers: None
) -> None:
    """Mid-audit the row shows the status, a bar, done/total, a ready pod and an ETA; after
    the end it shows the verdict, the prompts checked and the rented GPU time."""
    miner = DemoMiner(hotkey="5BoardE2E", label="slow", image="local/reference-miner?delay=1.0")
    world.publish(5, [miner], N)
    handle = await start_audit(
        client, 5, miner.hotkey, task_queue=world.task_queue, policy=world.policy()
    )
    await wait_for_query(
        handle,
        "progress",
        lambda p: 1 <= p.done < p.total and p.median_seconds is not None,
        result_type=AuditProgress,
        timeout=60,
    )
    text = await board(client, 5)
    assert "Audits of round 5" in text
    row = row_of(text, miner.hotkey)
    assert "generating" in row
    assert f"/{N}" in row
    assert "━" in row  # the progress bar
    assert "ready" in row
    assert "s " in row  # elapsed and median carry units

    result = await handle.result()
    text = await board(client, 5)
    row = row_of(text, miner.hotkey)
    assert result.audit.outcome.value in row
    assert f"{N} checked" in row
    assert f"{result.pods_started} used" in row
    gpu_time = row.split("│")[-2].strip()
    assert gpu_time not in {"", "0s"}, row
