"""The local control channel: a Unix socket only this user can reach.

The socket lives in a directory of mode 0700 and has mode 0600 itself; the
server also checks the caller's uid (SO_PEERCRED) where the platform has it.
One JSON object per line each way: ``{"cmd": "status"}`` or
``{"cmd": "throttle", "value": 0.5}``, answered by an object holding either
the result or ``"error"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 * 1024


class ControlError(RuntimeError):
    """The node cannot be reached, or refused the command."""


def socket_path(runtime_dir: Path, role: str) -> Path:
    return runtime_dir / f"{role}.sock"


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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a socket left by a node that died

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

    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        server = await asyncio.start_unix_server(client, path, limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the node at ``path`` and return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
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
