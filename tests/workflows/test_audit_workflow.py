"""AuditWorkflow + PodWorkflow logic on the real dev server, with fake activities."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from pydantic import BaseModel, ConfigDict
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Worker

from models.audit import AuditInput, AuditPolicy, AuditResult, PodCost, ProviderName
from models.competition import AuditOutcome, BuildStatus, GenerationEntry
from models.errors import ErrorType
from tests.helpers import assert_eventually
from tests.workflows.fakes import FakeWorld, round_files
from workflows import WORKFLOWS
from workflows.audit import STATUS_KEY


def policy(**overrides: object) -> AuditPolicy:
    base = AuditPolicy(
        gpu_providers=[ProviderName.LOCAL],
        pod_min_samples=4,
        pod_failure_threshold=3,
        pod_start_delay_seconds=0,
        pod_acquisition_retry_interval_seconds=0.2,
        pod_acquisition_max_attempts=2,
    )
    return base.model_copy(update=overrides)


async def run_audit(
    client: Client,
    world: FakeWorld,
    hotkey: str | None = None,
    workflow_id: str | None = None,
    resume: bool = True,
) -> AuditResult:
    queue = f"q-{uuid.uuid4()}"
    pol = world.policy.model_copy(update={"gpu_task_queue": queue})
    world.policy = pol
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities()):
        result: AuditResult = await client.execute_workflow(
            "AuditWorkflow",
            AuditInput(round=1, hotkey=hotkey or world.files.hotkey, policy=pol, resume=resume),
            id=workflow_id or f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
            result_type=AuditResult,
        )
        return result


async def test_honest_miner_passes_with_each_prompt_generated_once(client: Client) -> None:
    """Every prompt is generated exactly once, the verdict passes, every pod is deleted."""
    world = FakeWorld(files=round_files(12), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.checked_prompts == 12
    assert sorted(world.generate_calls) == sorted(f"p{i:03d}#1" for i in range(12))
    assert sorted(world.deleted) == sorted(world.deployed)
    assert world.deployed == [f"miner-01-5fake-{i}" for i in range(4)]
    final = world.writes[-1]
    assert [f.path for f in final.files] == [
        "rounds/1/5Fake/generated.json",
        "rounds/1/5Fake/pod_stats.json",
        "rounds/1/generation_audits.json",
    ]
    assert final.message.splitlines() == [
        "Update generated for round 1, miner 5Fake",
        "Update generation audits for round 1",
        "Update pod stats for round 1, miner 5Fake",
    ]
    # After the verdict: the report, made with the thresholds the audit ran with.
    assert [(r.round, r.hotkey, r.policy) for r in world.reports] == [(1, "5Fake", world.policy)]
    assert result.report_url == "https://cdn.test/1/5Fake.html"


async def test_audited_set_drops_null_submissions_before_renting(client: Client) -> None:
    """Submitted entries with glb or png null are never generated; checked counts the rest."""
    files = round_files(6)
    submitted = dict(files.submitted)
    submitted["p001"] = submitted["p001"].model_copy(update={"png": None})
    submitted["p004"] = submitted["p004"].model_copy(update={"glb": None})
    world = FakeWorld(files=files.model_copy(update={"submitted": submitted}), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.checked_prompts == 4
    assert result.audit.outcome is AuditOutcome.PASSED
    assert not [c for c in world.generate_calls if c.split("#")[0] in ("p001", "p004")]


async def test_all_null_submission_passes_with_nothing_rented(client: Client) -> None:
    """Upstream quirk kept: nothing to audit passes with 0 checked, and no pod is rented."""
    files = round_files(2).model_copy(update={"submitted": {}})
    world = FakeWorld(files=files, policy=policy())
    result = await run_audit(client, world)
    assert (result.audit.outcome, result.audit.checked_prompts) == (AuditOutcome.PASSED, 0)
    assert world.deployed == []


async def test_pod_never_retakes_a_prompt_it_tried(client: Client) -> None:
    """A failed prompt goes to another pod; a pod left with only prompts it tried leaves
    ("no work available") and a replacement pod takes them."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(pods_per_miner=2, initial_pod_count=2, max_pod_attempts=4),
        failing={"p001": 2},
        delays={"p000": 0.5},
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    tried = [c for c in world.generate_calls if c.startswith("p001")]
    assert tried == ["p001#1", "p001#2", "p001#3"]
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert "no work available" in {s["termination_reason"] for s in stats.values()}
    assert len(world.deployed) >= 3


