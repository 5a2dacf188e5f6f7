"""Prompt assignment and result merging of v1 audits (frozen; see workflows/legacy/__init__.py).

- A pod gets the prompt with the fewest attempts that it has not tried itself (ties: file order);
  one it tried comes back to it only when every live pod has tried it.
- A prompt is dropped (done, failed) after `max_prompt_attempts`.
- A model failure puts the prompt back in the queue; a generated result (whatever its distance)
  finishes it: the image is deterministic, so regenerating a mismatch proves nothing new.
- A prompt image that cannot be downloaded fails the prompt at once (no pod can do better).
- Results merge keeping the better entry: generated beats failed, then the smaller distance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from models.audit import PromptResult, PromptResultKind, PromptState
from models.competition import GenerationEntry
from models.errors import ErrorType


def assignment_id(stem: str, attempt: int) -> str:
    """`stem#attempt`: the dedup key of one generation attempt."""
    return f"{stem}#{attempt}"


def next_prompt(
    prompts: Iterable[PromptState],
    pod_name: str,
    max_attempts: int,
    live_pods: Sequence[str] = (),
) -> PromptState | None:
    """The prompt to hand `pod_name` next, or None if it has nothing it may do.

    A prompt this pod already tried is handed to it again only when every live pod has tried
    it (otherwise one pod, or pods that all failed it once, would leave it waiting forever).
    """
    best: PromptState | None = None
    for prompt in prompts:
        if prompt.done or prompt.in_flight is not None or prompt.attempts >= max_attempts:
            continue
        if pod_name in prompt.tried_on and not all(p in prompt.tried_on for p in live_pods):
            continue
        if best is None or _priority(prompt, pod_name) < _priority(best, pod_name):
            best = prompt
    return best


def _priority(prompt: PromptState, pod_name: str) -> tuple[bool, int]:
    """Untried on this pod first, then the fewest attempts (ties keep file order)."""
    return (pod_name in prompt.tried_on, prompt.attempts)


def entry_from_result(result: PromptResult, attempts: int) -> GenerationEntry:
    """The generated.json entry one pod result stands for."""
    generated = result.outcome is PromptResultKind.GENERATED
    return GenerationEntry(
        glb=result.glb_uri if generated else None,
        png=result.png_uri if generated else None,
        generation_time=result.generation_time or 0.0,
        size=result.size,
        attempts=attempts,
        distance=result.distance if generated else None,
    )


def _rank(entry: GenerationEntry) -> tuple[int, float]:
    if entry.glb is None or entry.png is None:
        return (2, 0.0)
    if entry.distance is None:
        return (1, 0.0)
    return (0, entry.distance)


def better_entry(old: GenerationEntry | None, new: GenerationEntry) -> GenerationEntry:
    """Keep the better of two entries for one stem; the attempt count is always the newest."""
    if old is None or _rank(new) < _rank(old):
        return new
    return old.model_copy(update={"attempts": new.attempts})


def apply_result(prompt: PromptState, result: PromptResult, max_attempts: int) -> None:
    """Record a pod's result on its prompt (caller checked that it is the current attempt)."""
    prompt.in_flight = None
    prompt.entry = better_entry(prompt.entry, entry_from_result(result, prompt.attempts))
    unavailable = result.error_type == ErrorType.PROMPT_UNAVAILABLE  # no pod can do better
    if result.outcome is PromptResultKind.GENERATED or unavailable:
        prompt.done = True
    elif prompt.attempts >= max_attempts:
        prompt.done = True


def release(prompt: PromptState, max_attempts: int, started: bool, pod_name: str) -> None:
    """A pod ended with this prompt outstanding: put it back (or drop it when out of tries).

    An assignment the pod never started (it died first) does not count as an attempt.
    """
    prompt.in_flight = None
    if not started:
        prompt.attempts -= 1
        if pod_name in prompt.tried_on:
            prompt.tried_on.remove(pod_name)
    if prompt.attempts >= max_attempts:
        prompt.done = True
