"""The audit verdict, exactly as upstream c263c11 decides it (pure; `miner_audit.py`).

The checked stems are the audited set: submitted entries with both glb and png (the caller
passes `RoundFiles.audited_stems()`), regenerated or not. A stem is a mismatch when it has no
generated result, the result failed (no glb or png), took longer than GENERATION_TIMEOUT, or is
farther than ACCEPTABLE_DISTANCE (all strict); critical stems are counted apart. The times of
non-failed results (overtimes and far ones included) are sorted, `trim_count` is cut from each
end when there are more than 2 * trim_count, and their median is the generation time.
An unknown distance in our files is a mismatch (`coordinator.distance_of`); upstream stored 0.0.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from models.audit import AuditPolicy
from models.competition import AuditOutcome, GenerationAudit, GenerationEntry
from workflows.policy.coordinator import distance_of

BUILD_FAILED_REASON = "Failed to build a docker image"
DEPLOY_FAILED_REASON = "Failed to deploy a docker image"


class Mismatch(StrEnum):
    """Why one stem counts as a mismatch."""

    MISSING = "missing"
    FAILED = "failed"
    OVERTIME = "overtime"
    TOO_DIFFERENT = "too_different"


class MismatchCounts(BaseModel):
    """Non-critical and critical mismatch counts."""

    model_config = ConfigDict(frozen=True)

    non_critical: int = 0
    critical: int = 0


def classify(entry: GenerationEntry | None, policy: AuditPolicy) -> Mismatch | None:
    """The mismatch reason of one stem's generation, or None when it matches."""
    if entry is None:
        return Mismatch.MISSING
    if entry.is_failed():
        return Mismatch.FAILED
    if entry.generation_time > policy.generation_timeout_seconds:
        return Mismatch.OVERTIME
    if distance_of(entry) > policy.acceptable_distance:
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
    audited_stems: Iterable[str],
    generated: Mapping[str, GenerationEntry],
    critical: Iterable[str],
    policy: AuditPolicy,
) -> GenerationAudit:
    """The generation_audits.json entry for a miner (upstream's `audit_generations`)."""
    stems = list(audited_stems)
    counts = count_mismatches(stems, generated, critical, policy)
    times = [
        entry.generation_time
        for stem in stems
        if (entry := generated.get(stem)) is not None and not entry.is_failed()
    ]
    median = trimmed_median(times, policy.trim_count)
    reasons: list[str] = []
    if median is not None and median > policy.median_limit_seconds:
        reasons.append(
            f"Trimmed median generation time ({median:.2f}s) exceeds limit "
            f"({policy.median_limit_seconds:.2f}s)"
        )
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
    """True once settled mismatches exceed a tolerance: more results cannot make it pass."""
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
