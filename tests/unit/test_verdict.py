"""The verdict reproduces the real competition's verdicts exactly, and its rules at their edges."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from competition.repo import DirectorySource
from competition.rounds import load_round_files
from models.audit import AuditPolicy
from models.competition import (
    AuditOutcome,
    BuildsFile,
    BuildStatus,
    CompetitionPaths,
    GenerationAudit,
    GenerationAuditsFile,
    GenerationEntry,
    parse_competition_file,
)
from starter import compute_verdict
from workflows.policy.verdict import (
    BUILD_FAILED_REASON,
    DEPLOY_FAILED_REASON,
    Mismatch,
    classify,
    decide,
    rejected_without_generation,
    trimmed_median,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "competition-1"
SOURCE = DirectorySource(FIXTURES)
POLICY = AuditPolicy()

# Audits the orchestrator wrote: reproduced field for field through the CLI's code path.
COMPLETE = [
    (0, "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"),
    (0, "5DScQA9A1u6WjdxbHhgyqDQWe46Jd6RGB97XontiqB2KnBRs"),
    (0, "5FLiyT19Vc2QEiuGkygZ7VZw9Y9i8WkT53k3Kda9FrKUUxuq"),  # 2 null submissions dropped
    (0, "5FWtavKyXwQ6CnqM1LyvbGdhD4t7dE57oPe6attMT423HCgY"),
    (0, "5FcDQ6Eh3dCvSe5WCqNSkaGYkksEUvjm3Be5y1EbJcuKpTt8"),
    (3, "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"),
]
# Written by hand upstream (competition-1 commit 1eaf6ed, REFERENCE.md sec. 16): 102 checked,
# 9 failed. The formula gives 128/36/0/67.987 on its files: the same outcome only.
HAND_WRITTEN = [
    (0, "5FP3qpaSyRrmpEcFstA3NbCDFvRB6GErTrwTX93zNPJvwXfr"),
]
LIYT = "5FLiyT19Vc2QEiuGkygZ7VZw9Y9i8WkT53k3Kda9FrKUUxuq"


def real_audit(round_number: int, hotkey: str) -> GenerationAudit:
    path = CompetitionPaths.generation_audits(round_number)
    audits = parse_competition_file(GenerationAuditsFile, path, SOURCE.read_text(path))
    return audits.root[hotkey]


def our_verdict(round_number: int, hotkey: str) -> tuple[GenerationAudit, int]:
    """Our verdict from the fixture inputs (the CLI's code path), and the audited-set size."""
    files = load_round_files(SOURCE, round_number, hotkey)
    audit = compute_verdict(SOURCE, round_number, hotkey, POLICY)
    return audit, len(files.audited_stems())


def test_fixture_covers_every_real_audit() -> None:
    """The two lists above are exactly the audits in the fixtures."""
    listed = sorted(COMPLETE + HAND_WRITTEN)
    real = sorted(
        (n, hotkey)
        for n in (0, 3)
        for hotkey in json.loads((FIXTURES / f"rounds/{n}/generation_audits.json").read_text())
    )
    assert listed == real


@pytest.mark.parametrize(("round_number", "hotkey"), COMPLETE)
def test_reproduces_complete_real_verdict_exactly(round_number: int, hotkey: str) -> None:
    """Outcome, counts, exact trimmed median and reason text equal upstream's."""
    real = real_audit(round_number, hotkey)
    ours, audited = our_verdict(round_number, hotkey)
    assert real.checked_prompts == audited
    assert ours.checked_prompts == real.checked_prompts
    assert ours.outcome == real.outcome
    assert ours.failed_prompts == real.failed_prompts
    assert ours.failed_critical == real.failed_critical
    assert ours.generation_time == real.generation_time  # exact float equality
    assert ours.reason == real.reason
    assert ours.hotkey == real.hotkey == hotkey
    assert ours == real


def test_audited_set_drops_null_submissions() -> None:
    """5FLiyT19 round 0 submitted 128, 2 with null glb/png: 126 checked / 9 / 1 / 66.498."""
    files = load_round_files(SOURCE, 0, LIYT)
    assert len(files.submitted) == 128
    assert len(files.audited_stems()) == 126
    ours = compute_verdict(SOURCE, 0, LIYT, POLICY)
    assert (ours.checked_prompts, ours.failed_prompts, ours.failed_critical) == (126, 9, 1)
    assert ours.generation_time is not None
    assert f"{ours.generation_time:.3f}" == "66.498"
    assert ours.outcome is AuditOutcome.REJECTED
    assert ours.reason == "Non-critical mismatches (9) exceed tolerance (6)"
    # Counting the two null submissions too would add two missing generations.
    every = decide(LIYT, list(files.submitted), files.generated, files.critical_prompts, POLICY)
    assert every.checked_prompts == 128
    assert every.failed_prompts + every.failed_critical == 9 + 1 + 2


@pytest.mark.parametrize(("round_number", "hotkey"), HAND_WRITTEN)
def test_hand_written_entry_outcome_matches(round_number: int, hotkey: str) -> None:
    """The hand-written entry does not reproduce; the formula's outcome still matches it."""
    real = real_audit(round_number, hotkey)
    ours, audited = our_verdict(round_number, hotkey)
    assert real.checked_prompts < audited
    assert ours.outcome == real.outcome == AuditOutcome.REJECTED
    assert ours.failed_prompts >= real.failed_prompts
    assert ours.reason.startswith("Non-critical mismatches (")
    assert (ours.checked_prompts, ours.failed_prompts, ours.failed_critical) == (128, 36, 0)
    assert ours.generation_time is not None
    assert f"{ours.generation_time:.3f}" == "67.987"


def test_round_0_summary_matches_reference() -> None:
    """REFERENCE.md: round 0 has one pass (57.68 s, 0 mismatches) and five rejects."""
    verdicts = [our_verdict(n, hk)[0] for n, hk in COMPLETE + HAND_WRITTEN if n == 0]
    passed = [v for v in verdicts if v.outcome is AuditOutcome.PASSED]
    assert len(passed) == 1
    assert f"{passed[0].generation_time:.2f}" == "57.68"
    assert passed[0].failed_prompts == 0
    assert sum(v.outcome is AuditOutcome.REJECTED for v in verdicts) == 5


# --- helpers for constructed cases --------------------------------------------------------------


def ok(time: float = 60.0, distance: float | None = 0.01) -> GenerationEntry:
    return GenerationEntry(glb="g.glb", png="g.png", generation_time=time, distance=distance)


def bad() -> GenerationEntry:
    """A generation that matches in time but is too different from the submission."""
    return ok(distance=0.5)


def stems(n: int, prefix: str = "s") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def run(
    generated: dict[str, GenerationEntry],
    critical: list[str] | None = None,
    submitted: list[str] | None = None,
    policy: AuditPolicy = POLICY,
) -> GenerationAudit:
    return decide("hk", submitted or list(generated), generated, critical or [], policy)


# --- failures without generation ----------------------------------------------------------------


def test_build_failure_verdict() -> None:
    """A failed build: rejected, nothing checked, no time, the exact upstream reason."""
    builds = parse_competition_file(
        BuildsFile, "rounds/3/builds.json", SOURCE.read_text("rounds/3/builds.json")
    )
    failed = builds.root["5Ef8XtevYiZXPdNRoQyVCgnqqs9WkhA3BNFfBoL9yb5a3ixA"]
    assert failed.status is BuildStatus.FAILURE
    assert failed.docker_image is None
    v = rejected_without_generation("5Ef8", BUILD_FAILED_REASON)
    assert v.model_dump() == {
        "hotkey": "5Ef8",
        "outcome": AuditOutcome.REJECTED,
        "checked_prompts": 0,
        "failed_prompts": 0,
        "failed_critical": 0,
        "generation_time": None,
        "reason": "Failed to build a docker image",
    }


def test_deploy_failure_reason() -> None:
    """No healthy pod could be deployed: the exact upstream reason."""
    v = rejected_without_generation("hk", DEPLOY_FAILED_REASON)
    assert v.reason == "Failed to deploy a docker image"
    assert v.outcome is AuditOutcome.REJECTED
    assert v.generation_time is None


# --- mismatch rules -----------------------------------------------------------------------------


def test_unknown_distance_is_a_mismatch() -> None:
    """Upstream accepted an unmeasured distance as 0.0; we count it as a mismatch."""
    assert classify(ok(distance=None), POLICY) is Mismatch.TOO_DIFFERENT
    generated = {s: ok() for s in stems(20)}
    for s in stems(7):
        generated[s] = ok(distance=None)
    v = run(generated)
    assert v.failed_prompts == 7
    assert v.outcome is AuditOutcome.REJECTED
    assert v.reason == "Non-critical mismatches (7) exceed tolerance (6)"


def test_each_mismatch_kind() -> None:
    """Missing, failed, overtime and too-different are mismatches; edges are inclusive."""
    assert classify(None, POLICY) is Mismatch.MISSING
    assert classify(GenerationEntry(glb=None, png="p", distance=0.0), POLICY) is Mismatch.FAILED
    assert classify(GenerationEntry(glb="g", png=None, distance=0.0), POLICY) is Mismatch.FAILED
    assert classify(ok(time=180.01), POLICY) is Mismatch.OVERTIME
    assert classify(ok(time=180.0), POLICY) is None
    assert classify(ok(distance=0.1000001), POLICY) is Mismatch.TOO_DIFFERENT
    assert classify(ok(distance=0.1), POLICY) is None


def test_missing_generation_counts_and_failed_time_is_not_timed() -> None:
    """A submitted stem with no generation is a mismatch; failed generations are not timed."""
    generated = {s: ok(time=50.0) for s in stems(3)}
    generated["failed"] = GenerationEntry(glb=None, png=None, generation_time=500.0)
    v = run(generated, submitted=[*stems(3), "failed", "never-generated"])
    assert v.failed_prompts == 2
    assert v.checked_prompts == 5
    assert v.generation_time == 50.0


def test_critical_counted_separately() -> None:
    """Critical mismatches are not non-critical ones; 2 critical exceed tolerance 1."""
    generated = {s: ok() for s in stems(30)}
    generated["s000"] = bad()
    generated["s001"] = bad()
    generated["s002"] = bad()
    v = run(generated, critical=["s000", "s001", "s010"])
    assert (v.failed_prompts, v.failed_critical) == (1, 2)
    assert v.outcome is AuditOutcome.REJECTED
    assert v.reason == "Critical mismatches (2) exceed tolerance (1)"


def test_reason_for_slow_generation() -> None:
    """The exact upstream text for a trimmed median over the limit."""
    v = run({s: ok(time=92.34) for s in stems(20)})
    assert v.outcome is AuditOutcome.REJECTED
    assert v.reason == "Trimmed median generation time (92.34s) exceeds limit (90.00s)"
    assert v.generation_time == 92.34


def test_all_three_reasons_joined_like_round_4() -> None:
    """REFERENCE.md round 4: 92.34 s, 13 non-critical and 2 critical mismatches."""
    generated = {s: ok(time=92.34) for s in stems(128)}
    for s in stems(13):
        generated[s] = bad()
    critical = stems(2, prefix="c")
    for s in critical:
        generated[s] = bad()
    v = run(generated, critical=critical)
    assert v.reason == (
        "Trimmed median generation time (92.34s) exceeds limit (90.00s); "
        "Non-critical mismatches (13) exceed tolerance (6); "
        "Critical mismatches (2) exceed tolerance (1)"
    )
    assert (v.failed_prompts, v.failed_critical, v.checked_prompts) == (13, 2, 130)


# --- tolerance edges ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mismatches", "outcome"), [(6, "passed"), (7, "rejected")])
def test_non_critical_tolerance_edge(mismatches: int, outcome: str) -> None:
    """Exactly MAX_MISMATCHED_PROMPTS (6) passes; one more rejects."""
    generated = {s: ok() for s in stems(40)}
    for s in stems(mismatches):
        generated[s] = bad()
    v = run(generated)
    assert v.outcome == outcome
    assert v.failed_prompts == mismatches


@pytest.mark.parametrize(("mismatches", "outcome"), [(1, "passed"), (2, "rejected")])
def test_critical_tolerance_edge(mismatches: int, outcome: str) -> None:
    """Exactly MAX_MISMATCHED_CRITICAL_PROMPTS (1) passes; one more rejects."""
    generated = {s: ok() for s in stems(40)}
    critical = stems(5)
    for s in critical[:mismatches]:
        generated[s] = bad()
    v = run(generated, critical=critical)
    assert v.outcome == outcome
    assert (v.failed_prompts, v.failed_critical) == (0, mismatches)


@pytest.mark.parametrize(("median", "outcome"), [(90.0, "passed"), (90.001, "rejected")])
def test_median_limit_edge(median: float, outcome: str) -> None:
    """A trimmed median exactly at the limit passes; just above rejects."""
    v = run({s: ok(time=median) for s in stems(20)})
    assert v.outcome == outcome
    assert v.generation_time == median


def test_outliers_are_trimmed_before_the_median() -> None:
    """Six very slow and six very fast generations at each end do not move the median."""
    times = [1.0] * 6 + [80.0] * 9 + [179.0] * 6
    v = run({f"s{i:03d}": ok(time=t) for i, t in enumerate(times)})
    assert v.generation_time == 80.0
    assert v.outcome is AuditOutcome.PASSED


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=0, max_value=4))
def test_outcome_follows_tolerances(non_critical: int, critical: int) -> None:
    """Pass iff non-critical <= 6 and critical <= 1 (times well under the limit)."""
    generated = {s: ok() for s in stems(40)}
    for s in stems(non_critical):
        generated[s] = bad()
    critical_stems = stems(4, prefix="c")
    for s in critical_stems:
        generated[s] = ok()
    for s in critical_stems[:critical]:
        generated[s] = bad()
    v = run(generated, critical=critical_stems)
    assert (v.failed_prompts, v.failed_critical) == (non_critical, critical)
    expected = non_critical <= 6 and critical <= 1
    assert (v.outcome is AuditOutcome.PASSED) == expected
    assert (v.reason == "") == expected


