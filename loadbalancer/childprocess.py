"""The parent's handle on one child of :class:`loadbalancer.pool.WorkerProcess`: starting it,
signalling its process group, reading its outcome frames and the page of memory it shares.

The child is :mod:`loadbalancer.jobworker`, whose module docstring describes the frames and
the page.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import signal
import sys
import tempfile
from contextlib import suppress
from dataclasses import dataclass

from loadbalancer.jobworker import ENV, FRAMES, OUTBOX, OUTCOME, PAGE_SIZE, RUNNING

Frame = tuple[int, bool, float, float, bytes]  # job, ok, start, end, body
READ_CHUNK = 1 << 20  # bytes of outcome frames taken from the pipe at a time, at most
EXIT_GRACE = 1.0  # seconds a child that closed its outcome pipe gets to exit before the kill


class Frames:
    """Outcome frames out of the child's byte stream, as the chunks come."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        position = 0
        with memoryview(self._buffer) as view:
            while len(view) - position >= OUTCOME.size:
                job, ok, start, end, size = OUTCOME.unpack_from(view, position)
                body = position + OUTCOME.size
                if body + size > len(view):
                    break
                frames.append((job, ok, start, end, bytes(view[body:body + size])))
                position = body + size
        del self._buffer[:position]
        return frames


@dataclass(slots=True)
class ChildProcess:
    """One child, as :func:`spawn` started it."""

    process: asyncio.subprocess.Process
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    page: mmap.mmap  # shared: the call running, the outcomes not written yet
    batches: int = 0  # sent to it so far

    def begin_batch(self) -> None:
        """Clear the page for a batch about to be sent."""
        self.batches += 1
        RUNNING.pack_into(self.page, 0, -1, 0.0)
        OUTBOX.pack_into(self.page, RUNNING.size, 0, 0)

    async def read(self) -> bytes:
        """The next bytes of outcome frames; empty once the child closed its pipe."""
        return await self.stdout.read(READ_CHUNK)

    def running(self) -> tuple[int, float]:
        """The index in the batch of the call running, -1 before the first, and when it
        started."""
        index, start = RUNNING.unpack_from(self.page)
        return index, start

    def signal(self, number: int) -> None:
        """Signal the child's process group, so that a job's own subprocesses stop and die
        with it. By pid rather than Popen.send_signal, which polls and so may reap a dead
        child behind the back of asyncio's child watcher (that then reports status 255)."""
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)

    async def exit_status(self) -> int:
        """Its exit status once it is gone; one that closed its pipe but lives on is killed."""
        try:
            status = await asyncio.wait_for(asyncio.shield(self.process.wait()), EXIT_GRACE)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            status = await self.process.wait()
        return status

    def unwritten(self, answered: int) -> list[Frame]:
        """The outbox's frames of the calls after the first ``answered``: read it once the
        child is gone (it may have died while writing some of them)."""
        first, length = OUTBOX.unpack_from(self.page, RUNNING.size)
        return Frames().feed(self.page[FRAMES:FRAMES + length])[max(0, answered - first):]

    async def end(self) -> None:
        self.signal(signal.SIGKILL)
        await self.exit_status()


async def spawn(stderr: int | None) -> ChildProcess:
    """A fresh child, its stderr to ``stderr`` (None: ours), in a process group of its own."""
    with tempfile.TemporaryFile() as file:
        file.truncate(PAGE_SIZE)
        setup = {"path": sys.path, "parent": os.getpid(), "page": file.fileno()}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadbalancer.jobworker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, ENV: json.dumps(setup)}, pass_fds=(file.fileno(),),
            start_new_session=True, limit=READ_CHUNK)
        page = mmap.mmap(file.fileno(), PAGE_SIZE)
    assert process.stdin is not None and process.stdout is not None
    return ChildProcess(process, process.stdin, process.stdout, page)


def describe(status: int) -> str:
    """An exit status as a person reads it."""
    if status >= 0:
        return f"exit status {status}"
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"
