"""Malformed competition files of every kind: one CompetitionFileError naming file and field."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from competition.repo import DirectorySource
from competition.rounds import load_generated, load_round_files
from models.competition import (
    BuildsFile,
    BuildStatus,
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
    parse_builds,
    parse_competition_file,
    parse_prompts,
    parse_require_audit,
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
    (
        PodStatsFile,
        f"rounds/3/{HK}/pod_stats.json",
        '{"pod-1": {"processed": "three"}}',
        "pod-1.processed",
    ),
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
        (
            "require_audit.json",
            f'[{{"hotkey": "{HK}", "critical_prompts": "all"}}]',
            f"{HK}.critical_prompts",
        ),
        ("require_audit.json", "{", None),
        ("require_audit.json", "{}", "<root>"),
        ("builds.json", "[]", "<root>"),
        (f"{HK}/submitted.json", '{"s": {"size": "big"}}', "s.size"),
        (f"{HK}/submitted.json", "", None),
        ("builds.json", f'{{"{HK}": {{"status": "success"}}}}', f"{HK}.repo"),
        (f"{HK}/generated.json", '{"s": {"attempts": "many"}}', "s.attempts"),
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


# --- shared files: one miner's odd entry never fails another miner's audit ----------------------

OTHER = "5OtherMinerXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
# What upstream's tracker writes for each status (docker_image only on success).
UPSTREAM_BUILD_STATUSES = ["pending", "in_progress", "success", "failure", "not_found", "timed_out"]


def build_entry(status: str, **extra: object) -> dict[str, object]:
    return {
        "repo": "owner/repo",
        "commit": "928294eb6787f52ae292e21d3c1b8469d34dddb9",
        "revealed_at_block": 7498332,
        "tag": "928294e-mesh-3",
        "status": status,
        "docker_image": "registry/x:928294e-mesh-3" if status == "success" else None,
        **extra,
    }


def edit_json(root: Path, relpath: str, edit: Callable[[Any], Any]) -> None:
    path = root / "rounds/3" / relpath
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def with_key(key: str, value: object) -> Callable[[Any], Any]:
    def edit(data: dict[str, object]) -> dict[str, object]:
        return {**data, key: value}

    return edit


def appended(*values: object) -> Callable[[Any], Any]:
    def edit(data: list[object]) -> list[object]:
        return [*data, *values]

    return edit


def prepended(*values: object) -> Callable[[Any], Any]:
    def edit(data: list[object]) -> list[object]:
        return [*values, *data]

    return edit


@pytest.mark.parametrize("status", UPSTREAM_BUILD_STATUSES)
def test_every_upstream_build_status_parses(status: str) -> None:
    """Each status upstream's build tracker writes parses, for the audited miner too."""
    text = json.dumps({HK: build_entry(status), OTHER: build_entry(status)})
    builds = parse_builds("rounds/3/builds.json", text, HK).root
    assert builds[HK].status == status
    assert builds[OTHER].status == status
    assert parse_competition_file(BuildsFile, "rounds/3/builds.json", text).root == builds


def test_build_statuses_are_exactly_upstreams() -> None:
    """No status is missing, none is invented; terminal = success, failure, not_found, timed_out."""
    assert sorted(BuildStatus) == sorted(UPSTREAM_BUILD_STATUSES)
    terminal = {s.value for s in BuildStatus if s.terminal}
    assert terminal == {"success", "failure", "not_found", "timed_out"}
    assert {s.value for s in BuildStatus if s.failed} == {"failure", "not_found", "timed_out"}


@pytest.mark.parametrize("hotkey", [HK, OTHER])
def test_in_progress_build_does_not_fail_reading_the_round(round_3: Path, hotkey: str) -> None:
    """An `in_progress` build (the audited miner's or another's) reads like any other."""
    edit_json(round_3, "builds.json", with_key(hotkey, build_entry("in_progress")))
    files = load_round_files(DirectorySource(round_3), 3, HK)
    build = files.build
    assert build is not None
    if hotkey == HK:
        assert build.status is BuildStatus.IN_PROGRESS
        assert not build.status.terminal
    else:
        assert build.status is BuildStatus.SUCCESS


