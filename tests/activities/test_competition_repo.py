"""The competition repo (`competition.repo`, `competition.rounds`) against real local bare repos,
and its activities."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.competition_repo import CompetitionRepoActivities
from competition.repo import (
    COMMITTER_EMAIL,
    COMMITTER_NAME,
    CompetitionRepo,
    CompetitionRepoError,
    DirectorySource,
    GitPushConflictError,
    InvalidRepoPathError,
    InvalidWriteError,
    PushRetry,
)
from competition.rounds import load_generated, load_round_files
from models.audit import (
    JsonFileWrite,
    ReadRoundFilesInput,
    WriteFilesInput,
)
from models.competition import (
    AuditOutcome,
    BuildStatus,
    GenerationAudit,
    GenerationAuditsFile,
    GenerationEntry,
    PodStats,
    parse_competition_file,
)
from models.errors import CompetitionFileError, ErrorType, UnknownHotkeyError, UnknownRoundError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "competition-1"
HOTKEY_3 = "5F4HaNQJAXDhirU51GTz4vBvcEuUo3YSfhKuBT7qix35DkHP"
AUDITS_3 = "rounds/3/generation_audits.json"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "fixture",
    "GIT_AUTHOR_EMAIL": "fixture@localhost",
    "GIT_COMMITTER_NAME": "fixture",
    "GIT_COMMITTER_EMAIL": "fixture@localhost",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` (identity from the environment, no global config) and return stdout."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repo holding the competition-1 fixtures in one commit on `main` (built once)."""
    base = tmp_path_factory.mktemp("template")
    bare = base / "remote.git"
    git(base, "init", "--bare", "-b", "main", str(bare))
    seed = base / "seed"
    git(base, "clone", "-q", str(bare), str(seed))
    shutil.copytree(FIXTURES, seed, dirs_exist_ok=True)
    git(seed, "checkout", "-q", "-b", "main")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "seed fixtures")
    git(seed, "push", "-q", "origin", "main")
    return bare


