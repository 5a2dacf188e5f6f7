"""Builds a competition round in a local bare git repo: the demo's (and e2e tests') world.

Prompt images are drawn with PIL; each miner's submitted GLBs are what the reference miner makes
with variant 0 (the "claimed" outputs), published under a static web root next to the prompts.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import git
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict

from miner.mesh import generate_glb
from models.competition import AuditOutcome, BuildStatus, CompetitionPaths


class DemoMiner(BaseModel):
    """One miner of a demo round."""

    model_config = ConfigDict(frozen=True)

    hotkey: str
    label: str
    image: str | None  # docker image reference (local provider syntax); None = build failed
    critical: int = 0  # how many of the prompts are critical for this miner
    expect: AuditOutcome | None = None  # the verdict the demo must reach (None: either)


def prompt_png(index: int, size: int = 256) -> bytes:
    """A simple, distinct prompt image per index."""
    hue = (index * 47) % 255
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    color = (hue, 255 - hue, (index * 91) % 255)
    inset = 30 + (index * 7) % 60
    if index % 3 == 0:
        draw.ellipse((inset, inset, size - inset, size - inset), fill=color)
    elif index % 3 == 1:
        draw.rectangle((inset, inset, size - inset, size - inset), fill=color)
    else:
        draw.polygon(
            [(size // 2, inset), (size - inset, size - inset), (inset, size - inset)], fill=color
        )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


_PREVIEWS: dict[str, bytes] = {}  # sha256 of a GLB -> its preview (rendering is the slow part)


def submitted_previews(glbs: list[bytes]) -> list[bytes]:
    """The preview PNGs of submitted GLBs, rendered exactly as the audit renders (what upstream's
    submission-collector publishes beside each submitted GLB).

    Rendered in a child process (`python -m activities.preview`): pyrender's EGL teardown ends
    every context of the process, so a renderer here would break a GPU worker running beside.
    """
    keys = [hashlib.sha256(glb).hexdigest() for glb in glbs]
    missing = {key: glb for key, glb in zip(keys, glbs, strict=True) if key not in _PREVIEWS}
    if missing:
        with tempfile.TemporaryDirectory(prefix="demo-previews-") as tmp:
            paths = []
            for key, glb in missing.items():
                path = Path(tmp) / f"{key}.glb"
                path.write_bytes(glb)
                paths.append(str(path))
            out = Path(tmp) / "png"
            subprocess.run(
                [sys.executable, "-m", "activities.preview", str(out), *paths],
                check=True,
                capture_output=True,
                cwd=Path(__file__).resolve().parents[1],
            )
            for key in missing:
                _PREVIEWS[key] = (out / f"{key}.png").read_bytes()
    return [_PREVIEWS[key] for key in keys]


def _dump(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def ensure_bare_repo(path: Path) -> None:
    """Create the bare repo with an initial commit (state.json, config.json) if absent."""
    if (path / "HEAD").is_file():
        return
    path.mkdir(parents=True, exist_ok=True)
    git.Repo.init(path, bare=True, initial_branch="main")


def next_round(bare: Path) -> int:
    """1 + the highest round in the repo (1 for an empty repo)."""
    repo = git.Repo(bare)
    try:
        tree = repo.commit("main").tree
    except (ValueError, git.BadName):
        return 1
    try:
        rounds = tree / "rounds"
    except KeyError:
        return 1
    numbers = [int(item.name) for item in rounds.trees if item.name.isdigit()]
    return max(numbers, default=0) + 1


def publish_round(
    bare: Path,
    www_root: Path,
    base_url: str,
    round_number: int,
    miners: list[DemoMiner],
    n_prompts: int,
    seed: int = 3035696319,
    *,
    stage: str = "open",
    builds_json: bool = True,
    require_audit_json: bool = True,
    leader_image: str | None = None,
) -> list[str]:
    """Write round `round_number` (prompts, submissions, builds, submitted outputs) and push it.

    A whole-round run (the demo) sets `stage` to a generating one and leaves builds.json to the
    build tracker and require_audit.json to `require_audits`; `leader_image` adds a leader.json.
    Returns the stems of the round's prompts.
    """
    ensure_bare_repo(bare)
    stems: list[str] = []
    urls: list[str] = []
    prompt_dir = www_root / "rounds" / str(round_number) / "prompts"
    prompt_dir.mkdir(parents=True, exist_ok=True)
    digests: dict[str, str] = {}
    for i in range(n_prompts):
        data = prompt_png(i + round_number * 101)
        stem = hashlib.sha256(data).hexdigest()[:16]
        (prompt_dir / f"{stem}.png").write_bytes(data)
        stems.append(stem)
        digests[stem] = hashlib.sha256(data).hexdigest()
        urls.append(f"{base_url}/rounds/{round_number}/prompts/{stem}.png")

    files: dict[str, str] = {
        CompetitionPaths.STATE: _dump(
            {"current_round": round_number, "stage": stage, "next_stage_eta": None}
        ),
        CompetitionPaths.CONFIG: _dump({"name": "demo", "prompts_per_round": n_prompts}),
        CompetitionPaths.seed(round_number): _dump({"seed": seed}),
        CompetitionPaths.prompts(round_number): "\n".join(urls) + "\n",
    }
    submissions: dict[str, object] = {}
    builds: dict[str, object] = {}
    require_audit: list[object] = []
    for miner in miners:
        commit = miner_commit(miner)
        tag = f"{commit[:7]}-{round_tag(round_number)}"
        submissions[miner.hotkey] = {
            "repo": f"demo/{miner.label}",
            "commit": commit,
            "cdn_url": f"{base_url}/rounds/{round_number}/{miner.hotkey}",
            "revealed_at_block": 1000 + round_number,
            "round": round_tag(round_number),
        }
        ok = miner.image is not None
        builds[miner.hotkey] = {
            "repo": f"demo/{miner.label}",
            "commit": commit,
            "revealed_at_block": 1000 + round_number,
            "tag": tag,
            "status": BuildStatus.SUCCESS if ok else BuildStatus.FAILURE,
            "docker_image": miner.image,
        }
        require_audit.append({"hotkey": miner.hotkey, "critical_prompts": stems[: miner.critical]})
        glb_dir = www_root / "rounds" / str(round_number) / miner.hotkey
        glb_dir.mkdir(parents=True, exist_ok=True)
        submitted = {}
        glbs = [generate_glb(digests[stem], seed, 0) for stem in stems]
        # Upstream's submission-collector stores the render-service's preview beside each GLB,
        # and the audit compares its own preview with that PNG.
        for stem, glb, png in zip(stems, glbs, submitted_previews(glbs), strict=True):
            (glb_dir / f"{stem}.glb").write_bytes(glb)
            (glb_dir / f"{stem}.png").write_bytes(png)
            submitted[stem] = {
                "glb": f"{base_url}/rounds/{round_number}/{miner.hotkey}/{stem}.glb",
                "png": f"{base_url}/rounds/{round_number}/{miner.hotkey}/{stem}.png",
                "generation_time": 0.0,
                "size": len(glb),
                "attempts": 0,
                "distance": 0.0,
            }
        files[CompetitionPaths.submitted(round_number, miner.hotkey)] = _dump(submitted)
    files[CompetitionPaths.submissions(round_number)] = _dump(submissions)
    if builds_json:
        files[CompetitionPaths.builds(round_number)] = _dump(builds)
    if require_audit_json:
        files[CompetitionPaths.require_audit(round_number)] = _dump(require_audit)
    if leader_image is not None:
        leader = {
            "hotkey": "5DemoLeader",
            "repo": "demo/leader",
            "commit": "0" * 40,
            "docker": leader_image,
            "weight": 1.0,
            "effective_block": 1000 + round_number,
        }
        files[CompetitionPaths.LEADER] = _dump([leader])
    commit_files(bare, files, f"Open demo round {round_number}")
    return stems


def miner_commit(miner: DemoMiner) -> str:
    """The (fake) commit a demo miner submitted."""
    return hashlib.sha1(miner.hotkey.encode()).hexdigest()  # noqa: S324 - a fake commit id


def round_tag(round_number: int) -> str:
    """submissions.json's `round` tag of a demo round."""
    return f"demo-{round_number}"


