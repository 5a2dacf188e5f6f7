"""v1 policies (frozen in workflows/legacy): still what v1 audits in flight decide with."""

from __future__ import annotations

from models.audit import AuditPolicy, PromptResult, PromptResultKind, PromptState
from models.competition import GenerationEntry, PodStats
from models.errors import ErrorType
from workflows.legacy import pod_health_v1 as pod_health
from workflows.legacy import queue_v1 as queue


def prompt(
    stem: str, attempts: int = 0, tried_on: list[str] | None = None, **kw: object
) -> PromptState:
    return PromptState(
        stem=stem, url=f"http://p/{stem}.png", attempts=attempts, tried_on=tried_on or [], **kw
    )


def result(stem: str, outcome: PromptResultKind, **kw: object) -> PromptResult:
    return PromptResult(
        slot=0, attempt=0, assignment_id=f"{stem}#1", stem=stem, outcome=outcome, **kw
    )


def test_fewest_attempts_not_tried_on_this_pod_first() -> None:
    """The pod gets the least-tried prompt it has not tried; ties keep file order."""
    prompts = [prompt("a", 1, ["pod-x"]), prompt("b", 1), prompt("c", 0, ["pod-y"]), prompt("d", 0)]
    chosen = queue.next_prompt(prompts, "pod-y", 4, ["pod-x", "pod-y"])
    assert chosen is not None and chosen.stem == "d"


def test_done_in_flight_and_exhausted_prompts_are_skipped() -> None:
    """Nothing finished, outstanding or out of attempts is handed out."""
    prompts = [prompt("a", done=True), prompt("b", in_flight="b#1"), prompt("c", 4)]
    assert queue.next_prompt(prompts, "pod", 4, ["pod"]) is None


def test_tried_prompt_returns_only_when_every_live_pod_tried_it() -> None:
    """A pod gets back a prompt it failed only once no other live pod can try it."""
    failed = prompt("a", 1, ["pod-x"])
    assert queue.next_prompt([failed], "pod-x", 4, ["pod-x", "pod-y"]) is None
    assert queue.next_prompt([failed], "pod-x", 4, ["pod-x"]) is failed


def test_generated_beats_failed_and_smaller_distance_wins() -> None:
    """Merging keeps the better entry but always the newest attempt count."""
    failed = GenerationEntry(glb=None, png=None, attempts=1)
    far = GenerationEntry(glb="g", png="p", distance=0.5, attempts=2)
    near = GenerationEntry(glb="g", png="p", distance=0.01, attempts=3)
    assert queue.better_entry(failed, far) == far
    assert queue.better_entry(near, far) == near.model_copy(update={"attempts": 2})
    assert queue.better_entry(far, failed) == far.model_copy(update={"attempts": 1})


def test_failure_requeues_until_attempts_run_out() -> None:
    """A model failure leaves the prompt pending until MAX_PROMPT_ATTEMPTS."""
    p = prompt("a", 1, in_flight="a#1")
    queue.apply_result(p, result("a", PromptResultKind.FAILED), 2)
    assert not p.done and p.in_flight is None and p.entry is not None and p.entry.glb is None
    p.attempts = 2
    queue.apply_result(p, result("a", PromptResultKind.FAILED), 2)
    assert p.done


def test_unavailable_prompt_is_done_at_once() -> None:
    """A prompt image that cannot be fetched is not retried on other pods."""
    p = prompt("a", 1, in_flight="a#1")
    queue.apply_result(
        p, result("a", PromptResultKind.FAILED, error_type=ErrorType.PROMPT_UNAVAILABLE), 4
    )
    assert p.done


def test_pod_is_judged_only_after_min_samples() -> None:
    """Failures before POD_MIN_SAMPLES never mark a pod bad."""
    policy = AuditPolicy(pod_min_samples=8, pod_failure_threshold=3)
    stats = PodStats(pod_id="p", processed=7, hard_failed=7)
    assert pod_health.bad_pod_reason(stats, 0, [], policy) is None
    stats = stats.model_copy(update={"processed": 8})
    reason = pod_health.bad_pod_reason(stats, 0, [], policy)
    assert reason is not None and "too many failures" in reason


def test_failures_plus_mismatches_reach_threshold() -> None:
    """Mismatches count with failures toward POD_FAILURE_THRESHOLD (>=)."""
    policy = AuditPolicy(pod_min_samples=2, pod_failure_threshold=3)
    stats = PodStats(pod_id="p", processed=4, hard_failed=1)
    assert pod_health.bad_pod_reason(stats, 1, [1.0], policy) is None
    assert pod_health.bad_pod_reason(stats, 2, [1.0], policy) is not None


def test_slow_median_marks_pod_bad() -> None:
    """A pod whose median time exceeds the limit is bad."""
    policy = AuditPolicy(pod_min_samples=2, median_limit_seconds=10)
    stats = PodStats(pod_id="p", processed=3, successful=3)
    assert pod_health.bad_pod_reason(stats, 0, [9, 10, 11], policy) is None
    reason = pod_health.bad_pod_reason(stats, 0, [9, 11, 12], policy)
    assert reason is not None and "median generation time 11.00s" in reason


def test_summary_times() -> None:
    """Pod stats carry min/max/avg/median of successful generation times."""
    s = pod_health.summarize(PodStats(pod_id="p"), [3.0, 1.0, 2.0])
    assert (s.time_min, s.time_max, s.time_avg, s.time_median) == (1.0, 3.0, 2.0, 2.0)