@pytest.fixture
def remote(seeded_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the seeded bare repo for one test."""
    bare = tmp_path / "remote.git"
    shutil.copytree(seeded_template, bare)
    return bare


def push_change(remote: Path, work: Path, path: str, text: str, message: str) -> str:
    """Commit `text` at `path` from a separate plain clone and push it; returns the commit."""
    if not work.exists():
        git(remote.parent, "clone", "-q", "-b", "main", str(remote), str(work))
    git(work, "pull", "-q", "--ff-only")
    target = work / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(work, "add", path)
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD")


def commit_count(remote: Path) -> int:
    return int(git(remote, "rev-list", "--count", "main"))


def show(remote: Path, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"main:{path}"], cwd=remote, check=True, capture_output=True, text=True
    ).stdout


def audit(hotkey: str, outcome: AuditOutcome = AuditOutcome.PASSED) -> GenerationAudit:
    return GenerationAudit(
        hotkey=hotkey,
        outcome=outcome,
        checked_prompts=128,
        failed_prompts=0,
        failed_critical=0,
        generation_time=57.5,
        reason="",
    )


class SleepRecorder:
    """Stands in for time.sleep: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_repo(
    remote: Path,
    tmp_path: Path,
    name: str = "work",
    *,
    retry: PushRetry | None = None,
    sleep: Callable[[float], None] | None = None,
    before_push: Callable[[], None] | None = None,
) -> CompetitionRepo:
    """A repo on `remote` whose backoff never really sleeps."""
    return CompetitionRepo(
        str(remote),
        "main",
        tmp_path / name,
        retry=retry,
        sleep=sleep or SleepRecorder(),
        before_push=before_push,
    )


# --- reading ------------------------------------------------------------------------------------


def test_read_at_head_returns_file_text_and_none_when_absent(remote: Path, tmp_path: Path) -> None:
    """A file at the head reads back exactly; an absent file reads as None."""
    repo = make_repo(remote, tmp_path)
    expected = (FIXTURES / "rounds/3/seed.json").read_text()
    assert repo.read_text("rounds/3/seed.json") == expected
    assert repo.read_text("rounds/99/seed.json") is None
    assert repo.read_text("rounds/3/nothing/here.json") is None


def test_read_fetches_changes_pushed_by_others(remote: Path, tmp_path: Path) -> None:
    """Every read fetches first, so it sees what another writer pushed after the clone."""
    repo = make_repo(remote, tmp_path)
    assert repo.read_text("state.json") == (FIXTURES / "state.json").read_text()
    push_change(remote, tmp_path / "other", "state.json", '{"current_round": 8}', "next round")
    assert repo.read_text("state.json") == '{"current_round": 8}'


def test_read_ignores_a_dirty_or_stale_local_state(remote: Path, tmp_path: Path) -> None:
    """A snapshot pins one commit; a later head does not leak into it."""
    repo = make_repo(remote, tmp_path)
    snapshot = repo.at_head()
    push_change(remote, tmp_path / "other", "state.json", "{}", "change")
    assert snapshot.read_text("state.json") == (FIXTURES / "state.json").read_text()
    assert repo.at_head().commit != snapshot.commit


def test_directory_is_not_a_file(remote: Path, tmp_path: Path) -> None:
    """Reading a folder is a clear CompetitionFileError, not a crash."""
    repo = make_repo(remote, tmp_path)
    with pytest.raises(CompetitionFileError, match="rounds/3: not a file"):
        repo.read_text("rounds/3")


def test_clone_is_reused_and_a_broken_one_replaced(remote: Path, tmp_path: Path) -> None:
    """A second instance on the same work dir fetches into the same clone; junk is replaced."""
    first = make_repo(remote, tmp_path)
    first.read_text("state.json")
    second = make_repo(remote, tmp_path)
    assert second.path == first.path
    assert second.read_text("state.json") is not None
    other_branch = CompetitionRepo(str(remote), "other", tmp_path / "work")
    assert other_branch.path != first.path

    shutil.rmtree(first.path)
    first.path.mkdir()
    (first.path / "junk").write_text("not a repo")
    third = make_repo(remote, tmp_path)
    assert third.read_text("rounds/3/seed.json") is not None

    shutil.rmtree(first.path)
    git(tmp_path, "init", "-q", "--bare", str(first.path))  # a repo, but without our origin
    fourth = make_repo(remote, tmp_path)
    assert fourth.read_text("rounds/3/seed.json") is not None


def test_two_workers_cloning_at_once_both_read(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers sharing WORK_DIR start together (both check the repo at start-up): the one
    that loses the race to create the clone uses the winner's instead of crashing."""
    loser = make_repo(remote, tmp_path)
    original_rename = Path.rename
    raced: list[bool] = []

    def other_worker_wins(self: Path, target: str | Path) -> Path:
        if Path(target) == loser.path and not raced:
            raced.append(True)
            make_repo(remote, tmp_path).read_text("state.json")  # the other worker's clone
        return original_rename(self, target)

    monkeypatch.setattr(Path, "rename", other_worker_wins)
    assert loser.read_text("state.json") == (FIXTURES / "state.json").read_text()
    assert raced
    leftovers = [p.name for p in loser.path.parent.iterdir() if p != loser.path]
    assert leftovers == []  # the loser's staging clone is gone


def test_missing_branch_is_a_clear_error(remote: Path, tmp_path: Path) -> None:
    """A misconfigured branch names itself in the error."""
    repo = CompetitionRepo(str(remote), "no-such-branch", tmp_path / "work")
    with pytest.raises(CompetitionRepoError, match="branch 'no-such-branch' not found"):
        repo.read_text("state.json")


# --- writing ------------------------------------------------------------------------------------


def test_write_several_files_in_exactly_one_commit(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generated.json, pod_stats.json and a merged verdict land together in one new commit."""
    # As on a fresh machine: no global or system git config (no user.name anywhere).
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = make_repo(remote, tmp_path)
    before = commit_count(remote)
    generated = {"stem-b": {"glb": "g", "png": "p", "generation_time": 61.5, "distance": 0.01}}
    generated["stem-a"] = {"glb": None, "png": None, "generation_time": 0.0, "distance": None}
    pods = {"pod-1": PodStats(pod_id="pod-1", processed=3)}
    new_hotkey = "5NewHotkeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    commit = repo.write(
        "audit results",
        [
            JsonFileWrite(path=f"rounds/3/{new_hotkey}/generated.json", value=generated),
            JsonFileWrite(path=f"rounds/3/{new_hotkey}/pod_stats.json", value=pods),
            JsonFileWrite(path=AUDITS_3, value=audit(new_hotkey), merge_key=new_hotkey),
        ],
    )

    assert commit is not None
    assert git(remote, "rev-parse", "main") == commit
    assert commit_count(remote) == before + 1
    changed = git(remote, "show", "--name-only", "--format=", commit).splitlines()
    assert sorted(changed) == sorted(
        [
            f"rounds/3/{new_hotkey}/generated.json",
            f"rounds/3/{new_hotkey}/pod_stats.json",
            AUDITS_3,
        ]
    )
    assert git(remote, "log", "-1", "--format=%cn <%ce>|%an|%s", commit) == (
        f"{COMMITTER_NAME} <{COMMITTER_EMAIL}>|{COMMITTER_NAME}|audit results"
    )
    # Plain write: indent 2, trailing newline, key order as given.
    assert show(remote, f"rounds/3/{new_hotkey}/generated.json") == (
        json.dumps(generated, indent=2) + "\n"
    )
    assert list(json.loads(show(remote, f"rounds/3/{new_hotkey}/generated.json"))) == [
        "stem-b",
        "stem-a",
    ]
    # Merge: the existing entry is kept, in place; the new key is appended.
    merged = json.loads(show(remote, AUDITS_3))
    assert list(merged) == [HOTKEY_3, new_hotkey]
    original = json.loads((FIXTURES / AUDITS_3).read_text())
    assert merged[HOTKEY_3] == original[HOTKEY_3]
    assert merged[new_hotkey]["generation_time"] == 57.5
    assert json.loads(show(remote, f"rounds/3/{new_hotkey}/pod_stats.json"))["pod-1"][
        "processed"
    ] == (3)


def test_identical_write_makes_no_commit(remote: Path, tmp_path: Path) -> None:
    """Writing the same content twice returns None the second time and adds no commit."""
    repo = make_repo(remote, tmp_path)
    files = [
        JsonFileWrite(path="rounds/3/x/generated.json", value={"s": {"glb": "g"}}),
        JsonFileWrite(path=AUDITS_3, value=audit("x"), merge_key="x"),
    ]
    assert repo.write("first", files) is not None
    count = commit_count(remote)
    assert repo.write("again", files) is None
    assert commit_count(remote) == count


def test_rewriting_existing_content_in_other_formatting_makes_no_commit(
    remote: Path, tmp_path: Path
) -> None:
    """The fixture's own verdict (no trailing newline upstream) merged back is not a change."""
    repo = make_repo(remote, tmp_path)
    before = commit_count(remote)
    existing = json.loads((FIXTURES / AUDITS_3).read_text())[HOTKEY_3]
    write = JsonFileWrite(path=AUDITS_3, value=existing, merge_key=HOTKEY_3)
    assert repo.write("same", [write]) is None
    assert commit_count(remote) == before


def test_empty_write_makes_no_commit(remote: Path, tmp_path: Path) -> None:
    """No files, no commit."""
    assert make_repo(remote, tmp_path).write("nothing", []) is None


def test_same_path_twice_in_one_write_applies_in_order(remote: Path, tmp_path: Path) -> None:
    """Two merges into one file within one write both land (the second sees the first)."""
    repo = make_repo(remote, tmp_path)
    path = "rounds/3/generation_audits.json"
    repo.write(
        "two",
        [
            JsonFileWrite(path=path, value=audit("a"), merge_key="a"),
            JsonFileWrite(path=path, value=audit("b"), merge_key="b"),
        ],
    )
    assert list(json.loads(show(remote, path))) == [HOTKEY_3, "a", "b"]


def test_concurrent_writer_between_fetch_and_push_is_merged(remote: Path, tmp_path: Path) -> None:
    """Another writer pushes between our fetch and push: we re-apply on its head, keeping both."""
    sleeps = SleepRecorder()
    other = make_repo(remote, tmp_path, "other-work")
    interfered: list[str] = []

    def other_writer_pushes() -> None:
        if not interfered:
            commit = other.write(
                "other verdict",
                [
                    JsonFileWrite(
                        path=AUDITS_3, value=audit("other-hotkey"), merge_key="other-hotkey"
                    )
                ],
            )
            assert commit is not None
            interfered.append(commit)

    repo = make_repo(remote, tmp_path, sleep=sleeps, before_push=other_writer_pushes)
    before = commit_count(remote)
    ours = repo.write(
        "our verdict",
        [JsonFileWrite(path=AUDITS_3, value=audit("our-hotkey"), merge_key="our-hotkey")],
    )

    assert ours is not None
    assert git(remote, "rev-parse", "main") == ours
    assert commit_count(remote) == before + 2
    git(remote, "merge-base", "--is-ancestor", interfered[0], ours)  # raises if not preserved
    entries = json.loads(show(remote, AUDITS_3))
    assert list(entries) == [HOTKEY_3, "other-hotkey", "our-hotkey"]
    assert sleeps.delays == [0.2]


def test_conflicts_on_every_try_raise_after_bounded_backoff(remote: Path, tmp_path: Path) -> None:
    """A writer that always wins exhausts our retries: GitPushConflictError after 5 tries."""
    sleeps = SleepRecorder()
    other = make_repo(remote, tmp_path, "other-work")
    pushes: list[int] = []

    def other_writer_always_pushes() -> None:
        pushes.append(len(pushes))
        other.write("other", [JsonFileWrite(path="counter.json", value=len(pushes))])

    repo = make_repo(remote, tmp_path, sleep=sleeps, before_push=other_writer_always_pushes)
    with pytest.raises(GitPushConflictError, match="rejected 5 times"):
        repo.write("ours", [JsonFileWrite(path="ours.json", value=1)])
    assert sleeps.delays == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert len(pushes) == 5
    assert show(remote, "counter.json") == "5\n"
    ls = git(remote, "ls-tree", "--name-only", "main")
    assert "ours.json" not in ls.splitlines()


def test_retry_policy_caps_delays() -> None:
    """Delays double from the initial one and never exceed max_delay."""
    policy = PushRetry(attempts=6, initial_delay=1.0, multiplier=2.0, max_delay=5.0)
    assert policy.delays() == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert PushRetry(attempts=1).delays() == []


async def test_concurrent_writes_in_one_process_are_serialized(
    remote: Path, tmp_path: Path
) -> None:
    """Two threads writing to one repo at once both land (the lock serializes them)."""
    repo = make_repo(remote, tmp_path)
    results = await asyncio.gather(
        *(
            asyncio.to_thread(
                repo.write,
                f"write {k}",
                [JsonFileWrite(path=AUDITS_3, value=audit(k), merge_key=k)],
            )
            for k in ["k1", "k2", "k3"]
        )
    )
    assert all(r is not None for r in results)
    assert sorted(json.loads(show(remote, AUDITS_3))) == sorted([HOTKEY_3, "k1", "k2", "k3"])


def test_unknown_fields_survive_read_write_round_trip(remote: Path, tmp_path: Path) -> None:
    """Fields we do not model (in entries and at top level) survive parse -> model -> write."""
    work = tmp_path / "other"
    upstream = json.loads((FIXTURES / AUDITS_3).read_text())
    upstream[HOTKEY_3]["future_field"] = {"nested": [1, 2]}
    upstream["someone-else"] = {**upstream[HOTKEY_3], "hotkey": "someone-else", "extra": True}
    push_change(remote, work, AUDITS_3, json.dumps(upstream, indent=2), "upstream adds fields")

    repo = make_repo(remote, tmp_path)
    source = repo.at_head()
    parsed = parse_competition_file(GenerationAuditsFile, AUDITS_3, source.read_text(AUDITS_3))
    entry = parsed.root[HOTKEY_3].model_copy(update={"reason": "re-audited"})
    parsed.root[HOTKEY_3] = entry
    assert repo.write("rewrite", [JsonFileWrite(path=AUDITS_3, value=parsed)]) is not None

    written = json.loads(show(remote, AUDITS_3))
    assert written[HOTKEY_3]["future_field"] == {"nested": [1, 2]}
    assert written[HOTKEY_3]["reason"] == "re-audited"
    assert written["someone-else"]["extra"] is True

    # A merge of one key keeps the other key's unknown fields too.
    repo.write("merge", [JsonFileWrite(path=AUDITS_3, value=audit(HOTKEY_3), merge_key=HOTKEY_3)])
    assert json.loads(show(remote, AUDITS_3))["someone-else"]["extra"] is True


@pytest.mark.parametrize(
    "path",
    [
        "../escape.json",
        "rounds/../../escape.json",
        "/etc/passwd",
        "rounds//3/x.json",
        "rounds/./x.json",
        ".git/config",
        "rounds\\3\\x.json",
        "",
    ],
)
def test_unsafe_write_path_is_rejected_before_any_commit(
    remote: Path, tmp_path: Path, path: str
) -> None:
    """Absolute paths, '..', '.git' and odd segments never reach git."""
    repo = make_repo(remote, tmp_path)
    before = commit_count(remote)
    with pytest.raises(InvalidRepoPathError):
        repo.write(
            "bad", [JsonFileWrite(path="ok.json", value=1), JsonFileWrite(path=path, value=1)]
        )
    assert commit_count(remote) == before


def test_merge_into_a_non_object_is_a_competition_file_error(remote: Path, tmp_path: Path) -> None:
    """merge_key on a file holding a JSON list names the file."""
    repo = make_repo(remote, tmp_path)
    with pytest.raises(CompetitionFileError, match=r"require_audit\.json: expected a JSON object"):
        repo.write(
            "bad",
            [JsonFileWrite(path="rounds/3/require_audit.json", value=1, merge_key="k")],
        )


def test_unserializable_value_is_rejected(remote: Path, tmp_path: Path) -> None:
    """NaN is not JSON: rejected before anything is committed."""
    repo = make_repo(remote, tmp_path)
    with pytest.raises(InvalidWriteError, match=r"x\.json"):
        repo.write("nan", [JsonFileWrite(path="x.json", value={"t": float("nan")})])


# --- round files --------------------------------------------------------------------------------


def test_load_round_files_from_repo_matches_directory(remote: Path, tmp_path: Path) -> None:
    """The repo and the plain fixture directory yield the same RoundFiles."""
    from_repo = load_round_files(make_repo(remote, tmp_path).at_head(), 3, HOTKEY_3)
    from_dir = load_round_files(DirectorySource(FIXTURES), 3, HOTKEY_3)
    assert from_repo == from_dir
    assert from_dir.seed == 524294358
    assert len(from_dir.prompts) == 128
    assert len(from_dir.submitted) == 128
    assert from_dir.critical_prompts == []
    assert from_dir.build is not None
    assert from_dir.build.status is BuildStatus.SUCCESS
    assert from_dir.submission is not None
    assert from_dir.submission.round == "mesh-3"


def test_load_round_files_critical_prompts_sorted(tmp_path: Path) -> None:
    """Critical prompts come from require_audit.json for this miner."""
    files = load_round_files(
        DirectorySource(FIXTURES), 0, "5GgpGaDxzTyBAME1Ju9ZhUstWj2VTm1n4tAUkRHLi4birQZg"
    )
    assert len(files.critical_prompts) == 7
    assert files.critical_prompts == sorted(files.critical_prompts)


def copy_round_3(tmp_path: Path) -> Path:
    root = tmp_path / "competition"
    shutil.copytree(FIXTURES / "rounds" / "3", root / "rounds" / "3")
    return root


def test_optional_round_files_may_be_absent(tmp_path: Path) -> None:
    """No require_audit.json: no critical prompts; no builds.json: build None."""
    root = copy_round_3(tmp_path)
    (root / "rounds/3/require_audit.json").unlink()
    (root / "rounds/3/builds.json").unlink()
    files = load_round_files(DirectorySource(root), 3, HOTKEY_3)
    assert files.critical_prompts == []
    assert files.build is None


def test_miner_without_build_entry_has_no_build(tmp_path: Path) -> None:
    """builds.json without the miner's entry: build None."""
    root = copy_round_3(tmp_path)
    builds_path = root / "rounds/3/builds.json"
    builds = json.loads(builds_path.read_text())
    del builds[HOTKEY_3]
    builds_path.write_text(json.dumps(builds))
    assert load_round_files(DirectorySource(root), 3, HOTKEY_3).build is None


def test_unknown_round_names_the_round() -> None:
    """A round without seed.json is an UnknownRoundError naming the round."""
    with pytest.raises(UnknownRoundError, match="unknown round 42"):
        load_round_files(DirectorySource(FIXTURES), 42, HOTKEY_3)


def test_unknown_hotkey_names_hotkey_round_and_file() -> None:
    """A hotkey absent from submissions.json: UnknownHotkeyError naming all three."""
    with pytest.raises(UnknownHotkeyError) as info:
        load_round_files(DirectorySource(FIXTURES), 3, "5NoSuchHotkey")
    assert str(info.value) == (
        "unknown hotkey '5NoSuchHotkey' in round 3: no entry in rounds/3/submissions.json"
    )


def test_submitted_json_is_required(tmp_path: Path) -> None:
    """A submission without submitted.json is a CompetitionFileError naming the file."""
    root = copy_round_3(tmp_path)
    (root / f"rounds/3/{HOTKEY_3}/submitted.json").unlink()
    with pytest.raises(CompetitionFileError, match=f"rounds/3/{HOTKEY_3}/submitted.json"):
        load_round_files(DirectorySource(root), 3, HOTKEY_3)


def test_load_generated_absent_is_empty_and_present_is_parsed(tmp_path: Path) -> None:
    """generated.json: {} before the first write, parsed entries after."""
    assert load_generated(DirectorySource(FIXTURES), 3, "5NotAuditedYet") == {}
    generated = load_generated(DirectorySource(FIXTURES), 3, HOTKEY_3)
    assert len(generated) == 128
    assert all(isinstance(e, GenerationEntry) for e in generated.values())


def test_directory_source_rejects_escapes(tmp_path: Path) -> None:
    """'..' and symlinks out of the root are rejected."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.json").write_text("{}")
    (root / "link.json").symlink_to(tmp_path / "secret.json")
    source = DirectorySource(root)
    with pytest.raises(InvalidRepoPathError):
        source.read_text("../secret.json")
    with pytest.raises(InvalidRepoPathError, match="escapes"):
        source.read_text("link.json")
    assert source.read_text("absent.json") is None


# --- activities ---------------------------------------------------------------------------------


@pytest.fixture
def activities(remote: Path, tmp_path: Path) -> CompetitionRepoActivities:
    return CompetitionRepoActivities(make_repo(remote, tmp_path))


async def test_activity_read_round_files(activities: CompetitionRepoActivities) -> None:
    """read_round_files returns the parsed round files of the branch head."""
    files = await ActivityEnvironment().run(
        activities.read_round_files, ReadRoundFilesInput(round=3, hotkey=HOTKEY_3)
    )
    assert files == load_round_files(DirectorySource(FIXTURES), 3, HOTKEY_3)


async def test_activity_unknown_hotkey_is_non_retryable(
    activities: CompetitionRepoActivities,
) -> None:
    """Unknown hotkey -> non-retryable ApplicationError of type UnknownHotkey naming it."""
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            activities.read_round_files, ReadRoundFilesInput(round=3, hotkey="5Nobody")
        )
    assert info.value.type == "UnknownHotkey"
    assert info.value.non_retryable
    assert "'5Nobody'" in info.value.message
    assert "round 3" in info.value.message


async def test_activity_unknown_round_is_non_retryable(
    activities: CompetitionRepoActivities,
) -> None:
    """Unknown round -> non-retryable UnknownRound."""
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            activities.read_round_files, ReadRoundFilesInput(round=77, hotkey=HOTKEY_3)
        )
    assert info.value.type == ErrorType.UNKNOWN_ROUND
    assert info.value.non_retryable
    assert "77" in info.value.message


async def test_activity_bad_file_is_non_retryable(remote: Path, tmp_path: Path) -> None:
    """A malformed seed.json -> non-retryable CompetitionFileInvalid naming file and field."""
    push_change(remote, tmp_path / "other", "rounds/3/seed.json", '{"seed": "x"}', "break seed")
    acts = CompetitionRepoActivities(make_repo(remote, tmp_path))
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            acts.read_round_files, ReadRoundFilesInput(round=3, hotkey=HOTKEY_3)
        )
    assert info.value.type == ErrorType.COMPETITION_FILE_INVALID
    assert info.value.non_retryable
    assert "rounds/3/seed.json: field 'seed'" in info.value.message


async def test_activity_write_files_commits_once(
    activities: CompetitionRepoActivities, remote: Path, tmp_path: Path
) -> None:
    """write_files commits once, the same write again returns None; a reader sees the file."""
    env = ActivityEnvironment()
    reader = make_repo(remote, tmp_path, "reader")
    path = "rounds/3/5Fresh/generated.json"
    assert load_generated(reader.at_head(), 3, "5Fresh") == {}
    write = WriteFilesInput(
        message="generated",
        files=[JsonFileWrite(path=path, value={"s1": {"glb": "g", "png": "p", "distance": 0.0}})],
    )
    first = await env.run(activities.write_files, write)
    assert first.commit == git(remote, "rev-parse", "main")
    assert (await env.run(activities.write_files, write)).commit is None
    assert load_generated(reader.at_head(), 3, "5Fresh") == {
        "s1": GenerationEntry(glb="g", png="p", distance=0.0)
    }


async def test_activity_bad_path_is_invalid_input(activities: CompetitionRepoActivities) -> None:
    """A '..' path -> non-retryable InvalidInput."""
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            activities.write_files,
            WriteFilesInput(message="x", files=[JsonFileWrite(path="../x.json", value=1)]),
        )
    assert info.value.type == ErrorType.INVALID_INPUT
    assert info.value.non_retryable


async def test_activity_push_conflict_is_retryable(remote: Path, tmp_path: Path) -> None:
    """Exhausted push retries -> retryable GitPushConflict (Temporal tries again later)."""
    other = make_repo(remote, tmp_path, "other-work")
    pushes: list[int] = []

    def always_conflict() -> None:
        pushes.append(1)
        other.write("other", [JsonFileWrite(path="counter.json", value=len(pushes))])

    repo = make_repo(
        remote,
        tmp_path,
        retry=PushRetry(attempts=2),
        sleep=SleepRecorder(),
        before_push=always_conflict,
    )
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(
            CompetitionRepoActivities(repo).write_files,
            WriteFilesInput(message="x", files=[JsonFileWrite(path="x.json", value=1)]),
        )
    assert info.value.type == ErrorType.GIT_PUSH_CONFLICT
    assert not info.value.non_retryable


def test_activities_lists_bound_methods(activities: CompetitionRepoActivities) -> None:
    """The worker registers exactly these activities, by their public names."""
    names = [fn.__name__ for fn in activities.activities()]
    assert names == [
        "read_round_files",
        "read_round_snapshot",
        "read_leader_files",
        "write_files",
        "publish_report",
    ]


async def test_worker_of_another_repo_refuses_the_audits_reads_and_writes(
    remote: Path, tmp_path: Path, activities: CompetitionRepoActivities
) -> None:
    """An audit records its COMPETITION_REPO; a worker configured for another repo refuses its
    reads and writes (retryably: a worker of the right repo takes the retry) and writes nothing;
    another spelling of the same repo is the same repo."""
    other = tmp_path / "other-competition.git"
    shutil.copytree(remote, other)
    before = commit_count(remote)
    for spelling in (str(other), f"{other}/"):
        with pytest.raises(ApplicationError) as read:
            await ActivityEnvironment().run(
                activities.read_round_files,
                ReadRoundFilesInput(round=3, hotkey=HOTKEY_3, competition_repo=spelling),
            )
        assert read.value.type == ErrorType.WRONG_COMPETITION_REPO
        assert not read.value.non_retryable
        assert str(other) in read.value.message and str(remote) in read.value.message
    with pytest.raises(ApplicationError) as write:
        await ActivityEnvironment().run(
            activities.write_files,
            WriteFilesInput(
                message="verdict",
                files=[JsonFileWrite(path="rounds/3/x.json", value={"a": 1})],
                competition_repo=str(other),
            ),
        )
    assert write.value.type == ErrorType.WRONG_COMPETITION_REPO
    assert commit_count(remote) == before
    # Its own repo, however spelled, is served.
    for spelling in (str(remote), f"{remote}/", str(tmp_path / "." / "remote.git")):
        files = await ActivityEnvironment().run(
            activities.read_round_files,
            ReadRoundFilesInput(round=3, hotkey=HOTKEY_3, competition_repo=spelling),
        )
        assert files.hotkey == HOTKEY_3
