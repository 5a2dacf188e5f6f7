"""What audits, the leader run and the round loop read from the competition repo, parsed.

Owns: loading a round's files from any `CompetitionSource` through the models of
`models.competition` (an audit's inputs, the leader run's inputs, the round loop's snapshot), and
the rule that another miner's malformed entry in a shared file is logged and skipped while the
audited hotkey's own entry must validate. No git and no Temporal here.
"""

from __future__ import annotations

import logging

from competition.repo import CompetitionSource, parse_json_object
from models.competition import (
    CompetitionPaths,
    GenerationEntry,
    GenerationsFile,
    LeaderFile,
    RoundFiles,
    SeedFile,
    StateFile,
    parse_builds,
    parse_competition_file,
    parse_prompts,
    parse_require_audit,
    parse_submissions,
)
from models.errors import CompetitionFileError, UnknownHotkeyError, UnknownRoundError
from models.rounds import LEADER_HOTKEY, LeaderFiles, RoundSnapshot

logger = logging.getLogger(__name__)


def _checked_stems(path: str, entries: dict[str, GenerationEntry]) -> dict[str, GenerationEntry]:
    for stem in entries:
        if not stem or stem in {".", ".."} or "/" in stem or "\\" in stem or "\x00" in stem:
            raise CompetitionFileError(path, "invalid stem: not a plain name", field=stem)
    return entries


def _generations(path: str, text: str | None) -> dict[str, GenerationEntry]:
    return _checked_stems(path, parse_competition_file(GenerationsFile, path, text).root)


def _skipped(error: CompetitionFileError) -> None:
    logger.warning("ignoring another miner's entry: %s", error)


def load_round_files(source: CompetitionSource, round_number: int, hotkey: str) -> RoundFiles:
    """Everything an audit of `hotkey` in round `round_number` reads, parsed and checked.

    submissions.json, builds.json and require_audit.json are read entry by entry: only the
    audited hotkey's entry must validate; another miner's malformed entry is logged and ignored.

    Raises:
        UnknownRoundError: the round's seed.json does not exist.
        UnknownHotkeyError: the hotkey has no entry in submissions.json.
        CompetitionFileError: a required file is missing, a file is not JSON of the right
            top-level type, the audited hotkey's entry is malformed, or its submitted.json or
            generated.json is malformed (the message names the file and the field, which starts
            with the hotkey for a shared file); also for a hotkey with '/' or '..'.
    """
    seed_path = CompetitionPaths.seed(round_number)
    submitted_path = CompetitionPaths.submitted(round_number, hotkey)
    seed_text = source.read_text(seed_path)
    if seed_text is None:
        raise UnknownRoundError(round_number, seed_path)
    seed = parse_competition_file(SeedFile, seed_path, seed_text).seed

    prompts_path = CompetitionPaths.prompts(round_number)
    prompts = parse_prompts(prompts_path, source.read_text(prompts_path)).root

    submissions_path = CompetitionPaths.submissions(round_number)
    submissions = parse_submissions(
        submissions_path, source.read_text(submissions_path), hotkey, _skipped
    ).root
    submission = submissions.get(hotkey)
    if submission is None:
        raise UnknownHotkeyError(hotkey, round_number, submissions_path)

    submitted = _generations(submitted_path, source.read_text(submitted_path))

    require_path = CompetitionPaths.require_audit(round_number)
    require_text = source.read_text(require_path)
    critical = (
        []
        if require_text is None
        else parse_require_audit(require_path, require_text, hotkey, _skipped).critical_prompts(
            hotkey
        )
    )

    builds_path = CompetitionPaths.builds(round_number)
    builds_text = source.read_text(builds_path)
    build = (
        None
        if builds_text is None
        else parse_builds(builds_path, builds_text, hotkey, _skipped).root.get(hotkey)
    )
    return RoundFiles(
        round=round_number,
        hotkey=hotkey,
        seed=seed,
        prompts=prompts,
        submitted=submitted,
        critical_prompts=critical,
        build=build,
        submission=submission,
        generated=load_generated(source, round_number, hotkey),
    )


