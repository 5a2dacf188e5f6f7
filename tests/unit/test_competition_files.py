"""Malformed competition files of every kind: one CompetitionFileError naming file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import BaseModel

from activities.competition_repo import DirectorySource, load_generated, load_round_files
from models.competition import (
    BuildsFile,
    CompetitionPaths,
    ConfigFile,
    GenerationAuditsFile,
    GenerationsFile,
    LeaderFile,
    PodStatsFile,
    RequireAuditFile,
    SeedFile,
    StateFile,
    SubmissionsFile,
    parse_competition_file,
    parse_prompts,
)
from models.errors import CompetitionFileError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "competition-1"
HK = "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"

# (model, path, a well-formed JSON document of the wrong shape, the field it names)
JSON_FILES: list[tuple[type[BaseModel], str, str, str]] = [
    (StateFile, "state.json", '{"current_round": "seven", "stage": "open"}', "current_round"),
    (
        ConfigFile,
        "config.json",
        '{"name": "mesh", "prompts_per_round": "many"}',
        "prompts_per_round",
    ),
    (
        LeaderFile,
        "leader.json",
        '[{"hotkey": "h", "repo": "r", "commit": "c", "docker": "d"}]',
        "0.effective_block",
    ),
    (SeedFile, "rounds/3/seed.json", '{"seed": "not a number"}', "seed"),
    (
        SubmissionsFile,
        "rounds/3/submissions.json",
        '{"hk": {"repo": "r", "commit": "c"}}',
        "hk.round",
    ),
    (RequireAuditFile, "rounds/3/require_audit.json", '[{"critical_prompts": []}]', "0.hotkey"),
    (
        GenerationsFile,
        f"rounds/3/{HK}/submitted.json",
        '{"stem1": {"glb": "g", "generation_time": "fast"}}',
        "stem1.generation_time",
    ),
    (
        GenerationsFile,
        f"rounds/3/{HK}/generated.json",
        '{"stem1": {"distance": [0.1]}}',
        "stem1.distance",
    ),
    (
        BuildsFile,
        "rounds/3/builds.json",
        '{"hk": {"repo": "r", "commit": "c", "tag": "t", "status": "exploded"}}',
        "hk.status",
    ),
    (
        GenerationAuditsFile,
        "rounds/3/generation_audits.json",
        '{"hk": {"hotkey": "hk", "outcome": "maybe", "checked_prompts": 1, "failed_prompts": 0,'
        ' "failed_critical": 0, "generation_time": null, "reason": ""}}',
        "hk.outcome",
    ),
    (PodStatsFile, f"rounds/3/{HK}/pod_stats.json", '{"pod-1": {"processed": 3}}', "pod-1.pod_id"),
]
IDS = [path.rsplit("/", 1)[-1] for _, path, _, _ in JSON_FILES]


@pytest.mark.parametrize(("model", "path", "wrong_shape", "field"), JSON_FILES, ids=IDS)
def test_missing_file_names_the_file(
    model: type[BaseModel], path: str, wrong_shape: str, field: str
) -> None:
    """A required file that does not exist: the error names it."""
    with pytest.raises(CompetitionFileError) as info:
        parse_competition_file(model, path, None)
    assert str(info.value) == f"{path}: file is missing"
    assert info.value.path == path


@pytest.mark.parametrize(("model", "path", "wrong_shape", "field"), JSON_FILES, ids=IDS)
def test_not_json_names_the_file(
    model: type[BaseModel], path: str, wrong_shape: str, field: str
) -> None:
    """A file that is not JSON: the error names it and where parsing failed."""
    with pytest.raises(CompetitionFileError) as info:
        parse_competition_file(model, path, '{"truncated": ')
    assert str(info.value).startswith(f"{path}: not valid JSON")
    assert "line 1" in str(info.value)


@pytest.mark.parametrize(("model", "path", "wrong_shape", "field"), JSON_FILES, ids=IDS)
def test_wrong_shape_names_file_and_field(
    model: type[BaseModel], path: str, wrong_shape: str, field: str
) -> None:
    """Valid JSON of the wrong shape: the error names the file and the offending field."""
    with pytest.raises(CompetitionFileError) as info:
        parse_competition_file(model, path, wrong_shape)
    assert str(info.value).startswith(f"{path}: field '{field}': ")
    assert info.value.field == field


@pytest.mark.parametrize(("model", "path", "wrong_shape", "field"), JSON_FILES, ids=IDS)
def test_wrong_top_level_type_names_the_file(
    model: type[BaseModel], path: str, wrong_shape: str, field: str
) -> None:
    """A string where an object or list belongs is rejected at the root."""
    with pytest.raises(CompetitionFileError) as info:
        parse_competition_file(model, path, '"just a string"')
    assert str(info.value).startswith(f"{path}: field '<root>': ")


@pytest.mark.parametrize(
    ("model", "path"),
    [
        (StateFile, "state.json"),
        (ConfigFile, "config.json"),
        (LeaderFile, "leader.json"),
        (SeedFile, "rounds/0/seed.json"),
        (SubmissionsFile, "rounds/0/submissions.json"),
        (RequireAuditFile, "rounds/0/require_audit.json"),
        (GenerationsFile, f"rounds/3/{HK}/submitted.json"),
        (GenerationsFile, f"rounds/3/{HK}/generated.json"),
        (BuildsFile, "rounds/3/builds.json"),
        (GenerationAuditsFile, "rounds/0/generation_audits.json"),
    ],
)
def test_real_fixture_files_parse(model: type[BaseModel], path: str) -> None:
    """The real upstream files parse, and a model round trip keeps every field."""
    text = (FIXTURES / path).read_text()
    parsed = parse_competition_file(model, path, text)
    assert parsed.model_dump(mode="json") == json.loads(text)


# --- prompts.txt --------------------------------------------------------------------------------

PROMPTS = "rounds/3/prompts.txt"


def test_prompts_missing_names_the_file() -> None:
    """prompts.txt absent."""
    with pytest.raises(CompetitionFileError, match=r"^rounds/3/prompts.txt: file is missing$"):
        parse_prompts(PROMPTS, None)


def test_prompts_not_a_url_names_the_line() -> None:
    """A line that is not a URL (e.g. JSON pasted in) names file and line."""
    text = 'https://x.org/a.png\n{"not": "a url"}\n'
    with pytest.raises(CompetitionFileError) as info:
        parse_prompts(PROMPTS, text)
    assert str(info.value).startswith(f"{PROMPTS}: field 'line 2': not an http(s) URL")


def test_prompts_duplicate_stem_names_both_lines() -> None:
    """Two URLs with one stem would make results ambiguous."""
    text = "https://x.org/a.png\nhttps://y.org/b.png\nhttps://z.org/a.png\n"
    with pytest.raises(
        CompetitionFileError, match=r"field 'line 3': duplicate stem 'a' \(also line 1\)"
    ):
        parse_prompts(PROMPTS, text)


@pytest.mark.parametrize("url", ["https://x.org/..", "https://x.org/.png"])
def test_prompts_unsafe_stem_rejected(url: str) -> None:
    """A URL whose stem is not a plain name never becomes a path segment."""
    with pytest.raises(CompetitionFileError, match=r"field 'line 1': invalid stem"):
        parse_prompts(PROMPTS, url + "\n")


def test_prompts_fixture_stems() -> None:
    """The real prompts.txt: 128 stems, file names without extension; blank lines ignored."""
    prompts = parse_prompts(PROMPTS, (FIXTURES / PROMPTS).read_text() + "\n\n").root
    assert len(prompts) == 128
    assert prompts[0].stem == "4ceafbf1-7435-488d-9812-9b019f69fbcf"
    assert prompts[0].url == "https://sn12domain.org/4ceafbf1-7435-488d-9812-9b019f69fbcf.png"


# --- through the round loader -------------------------------------------------------------------


@pytest.fixture
def round_3(tmp_path: Path) -> Path:
    """A writable copy of round 3 of the fixtures."""
    root = tmp_path / "competition"
    shutil.copytree(FIXTURES / "rounds" / "3", root / "rounds" / "3")
    return root


@pytest.mark.parametrize(
    ("relpath", "content", "field"),
    [
        ("seed.json", '{"seed": 1.5}', "seed"),
        ("seed.json", "seed=1", None),
        ("prompts.txt", "ftp://x.org/a.png", "line 1"),
        ("submissions.json", f'{{"{HK}": {{"repo": "r"}}}}', f"{HK}.commit"),
        ("submissions.json", "[]", "<root>"),
        ("require_audit.json", '[{"hotkey": 5}]', "0.hotkey"),
        ("require_audit.json", "{", None),
        (f"{HK}/submitted.json", '{"s": {"size": "big"}}', "s.size"),
        (f"{HK}/submitted.json", "", None),
        ("builds.json", f'{{"{HK}": {{"status": "success"}}}}', f"{HK}.repo"),
    ],
)
def test_round_loader_reports_bad_file(
    round_3: Path, relpath: str, content: str, field: str | None
) -> None:
    """load_round_files surfaces each malformed input file as one clear error."""
    path = f"rounds/3/{relpath}"
    (round_3 / path).write_text(content)
    with pytest.raises(CompetitionFileError) as info:
        load_round_files(DirectorySource(round_3), 3, HK)
    assert info.value.path == path
    assert str(info.value).startswith(path)
    assert info.value.field == field


@pytest.mark.parametrize("relpath", ["prompts.txt", "submissions.json"])
def test_round_loader_requires_file(round_3: Path, relpath: str) -> None:
    """prompts.txt and submissions.json must exist once the round exists."""
    (round_3 / "rounds/3" / relpath).unlink()
    with pytest.raises(CompetitionFileError, match=f"^rounds/3/{relpath}: file is missing$"):
        load_round_files(DirectorySource(round_3), 3, HK)


def test_generated_loader_reports_bad_file(round_3: Path) -> None:
    """A malformed generated.json names file and field."""
    (round_3 / f"rounds/3/{HK}/generated.json").write_text('{"s": {"attempts": "many"}}')
    with pytest.raises(CompetitionFileError) as info:
        load_generated(DirectorySource(round_3), 3, HK)
    assert info.value.path == f"rounds/3/{HK}/generated.json"
    assert info.value.field == "s.attempts"


@pytest.mark.parametrize("stem", ["../escape", "a/b", "..", "."])
@pytest.mark.parametrize("relpath", ["submitted.json", "generated.json"])
def test_unsafe_stem_in_generations_rejected(round_3: Path, relpath: str, stem: str) -> None:
    """A stem key with '/' or '..' never reaches a path: the error names the file and the stem."""
    path = f"rounds/3/{HK}/{relpath}"
    (round_3 / path).write_text(json.dumps({stem: {"glb": "g", "png": "p"}}))
    with pytest.raises(CompetitionFileError) as info:
        if relpath == "submitted.json":
            load_round_files(DirectorySource(round_3), 3, HK)
        else:
            load_generated(DirectorySource(round_3), 3, HK)
    assert info.value.path == path
    assert info.value.field == stem


@pytest.mark.parametrize("hotkey", ["a/b", "..", ".", "", "../../etc", "x\\y"])
def test_unsafe_hotkey_rejected(hotkey: str) -> None:
    """A hotkey with '/' or '..' is rejected before any file is read."""
    with pytest.raises(CompetitionFileError, match="invalid hotkey"):
        CompetitionPaths.submitted(3, hotkey)
    with pytest.raises(CompetitionFileError, match="invalid hotkey"):
        load_round_files(DirectorySource(FIXTURES), 3, hotkey)
    with pytest.raises(CompetitionFileError, match="invalid hotkey"):
        load_generated(DirectorySource(FIXTURES), 3, hotkey)


def test_negative_round_rejected() -> None:
    """Round numbers are >= 0."""
    with pytest.raises(CompetitionFileError, match="invalid round -1"):
        load_round_files(DirectorySource(FIXTURES), -1, HK)


def test_not_utf8_names_the_file(round_3: Path) -> None:
    """Binary garbage in a JSON file names the file."""
    (round_3 / "rounds/3/seed.json").write_bytes(b'{"seed": "\xff"}')
    with pytest.raises(CompetitionFileError, match=r"^rounds/3/seed.json: not UTF-8 text"):
        load_round_files(DirectorySource(round_3), 3, HK)
