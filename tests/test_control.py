"""The control channel: only its owner can reach it; bad values change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
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


class Impostor:
    """A socket someone else planted, answering whatever is asked as a node would."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.sendall(b'{"throttle": 0.0, "local": {"phase": "done"}}\n')

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[Path]:
    """Someone else's directory, open to all, with a socket answering as a master would."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o755)
    impostor = Impostor(theirs / "master.sock")
    yield theirs
    impostor.close()


def refused(path: Path, *words: str) -> None:
    with pytest.raises(control.ControlError) as error:
        control.request(path, {"cmd": "status"})
    assert all(word in str(error.value) for word in words), error.value


async def test_a_symlink_in_place_of_the_directory_is_refused_by_both_ends(
        tmp_path: Path, planted: Path) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.symlink_to(planted)
    with pytest.raises(control.ControlError, match="is a symbolic link: remove it"):
        await serving(runtime_dir / "master.sock")
    assert stat.S_IMODE(planted.stat().st_mode) == 0o755  # not chmodded through the link
    assert sorted(p.name for p in planted.iterdir()) == ["master.sock"]  # the impostor's only
    refused(runtime_dir / "master.sock", f"the control directory {runtime_dir}",
            "is a symbolic link", "set runtime_dir")


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701])
async def test_a_directory_open_to_others_is_refused_by_both_ends(tmp_path: Path,
                                                                 mode: int) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir()
    runtime_dir.chmod(mode)
    with pytest.raises(control.ControlError, match=f"is open to others \\(mode {mode:04o}\\)"):
        await serving(runtime_dir / "master.sock")
    assert stat.S_IMODE(runtime_dir.stat().st_mode) == mode
    assert list(runtime_dir.iterdir()) == []
    impostor = Impostor(runtime_dir / "master.sock")
    try:
        refused(runtime_dir / "master.sock", "is open to others", f"chmod 700 {runtime_dir}")
    finally:
        impostor.close()
    assert impostor.connections == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to give a directory to another user")
async def test_a_directory_of_another_user_is_refused_by_both_ends(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir(mode=0o700)
    impostor = Impostor(runtime_dir / "master.sock")
    os.chown(runtime_dir, NOBODY, NOBODY)
    try:
        with pytest.raises(control.ControlError, match=f"belongs to uid {NOBODY}, not to uid 0"):
            await serving(runtime_dir / "master.sock")
        refused(runtime_dir / "master.sock", f"belongs to uid {NOBODY}", "remove it")
    finally:
        impostor.close()
    assert impostor.connections == 0


@pytest.mark.skipif(os.getuid() != 0, reason="needs root, to give a socket to another user")
def test_a_socket_of_another_user_is_refused_by_the_client(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir(mode=0o700)
    impostor = Impostor(runtime_dir / "master.sock")
    os.chown(runtime_dir / "master.sock", NOBODY, NOBODY)
    try:
        refused(runtime_dir / "master.sock", f"belongs to uid {NOBODY}", "not your node's")
    finally:
        impostor.close()
    assert impostor.connections == 0


def test_what_is_not_a_socket_or_a_directory_is_refused(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "run"
    runtime_dir.mkdir(mode=0o700)
    (runtime_dir / "master.sock").write_text("")
    refused(runtime_dir / "master.sock", "is not a socket")
    (tmp_path / "file").write_text("")
    refused(tmp_path / "file" / "master.sock", "the control directory", "is not a directory")


async def test_the_directory_is_made_private_with_its_parents(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "a" / "b" / "run" / "master.sock"
    old = os.umask(0o022)
    try:
        server, _ = await serving(path)
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755  # only the last is ours
        assert control.listening(path.parent, ["master", "slave"]) == ["master"]
        assert control.listening(tmp_path / "none", ["master"]) == []
        answer = await asyncio.to_thread(control.request, path, {"cmd": "status"})
        assert answer == {"throttle": 1.0}
    finally:
        server.close()
