"""The control channel: only its owner can reach it; bad values change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import control

NOBODY = 65534


async def serving(path: Path) -> tuple[asyncio.AbstractServer, dict[str, Any]]:
    state: dict[str, Any] = {"throttle": 1.0}

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "throttle":
            state["throttle"] = request["value"]
        return dict(state)

    return await control.serve(path, handler), state


async def test_socket_and_directory_belong_to_the_owner_alone(tmp_path: Path) -> None:
    path = tmp_path / "run" / "master.sock"
    server, _ = await serving(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        answer = await asyncio.to_thread(control.request, path, {"cmd": "status"})
        assert answer == {"throttle": 1.0}
    finally:
        server.close()


async def test_a_garbage_request_gets_an_error_and_the_server_lives_on(tmp_path: Path) -> None:
    path = tmp_path / "run" / "slave.sock"
    server, _ = await serving(path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"not json\n")
        assert b"not JSON" in await reader.readline()
        writer.close()
        answer = await asyncio.to_thread(control.request, path, {"cmd": "throttle", "value": 0.5})
        assert answer["throttle"] == 0.5
    finally:
        server.close()


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
async def test_a_number_json_has_not_is_refused_and_changes_nothing(tmp_path: Path,
                                                                    number: bytes) -> None:
    path = tmp_path / "run" / "master.sock"
    server, state = await serving(path)
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"cmd": "throttle", "value": ' + number + b"}\n")
        assert json.loads(await reader.readline()) == {"error": "request is not JSON"}
        writer.close()
        assert state["throttle"] == 1.0
    finally:
        server.close()


def test_no_socket_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="no node is running"):
        control.request(tmp_path / "absent.sock", {"cmd": "status"})


def can_run_as_nobody() -> bool:
    if os.getuid() != 0:
        return False
    try:
        probe = subprocess.run([sys.executable, "-c", "import loadbalancer.control"],
                               user=NOBODY, capture_output=True)
    except OSError:
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not can_run_as_nobody(), reason="needs root and an interpreter others can run")
async def test_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run" / "master.sock"
    os.chmod(tmp_path, 0o755)  # only the runtime directory's own mode may keep others out
    server, _ = await serving(path)
    script = ("import pathlib, sys\nfrom loadbalancer import control\n"
              f"try:\n    control.request(pathlib.Path({str(path)!r}), {{'cmd': 'status'}})\n"
              "except control.ControlError as error:\n    print(error)\n    sys.exit(3)\n")
    try:
        result = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", script],
                                         user=NOBODY, capture_output=True, text=True)
    finally:
        server.close()
    assert result.returncode == 3, result.stderr
    assert "permission denied" in result.stdout
