"""Upstream c263c11's queue and pod rules (workflows/policy/coordinator.py, pod_tracker.py).

Each test is named after the rule it checks (REFERENCE.md sections 10 and 11).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.audit import AuditPolicy, PodTracker, QueuedPrompt
from models.competition import GenerationEntry
from models.settings import SettingsError, load_settings
from workflows.policy import coordinator, pod_tracker

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = AuditPolicy()


def ok(time: float, distance: float = 0.01) -> GenerationEntry:
    return GenerationEntry(glb="g", png="p", generation_time=time, size=1, distance=distance)


FAILED = GenerationEntry(size=0, distance=0.0)


def queue(**bests: GenerationEntry | None) -> dict[str, QueuedPrompt]:
    prompts = {}
    for stem, best in bests.items():
        prompt = QueuedPrompt(stem=stem, url=f"http://x/{stem}.png")
        if best is not None:
            coordinator.record(prompt, best, POLICY)
        prompts[stem] = prompt
    return prompts


def test_assignment_priority_fresh_then_failed_then_hard_then_soft_overtime() -> None:
    prompts = queue(soft=ok(100), hard=ok(200), failed=FAILED, fresh=None)
    order = []
    for pod in ("a", "b", "c"):
        prompt, is_retry = coordinator.find(prompts, pod, True, NOW, POLICY)
        assert prompt is not None
        order.append((prompt.stem, is_retry))
        coordinator.record(prompt, ok(50), POLICY)
    assert order == [("fresh", False), ("failed", True), ("hard", True)]
    # soft overtime (100 s) is retried only while the run's trimmed median is over the limit
    assert coordinator.find(prompts, "d", True, NOW, POLICY)[0] is None


def test_soft_overtime_retried_only_while_trimmed_median_is_over_the_limit() -> None:
    slow = queue(a=ok(100), b=ok(95), c=ok(120))
    prompt, _ = coordinator.find(slow, "pod", True, NOW, POLICY)
    assert prompt is not None and prompt.stem == "c"  # the slowest first
    fast = queue(a=ok(100), b=ok(10), c=ok(20))
    assert coordinator.find(fast, "pod", True, NOW, POLICY)[0] is None
    assert coordinator.all_done(fast, NOW, POLICY)


def test_trimmed_median_counts_failures_and_missing_as_the_timeout() -> None:
    prompts = queue(a=ok(10), b=FAILED, c=None)
    assert coordinator.trimmed_median(prompts.values(), POLICY) == 180.0


def test_pod_never_retakes_a_prompt_it_tried() -> None:
    prompts = queue(p=None)
    prompt, _ = coordinator.find(prompts, "pod-a", True, NOW, POLICY)
    assert prompt is not None
    coordinator.lock(prompt, "pod-a", NOW, POLICY)
    coordinator.record(prompt, FAILED, POLICY)
    assert coordinator.find(prompts, "pod-a", True, NOW, POLICY)[0] is None
    assert not coordinator.has_work(prompts, "pod-a", True, NOW, POLICY)
    assert coordinator.find(prompts, "pod-b", True, NOW, POLICY)[0] is prompt


def test_retries_go_only_to_pods_that_accept_them() -> None:
    prompts = queue(p=FAILED)
    assert coordinator.find(prompts, "pod", False, NOW, POLICY) == (None, False)
    assert coordinator.find(prompts, "pod", True, NOW, POLICY)[1] is True


def test_kept_result_is_the_fastest_non_failed_distance_ignored() -> None:
    prompt = QueuedPrompt(stem="p", url="u")
    coordinator.record(prompt, ok(150), POLICY)
    coordinator.record(prompt, FAILED, POLICY)
    assert prompt.best is not None and prompt.best.generation_time == 150
    coordinator.record(prompt, ok(140, distance=0.5), POLICY)  # faster but far: kept
    assert prompt.best.generation_time == 140 and prompt.best.distance == 0.5
    assert prompt.attempts == 3 and prompt.best.attempts == 3
    assert prompt.done


def test_distance_mismatch_is_final() -> None:
    prompt = QueuedPrompt(stem="p", url="u")
    coordinator.record(prompt, ok(150, distance=0.3), POLICY)
    assert prompt.done and prompt.attempts == 1


def test_late_result_for_a_done_prompt_is_ignored() -> None:
    prompt = QueuedPrompt(stem="p", url="u")
    assert coordinator.record(prompt, ok(10), POLICY)
    assert not coordinator.record(prompt, ok(5), POLICY)
    assert prompt.attempts == 1 and prompt.best is not None and prompt.best.generation_time == 10


def test_max_prompt_attempts_default_is_3() -> None:
    assert AuditPolicy().max_prompt_attempts == 3
    assert load_settings().max_prompt_attempts == 3
    prompt = QueuedPrompt(stem="p", url="u")
    for _ in range(3):
        coordinator.record(prompt, FAILED, POLICY)
    assert prompt.done


def test_prompt_lock_timeout_lets_another_pod_take_it() -> None:
    prompts = queue(p=None)
    prompt = prompts["p"]
    coordinator.lock(prompt, "pod-a", NOW, POLICY)
    assert coordinator.find(prompts, "pod-b", True, NOW, POLICY)[0] is None
    assert coordinator.has_work(prompts, "pod-b", True, NOW, POLICY)
    later = NOW + timedelta(seconds=POLICY.prompt_lock_timeout_seconds)
    assert coordinator.next_lock_expiry(prompts.values(), NOW) == later
    assert coordinator.find(prompts, "pod-b", True, later, POLICY)[0] is prompt


def test_mismatch_count_counts_far_results_and_exhausted_failures() -> None:
    exhausted = QueuedPrompt(stem="x", url="u")
    for _ in range(3):
        coordinator.record(exhausted, FAILED, POLICY)
    prompts = queue(far=ok(10, distance=0.2), failed_once=FAILED, fine=ok(10))
    prompts["x"] = exhausted
    assert coordinator.mismatch_count(prompts.values(), POLICY) == 2


def test_seed_from_generated_json_restores_attempts_and_done() -> None:
    prompt = QueuedPrompt(stem="p", url="u")
    coordinator.seed(prompt, FAILED.model_copy(update={"attempts": 1}), POLICY)
    assert (prompt.attempts, prompt.done) == (1, False)
    coordinator.seed(prompt, ok(10).model_copy(update={"attempts": 1}), POLICY)
    assert prompt.done


def track(*results: tuple[bool, float]) -> PodTracker:
    tracker = PodTracker()
    for success, time in results:
        pod_tracker.record(tracker, success, time, False, None, POLICY)
    return tracker


def test_bad_pod_failures_plus_overtimes_at_threshold() -> None:
    tracker = track(*([(False, 0.0)] * 6 + [(True, 200.0)] * 2))
    assert pod_tracker.termination_reason(tracker, POLICY) == "6 failures + 2 overtimes >= 8"
    assert pod_tracker.termination_reason(track(*[(False, 0.0)] * 7), POLICY) is None


def test_rolling_median_over_limit_marks_pod_bad_unless_warming_up() -> None:
    slow = track(*[(True, 130.0)] * 8)
    assert pod_tracker.termination_reason(slow, POLICY) == "rolling median 130.0s > 120.0s"
    warming = track(*[(True, t) for t in (170, 165, 160, 155, 140, 135, 130, 125)])
    assert pod_tracker.termination_reason(warming, POLICY) is None


def test_distance_plays_no_part_in_the_pod_tracker() -> None:
    tracker = track(*[(True, 10.0)] * 20)
    assert pod_tracker.termination_reason(tracker, POLICY) is None
    assert tracker.hard_failed == 0


def test_retry_delta_stops_retries_on_pods_whose_retries_are_slower() -> None:
    tracker = track(*[(True, 50.0)] * 8)
    assert pod_tracker.accepts_retries(tracker, POLICY)
    for _ in range(3):
        pod_tracker.record(tracker, True, 100.0, True, 95.0, POLICY)
    assert tracker.retry_delta_count == 3 and tracker.retry_cumulative_delta == 15.0
    assert not pod_tracker.accepts_retries(tracker, POLICY)


def test_pod_stats_have_upstreams_fields_and_defaults() -> None:
    stats = pod_tracker.to_stats(PodTracker(), "miner-06-5f4hanqjax-1").model_dump(mode="json")
    assert list(stats) == [
        "pod_id", "processed", "successful", "hard_failed", "hard_overtime", "time_min",
        "time_max", "time_avg", "time_median", "marked_bad", "retry_cumulative_delta",
        "retry_delta_count", "termination_reason",
    ]  # fmt: skip
    assert stats["time_min"] == 0.0 and stats["termination_reason"] == "stopped"


def test_settings_validated_together() -> None:
    try:
        load_settings(MAX_PROMPT_ATTEMPTS=5, PODS_PER_MINER=4)
    except SettingsError as e:
        assert "MAX_PROMPT_ATTEMPTS" in str(e)
    else:
        raise AssertionError("MAX_PROMPT_ATTEMPTS > PODS_PER_MINER accepted")
    try:
        load_settings(PODS_PER_MINER=7, MAX_POD_ATTEMPTS=6)
    except SettingsError as e:
        assert "MAX_POD_ATTEMPTS" in str(e)
    else:
        raise AssertionError("PODS_PER_MINER > MAX_POD_ATTEMPTS accepted")
