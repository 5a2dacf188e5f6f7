"""Speculative re-execution at an audit's tail: which held prompt an idle pod copies, and when a
copy's result counts. Ours, not upstream's; only with SPECULATIVE_REEXECUTION (default off).

Why: each pod's MAX_CONCURRENT_PROMPTS_PER_POD loops lock prompts ahead of its GPU, so at the
tail a slow pod still holds several prompts while the fast ones idle (benchmarks/pipeline.py:
a 3x straggler ends at 1.33x the fluid bound from that hoard alone). An idle pod with nothing
else to do copies the held prompt it is expected to finish soonest relative to its holder; the
first result that settles the prompt wins and the parent revokes every other copy (a copy not
yet sent to its miner is dropped, so no GPU works twice for it).

What the miner's verdict sees stays upstream's:
- a copy is not an attempt: its result is recorded only when it settles the prompt (success and
  no retry needed, counted as the attempt the holder's result would have been); any other copy
  result is dropped, so failures and overtimes of copies never charge the miner;
- the recorded time is the winning copy's, as a pod race already decides upstream (which pod
  gets which prompt); a revoked assignment is neither a failure nor a retry for its pod.

Pure functions; time comes in as arguments so the same calls replay exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.audit import AuditPolicy, QueuedPrompt
from models.competition import GenerationEntry
from workflows.policy import coordinator

SPECULATION_PATCH = "speculative-reexecution"
"""Marker of audits that copy held prompts to idle pods and revoke the losing copies."""
GAIN = 1.5
"""A copy is made only when its holder is expected to finish the prompt at least this many times
later than the idle pod would: a margin for the estimates, so equal pods do not swap prompts."""
MAX_HOLDERS = 2
"""A prompt is held by at most this many pods at once (the holder and one copy)."""


@dataclass(frozen=True)
class Holding:
    """What one ready pod holds, as the parent sees it."""

    short_id: str
    stems: Sequence[str]
    """Its outstanding prompts in the order they were handed out (its loops take them FIFO)."""
    seconds_per_prompt: float | None
    """Its expected generation time; None while nothing tells (no result, nothing running)."""


def seconds_per_prompt(
    results: int, productive_seconds: float, running_for: float | None
) -> float | None:
    """A pod's expected generation time: its mean so far, at least as long as the one it has
    been running (a pod stuck on its first prompt is slow even without a result)."""
    mean = productive_seconds / results if results else None
    if running_for is None:
        return mean
    return max(mean or 0.0, running_for)


def pick_copy(
    prompts: Mapping[str, QueuedPrompt],
    me: Holding,
    others: Sequence[Holding],
    allow_retry: bool,
) -> QueuedPrompt | None:
    """The held prompt `me` (idle, nothing left to `find`) should copy, or None.

    Expected finish of a prompt at position k of a holder: (k + 1) x its seconds per prompt;
    of one more prompt on `me`: (len(me.stems) + 1) x mine. The copy with the largest saving
    wins, if the holder's finish is at least GAIN times later.
    """
    if me.seconds_per_prompt is None or me.seconds_per_prompt <= 0:
        return None
    holders: dict[str, int] = {}
    for holding in (me, *others):
        for stem in holding.stems:
            holders[stem] = holders.get(stem, 0) + 1
    mine = (len(me.stems) + 1) * me.seconds_per_prompt
    best: QueuedPrompt | None = None
    best_saving = 0.0
    for holder in others:
        if holder.seconds_per_prompt is None:
            continue
        for position, stem in enumerate(holder.stems):
            prompt = prompts.get(stem)
            if prompt is None or prompt.done or me.short_id in prompt.attempted_by:
                continue
            if holders.get(stem, 0) >= MAX_HOLDERS or (prompt.attempts and not allow_retry):
                continue
            theirs = (position + 1) * holder.seconds_per_prompt
            if theirs < GAIN * mine:
                continue
            if theirs - mine > best_saving:
                best, best_saving = prompt, theirs - mine
    return best


def copy(prompt: QueuedPrompt, short_id: str) -> None:
    """Hand a copy to `short_id`: it never takes this prompt again; the holder keeps the lock."""
    if short_id not in prompt.attempted_by:
        prompt.attempted_by.append(short_id)


def copy_counts(prompt: QueuedPrompt, result: GenerationEntry, policy: AuditPolicy) -> bool:
    """Whether a copy's result is recorded: only when it settles the prompt on its own."""
    if prompt.done or result.is_failed():
        return False
    best = result
    if prompt.best is not None and not coordinator.is_better(result, prompt.best):
        best = prompt.best
    settled = best.model_copy(update={"attempts": prompt.attempts + 1})
    return not coordinator.needs_retry(settled, policy)
