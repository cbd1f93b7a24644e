"""A plain TCP stream between two processes: what the path carries with the kernel's own
transport, beside lb's goodput over the same path (benchmarks/paths.py).

    python benchmarks/tcpstream.py receive PORT BYTES   # prints "ready", then a JSON line
    python benchmarks/tcpstream.py send HOST PORT BYTES

Run as a script by path (not ``-m``), so that it imports nothing of the harness: each end
starts in a moment, in whichever network namespace ``ip netns exec`` puts it. The receiver
times the stream from the accepted connection to its last byte, so the sender's start-up
does not count; it sends random bytes in large writes (TCP does not compress; random only
so that nothing on the way could).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CHUNK = 4 * 2**20  # bytes a write or a read takes at most: large, as a bulk transfer does
TIMEOUT = 120.0
SCRIPT = Path(__file__)


def receive(port: int, total: int) -> dict[str, float | int]:
    with socket.create_server(("0.0.0.0", port), backlog=1) as server:
        print("ready", flush=True)
        server.settimeout(TIMEOUT)
        connection, _ = server.accept()
    began = time.perf_counter()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    got = 0
    with connection:
        connection.settimeout(TIMEOUT)
        while got < total:
            count = connection.recv_into(view, min(CHUNK, total - got))
            if not count:
                break
            got += count
    return {"seconds": time.perf_counter() - began, "bytes": got}


def send(host: str, port: int, total: int) -> None:
    data = memoryview(os.urandom(CHUNK))
    with socket.create_connection((host, port), timeout=TIMEOUT) as connection:
        left = total
        while left > 0:
            connection.sendall(data[:min(left, CHUNK)])
            left -= min(left, CHUNK)
        connection.shutdown(socket.SHUT_WR)
        connection.recv(1)  # until the receiver closes: everything is in


def stream(total: int, receiver_host: str, port: int,
           prefixes: tuple[Sequence[str], Sequence[str]] = ((), ())) -> dict[str, float | int]:
    """``total`` bytes from a sender process to a receiver process listening on ``port``
    at ``receiver_host``; ``prefixes``: what runs the sender and the receiver elsewhere (in
    a namespace). The receiver's seconds and bytes."""
    send_prefix, receive_prefix = prefixes
    receiver = subprocess.Popen([*receive_prefix, sys.executable, str(SCRIPT), "receive",
                                 str(port), str(total)], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP receiver did not start")
        subprocess.run([*send_prefix, sys.executable, str(SCRIPT), "send", receiver_host,
                        str(port), str(total)], check=True, timeout=TIMEOUT)
        out, _ = receiver.communicate(timeout=TIMEOUT)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    if receiver.returncode != 0:
        raise RuntimeError(f"the TCP receiver failed with {receiver.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: Sequence[str]) -> int:
    match list(argv):
        case ["receive", port, total]:
            print(json.dumps(receive(int(port), int(total))), flush=True)
        case ["send", host, port, total]:
            send(host, int(port), int(total))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
