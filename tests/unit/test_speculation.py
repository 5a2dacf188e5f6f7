"""Speculative re-execution policy (SPECULATIVE_REEXECUTION): which held prompt an idle pod
copies, and when a copy's result may stand in for the holder's."""

from __future__ import annotations

from models.audit import AuditPolicy, QueuedPrompt
from models.competition import GenerationEntry
from models.settings import load_settings
from workflows.policy import speculation
from workflows.policy.speculation import Holding

POLICY = AuditPolicy(median_limit_seconds=90.0, max_prompt_attempts=3, acceptable_distance=0.1)


def queue(*stems: str, **kw: object) -> dict[str, QueuedPrompt]:
    return {s: QueuedPrompt(stem=s, url=f"http://p/{s}.png", **kw) for s in stems}


def entry(time: float, distance: float = 0.01, failed: bool = False) -> GenerationEntry:
    if failed:
        return GenerationEntry(glb=None, png=None, generation_time=time)
    return GenerationEntry(glb="g", png="p", generation_time=time, distance=distance)


def test_an_idle_pod_copies_what_a_straggler_holds_last_first() -> None:
    """A 3x slower holder with 4 prompts: the idle pod copies the last three, the one queued
    deepest first, and leaves the one already generating (it would not finish it sooner)."""
    prompts = queue("a", "b", "c", "d")
    straggler = Holding("slow", ["a", "b", "c", "d"], 9.0)
    me = Holding("fast", [], 3.0)
    copied = []
    for _ in range(4):
        chosen = speculation.pick_copy(prompts, me, [straggler], allow_retry=True)
        if chosen is None:
            break
        speculation.copy(chosen, me.short_id)
        copied.append(chosen.stem)
        me = Holding("fast", [*me.stems, chosen.stem], 3.0)
    assert copied == ["d", "c", "b"]
    assert all("fast" in prompts[s].attempted_by for s in copied)
    assert prompts["a"].attempted_by == []


def test_equal_pods_take_only_the_queue_tail() -> None:
    """Same speed: the idle pod takes the holder's queued tail until the two would finish
    together (GAIN), and never copies a generation already running on an equal pod."""
    prompts = queue("a", "b", "c", "d")
    holder = Holding("other", ["a", "b", "c", "d"], 3.0)
    first = speculation.pick_copy(prompts, Holding("me", [], 3.0), [holder], allow_retry=True)
    assert first is not None and first.stem == "d"
    second = speculation.pick_copy(prompts, Holding("me", ["d"], 3.0), [holder], allow_retry=True)
    assert second is not None and second.stem == "c"
    third = speculation.pick_copy(
        prompts, Holding("me", ["d", "c"], 3.0), [holder], allow_retry=True
    )
    assert third is None


def test_no_copy_without_estimates_or_when_excluded() -> None:
    """Unknown speeds, prompts the pod was already assigned, prompts already copied, settled
    prompts and retries for a pod that takes none are never copied."""
    prompts = queue("a", "b")
    slow = Holding("slow", ["a", "b"], 30.0)
    assert speculation.pick_copy(prompts, Holding("me", [], None), [slow], True) is None
    assert (
        speculation.pick_copy(prompts, Holding("me", [], 1.0), [Holding("x", ["a"], None)], True)
        is None
    )
    prompts["b"].attempted_by.append("me")
    prompts["a"].done = True
    assert speculation.pick_copy(prompts, Holding("me", [], 1.0), [slow], True) is None
    prompts = queue("a", "b")
    copied_elsewhere = Holding("third", ["b"], 1.0)
    chosen = speculation.pick_copy(prompts, Holding("me", [], 1.0), [slow, copied_elsewhere], True)
    assert chosen is not None and chosen.stem == "a"
    retries = queue("a", attempts=1)
    assert speculation.pick_copy(retries, Holding("me", [], 1.0), [slow], False) is None
    assert speculation.pick_copy(retries, Holding("me", [], 1.0), [slow], True) is not None


def test_a_holder_stuck_on_its_first_prompt_counts_as_slow() -> None:
    """No result yet: the time it has been generating is its estimate, so a pod that has not
    answered for long becomes worth copying from as time passes."""
    assert speculation.seconds_per_prompt(0, 0.0, None) is None
    assert speculation.seconds_per_prompt(0, 0.0, 40.0) == 40.0
    assert speculation.seconds_per_prompt(4, 12.0, 1.0) == 3.0
    assert speculation.seconds_per_prompt(4, 12.0, 20.0) == 20.0


def test_a_copy_counts_only_when_it_settles_the_prompt() -> None:
    """A copy stands in for the holder's result only as a final one: a failure, an overtime
    with attempts left, or a result for a settled prompt never charges the miner an attempt."""
    fresh = QueuedPrompt(stem="a", url="u")
    assert speculation.copy_counts(fresh, entry(50.0), POLICY)
    assert speculation.copy_counts(fresh, entry(50.0, distance=0.5), POLICY)  # a final mismatch
    assert not speculation.copy_counts(fresh, entry(0.0, failed=True), POLICY)
    assert not speculation.copy_counts(fresh, entry(120.0), POLICY)  # over the median limit
    last_try = QueuedPrompt(stem="a", url="u", attempts=2, best=entry(0.0, failed=True))
    assert speculation.copy_counts(last_try, entry(120.0), POLICY)  # out of attempts: final
    settled = QueuedPrompt(stem="a", url="u", attempts=1, best=entry(10.0), done=True)
    assert not speculation.copy_counts(settled, entry(5.0), POLICY)


def test_speculation_is_off_unless_asked() -> None:
    """Upstream has no speculation: the default policy and settings keep its behaviour."""
    assert AuditPolicy().speculative_reexecution is False
    settings = load_settings(SPECULATIVE_REEXECUTION="true")
    assert settings.audit_policy().speculative_reexecution is True
    assert load_settings().audit_policy().speculative_reexecution is False
