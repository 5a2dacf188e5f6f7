"""The webhook notices' texts (upstream's Discord notifier, REFERENCE.md sec. 17). Pure."""

from __future__ import annotations

from collections.abc import Sequence

from models.audit import AuditPolicy
from models.competition import GenerationEntry
from workflows.policy import coordinator


def progress_body(best: Sequence[GenerationEntry], total: int, policy: AuditPolicy) -> str:
    """Upstream's progress notice (miner_runner `_send_progress`, discord.py): counts over the
    prompts with a result; final = out of attempts; overtime = slower than GENERATION_TIMEOUT;
    a mismatch here is distance >= ACCEPTABLE_DISTANCE; the plain median of times > 0."""
    fails = final_fails = overtimes = final_overtimes = mismatches = 0
    for entry in best:
        final = entry.attempts >= policy.max_prompt_attempts
        if entry.is_failed():
            fails += 1
            final_fails += final
        if entry.generation_time > policy.generation_timeout_seconds:
            overtimes += 1
            final_overtimes += final
        if coordinator.distance_of(entry) >= policy.acceptable_distance:
            mismatches += 1
    middle = median([e.generation_time for e in best])
    pct = len(best) * 100 // total if total else 0
    lines = [
        f"Generated    {len(best)} / {total} ({pct}%)",
        f"Fails        {fails:>3}  final: {final_fails}",
        f"Overtimes    {overtimes:>3}  final: {final_overtimes}",
        f"Mismatches   {mismatches:>3}",
        f"Median time  {f'{middle:.1f}s' if middle is not None else 'N/A'}",
    ]
    return "\n".join(lines)


def median(times: Sequence[float]) -> float | None:
    """Plain median of the positive times (the progress query), None before the first."""
    ordered = sorted(t for t in times if t > 0)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