# --- trimmed median -----------------------------------------------------------------------------

TIMES = st.lists(st.floats(min_value=0.0, max_value=1e4, allow_nan=False), max_size=60)
TRIM = st.integers(min_value=0, max_value=10)


def test_trimmed_median_examples() -> None:
    """Small hand-checked cases, including no trimming at 2 * trim and an empty list."""
    assert trimmed_median([], 6) is None
    assert trimmed_median([5.0, 1.0, 3.0], 6) == 3.0
    assert trimmed_median([1.0, 2.0, 3.0, 100.0], 1) == 2.5
    assert trimmed_median([1.0, 2.0], 1) == 1.5  # len == 2 * trim: nothing trimmed
    assert trimmed_median(list(map(float, range(13))), 6) == 6.0


@given(TIMES, TRIM)
def test_trimmed_median_is_median_of_trimmed_sorted_list(times: list[float], trim: int) -> None:
    """With more than 2 * trim values: median of the sorted list minus trim at each end."""
    result = trimmed_median(times, trim)
    ordered = sorted(times)
    if len(ordered) > 2 * trim:
        expected: float | None = statistics.median(ordered[trim : len(ordered) - trim])
    elif ordered:
        expected = statistics.median(ordered)
    else:
        expected = None
    assert result == expected


@given(st.data(), TIMES, TRIM)
def test_trimmed_median_invariant_under_permutation(
    data: st.DataObject, times: list[float], trim: int
) -> None:
    """Order of results does not matter."""
    shuffled = data.draw(st.permutations(times))
    assert trimmed_median(shuffled, trim) == trimmed_median(times, trim)


