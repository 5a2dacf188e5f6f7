"""The v1 verdict (frozen; see workflows/legacy/__init__.py); v2 uses workflows/policy/verdict.py.

For every stem the miner submitted: a mismatch if the generation is missing, failed (no glb or
png), overtime (> generation timeout), farther than the acceptable distance, or its distance is
unknown (upstream silently accepted an unmeasured distance; we never do). Mismatches on critical
prompts are counted separately. Times of non-failed generations are sorted, trimmed by
`trim_count` at each end when there are more than 2 * trim_count, and their median decides speed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from models.audit import AuditPolicy
from models.competition import AuditOutcome, GenerationAudit, GenerationEntry

BUILD_FAILED_REASON = "Failed to build a docker image"
DEPLOY_FAILED_REASON = "Failed to deploy a docker image"


class Mismatch(StrEnum):
    """Why one stem counts as a mismatch."""

    MISSING = "missing"
    FAILED = "failed"
    OVERTIME = "overtime"
    DISTANCE_UNKNOWN = "distance_unknown"
    TOO_DIFFERENT = "too_different"


class MismatchCounts(BaseModel):
    """Non-critical and critical mismatch counts."""

    model_config = ConfigDict(frozen=True)

    non_critical: int = 0
    critical: int = 0


def is_failed(entry: GenerationEntry) -> bool:
    """A generation without a GLB or preview failed."""
    return entry.glb is None or entry.png is None


def classify(entry: GenerationEntry | None, policy: AuditPolicy) -> Mismatch | None:
    """The mismatch reason of one stem's generation, or None when it matches."""
    if entry is None:
        return Mismatch.MISSING
    if is_failed(entry):
        return Mismatch.FAILED
    if entry.generation_time > policy.generation_timeout_seconds:
        return Mismatch.OVERTIME
    if entry.distance is None:
        return Mismatch.DISTANCE_UNKNOWN
    if entry.distance > policy.acceptable_distance:
        return Mismatch.TOO_DIFFERENT
    return None


def count_mismatches(
    stems: Iterable[str],
    generated: Mapping[str, GenerationEntry],
    critical: Iterable[str],
    policy: AuditPolicy,
) -> MismatchCounts:
    """Mismatches among `stems`, split into non-critical and critical."""
    critical_set = frozenset(critical)
    non_critical = crit = 0
    for stem in stems:
        if classify(generated.get(stem), policy) is None:
            continue
        if stem in critical_set:
            crit += 1
        else:
            non_critical += 1
    return MismatchCounts(non_critical=non_critical, critical=crit)


def trimmed_median(times: Iterable[float], trim_count: int) -> float | None:
    """Median after dropping `trim_count` from each end (only when more than 2*trim_count)."""
    ordered = sorted(times)
    if len(ordered) > 2 * trim_count and trim_count > 0:
        ordered = ordered[trim_count : len(ordered) - trim_count]
    if not ordered:
        return None
    return float(statistics.median(ordered))


def decide(
    hotkey: str,
    submitted_stems: Iterable[str],
    generated: Mapping[str, GenerationEntry],
    critical: Iterable[str],
    policy: AuditPolicy,
) -> GenerationAudit:
    """The generation_audits.json entry for a miner.

    `submitted_stems` are the stems checked: all submitted stems for a complete audit, or the
    stems decided so far when the audit stopped early because the verdict could not change.
    """
    stems = list(submitted_stems)
    counts = count_mismatches(stems, generated, critical, policy)
    times = [
        entry.generation_time
        for stem in stems
        if (entry := generated.get(stem)) is not None and not is_failed(entry)
    ]
    median = trimmed_median(times, policy.trim_count)
    reasons: list[str] = []
    if median is not None and median > policy.median_limit_seconds:
        reasons.append(
            f"Trimmed median generation time ({median:.2f}s) exceeds limit "
            f"({policy.median_limit_seconds:.2f}s)"
        )
    if not stems:
        reasons.append("No submitted prompts to check")
    elif median is None:
        reasons.append("No successful generation to time")
    if counts.non_critical > policy.max_mismatched_prompts:
        reasons.append(
            f"Non-critical mismatches ({counts.non_critical}) exceed tolerance "
            f"({policy.max_mismatched_prompts})"
        )
    if counts.critical > policy.max_mismatched_critical_prompts:
        reasons.append(
            f"Critical mismatches ({counts.critical}) exceed tolerance "
            f"({policy.max_mismatched_critical_prompts})"
        )
    return GenerationAudit(
        hotkey=hotkey,
        outcome=AuditOutcome.REJECTED if reasons else AuditOutcome.PASSED,
        checked_prompts=len(stems),
        failed_prompts=counts.non_critical,
        failed_critical=counts.critical,
        generation_time=median,
        reason="; ".join(reasons),
    )


def verdict_is_final(counts: MismatchCounts, policy: AuditPolicy) -> bool:
    """True once mismatches exceed a tolerance: more results cannot turn the verdict to pass."""
    return (
        counts.non_critical > policy.max_mismatched_prompts
        or counts.critical > policy.max_mismatched_critical_prompts
    )


def rejected_without_generation(hotkey: str, reason: str) -> GenerationAudit:
    """Verdict for an audit that never generated (build failed, no pod could be deployed)."""
    return GenerationAudit(
        hotkey=hotkey,
        outcome=AuditOutcome.REJECTED,
        checked_prompts=0,
        failed_prompts=0,
        failed_critical=0,
        generation_time=None,
        reason=reason,
    )
