"""The prompt queue of one audit: upstream c263c11's PromptCoordinator as pure functions.

Rules (REFERENCE.md sec. 10, `prompt_coordinator.py`):
- assignment priority: fresh (0 attempts, prompts.txt order) -> failed (fewest attempts) ->
  hard overtime (>= GENERATION_TIMEOUT, fewest attempts) -> soft overtime (> median limit, the
  slowest; only while the run's trimmed median, failures counted as the timeout, is over it);
  retries only for pods whose tracker accepts them;
- a pod never retakes a prompt it was assigned (`attempted_by`);
- assigning locks a prompt for PROMPT_LOCK_TIMEOUT; after expiry another pod may take it;
- recording keeps the better result (non-failed beats failed, then the lower time; distance
  is ignored) and finishes the prompt unless it needs a retry (matching distance, and failed or
  slower than the median limit, and attempts left): a distance mismatch is final.

Time is an argument (`now`, workflow time), so the same calls replay exactly.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from models.audit import AuditPolicy, QueuedPrompt
from models.competition import GenerationEntry

UNMEASURABLE_DISTANCE = 2.0
"""Stored when the miner's own submission could not be rendered to compare with: the largest
distance DINOv3's 1 - cos can give, so it is a mismatch for every reader (upstream stores 0.0,
a match, for any unmeasured distance; we never accept what we could not check)."""

ALL_DONE_CHECK = "all-done-check"


def distance_of(entry: GenerationEntry) -> float:
    """The entry's distance as upstream reads it; an unknown one is a mismatch unless failed."""
    if entry.distance is not None:
        return entry.distance
    return 0.0 if entry.is_failed() else UNMEASURABLE_DISTANCE


def needs_retry(entry: GenerationEntry, policy: AuditPolicy) -> bool:
    """Upstream's `_needs_retry`: matching, failed or slower than the median limit, tries left."""
    if distance_of(entry) > policy.acceptable_distance:
        return False
    if not entry.is_failed() and entry.generation_time <= policy.median_limit_seconds:
        return False
    return entry.attempts < policy.max_prompt_attempts


def seed(prompt: QueuedPrompt, prior: GenerationEntry | None, policy: AuditPolicy) -> None:
    """Restore a prompt from a stored generated.json entry (restart continuity)."""
    if prior is None:
        return
    prompt.best = prior
    prompt.attempts = prior.attempts
    prompt.done = not needs_retry(prior, policy)


def is_locked(prompt: QueuedPrompt, now: datetime) -> bool:
    """Held by a pod whose lock has not expired."""
    return (
        prompt.locked_by is not None
        and prompt.lock_expires is not None
        and now < prompt.lock_expires
    )


def find(
    prompts: Mapping[str, QueuedPrompt],
    short_id: str,
    allow_retry: bool,
    now: datetime,
    policy: AuditPolicy,
    ignore_locks: bool = False,
) -> tuple[QueuedPrompt | None, bool]:
    """The prompt `short_id` would be assigned, and whether it is a retry (upstream `_find`)."""
    failed: list[QueuedPrompt] = []
    hard: list[QueuedPrompt] = []
    soft: list[QueuedPrompt] = []
    for prompt in prompts.values():
        if prompt.done or short_id in prompt.attempted_by:
            continue
        if not ignore_locks and is_locked(prompt, now):
            continue
        if prompt.attempts == 0:
            return prompt, False
        if not allow_retry:
            continue
        best = prompt.best
        if best is None or best.is_failed():
            failed.append(prompt)
        elif best.generation_time >= policy.generation_timeout_seconds:
            hard.append(prompt)
        elif best.generation_time > policy.median_limit_seconds:
            soft.append(prompt)
    for bucket in (failed, hard):
        if bucket:
            return min(bucket, key=lambda p: p.attempts), True
    if soft and trimmed_median(prompts.values(), policy) > policy.median_limit_seconds:
        return max(soft, key=lambda p: p.best.generation_time if p.best else 0.0), True
    return None, False


def has_work(
    prompts: Mapping[str, QueuedPrompt],
    short_id: str,
    allow_retry: bool,
    now: datetime,
    policy: AuditPolicy,
) -> bool:
    """Would `find` give this pod anything if no prompt were locked?"""
    return find(prompts, short_id, allow_retry, now, policy, ignore_locks=True)[0] is not None


def all_done(prompts: Mapping[str, QueuedPrompt], now: datetime, policy: AuditPolicy) -> bool:
    """Nothing would be assignable to a new pod with retries allowed and locks ignored."""
    return not has_work(prompts, ALL_DONE_CHECK, True, now, policy)


def lock(prompt: QueuedPrompt, short_id: str, now: datetime, policy: AuditPolicy) -> None:
    """Assign: lock for PROMPT_LOCK_TIMEOUT and remember the pod tried it."""
    prompt.locked_by = short_id
    prompt.lock_expires = now + timedelta(seconds=policy.prompt_lock_timeout_seconds)
    if short_id not in prompt.attempted_by:
        prompt.attempted_by.append(short_id)


def unlock(prompt: QueuedPrompt) -> None:
    """Release the lock (a result arrived, or its pod is gone)."""
    prompt.locked_by = None
    prompt.lock_expires = None


def is_better(new: GenerationEntry, old: GenerationEntry) -> bool:
    """Upstream's ranking: non-failed beats failed; among non-failed the lower time wins."""
    if new.is_failed():
        return False
    if old.is_failed():
        return True
    return new.generation_time < old.generation_time


def record(prompt: QueuedPrompt, result: GenerationEntry, policy: AuditPolicy) -> bool:
    """Record one result; False when the prompt was already done (a late result, ignored)."""
    unlock(prompt)
    if prompt.done:
        return False
    prompt.attempts += 1
    best = result if prompt.best is None or is_better(result, prompt.best) else prompt.best
    prompt.best = best.model_copy(update={"attempts": prompt.attempts})
    prompt.done = not needs_retry(prompt.best, policy)
    return True


def _effective_time(prompt: QueuedPrompt, policy: AuditPolicy) -> float:
    best = prompt.best
    if best is None or best.is_failed():
        return policy.generation_timeout_seconds
    return min(best.generation_time, policy.generation_timeout_seconds)


def trimmed_median(prompts: Iterable[QueuedPrompt], policy: AuditPolicy) -> float:
    """The run's trimmed median: every entry, failed or missing as the timeout, times capped."""
    times = sorted(_effective_time(p, policy) for p in prompts)
    trim = policy.trim_count
    if len(times) > 2 * trim:
        times = times[trim : len(times) - trim]
    return float(statistics.median(times)) if times else 0.0


def mismatch_count(prompts: Iterable[QueuedPrompt], policy: AuditPolicy) -> int:
    """Prompts that will hurt the verdict: far results, or failures/overtimes out of attempts."""
    count = 0
    for prompt in prompts:
        best = prompt.best
        if best is None:
            continue
        if not best.is_failed() and distance_of(best) > policy.acceptable_distance:
            count += 1
        elif (
            best.is_failed() or best.generation_time >= policy.generation_timeout_seconds
        ) and prompt.attempts >= policy.max_prompt_attempts:
            count += 1
    return count


def next_lock_expiry(prompts: Iterable[QueuedPrompt], now: datetime) -> datetime | None:
    """When the next held lock expires (an idle pod may take that prompt then)."""
    expiries = [
        p.lock_expires
        for p in prompts
        if not p.done and p.lock_expires is not None and is_locked(p, now)
    ]
    return min(expiries, default=None)
