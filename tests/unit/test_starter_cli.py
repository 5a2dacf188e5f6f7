"""`python starter.py verdict`: the CLI reproduces real verdicts and fails clearly on bad input."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import starter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "competition-1"
# Every entry the orchestrator wrote (round 0's 5FP3qpaSyR was written by hand: test_verdict.py).
REAL = {
    (0, "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"),
    (0, "5DScQA9A1u6WjdxbHhgyqDQWe46Jd6RGB97XontiqB2KnBRs"),
    (0, "5FLiyT19Vc2QEiuGkygZ7VZw9Y9i8WkT53k3Kda9FrKUUxuq"),
    (0, "5FWtavKyXwQ6CnqM1LyvbGdhD4t7dE57oPe6attMT423HCgY"),
    (0, "5FcDQ6Eh3dCvSe5WCqNSkaGYkksEUvjm3Be5y1EbJcuKpTt8"),
    (3, "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"),
}
HK3 = "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"
LIYT = "5FLiyT19Vc2QEiuGkygZ7VZw9Y9i8WkT53k3Kda9FrKUUxuq"
THRESHOLD_VARS = (
    "GENERATION_TIMEOUT",
    "ACCEPTABLE_DISTANCE",
    "GENERATION_MEDIAN_LIMIT",
    "GENERATION_MEDIAN_TRIM_COUNT",
    "MAX_MISMATCHED_PROMPTS",
    "MAX_MISMATCHED_CRITICAL_PROMPTS",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPU_PROVIDERS", *THRESHOLD_VARS):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("round_number", "hotkey"), sorted(REAL))
def test_verdict_cli_prints_the_real_entry(round_number: int, hotkey: str) -> None:
    """The printed JSON equals the entry upstream wrote to generation_audits.json."""
    out = io.StringIO()
    argv = ["verdict", "--competition-repo", str(FIXTURES), "--round", str(round_number)]
    assert starter.main([*argv, "--hotkey", hotkey], stdout=out) == 0
    expected = json.loads(
        (FIXTURES / "rounds" / str(round_number) / "generation_audits.json").read_text()
    )[hotkey]
    assert json.loads(out.getvalue()) == expected


def test_verdict_cli_unknown_round_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown round exits 2 with a one-line message naming the missing file."""
    argv = ["verdict", "--competition-repo", str(FIXTURES), "--round", "9", "--hotkey", "x"]
    assert starter.main(argv) == 2
    assert "error: unknown round 9: rounds/9/seed.json does not exist" in capsys.readouterr().err


def test_verdict_cli_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid environment variable stops the CLI with its name."""
    monkeypatch.setenv("MAX_MISMATCHED_PROMPTS", "many")
    argv = ["verdict", "--competition-repo", str(FIXTURES), "--round", "0", "--hotkey", "x"]
    assert starter.main(argv) == 2
    assert "MAX_MISMATCHED_PROMPTS" in capsys.readouterr().err


def test_tolerances_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict uses the configured tolerance: 43 mismatches pass a tolerance of 50."""
    monkeypatch.setenv("MAX_MISMATCHED_PROMPTS", "50")
    out = io.StringIO()
    hotkey = "5DScQA9A1u6WjdxbHhgyqDQWe46Jd6RGB97XontiqB2KnBRs"
    argv = ["verdict", "--competition-repo", str(FIXTURES), "--round", "0", "--hotkey", hotkey]
    assert starter.main(argv, stdout=out) == 0
    assert json.loads(out.getvalue())["outcome"] == "passed"


def verdict_cli(root: Path, round_number: int, hotkey: str) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    argv = ["verdict", "--competition-repo", str(root), "--round", str(round_number)]
    code = starter.main([*argv, "--hotkey", hotkey], stdout=out)
    return code, (json.loads(out.getvalue()) if code == 0 else {})


def real_entry(round_number: int, hotkey: str) -> dict[str, object]:
    path = FIXTURES / "rounds" / str(round_number) / "generation_audits.json"
    entry: dict[str, object] = json.loads(path.read_text())[hotkey]
    return entry


def copy_round(tmp_path: Path, round_number: int) -> Path:
    root = tmp_path / "competition"
    shutil.copytree(FIXTURES / "rounds" / str(round_number), root / "rounds" / str(round_number))
    return root


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def test_verdict_cli_audited_set_drops_null_submissions() -> None:
    """5FLiyT19 round 0: 128 submitted, 2 null -> 126 checked / 9 / 1 / 66.498..."""
    code, printed = verdict_cli(FIXTURES, 0, LIYT)
    assert code == 0
    assert (printed["checked_prompts"], printed["failed_prompts"]) == (126, 9)
    assert printed["failed_critical"] == 1
    assert printed["generation_time"] == 66.49823617329821
    assert printed == real_entry(0, LIYT)


