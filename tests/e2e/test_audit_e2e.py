"""End to end on the real dev server: workers, local provider, reference miners, bare git repo."""

from __future__ import annotations

import httpx
import pytest
from temporalio.client import Client

from demo.competition import DemoMiner
from models.competition import AuditOutcome
from models.constants import audit_workflow_id
from tests.e2e.conftest import HF_TOKEN, World, registered_pods
from tests.helpers import pod_workflow_id

pytestmark = pytest.mark.e2e

N = 6


async def test_honest_miner_passes_each_prompt_generated_once(
    client: Client, world: World, workers: None
) -> None:
    """An honest miner passes; every prompt is generated exactly once; every pod is gone;
    the repo's files match the workflow result."""
    miner = DemoMiner(
        hotkey="5HonestE2E", label="honest", image="local/reference-miner?delay=0.05", critical=2
    )
    stems = world.publish(1, [miner], N)
    result = await world.audit(client, 1, miner.hotkey, world.policy())

    assert result.audit.outcome is AuditOutcome.PASSED, result.audit.reason
    assert result.audit.checked_prompts == N
    calls = world.generate_calls()
    assert len(calls) == N
    assert len({c["image_sha256"] for c in calls}) == N
    assert await registered_pods(world) == []

    audits = world.read_json("rounds/1/generation_audits.json")
    assert audits == {miner.hotkey: result.audit.model_dump(mode="json")}
    generated = world.read_json(f"rounds/1/{miner.hotkey}/generated.json")
    assert isinstance(generated, dict)
    assert sorted(generated) == sorted(stems)
    assert all(e["distance"] is not None and e["distance"] < 1e-3 for e in generated.values())
    assert all(e["attempts"] == 1 for e in generated.values())
    # Public http URLs served from the local store, never file://; each answers with its file.
    async with httpx.AsyncClient() as http:
        for stem, entry in generated.items():
            for field, magic in (("glb", b"glTF"), ("png", b"\x89PNG")):
                url = entry[field]
                assert url.startswith("http://127.0.0.1:"), url
                assert url.endswith(f"/rounds/1/{miner.hotkey}/generated/{stem}.{field}"), url
                assert (await http.get(url)).content[:4] == magic, url
        # The HTML report, published beside the previews and linked from the memo.
        report = result.report_url
        assert report is not None and report.endswith(
            f"/rounds/1/{miner.hotkey}/generated/report.html"
        )
        page = (await http.get(report)).text
        assert miner.hotkey in page and "passed" in page.lower()
        assert stems[0] in page and generated[stems[0]]["png"] in page  # previews linked
        assert '<td class="pods">' in page and "-0" in page  # which pods took each prompt
    description = await client.get_workflow_handle(audit_workflow_id(1, miner.hotkey)).describe()
    memo = await description.memo()
    assert memo == {"report": report}
    pod_stats = world.read_json(f"rounds/1/{miner.hotkey}/pod_stats.json")
    assert isinstance(pod_stats, dict)
    assert sum(s["processed"] for s in pod_stats.values()) == N
    assert all(s["termination_reason"] for s in pod_stats.values())

    # HF_TOKEN reached the pods through the provider, never through a payload or a history.
    audit_id = audit_workflow_id(1, miner.hotkey)
    pods = [await pod_workflow_id(client, audit_id, i) for i in range(result.pods_started)]
    ids = [audit_id, *pods]
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        assert HF_TOKEN not in history.to_json(), workflow_id


async def test_non_reproducing_miner_rejected_with_exact_counts(
    client: Client, world: World, workers: None
) -> None:
    """A miner whose image does not reproduce its submission mismatches every prompt;
    critical mismatches are counted separately."""
    miner = DemoMiner(
        hotkey="5CopycatE2E",
        label="copycat",
        image="local/reference-miner?delay=0.05&variant=1",
        critical=2,
    )
    world.publish(1, [miner], N)
    policy = world.policy(stop_early=False, pod_failure_threshold=100)
    result = await world.audit(client, 1, miner.hotkey, policy)

    assert result.audit.outcome is AuditOutcome.REJECTED
    assert result.audit.checked_prompts == N
    assert result.audit.failed_prompts == N - 2
    assert result.audit.failed_critical == 2
    assert "Critical mismatches (2) exceed tolerance (1)" in result.audit.reason
    assert len(world.generate_calls()) == N
    assert await registered_pods(world) == []


async def test_too_slow_miner_rejected_on_trimmed_median(
    client: Client, world: World, workers: None
) -> None:
    """A miner slower than the median limit is rejected with the exact reason."""
    miner = DemoMiner(hotkey="5SlowE2E", label="slow", image="local/reference-miner?delay=0.6")
    world.publish(1, [miner], 4)
    result = await world.audit(
        client, 1, miner.hotkey, world.policy(median_limit_seconds=0.5, trim_count=1)
    )

    assert result.audit.outcome is AuditOutcome.REJECTED
    assert result.audit.generation_time is not None and result.audit.generation_time > 0.5
    assert result.audit.reason.startswith("Trimmed median generation time (")
    assert result.audit.reason.endswith("exceeds limit (0.50s)")
    assert await registered_pods(world) == []
