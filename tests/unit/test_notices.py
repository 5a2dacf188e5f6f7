"""The webhook notices' texts are upstream's (c263c11 discord.py, miner_runner `_send_progress`)."""

from __future__ import annotations

from models.audit import AuditPolicy
from models.competition import GenerationEntry
from workflows.policy.notices import median, progress_body


def test_progress_body_is_upstreams_code_block() -> None:
    """Counts over prompts with a result: a failed one out of attempts is final, an overtime is
    slower than GENERATION_TIMEOUT, a mismatch is distance >= ACCEPTABLE_DISTANCE (>=, as
    upstream's notice, not the verdict's >), the median is over times > 0, pct rounds down."""
    policy = AuditPolicy(max_prompt_attempts=3, generation_timeout_seconds=180.0)
    best = [
        GenerationEntry(glb="g", png="p", generation_time=80.0, attempts=1, distance=0.1),
        GenerationEntry(glb="g", png="p", generation_time=200.0, attempts=3, distance=0.0),
        GenerationEntry(glb="g", png="p", generation_time=190.0, attempts=1, distance=0.0),
        GenerationEntry(generation_time=0.0, attempts=3),
        GenerationEntry(generation_time=0.0, attempts=1),
    ]
    assert progress_body(best, 6, policy).splitlines() == [
        "Generated    5 / 6 (83%)",
        "Fails          2  final: 1",
        "Overtimes      2  final: 1",
        "Mismatches     1",
        "Median time  190.0s",
    ]
    assert progress_body([], 0, policy).splitlines()[-1] == "Median time  N/A"


def test_median_ignores_zero_times() -> None:
    assert median([0.0, 1.0, 3.0]) == 2.0
    assert median([0.0]) is None