@given(TIMES.filter(bool), TRIM)
def test_trimmed_median_between_min_and_max(times: list[float], trim: int) -> None:
    """The result lies within the values."""
    result = trimmed_median(times, trim)
    assert result is not None
    assert min(times) <= result <= max(times)


# --- upstream's formula at its edges ------------------------------------------------------------


def test_empty_submitted_passes_with_zero_checked() -> None:
    """Upstream quirk 5: nothing submitted passes, 0 checked, null time, no reason."""
    v = decide("hk", [], {}, ["c"], POLICY)
    assert v.model_dump(mode="json") == {
        "hotkey": "hk",
        "outcome": "passed",
        "checked_prompts": 0,
        "failed_prompts": 0,
        "failed_critical": 0,
        "generation_time": None,
        "reason": "",
    }


def test_no_successful_generation_gives_null_time_and_only_upstream_reasons() -> None:
    """Every result failed: null median, and the reasons are the mismatch counts alone."""
    failed = GenerationEntry(glb=None, png=None, generation_time=50.0)
    v = run({s: failed for s in stems(7)})
    assert v.generation_time is None
    assert v.reason == "Non-critical mismatches (7) exceed tolerance (6)"
    few = run({s: failed for s in stems(3)})
    assert few.generation_time is None
    assert (few.outcome, few.reason, few.failed_prompts) == (AuditOutcome.PASSED, "", 3)