async def test_max_pod_attempts_is_per_miner(client: Client) -> None:
    """Pods that keep failing are replaced until MAX_POD_ATTEMPTS pods were started in all."""
    world = FakeWorld(
        files=round_files(40),
        policy=policy(
            pods_per_miner=2, initial_pod_count=1, max_pod_attempts=4, max_prompt_attempts=2
        ),
        failing={f"p{i:03d}": 99 for i in range(40)},
    )
    result = await run_audit(client, world)
    assert result.pods_started == 4
    assert world.deployed == [f"miner-01-5fake-{i}" for i in range(4)]
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert stats["miner-01-5fake-0"]["termination_reason"] == "4 failures + 0 overtimes >= 3"
    assert stats["miner-01-5fake-0"]["marked_bad"] is True
    assert result.audit.outcome is AuditOutcome.REJECTED


async def test_slow_generation_keeps_its_real_time_as_an_overtime(client: Client) -> None:
    """A generation slower than GENERATION_TIMEOUT keeps its time: retried, and a mismatch."""
    world = FakeWorld(
        files=round_files(3),
        policy=policy(
            pods_per_miner=2,
            max_prompt_attempts=2,
            generation_timeout_seconds=5,
            median_limit_seconds=3,
        ),
        times={"p002": 9.0},
    )
    result = await run_audit(client, world)
    generated = world.writes[-1].files[0].value
    assert isinstance(generated, dict), world.generate_calls
    assert generated["p002"]["generation_time"] == 9.0
    assert generated["p002"]["attempts"] == 2
    assert generated["p002"]["glb"] is not None
    assert [c for c in world.generate_calls if c.startswith("p002")] == ["p002#1", "p002#2"]
    assert result.audit.failed_prompts == 1
    assert result.audit.generation_time == 1.0


async def test_distance_mismatch_is_final_and_the_miners_not_the_pods(client: Client) -> None:
    """A far result is never retried and never marks its pod bad."""
    world = FakeWorld(
        files=round_files(8),
        policy=policy(pods_per_miner=2, pod_failure_threshold=2, pod_min_samples=2),
        mismatching={f"p{i:03d}" for i in range(5)},
    )
    result = await run_audit(client, world)
    assert len(world.generate_calls) == 8
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert not any(s["marked_bad"] for s in stats.values())
    assert result.audit.failed_prompts == 5


async def test_early_exit_at_upstream_mismatch_limit(client: Client) -> None:
    """Generation stops once 2 x MAX_MISMATCHED_PROMPTS prompts are final mismatches; the
    entry is upstream's formula over every audited prompt (never-generated ones mismatch)."""
    files = round_files(40, critical=["p000", "p001"])
    world = FakeWorld(
        files=files,
        # One loop per pod: with more, the prompts in flight at the limit still finish (upstream).
        policy=policy(
            pods_per_miner=1,
            initial_pod_count=1,
            max_prompt_attempts=1,
            max_concurrent_prompts_per_pod=1,
        ),
        mismatching={f"p{i:03d}" for i in range(40)},
    )
    result = await run_audit(client, world)
    assert result.early_exit
    assert len(world.generate_calls) == 12
    assert result.audit.checked_prompts == 40
    assert (result.audit.failed_prompts, result.audit.failed_critical) == (38, 2)
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert stats["miner-01-5fake-0"]["termination_reason"] == "mismatch limit"


async def test_failed_prompt_is_retried_on_another_pod(client: Client) -> None:
    """A model failure re-queues the prompt on a pod that has not tried it."""
    world = FakeWorld(files=round_files(6), policy=policy(pods_per_miner=2), failing={"p002": 1})
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.generate_calls.count("p002#1") == 1
    assert world.generate_calls.count("p002#2") == 1
    assert result.generations == 7


