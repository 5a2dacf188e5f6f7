"""When is a pod bad in a v1 audit (frozen; see workflows/legacy/__init__.py)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from models.audit import AuditPolicy
from models.competition import PodStats


def summarize(stats: PodStats, times: Sequence[float]) -> PodStats:
    """Stats with the time summary recomputed from the successful generation times."""
    if not times:
        return stats
    return stats.model_copy(
        update={
            "time_min": min(times),
            "time_max": max(times),
            "time_avg": sum(times) / len(times),
            "time_median": float(statistics.median(times)),
        }
    )


def bad_pod_reason(
    stats: PodStats, mismatches: int, times: Sequence[float], policy: AuditPolicy
) -> str | None:
    """Why the pod should be replaced, or None while it is fine.

    Judged only after `pod_min_samples` processed prompts: failures + mismatches reaching
    `pod_failure_threshold`, or a median generation time over the limit.
    """
    if stats.processed < policy.pod_min_samples:
        return None
    failures = stats.hard_failed + mismatches
    if failures >= policy.pod_failure_threshold:
        return (
            f"too many failures: {failures} failed or mismatched of {stats.processed} "
            f"(threshold {policy.pod_failure_threshold})"
        )
    if times:
        median = float(statistics.median(times))
        if median > policy.median_limit_seconds:
            return (
                f"median generation time {median:.2f}s exceeds limit "
                f"{policy.median_limit_seconds:.2f}s"
            )
    return None
