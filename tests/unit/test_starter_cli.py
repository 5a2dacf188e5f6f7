"""`python starter.py verdict`: the CLI reproduces real verdicts and fails clearly on bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

import starter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "competition-1"
REAL = {
    (0, "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"),
    (0, "5DScQA9A1u6WjdxbHhgyqDQWe46Jd6RGB97XontiqB2KnBRs"),
    (3, "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GPU_PROVIDERS", "MAX_MISMATCHED_PROMPTS", "ACCEPTABLE_DISTANCE"):
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