def require_audits(
    bare: Path, round_number: int, miners: list[DemoMiner], stems: list[str]
) -> None:
    """Write require_audit.json (judge-service's part) for `miners`, replacing the file."""
    entries = [{"hotkey": m.hotkey, "critical_prompts": stems[: m.critical]} for m in miners]
    commit_files(
        bare,
        {CompetitionPaths.require_audit(round_number): _dump(entries)},
        f"Require audits for round {round_number}",
    )


def set_stage(bare: Path, round_number: int, stage: str) -> None:
    """Move state.json to `stage` (the competition's own clock)."""
    state = {"current_round": round_number, "stage": stage, "next_stage_eta": None}
    commit_files(bare, {CompetitionPaths.STATE: _dump(state)}, f"Stage {stage}")


def read_json(bare: Path, path: str) -> object | None:
    """A JSON file at the head of main in the bare repo; None when it does not exist."""
    repo = git.Repo(bare)
    try:
        blob = repo.commit("main").tree / path
    except KeyError:
        return None
    data: bytes = blob.data_stream.read()
    value: object = json.loads(data)
    return value


def commit_files(bare: Path, files: dict[str, str], message: str) -> None:
    """Commit and push `files` (path -> text) to the bare repo's main, as other services would."""
    with tempfile.TemporaryDirectory(prefix="demo-clone-") as tmp:
        clone = git.Repo.clone_from(str(bare), tmp)
        with clone.config_writer() as config:
            config.set_value("user", "name", "demo")
            config.set_value("user", "email", "demo@localhost")
        for path, text in files.items():
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        clone.git.add(A=True)
        clone.index.commit(message)
        clone.git.push("origin", "HEAD:main")