async def test_prompt_lock_timeout_lets_another_pod_take_it(client: Client) -> None:
    """A prompt held longer than PROMPT_LOCK_TIMEOUT by one pod is taken by an idle one."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(pods_per_miner=2, prompt_lock_timeout_seconds=1.0),
        delays={"p000": 4.0},
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.generate_calls.count("p000#1") == 1
    assert world.generate_calls.count("p000#2") == 1


async def test_gpu_never_waits_for_render_and_scoring(client: Client) -> None:
    """A pod generates its next prompt while the previous one is rendered and scored
    (MAX_CONCURRENT_PROMPTS_PER_POD loops), and never runs two generations at once."""
    world = FakeWorld(
        files=round_files(6),
        policy=policy(pods_per_miner=1, initial_pod_count=1, max_concurrent_prompts_per_pod=4),
        delays={f"p{i:03d}": 0.3 for i in range(6)},
        render_delay=0.6,
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    generations = sorted((s, e) for kind, _, s, e in world.spans if kind == "generate")
    renders = [(s, e) for kind, uri, s, e in world.spans if kind == "render" and "/gen/" in uri]
    assert len(generations) == 6
    for (_, end), (start, _) in itertools.pairwise(generations):
        assert start >= end - 0.01, "two generations overlapped on one pod's GPU"
    overlapped = [g for g in generations if any(r[0] < g[0] < r[1] for r in renders)]
    assert overlapped, "no generation ran while a render was in progress"


async def test_build_failure_rejects_without_pods(client: Client) -> None:
    """A failed build writes the build-failure verdict and rents nothing."""
    world = FakeWorld(files=round_files(3, build_status=BuildStatus.FAILURE), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.reason == "Failed to build a docker image"
    assert world.deployed == []


async def test_in_progress_build_is_waited_for(client: Client) -> None:
    """A build upstream reports as in_progress is waited for, then audited."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(check_build_interval_seconds=0.2),
        builds=[BuildStatus.PENDING, BuildStatus.IN_PROGRESS],
    )
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.builds == []


async def test_deploy_failure_only_when_every_initial_pod_failed(client: Client) -> None:
    """No initial pod healthy: "Failed to deploy a docker image", with no replacement pods."""
    world = FakeWorld(
        files=round_files(3),
        policy=policy(pods_per_miner=2, initial_pod_count=2, max_pod_attempts=6),
    )
    world.bad_pods = {"miner-01-5fake-0", "miner-01-5fake-1"}
    result = await run_audit(client, world)
    assert result.audit.reason == "Failed to deploy a docker image"
    assert world.deployed == ["miner-01-5fake-0", "miner-01-5fake-1"]
    assert sorted(world.deleted) == sorted(world.deployed)
    assert [f.path for f in world.writes[-1].files] == ["rounds/1/generation_audits.json"]


async def test_one_healthy_initial_pod_is_enough(client: Client) -> None:
    """One initial pod failing warm-up is replaced once another is healthy; it has no stats."""
    world = FakeWorld(
        files=round_files(4),
        policy=policy(pods_per_miner=2, initial_pod_count=2, max_pod_attempts=3),
        delays={"p000": 0.5},
    )
    world.bad_pods = {"miner-01-5fake-0"}
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert "miner-01-5fake-0" not in stats


async def test_pod_acquisition_retries_an_invisible_pod(client: Client) -> None:
    """A pod not listed in time is deleted and acquired again after the retry interval."""
    world = FakeWorld(
        files=round_files(2),
        policy=policy(pods_per_miner=1, initial_pod_count=1, pod_acquisition_max_attempts=3),
    )
    world.not_visible = {"miner-01-5fake-0": 2}
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.deployed == ["miner-01-5fake-0"] * 3
    assert world.deleted.count("miner-01-5fake-0") == 3
    # The two failed attempts rented a pod each: counted in the audit's cost, all of it wasted.
    cost = result.cost
    assert cost is not None and cost.pods == 3
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict) and len(stats) == 1  # pod_stats: the healthy pod only
    [kept] = stats.values()
    assert cost.wasted_seconds >= cost.rented_seconds - kept["rented_seconds"]


async def test_pods_start_pod_start_delay_apart(client: Client) -> None:
    """Pods of one expansion are started POD_START_DELAY apart (durable timers)."""
    world = FakeWorld(
        files=round_files(6),
        policy=policy(pods_per_miner=3, initial_pod_count=1, pod_start_delay_seconds=1.0),
        delays={f"p{i:03d}": 0.5 for i in range(6)},
    )
    await run_audit(client, world)
    starts = sorted(world.deploy_times.values())
    assert len(starts) == 3
    assert starts[2] - starts[1] >= 0.9


