"""`python starter.py verdict`: the CLI reproduces real verdicts and fails clearly on bad input."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import git
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

import starter
from embedded_temporal import server_answers, ui_address
from models.audit import AuditProgress, AuditStatus, PodPhase, PodProgress
from models.constants import TASK_QUEUE
from tests.helpers import assert_eventually, free_port, make_settings, new_task_queue
from worker import running_workers

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "competition-1"
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


# --- operators' experience (issue 13): one-line errors, progress lines, Ctrl-C, the server ---


def test_unreachable_temporal_address_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TEMPORAL_ADDRESS where nothing answers: exit 2 with one line naming it, no traceback."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "nonexistent.invalid:7233")
    assert starter.main(["audit", "--round", "1", "--hotkey", "HK"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: cannot connect to Temporal at nonexistent.invalid:7233")
    assert "Traceback" not in err


def test_progress_line_carries_elapsed_median_and_eta() -> None:
    """4 of 12 done in 125 s: 8 left at that pace, ETA 250 s; no ETA before the first."""
    pods = [
        PodProgress(index=0, pod_name="miner-01-hk-0", phase=PodPhase.READY),
        PodProgress(index=1, pod_name="miner-01-hk-1", phase=PodPhase.READY),
        PodProgress(index=2, pod_name="miner-01-hk-2", phase=PodPhase.ACQUIRING),
    ]
    progress = AuditProgress(
        status=AuditStatus.GENERATING,
        total=12,
        done=4,
        in_flight=2,
        pods_active=3,
        pods_started=3,
        median_seconds=2.0,
        pods=pods,
    )
    line = starter.describe_progress(progress, elapsed=125)
    assert line == (
        "generating: 4/12 prompts done, 2 in flight, mismatches 0 (critical 0), "
        "pods 3 active / 3 started, median 2.0s, 2m05s elapsed, ETA 4m10s"
    )
    first = progress.model_copy(update={"done": 0, "median_seconds": None})
    assert starter.describe_progress(first, elapsed=3).endswith("3s elapsed, ETA ?")
    assert starter.format_duration(7400) == "2h03m"


def _start_audit_cli(address: str, task_queue: str, hotkey: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TASK_QUEUE": task_queue,
        "GPU_TASK_QUEUE": f"{task_queue}-gpu",
        "TEMPORAL_UI_URL": "http://ui.example:8080",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "starter.py"), "audit", "--round", "1", "--hotkey", hotkey],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _read_until(stream: IO[str], needle: str, timeout: float = 30) -> list[str]:
    lines: list[str] = []

    def read() -> list[str]:
        for line in stream:
            lines.append(line)
            if needle in line:
                return lines
        raise AssertionError(f"{needle!r} never printed: {lines}")

    async with asyncio.timeout(timeout):
        return await asyncio.to_thread(read)


async def test_audit_without_worker_warns_and_ctrl_c_says_the_audit_goes_on(
    client: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker on the queue: a warning line; Ctrl-C: how to watch again and to cancel."""
    address = client.service_client.config.target_host
    task_queue = new_task_queue("starter")
    process = _start_audit_cli(address, task_queue, "HKCTRLC")
    try:
        assert process.stdout is not None and process.stderr is not None
        lines = await _read_until(process.stdout, "no worker serves task queue")
        assert "history: http://ui.example:8080/namespaces/default/workflows/audit-1-HKCTRLC\n" in (
            lines
        )
        assert f"no worker serves task queue {task_queue}, {task_queue}-gpu" in lines[-1]
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.to_thread(process.communicate, timeout=15)
        assert process.returncode == 130
        assert "stopped watching; the audit audit-1-HKCTRLC goes on" in err
        assert "starter.py cancel --round 1 --hotkey HKCTRLC" in err
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    handle = client.get_workflow_handle("audit-1-HKCTRLC")
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    assert (
        await asyncio.to_thread(starter.main, ["cancel", "--round", "1", "--hotkey", "HKCTRLC"])
        == 0
    )
    assert "cancellation requested for audit-1-HKCTRLC" in capsys.readouterr().out
    events = [e async for e in handle.fetch_history_events()]
    assert any(e.HasField("workflow_execution_cancel_requested_event_attributes") for e in events)
    await handle.terminate("test over")


def _git_round(tmp_path: Path) -> Path:
    root = copy_round(tmp_path, 3)
    repo = git.Repo.init(root, initial_branch="main")
    repo.git.add(A=True)
    repo.git.commit("-m", "round 3", "--author", "t <t@t>")
    return root


async def test_failed_audit_is_one_line(client: Client, tmp_path: Path) -> None:
    """Unknown round and a malformed file end `starter.py audit` with one line, exit 2."""
    root = _git_round(tmp_path)
    task_queue = new_task_queue("starter")
    settings = make_settings(
        TEMPORAL_ADDRESS=client.service_client.config.target_host,
        TASK_QUEUE=task_queue,
        COMPETITION_REPO=str(root),
        WORK_DIR=str(tmp_path / "work"),
        ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        GPU_PROVIDERS="local",
    )
    (root / "rounds/3/seed.json").write_text("{not json")
    repo = git.Repo(root)
    repo.git.commit("-am", "break seed", "--author", "t <t@t>")
    async with running_workers(client, settings, queues=[TASK_QUEUE], task_queue=task_queue):
        for round_number, expected in (
            (9, "unknown round 9: rounds/9/seed.json does not exist"),
            (3, "rounds/3/seed.json"),
        ):
            with pytest.raises(starter.CliError) as raised:
                await starter.run_audit_command(settings, round_number, "HK", wait=True)
            message = str(raised.value)
            assert message.startswith(f"audit audit-{round_number}-HK failed: "), message
            assert expected in message
            assert "\n" not in message


async def test_server_writes_its_pid_and_refuses_a_database_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`starter.py server` writes server.pid; a second server on the same database is refused
    (another port) and so is one on the same address, each with one line naming the pid."""
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "PYTHONPATH": str(ROOT)}
    code = (
        "from embedded_temporal import run_foreground\n"
        "from models.settings import load_settings\n"
        "run_foreground(load_settings(), ui_port=None)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await assert_eventually(lambda: server_answers(address, timeout=0.5), timeout=30)
        pid_file = tmp_path / ".temporal" / "server.pid"
        assert pid_file.read_text().strip() == str(process.pid)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{free_port()}")
        assert starter.main(["server"]) == 2
        err = capsys.readouterr().err
        assert err == (
            "error: the database .temporal/dev.db is in use by another Temporal server "
            f"(pid {process.pid}, .temporal/server.pid); use that server, or stop it first "
            f"with `kill {process.pid}`\n"
        )
        monkeypatch.setenv("TEMPORAL_ADDRESS", address)
        assert starter.main(["server"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: a server already answers at {address}")
        assert f"`kill {process.pid}`" in err and err.count("\n") == 1
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 15)


def test_ui_links_follow_the_configured_server() -> None:
    """Links use TEMPORAL_UI_URL, else the embedded UI port of TEMPORAL_ADDRESS (+1000)."""
    assert ui_address(make_settings(TEMPORAL_ADDRESS="localhost:7400")) == "http://localhost:8400"
    assert ui_address(make_settings(TEMPORAL_UI_URL="https://ui.example/")) == "https://ui.example"
    cloud = make_settings(TEMPORAL_ADDRESS="ns.acct.tmprl.cloud:7233")
    assert ui_address(cloud) == "https://cloud.temporal.io"
    assert ui_address(make_settings(TEMPORAL_ADDRESS="temporal.lan:7233")) == (
        "http://temporal.lan:8233"
    )