def test_verdict_cli_prints_the_thresholds_it_applied(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One short stderr line names every threshold with the value applied; stdout stays JSON."""
    monkeypatch.setenv("MAX_MISMATCHED_PROMPTS", "50")
    monkeypatch.setenv("GENERATION_MEDIAN_TRIM_COUNT", "4")
    code, printed = verdict_cli(FIXTURES, 3, HK3)
    assert code == 0
    assert printed["outcome"] == "passed"
    lines = [line for line in capsys.readouterr().err.splitlines() if "thresholds" in line]
    assert lines == [
        "thresholds: GENERATION_TIMEOUT=180s ACCEPTABLE_DISTANCE=0.1 "
        "GENERATION_MEDIAN_LIMIT=90s GENERATION_MEDIAN_TRIM_COUNT=4 "
        "MAX_MISMATCHED_PROMPTS=50 MAX_MISMATCHED_CRITICAL_PROMPTS=1"
    ]
    assert len(lines[0]) < 200


def test_verdict_cli_submitted_stem_without_generation_is_a_mismatch(tmp_path: Path) -> None:
    """A submitted stem never generated still counts as checked, and as a mismatch."""
    root = copy_round(tmp_path, 3)
    generated = root / "rounds" / "3" / HK3 / "generated.json"
    dropped: list[str] = []

    def drop_two(entries: dict[str, object]) -> dict[str, object]:
        dropped.extend(list(entries)[:2])
        return {stem: e for stem, e in entries.items() if stem not in dropped}

    edit_json(generated, drop_two)
    code, printed = verdict_cli(root, 3, HK3)
    assert code == 0
    real = real_entry(3, HK3)
    assert printed["checked_prompts"] == real["checked_prompts"] == 128
    assert printed["failed_prompts"] == 6 + 2
    assert printed["outcome"] == "rejected"
    assert printed["reason"] == "Non-critical mismatches (8) exceed tolerance (6)"


def test_verdict_cli_empty_submitted_passes_with_zero_checked(tmp_path: Path) -> None:
    """Upstream quirk: an empty submitted.json passes with 0 checked and no reason."""
    root = copy_round(tmp_path, 3)
    (root / "rounds" / "3" / HK3 / "submitted.json").write_text("{}")
    code, printed = verdict_cli(root, 3, HK3)
    assert code == 0
    assert printed == {
        "hotkey": HK3,
        "outcome": "passed",
        "checked_prompts": 0,
        "failed_prompts": 0,
        "failed_critical": 0,
        "generation_time": None,
        "reason": "",
    }


@pytest.mark.parametrize("whose", ["audited", "other"])
def test_verdict_cli_in_progress_build_reads_the_round(tmp_path: Path, whose: str) -> None:
    """A builds.json holding an `in_progress` entry never fails reading the round."""
    root = copy_round(tmp_path, 3)
    builds = json.loads((root / "rounds/3/builds.json").read_text())
    hotkey = HK3 if whose == "audited" else next(hk for hk in builds if hk != HK3)
    edit_json(
        root / "rounds/3/builds.json",
        lambda b: {**b, hotkey: {**b[hotkey], "status": "in_progress", "docker_image": None}},
    )
    code, printed = verdict_cli(root, 3, HK3)
    assert code == 0
    assert printed == real_entry(3, HK3)


def test_verdict_cli_other_miners_bad_entries_never_fail_this_audit(tmp_path: Path) -> None:
    """Odd entries of other miners in every shared file: the real verdict still reproduces."""
    root = copy_round(tmp_path, 3)
    other = "5SomeoneElseXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    rnd = root / "rounds" / "3"
    edit_json(rnd / "builds.json", lambda b: {**b, other: {"status": "exploded", "tag": 5}})
    edit_json(rnd / "submissions.json", lambda s: {**s, other: {"repo": ["not", "a", "str"]}})
    edit_json(rnd / "require_audit.json", lambda r: [{"hotkey": 7}, "junk", *r])
    code, printed = verdict_cli(root, 3, HK3)
    assert code == 0
    assert printed == real_entry(3, HK3)


def test_verdict_cli_bad_entry_of_audited_hotkey_names_file_and_hotkey(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audited miner's own malformed build entry: exit 2, naming the file and the hotkey."""
    root = copy_round(tmp_path, 3)
    edit_json(root / "rounds/3/builds.json", lambda b: {**b, HK3: {**b[HK3], "status": "exploded"}})
    code, _ = verdict_cli(root, 3, HK3)
    assert code == 2
    assert f"error: rounds/3/builds.json: field '{HK3}.status'" in capsys.readouterr().err