async def test_generated_json_is_committed_as_results_arrive(client: Client) -> None:
    """generated.json is committed before the verdict (upstream's batcher: first at once)."""
    world = FakeWorld(files=round_files(3), policy=policy(pods_per_miner=1, initial_pod_count=1))
    await run_audit(client, world)
    assert len(world.writes) >= 2
    first = world.writes[0]
    assert first.files[0].path == "rounds/1/5Fake/generated.json"
    assert first.message == "Update generated for round 1, miner 5Fake"


async def test_new_run_resumes_from_generated_json(client: Client) -> None:
    """Prompts already settled in generated.json are not generated (or paid for) again."""
    files = round_files(4)
    done = GenerationEntry(
        glb="http://cdn/p000.glb",
        png="http://cdn/p000.png",
        generation_time=3.0,
        size=9,
        attempts=1,
        distance=0.02,
    )
    failed_once = GenerationEntry(attempts=1, size=0, distance=0.0)
    files = files.model_copy(update={"generated": {"p000": done, "p001": failed_once}})
    world = FakeWorld(files=files, policy=policy())
    result = await run_audit(client, world)
    assert sorted(world.generate_calls) == ["p001#1", "p002#1", "p003#1"]
    generated = world.writes[-1].files[0].value
    assert isinstance(generated, dict)
    assert generated["p000"]["glb"] == "http://cdn/p000.glb"
    assert generated["p001"]["attempts"] == 2
    assert result.audit.checked_prompts == 4


async def test_reaudit_without_resume_regenerates_everything(client: Client) -> None:
    """`resume: false` (a deliberate re-audit) ignores generated.json."""
    files = round_files(2)
    done = GenerationEntry(glb="g", png="p", generation_time=3.0, size=9, attempts=1)
    files = files.model_copy(update={"generated": {"p000": done}})
    world = FakeWorld(files=files, policy=policy())
    await run_audit(client, world, resume=False)
    assert sorted(world.generate_calls) == ["p000#1", "p001#1"]


async def test_everything_already_done_writes_the_verdict_without_pods(client: Client) -> None:
    """A run whose generated.json settles every prompt rents nothing."""
    files = round_files(2)
    entry = GenerationEntry(glb="g", png="p", generation_time=3.0, size=9, attempts=1)
    files = files.model_copy(update={"generated": {"p000": entry, "p001": entry}})
    world = FakeWorld(files=files, policy=policy())
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.deployed == []


async def test_unknown_hotkey_fails_clearly(client: Client) -> None:
    """An unknown hotkey fails the workflow with a non-retryable error naming it."""
    world = FakeWorld(files=round_files(3), policy=policy())
    workflow_id = f"audit-1-{uuid.uuid4()}"
    with pytest.raises(WorkflowFailureError) as info:
        await run_audit(client, world, hotkey="nobody", workflow_id=workflow_id)
    assert "unknown hotkey nobody" in str(info.value.cause)
    description = await client.get_workflow_handle(workflow_id).describe()
    status = description.typed_search_attributes.get(STATUS_KEY)
    assert status == "failed"
    assert world.deployed == []


async def test_bad_miner_output_is_a_recorded_failed_prompt(client: Client) -> None:
    """Non-GLB output fails that prompt on every pod it may try, then it is recorded as failed."""
    world = FakeWorld(
        files=round_files(5),
        policy=policy(pods_per_miner=2, max_prompt_attempts=2),
        errors={"p001": ErrorType.MINER_BAD_OUTPUT},
    )
    result = await run_audit(client, world)
    assert world.generate_calls.count("p001#1") + world.generate_calls.count("p001#2") == 2
    generated = world.writes[-1].files[0].value
    assert isinstance(generated, dict)
    assert generated["p001"] == {
        "glb": None,
        "png": None,
        "generation_time": 0.0,
        "size": 0,
        "attempts": 2,
        "distance": 0.0,
    }
    assert result.audit.failed_prompts == 1
    assert result.audit.checked_prompts == 5


