"""worker.py refuses to start with a competition repo it cannot read (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from demo.competition import publish_round
from models.settings import SettingsError
from tests.helpers import free_port, make_settings
from worker import check_competition_repo

ROOT = Path(__file__).resolve().parents[2]


def test_worker_with_an_unreadable_repo_exits_at_once_with_one_line(tmp_path: Path) -> None:
    """Not 30 minutes of audits stuck in `reading`: the process ends, naming the variable."""
    env = {
        "PATH": "/usr/bin:/bin",
        "COMPETITION_REPO": str(tmp_path / "missing.git"),
        "WORK_DIR": str(tmp_path / "work"),
        # Nothing listens here: the repo is checked before Temporal is contacted.
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    done = subprocess.run(
        [sys.executable, "worker.py", "--queues", "generation-orchestrator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert "COMPETITION_REPO=" in errors[0] and "missing.git" in errors[0]
    assert "cannot be read" in errors[0]


async def test_repo_check_names_a_missing_branch(tmp_path: Path) -> None:
    """A readable repo passes (its head commit is returned); a wrong branch is named."""
    bare = tmp_path / "competition.git"
    publish_round(bare, tmp_path / "www", "http://127.0.0.1:1", 1, [], 1)
    settings = make_settings(COMPETITION_REPO=str(bare), WORK_DIR=str(tmp_path / "work"))
    head = await check_competition_repo(settings)
    assert len(head) == 40
    wrong = make_settings(
        COMPETITION_REPO=str(bare),
        COMPETITION_BRANCH="release",
        WORK_DIR=str(tmp_path / "work2"),
    )
    with pytest.raises(SettingsError, match=r"COMPETITION_BRANCH=release.*'release' not found"):
        await check_competition_repo(wrong)