def _decided(path: str, text: str) -> list[str]:
    """Hotkeys of generation_audits.json whose outcome is not `pending` (upstream's "already
    handled" set; read leniently so an outcome we do not model never stops the round)."""
    data = parse_json_object(path, text)
    return sorted(
        hotkey
        for hotkey, entry in data.items()
        if isinstance(entry, dict) and entry.get("outcome") not in (None, "pending")
    )


def load_generated(
    source: CompetitionSource, round_number: int, hotkey: str
) -> dict[str, GenerationEntry]:
    """The miner's generated.json (stem -> entry); {} when the file does not exist yet."""
    path = CompetitionPaths.generated(round_number, hotkey)
    text = source.read_text(path)
    return {} if text is None else _generations(path, text)


def _latest_leader(source: CompetitionSource) -> str | None:
    """The docker image of leader.json's last entry; None when the file is absent or empty."""
    text = source.read_text(CompetitionPaths.LEADER)
    leader = (
        None
        if text is None
        else parse_competition_file(LeaderFile, CompetitionPaths.LEADER, text).latest()
    )
    return None if leader is None else leader.docker


def load_leader_files(source: CompetitionSource, round_number: int) -> LeaderFiles:
    """The leader run's inputs: seed, prompts, the last leader.json entry's image and
    `rounds/{n}/leader/generated.json` (it resumes from it).

    Raises:
        UnknownRoundError: the round's seed.json does not exist.
        CompetitionFileError: a file is malformed, also for a missing or empty leader.json
            (upstream: "Leader docker image not found").
    """
    n = round_number
    seed_path = CompetitionPaths.seed(n)
    seed_text = source.read_text(seed_path)
    if seed_text is None:
        raise UnknownRoundError(n, seed_path)
    image = _latest_leader(source)
    if image is None:
        raise CompetitionFileError(
            CompetitionPaths.LEADER,
            "Leader docker image not found: the file is missing or an empty list, so there "
            "is no leader to generate the round's baseline with",
        )
    prompts_path = CompetitionPaths.prompts(n)
    files = RoundFiles(
        round=n,
        hotkey=LEADER_HOTKEY,
        seed=parse_competition_file(SeedFile, seed_path, seed_text).seed,
        prompts=parse_prompts(prompts_path, source.read_text(prompts_path)).root,
        submitted={},
        critical_prompts=[],
        generated=load_generated(source, n, LEADER_HOTKEY),
    )
    return LeaderFiles(files=files, image=image)


def load_round_snapshot(source: CompetitionSource, round_number: int | None) -> RoundSnapshot:
    """What the round loop needs: state.json, and for the round (`round_number`, else
    state.json's) its submissions, require_audit.json hotkeys, the hotkeys with a verdict,
    builds.json and the leader's image.

    Raises:
        CompetitionFileError: state.json is missing or malformed (names the file), or a
            round file is not JSON of the right top-level type. Other miners' malformed entries
            are skipped with a warning.
    """
    state = parse_competition_file(
        StateFile, CompetitionPaths.STATE, source.read_text(CompetitionPaths.STATE)
    )
    n = state.current_round if round_number is None else round_number
    snapshot = RoundSnapshot(state=state, leader_image=_latest_leader(source))
    if source.read_text(CompetitionPaths.seed(n)) is None:
        return snapshot  # the round does not exist (yet)
    submissions_path = CompetitionPaths.submissions(n)
    submissions_text = source.read_text(submissions_path)
    require_path = CompetitionPaths.require_audit(n)
    require_text = source.read_text(require_path)
    builds_path = CompetitionPaths.builds(n)
    builds_text = source.read_text(builds_path)
    audits_path = CompetitionPaths.generation_audits(n)
    audits_text = source.read_text(audits_path)
    return snapshot.model_copy(
        update={
            "submissions": {}
            if submissions_text is None
            else parse_submissions(submissions_path, submissions_text, None, _skipped).root,
            "required": []
            if require_text is None
            else parse_require_audit(require_path, require_text, None, _skipped).hotkeys(),
            "builds": {}
            if builds_text is None
            else parse_builds(builds_path, builds_text, None, _skipped).root,
            "audited": [] if audits_text is None else _decided(audits_path, audits_text),
        }
    )