def test_overtimes_and_distance_mismatches_are_timed() -> None:
    """Times are those of non-failed results: overtime and too-different ones included."""
    generated = {
        "fast": ok(time=10.0),
        "slow": ok(time=500.0),  # overtime: a mismatch, still timed
        "far": ok(time=30.0, distance=0.9),  # too different: a mismatch, still timed
        "failed": GenerationEntry(glb="g", png=None, generation_time=1000.0),  # not timed
    }
    v = run(generated, submitted=[*generated, "never"])
    assert v.generation_time == 30.0  # median of 10, 30, 500
    assert (v.checked_prompts, v.failed_prompts) == (5, 4)


@pytest.mark.parametrize(("count", "median"), [(12, 6.5), (13, 7.0), (14, 7.5)])
def test_trim_applies_only_above_twice_trim_count(count: int, median: float) -> None:
    """12 times (= 2 * 6) are not trimmed; 13 and more lose 6 at each end."""
    times = [float(i) for i in range(1, count + 1)]
    times[-1] = 1000.0  # an outlier moves no median here, trimmed or not
    v = run({f"s{i:03d}": ok(time=t) for i, t in enumerate(times)})
    assert v.generation_time == median


def test_null_submission_is_not_checked_even_if_generated(tmp_path: Path) -> None:
    """A submitted entry with a null glb or png is outside the audited set, whatever exists."""
    root = tmp_path / "competition"
    shutil.copytree(FIXTURES / "rounds" / "0", root / "rounds" / "0")
    miner = root / "rounds" / "0" / LIYT
    submitted = json.loads((miner / "submitted.json").read_text())
    generated = json.loads((miner / "generated.json").read_text())
    null_stems = [s for s, e in submitted.items() if e["glb"] is None or e["png"] is None]
    assert len(null_stems) == 2
    for stem in null_stems:  # even a failed result for them changes nothing
        generated[stem] = {"glb": None, "png": None, "generation_time": 999.0, "attempts": 3}
    (miner / "generated.json").write_text(json.dumps(generated))
    source = DirectorySource(root)
    assert compute_verdict(source, 0, LIYT, POLICY) == real_audit(0, LIYT)