async def test_unavailable_prompt_is_dropped_without_blaming_the_pod(client: Client) -> None:
    """A prompt image that 404s is dropped (upstream: by the up-front download, else by the pod
    that fetches it), a mismatch, and no pod is charged."""
    world = FakeWorld(
        files=round_files(5),
        policy=policy(pods_per_miner=2),
        errors={"p003": ErrorType.PROMPT_UNAVAILABLE},
    )
    result = await run_audit(client, world)
    assert "http://prompts/p003.png" in world.prefetched
    assert world.prompt_fetches.count("p003") <= 1
    assert [c for c in world.generate_calls if c.startswith("p003")] == []
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict)
    assert sum(s["hard_failed"] for s in stats.values()) == 0
    assert result.audit.failed_prompts == 1


async def test_prompt_server_outage_is_not_charged_to_the_miner(client: Client) -> None:
    """A prompt server that fails for a while is retried by Temporal; nothing fails."""
    world = FakeWorld(files=round_files(2), policy=policy(pods_per_miner=1, initial_pod_count=1))
    world.prompt_outages = 2
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert result.audit.failed_prompts == 0
    assert sorted(world.generate_calls) == ["p000#1", "p001#1"]


async def test_pod_that_cannot_be_deleted_still_ends_and_the_verdict_is_written(
    client: Client,
) -> None:
    """A rejected delete does not hang the audit: the pod reports and the sweep is the net."""
    world = FakeWorld(files=round_files(3), policy=policy(pods_per_miner=1, initial_pod_count=1))
    world.undeletable = {"miner-01-5fake-0"}
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.swept


async def test_pod_stopped_while_deploying_is_deleted_after_it_exists(client: Client) -> None:
    """Stop during a slow deploy: the deploy finishes first, then that pod is deleted."""
    world = FakeWorld(files=round_files(1), policy=policy(pods_per_miner=2, initial_pod_count=1))
    world.deploy_delay = {"miner-01-5fake-1": 1.5}
    await run_audit(client, world)
    assert sorted(world.deleted) == sorted(world.deployed)
    for name in world.deployed:
        assert world.log.index(("deploy", name)) < world.log.index(("delete", name)), world.log


async def test_generations_are_keyed_by_this_audit_run(client: Client) -> None:
    """The generate idempotency key names the audit's run chain, so a re-audit regenerates."""
    world = FakeWorld(files=round_files(2), policy=policy(pods_per_miner=1, initial_pod_count=1))
    workflow_id = f"audit-1-{uuid.uuid4()}"
    await run_audit(client, world, workflow_id=workflow_id)
    run_id = (await client.get_workflow_handle(workflow_id).describe()).run_id
    assert world.generate_audit_ids == [f"{workflow_id}/{run_id}"] * 2


class UpstreamGenerationResult(BaseModel):
    """c263c11 shared/subnet_common/competition/generations.py GenerationResult, as it reads."""

    model_config = ConfigDict(strict=True)

    glb: str | None = None
    png: str | None = None
    generation_time: float = 0
    size: int = 0
    attempts: int = 0
    distance: float = 0.0


class UpstreamPodStats(BaseModel):
    """c263c11 shared/subnet_common/competition/pod_stats.py PodStats (a plain BaseModel: it
    ignores extra keys, such as our cost fields)."""

    model_config = ConfigDict(strict=True)

    pod_id: str = ""
    processed: int = 0
    successful: int = 0
    hard_failed: int = 0
    hard_overtime: int = 0
    time_min: float = 0.0
    time_max: float = 0.0
    time_avg: float = 0.0
    time_median: float = 0.0
    marked_bad: bool = False
    retry_cumulative_delta: float = 0.0
    retry_delta_count: int = 0
    termination_reason: str = ""


