"""When a pod is bad and whether its retries help: upstream c263c11's PodTracker, pure.

Rules (REFERENCE.md sec. 11, `pod_tracker.py`): a failed result (no glb or png) is a hard
failure; a retry whose previous best was non-failed adds its time delta; a time >= the
generation timeout is a hard overtime; otherwise a success, and a fresh success is a
performance sample. After POD_MIN_SAMPLES results: failures + overtimes >= the threshold, or the
rolling median of the last 8 fresh samples over ROLLING_MEDIAN_LIMIT unless times are falling
(warm-up), terminates the pod. A distance mismatch is the miner's, never the pod's.
"""

from __future__ import annotations

import statistics

from models.audit import AuditPolicy, PodTracker
from models.competition import PodStats

REASON_NO_WORK = "no work available"
REASON_MISMATCH_LIMIT = "mismatch limit"
REASON_STOPPED = "stopped"


def record(
    tracker: PodTracker,
    success: bool,
    generation_time: float,
    is_retry: bool,
    original_time: float | None,
    policy: AuditPolicy,
) -> None:
    """Count one result of this pod."""
    tracker.processed += 1
    if not success:
        tracker.hard_failed += 1
        return
    if is_retry and original_time is not None:
        tracker.retry_cumulative_delta += generation_time - original_time
        tracker.retry_delta_count += 1
    if generation_time >= policy.generation_timeout_seconds:
        tracker.hard_overtime += 1
        return
    tracker.successful += 1
    if not is_retry:
        tracker.performance_samples.append(generation_time)


def _rolling_median(tracker: PodTracker, window: int) -> float | None:
    samples = tracker.performance_samples
    if len(samples) < window:
        return None
    return float(statistics.median(samples[-window:]))


def _warming_up(tracker: PodTracker, half: int) -> bool:
    samples = tracker.performance_samples
    if len(samples) < 2 * half:
        return False
    previous = samples[-2 * half : -half]
    last = samples[-half:]
    return statistics.median(last) < statistics.median(previous)


def termination_reason(tracker: PodTracker, policy: AuditPolicy) -> str | None:
    """Why this pod must stop taking work (upstream's strings), or None while it is fine."""
    if tracker.marked_bad:
        return tracker.termination_reason
    if tracker.processed < policy.pod_min_samples:
        return None
    bad = tracker.hard_failed + tracker.hard_overtime
    if bad >= policy.pod_failure_threshold:
        return (
            f"{tracker.hard_failed} failures + {tracker.hard_overtime} overtimes "
            f">= {policy.pod_failure_threshold}"
        )
    if tracker.successful >= policy.pod_min_samples:
        median = _rolling_median(tracker, policy.rolling_median_window)
        limit = policy.rolling_median_limit_seconds
        if (
            median is not None
            and median > limit
            and not _warming_up(tracker, policy.warmup_half_window)
        ):
            return f"rolling median {median:.1f}s > {limit}s"
    return None


def accepts_retries(tracker: PodTracker, policy: AuditPolicy) -> bool:
    """Retries go to this pod until it is past warm-up and its retries proved slower."""
    if tracker.successful < policy.pod_min_samples:
        return True
    if tracker.retry_delta_count < policy.retry_delta_min_samples:
        return True
    return tracker.retry_cumulative_delta <= 0


def mark_bad(tracker: PodTracker, reason: str) -> None:
    """Mark the pod bad once; the first reason sticks."""
    if tracker.marked_bad:
        return
    tracker.marked_bad = True
    tracker.termination_reason = reason


def to_stats(tracker: PodTracker, pod_id: str) -> PodStats:
    """The pod_stats.json entry (times over fresh successes, 0.0 when there are none)."""
    samples = tracker.performance_samples
    return PodStats(
        pod_id=pod_id,
        processed=tracker.processed,
        successful=tracker.successful,
        hard_failed=tracker.hard_failed,
        hard_overtime=tracker.hard_overtime,
        time_min=min(samples) if samples else 0.0,
        time_max=max(samples) if samples else 0.0,
        time_avg=statistics.mean(samples) if samples else 0.0,
        time_median=float(statistics.median(samples)) if samples else 0.0,
        marked_bad=tracker.marked_bad,
        retry_cumulative_delta=tracker.retry_cumulative_delta,
        retry_delta_count=tracker.retry_delta_count,
        termination_reason=tracker.termination_reason,
    )
