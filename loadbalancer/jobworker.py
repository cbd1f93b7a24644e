"""A worker process's main: runs the node's function jobs, one call after another.

:class:`loadbalancer.pool.WorkerProcess` starts it as ``python -m loadbalancer.jobworker``;
it is not meant to be run by hand. Jobs run in a process, not a thread, because a user's
pure-Python function holds the GIL and never calls back: in a thread it could neither be
paused nor run in parallel with the others. A process can be stopped and continued by the
parent with signals, and killed when its job is taken back.

Requests come on stdin, outcomes go back on stdout, but both pipes move to fds of their own
at start, fd 0 to /dev/null and fd 1 to stderr, so whatever user code reads or prints (from
Python or from C) goes to stderr and cannot corrupt a frame. The private fds are not
inherited by the user's subprocesses, and are closed in forked ones, so that the child's death
closes the outcome pipe, which is how the parent learns of it.

The frames (little-endian; the layouts are the structs below):

- request: ``BATCH`` (the number of calls), then per call ``CALL``, the module spec and the
  function name in UTF-8, and the codec's ``encode_call`` bytes, which are read straight
  into a bytearray of their own, so the arrays that ``decode_call`` gives are writable views
  of it, never copies.
- outcome: ``OUTCOME``, then the codec's bytes of the return value, or a failure (``TEXTS``,
  then its type, message and traceback in UTF-8). Start and end are ``time.monotonic()``,
  system-wide on Linux, so the parent compares them with its own clock.

Tiny calls do not get a write each: their outcome frames wait in an outbox until about 2 ms
passed since the last write, the outbox holds 64 KiB or the batch ends, so a batch of tiny
calls costs the parent one wake-up rather than one per call. The outbox lives in memory
shared with the parent (``RUNNING``, ``OUTBOX``, then the frames), which also names the call
running and when it started: when the child dies, the parent still has the outcomes that
were not written yet, and knows which call killed the child.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import io
import json
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from types import ModuleType
from typing import Any

from loadbalancer import arrays, codec, functions
from loadbalancer.functions import import_spec, plain_function
from loadbalancer.outcome import Failure

ENV = "LB_JOBWORKER"  # JSON from the parent: its sys.path, its pid, the shared page's fd
BATCH = struct.Struct("<I")  # the number of calls that follow
CALL = struct.Struct("<qIII")  # job, the lengths of the spec, the function name and the args
OUTCOME = struct.Struct("<q?ddQ")  # job, ok, start, end, the length of the body
TEXTS = struct.Struct("<III")  # a failure's body: the lengths of its type, message, traceback
# The page shared with the parent: RUNNING, OUTBOX, then the outbox's frames.
RUNNING = struct.Struct("<qd")  # the index in its batch of the call running, its start
OUTBOX = struct.Struct("<qQ")  # the index of the outbox's first outcome, its length in bytes
FRAMES = RUNNING.size + OUTBOX.size  # where the frames start
FLUSH_SECONDS = 0.002
FLUSH_BYTES = 64 * 1024
LARGE = 32 * 1024  # a body this long goes straight to the pipe, not through the outbox
PAGE_SIZE = FRAMES + FLUSH_BYTES + OUTCOME.size + LARGE  # the outbox never holds more
READ_BUFFER = 64 * 1024
PR_SET_PDEATHSIG = 1

# Leading traceback frames that are the machinery's, not the user's: left out of a Failure.
_OWN_FILES = frozenset(
    {__file__, functions.__file__, codec.__file__, arrays.__file__, importlib.__file__}
)


def pack_failure(failure: Failure) -> bytes:
    texts = [failure.type.encode(), failure.message.encode(), failure.traceback.encode()]
    return TEXTS.pack(*map(len, texts)) + b"".join(texts)


def read_failure(body: bytes) -> Failure:
    sizes = TEXTS.unpack_from(body)
    texts, position = [], TEXTS.size
    for size in sizes:
        texts.append(body[position:position + size].decode())
        position += size
    return Failure(*texts)


def _own_frames(error: BaseException) -> int:
    """How many of the traceback's outermost frames are the worker's, the codec's or the
    import machinery's, so that the Failure starts at the user's first frame."""
    count, frame = 0, error.__traceback__
    while frame is not None and _is_own(frame.tb_frame.f_code.co_filename):
        count, frame = count + 1, frame.tb_next
    return count


def _is_own(filename: str) -> bool:
    return filename in _OWN_FILES or filename.startswith("<frozen importlib.")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Outbox:
    """Outcome frames on their way to the parent: tiny ones wait in the shared page to go
    together, published a complete frame at a time, so that the parent has them if we die."""

    def __init__(self, fd: int, page: mmap.mmap) -> None:
        self.fd = fd
        self.page = page
        self.first = 0  # the index of the outbox's first outcome
        self.length = 0  # bytes of frames in the outbox
        self.flushed = 0.0  # when it was last written, or its batch started

    def add(self, index: int, job: int, ok: bool, body: bytes, start: float, end: float) -> None:
        header = OUTCOME.pack(job, ok, start, end, len(body))
        if len(body) >= LARGE:  # written as it is, never copied into the outbox
            self.flush(end)
            _write_all(self.fd, header)
            _write_all(self.fd, body)
            return
        if not self.length:
            self.first = index
        position = FRAMES + self.length
        self.page[position:position + len(header)] = header
        self.page[position + len(header):position + len(header) + len(body)] = body
        self.publish(self.length + len(header) + len(body))
        if self.length >= FLUSH_BYTES or end - self.flushed >= FLUSH_SECONDS:
            self.flush(end)

    def flush(self, now: float) -> None:
        if self.length:
            _write_all(self.fd, memoryview(self.page)[FRAMES:FRAMES + self.length])
            self.publish(0)
        self.flushed = now

    def publish(self, length: int) -> None:
        self.length = length
        OUTBOX.pack_into(self.page, RUNNING.size, self.first, length)


class _Worker:
    def __init__(self, page: mmap.mmap, outbox: _Outbox) -> None:
        self.page = page
        self.outbox = outbox
        self.modules: dict[str, ModuleType] = {}  # by spec: each is imported once
        self.functions: dict[tuple[str, str], Callable[..., Any]] = {}  # by spec and name

    def serve(self, requests: io.BufferedIOBase) -> bool:
        """Run one batch of calls; False at the end of the requests."""
        header = requests.read(BATCH.size)
        if len(header) < BATCH.size:
            return False
        (count,) = BATCH.unpack(header)
        self.outbox.flushed = time.monotonic()  # waiting for the batch is no reason to write
        for index in range(count):
            job, spec_size, function_size, args_size = CALL.unpack(_read(requests, CALL.size))
            names = _read(requests, spec_size + function_size)
            args = bytearray(args_size)
            if requests.readinto(args) != args_size:
                raise EOFError
            start = time.monotonic()
            RUNNING.pack_into(self.page, 0, index, start)
            ok, body = self.call(names[:spec_size].decode(), names[spec_size:].decode(), args)
            self.outbox.add(index, job, ok, body, start, time.monotonic())
        self.outbox.flush(time.monotonic())
        return True

    def call(self, spec: str, name: str, args: bytearray) -> tuple[bool, bytes]:
        """The encoded return value, or the failure, of one call."""
        try:
            function = self.function(spec, name)
            positional, keywords = codec.decode_call(args)
            return True, codec.encode(function(*positional, **keywords))
        except BaseException as error:  # all that user code raises, sys.exit() too, is a failure
            return False, pack_failure(Failure.of(error, skip=_own_frames(error)))

    def function(self, spec: str, name: str) -> Callable[..., Any]:
        function = self.functions.get((spec, name))
        if function is None:
            function = self.functions[spec, name] = plain_function(self.module(spec), name)
        return function

    def module(self, spec: str) -> ModuleType:
        module = self.modules.get(spec)
        if module is None:  # a module that failed to import is tried again at its next call
            module = self.modules[spec] = import_spec(spec)
        return module


def _read(stream: io.BufferedIOBase, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _private_fds() -> tuple[int, int]:
    """The request and outcome pipes on fds of their own (not inherited), stdin from
    /dev/null and stdout to stderr: what user code reads or prints cannot touch the frames."""
    requests, outcomes = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # prints show up as they happen
    return requests, outcomes


def _die_with(parent: int) -> None:
    """Die with the parent: Linux kills us when the thread that started us ends (the event
    loop's, which lives as long as the node); elsewhere the end of stdin tells us."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def _close(*fds: int) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def main() -> None:
    setup: dict[str, Any] = json.loads(os.environ.pop(ENV))
    _die_with(setup["parent"])
    requests, outcomes = _private_fds()
    # A process forked by user code must neither hold the pipes open after our death
    # nor, if it returns into this loop, take requests meant for us.
    os.register_at_fork(after_in_child=functools.partial(_close, requests, outcomes))
    sys.path[:] = setup["path"]  # what the parent can import, we can too
    page = mmap.mmap(setup["page"], PAGE_SIZE)
    os.close(setup["page"])
    worker = _Worker(page, _Outbox(outcomes, page))
    with io.BufferedReader(io.FileIO(requests, "rb"), READ_BUFFER) as stream, \
            suppress(EOFError, BrokenPipeError):  # the parent is gone
        while worker.serve(stream):
            pass


if __name__ == "__main__":
    main()