# (file, edit adding another miner's malformed entry)
OTHER_BAD_ENTRIES: list[tuple[str, Callable[[Any], Any]]] = [
    ("builds.json", with_key(OTHER, build_entry("exploded"))),  # unknown status
    ("builds.json", with_key(OTHER, build_entry("success", revealed_at_block="soon"))),
    ("builds.json", with_key(OTHER, {"status": "success"})),  # missing fields
    ("builds.json", with_key(OTHER, "not an object")),
    ("submissions.json", with_key(OTHER, {"repo": "r"})),
    ("submissions.json", with_key(OTHER, {"repo": 5, "commit": [], "round": None})),
    ("submissions.json", with_key(OTHER, None)),
    ("require_audit.json", appended({"hotkey": OTHER, "critical_prompts": "all"})),
    ("require_audit.json", appended({"hotkey": OTHER, "critical_prompts": [1, None]})),
    ("require_audit.json", prepended({"hotkey": 5, "critical_prompts": []})),
    ("require_audit.json", prepended({"critical_prompts": ["x"]})),
    ("require_audit.json", prepended("just a string", 7, None)),
]


@pytest.mark.parametrize(
    ("relpath", "edit"),
    OTHER_BAD_ENTRIES,
    ids=[f"{relpath}-{i}" for i, (relpath, _) in enumerate(OTHER_BAD_ENTRIES)],
)
def test_other_miners_bad_entry_never_fails_this_audit(
    round_3: Path, relpath: str, edit: Callable[[Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Another miner's malformed entry is ignored (and logged): this audit reads as before."""
    before = load_round_files(DirectorySource(round_3), 3, HK)
    edit_json(round_3, relpath, edit)
    with caplog.at_level(logging.WARNING, logger="competition.rounds"):
        after = load_round_files(DirectorySource(round_3), 3, HK)
    assert after == before
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"rounds/3/{relpath}" in message for message in warnings)


def test_other_miners_bad_entries_are_left_out_and_reported() -> None:
    """The parsers keep every valid entry and hand each skipped one to `on_skip`."""
    skipped: list[CompetitionFileError] = []
    builds = parse_builds(
        "rounds/3/builds.json",
        json.dumps({HK: build_entry("success"), OTHER: build_entry("exploded")}),
        HK,
        skipped.append,
    )
    assert list(builds.root) == [HK]
    assert len(skipped) == 1
    assert skipped[0].path == "rounds/3/builds.json"
    assert skipped[0].field == f"{OTHER}.status"


# (file, the audited miner's malformed entry, the field named)
AUDITED_BAD_ENTRIES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("builds.json", with_key(HK, build_entry("exploded")), f"{HK}.status"),
    ("builds.json", with_key(HK, build_entry("success", tag=None)), f"{HK}.tag"),
    ("builds.json", with_key(HK, {"status": "success"}), f"{HK}.repo"),
    ("builds.json", with_key(HK, []), HK),
    ("submissions.json", with_key(HK, {"repo": "r", "commit": "c"}), f"{HK}.round"),
    ("submissions.json", with_key(HK, {"repo": 5, "commit": "c", "round": "x"}), f"{HK}.repo"),
    (
        "require_audit.json",
        prepended({"hotkey": HK, "critical_prompts": "all"}),
        f"{HK}.critical_prompts",
    ),
    (
        "require_audit.json",
        prepended({"hotkey": HK, "critical_prompts": [1]}),
        f"{HK}.critical_prompts.0",
    ),
]


@pytest.mark.parametrize(
    ("relpath", "edit", "field"),
    AUDITED_BAD_ENTRIES,
    ids=[f"{relpath}-{i}" for i, (relpath, _, _) in enumerate(AUDITED_BAD_ENTRIES)],
)
def test_bad_entry_of_audited_hotkey_names_file_and_hotkey(
    round_3: Path, relpath: str, edit: Callable[[Any], Any], field: str
) -> None:
    """The audited miner's own malformed entry fails the read, naming the file and the hotkey."""
    edit_json(round_3, relpath, edit)
    with pytest.raises(CompetitionFileError) as info:
        load_round_files(DirectorySource(round_3), 3, HK)
    path = f"rounds/3/{relpath}"
    assert info.value.path == path
    assert info.value.field == field
    assert str(info.value).startswith(f"{path}: field '{HK}")


def test_require_audit_first_entry_of_a_hotkey_wins(round_3: Path) -> None:
    """As upstream: a repeated hotkey's later entries are ignored, even malformed ones."""
    first = {"hotkey": HK, "critical_prompts": ["b", "a"]}
    later = [{"hotkey": HK, "critical_prompts": ["z"]}, {"hotkey": HK, "critical_prompts": 5}]
    edit_json(round_3, "require_audit.json", lambda _: [first, *later])
    assert load_round_files(DirectorySource(round_3), 3, HK).critical_prompts == ["a", "b"]
    parsed = parse_require_audit("r.json", json.dumps([first, *later]), HK)
    assert parsed.hotkeys() == [HK]


def test_require_audit_malformed_first_entry_of_other_miner_drops_it() -> None:
    """Another miner's malformed first entry drops that miner; its later entries do not win."""
    text = json.dumps(
        [
            {"hotkey": OTHER, "critical_prompts": "all"},
            {"hotkey": OTHER, "critical_prompts": ["x"]},
            {"hotkey": HK, "critical_prompts": ["y"]},
        ]
    )
    parsed = parse_require_audit("rounds/3/require_audit.json", text, HK)
    assert parsed.hotkeys() == [HK]
    assert parsed.critical_prompts(OTHER) == []


@pytest.mark.parametrize(
    ("relpath", "content", "expected"),
    [
        ("submissions.json", "[]", "object"),
        ("builds.json", '"text"', "object"),
        ("require_audit.json", "{}", "list"),
        ("require_audit.json", "null", "list"),
    ],
)
def test_shared_file_must_still_be_json_of_its_type(
    round_3: Path, relpath: str, content: str, expected: str
) -> None:
    """Per-entry reading never excuses a file that is not a JSON object (or list)."""
    (round_3 / "rounds/3" / relpath).write_text(content)
    with pytest.raises(CompetitionFileError) as info:
        load_round_files(DirectorySource(round_3), 3, HK)
    assert info.value.path == f"rounds/3/{relpath}"
    assert info.value.field == "<root>"
    assert f"expected a JSON {expected}" in str(info.value)


def test_round_files_carry_the_miners_generated_json(round_3: Path) -> None:
    """RoundFiles.generated is the miner's generated.json at the head; {} when it is absent."""
    files = load_round_files(DirectorySource(round_3), 3, HK)
    assert files.generated == load_generated(DirectorySource(round_3), 3, HK)
    assert len(files.generated) == 128
    (round_3 / f"rounds/3/{HK}/generated.json").unlink()
    assert load_round_files(DirectorySource(round_3), 3, HK).generated == {}


def test_audited_stems_drop_null_submissions() -> None:
    """Upstream's audited set: submitted stems with both glb and png (5FLiyT19 round 0: 126)."""
    hotkey = "5FLiyT19Vc2QEiuGkygZ7VZw9Y9i8WkT53k3Kda9FrKUUxuq"
    files = load_round_files(DirectorySource(FIXTURES), 0, hotkey)
    assert len(files.submitted) == 128
    audited = files.audited_stems()
    assert len(audited) == 126
    dropped = [stem for stem in files.submitted if stem not in audited]
    assert all(files.submitted[s].glb is None and files.submitted[s].png is None for s in dropped)
    assert audited == [s for s in files.submitted if s not in dropped]  # submitted.json order
