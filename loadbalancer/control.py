"""The local control channel: a Unix socket only this user can reach.

The socket lives in a directory of mode 0700 and has mode 0600 itself; the
server also checks the caller's uid (SO_PEERCRED) where the platform has it.
Server and client both refuse a directory that is not theirs alone, and the
client a socket that is not its user's: in a shared /tmp, another user could
have made either in advance, to read the commands or to answer them.
One JSON object per line each way: ``{"cmd": "status"}`` or
``{"cmd": "throttle", "value": 0.5}``, answered by an object holding either
the result or ``"error"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024


class ControlError(RuntimeError):
    """The node cannot be reached, or refused the command."""


def socket_path(runtime_dir: Path, role: str) -> Path:
    return runtime_dir / f"{role}.sock"


def _unsafe(path: Path, problem: str, fix: str = "remove it") -> ControlError:
    return ControlError(f"the control directory {path} {problem}: {fix}, or set runtime_dir "
                        "in the config to a directory of your own")


def private_directory(path: Path, *, create: bool) -> int:
    """A descriptor open on ``path``, checked to be a real directory of this user's that no
    one else may enter; with ``create`` it is made (mode 0700) when missing, and its parents
    with the usual modes: only the last component is ours. Without ``create`` a missing one
    raises FileNotFoundError; one that is not safe raises ControlError."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)  # never follows a symbolic link: one there is "existing"
    try:
        # O_NOFOLLOW: a symbolic link is refused, not followed to whatever it names.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        raise ControlError(f"permission denied on {path}: it belongs to another user") from None
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):  # a link gives either, by platform
            raise
        raise _unsafe(path, "is a symbolic link" if path.is_symlink()
                      else "is not a directory") from None
    info = os.fstat(fd)  # of what was opened: nothing can be swapped in between
    if info.st_uid != os.getuid():
        os.close(fd)
        raise _unsafe(path, f"belongs to uid {info.st_uid}, not to uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        raise _unsafe(path, f"is open to others (mode {stat.S_IMODE(info.st_mode):04o})",
                      f"chmod 700 {path}")
    return fd


def _inside(directory: int, name: str) -> str:
    """``name`` in the directory open as ``directory``, by its descriptor, not its path: once
    checked, the directory cannot be swapped for another before we bind or connect (Linux's
    /proc/self/fd; it also keeps the address within sun_path's 108 bytes)."""
    return f"/proc/self/fd/{directory}/{name}"


def listening(runtime_dir: Path, roles: Iterable[str]) -> list[str]:
    """Those of ``roles`` with a control socket in ``runtime_dir``; ControlError if the
    directory is not safe."""
    try:
        directory = private_directory(runtime_dir, create=False)
    except FileNotFoundError:
        return []
    try:
        return [role for role in roles
                if os.path.lexists(_inside(directory, socket_path(runtime_dir, role).name))]
    finally:
        os.close(directory)


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def _not_json(constant: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not: no command takes them.
    raise ValueError(constant)


def _answer(line: bytes, handler: Handler) -> dict[str, Any]:
    try:
        request = json.loads(line, parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        return {"error": "request is not JSON"}
    if not isinstance(request, dict):
        return {"error": "request must be a JSON object"}
    return handler(request)


async def serve(path: Path, handler: Handler) -> asyncio.AbstractServer:
    """Answer commands on the socket ``path``; ControlError if its directory is not safe."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer) not in (None, os.getuid()):
                answer = {"error": "permission denied"}
            else:
                answer = _answer(await reader.readline(), handler)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that misbehaves gets nothing
        finally:
            writer.close()

    directory = private_directory(path.parent, create=True)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=directory)  # a socket left by a node that died
        old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            return await asyncio.start_unix_server(client, _inside(directory, path.name),
                                                   limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
    finally:
        os.close(directory)


def _check_socket(directory: int, path: Path) -> None:
    try:
        info = os.stat(path.name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        raise ControlError(f"no node is running ({path} does not exist)") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError(f"{path} is not a socket, so not a node's: remove it")
    if info.st_uid != os.getuid():
        raise ControlError(f"{path} belongs to uid {info.st_uid}, not to uid {os.getuid()}: "
                           "it is not your node's; remove it")


def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the node at ``path`` and return its answer."""
    try:
        directory = private_directory(path.parent, create=False)
    except FileNotFoundError:
        raise ControlError(f"no node is running ({path} does not exist)") from None
    try:
        _check_socket(directory, path)
        return _exchange(_inside(directory, path.name), path, message, timeout)
    finally:
        os.close(directory)


def _exchange(address: str, path: Path, message: dict[str, Any],
              timeout: float) -> dict[str, Any]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(json.dumps(message).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(f"no node is running ({path} does not exist)") from None
    except ConnectionRefusedError:
        raise ControlError(f"no node is running ({path} refuses connections)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}: it belongs to another user") from None
    except OSError as error:
        raise ControlError(f"cannot reach the node at {path}: {error}") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError(f"the node at {path} sent an unreadable answer") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the node at {path} sent an unreadable answer")
    if "error" in answer:
        raise ControlError(str(answer["error"]))
    return answer