async def test_files_load_with_upstreams_own_models(client: Client) -> None:
    """generated.json (success, failure, render failure) and pod_stats.json parse with
    upstream's models exactly, keys in prompts.txt order."""
    world = FakeWorld(
        files=round_files(4),
        policy=policy(pods_per_miner=2, max_prompt_attempts=2),
        errors={"p001": ErrorType.MINER_FAILED},
        mismatching={"p002"},
    )
    await run_audit(client, world)
    final = world.writes[-1]
    generated = final.files[0].value
    stats = final.files[1].value
    assert isinstance(generated, dict) and isinstance(stats, dict)
    assert list(generated) == ["p000", "p001", "p002", "p003"]
    for entry in generated.values():
        assert set(entry) == set(UpstreamGenerationResult.model_fields)
        UpstreamGenerationResult.model_validate_json(json.dumps(entry))
    cost_keys = {"provider", *PodCost.model_fields} - {"estimated_cost_usd"}
    for name, entry in stats.items():
        assert UpstreamPodStats.model_validate_json(json.dumps(entry)).pod_id == name
        assert set(entry) - set(UpstreamPodStats.model_fields) - {"estimated_cost_usd"} == (
            cost_keys
        )
    assert generated["p002"]["distance"] == 0.5


async def test_pods_compare_with_the_submitted_png_as_upstream(client: Client) -> None:
    """Upstream's distance is between our preview and the submitted PNG (not our render of the
    submitted GLB): each pod fetches the submitted preview and renders only its own GLBs."""
    world = FakeWorld(files=round_files(4), policy=policy())
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    stems = [f"p{i:03d}" for i in range(4)]
    assert sorted(world.fetched) == [f"http://sub/{s}.png" for s in stems]
    rendered = sorted(uri for kind, uri, _, _ in world.spans if kind == "render")
    assert rendered == [f"file:///gen/{s}.glb" for s in stems]
    assert sorted(world.scored) == [f"file:///sub/{s}.png file:///gen/{s}.png" for s in stems]


async def test_cancelling_while_reading_ends_cancelled_not_failed(client: Client) -> None:
    """An audit cancelled while its repo read is failing and being retried ends CANCELED (an
    operator's cancel is not a failure), and nothing is rented or written."""
    world = FakeWorld(files=round_files(2), policy=policy(), read_outage=True)
    queue = f"q-{uuid.uuid4()}"
    world.policy = world.policy.model_copy(update={"gpu_task_queue": queue})
    async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=world.activities()):
        handle = await client.start_workflow(
            "AuditWorkflow",
            AuditInput(round=1, hotkey=world.files.hotkey, policy=world.policy),
            id=f"audit-1-{uuid.uuid4()}",
            task_queue=queue,
        )

        async def retrying() -> None:
            description = await handle.describe()
            assert description.raw_description.pending_activities, "not reading yet"
            assert description.raw_description.pending_activities[0].attempt >= 2

        await assert_eventually(retrying, timeout=30, interval=0.2)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert world.deployed == [] and world.writes == []


async def test_audit_reads_and_writes_name_its_competition_repo(client: Client) -> None:
    """The audit records which competition repo it audits (its policy) and names it in every
    read and write, so a worker configured for another repo never serves them."""
    world = FakeWorld(files=round_files(3), policy=policy(competition_repo="/srv/competition.git"))
    result = await run_audit(client, world)
    assert result.audit.outcome is AuditOutcome.PASSED
    assert world.writes
    assert {w.competition_repo for w in world.writes} == {"/srv/competition.git"}
    assert world.read_repos == ["/srv/competition.git"]


async def test_audit_result_and_pod_stats_carry_pod_costs(client: Client) -> None:
    """Each pod reports its rental (pod-cost patch); the audit sums rented, warm-up, productive
    and wasted seconds, priced with PROVIDER_PRICES, in its result and pod_stats.json."""
    prices = {ProviderName.LOCAL: 3600.0}  # 1 USD per GPU-second: cost == GPU-seconds
    world = FakeWorld(files=round_files(4), policy=policy(gpu_hour_prices=prices))
    result = await run_audit(client, world)
    cost = result.cost
    assert cost is not None and cost.pods == result.pods_started
    assert cost.rented_seconds > 0 and cost.gpu_seconds == cost.rented_seconds
    assert cost.estimated_cost_usd is not None
    assert abs(cost.estimated_cost_usd - cost.gpu_seconds) < 0.01 * cost.pods
    assert cost.warmup_seconds <= cost.wasted_seconds <= cost.rented_seconds
    stats = world.writes[-1].files[1].value
    assert isinstance(stats, dict) and stats
    assert {entry["provider"] for entry in stats.values()} == {"local"}
    assert sum(entry["processed"] for entry in stats.values()) == 4
    assert sum(entry["productive_seconds"] for entry in stats.values()) > 0
