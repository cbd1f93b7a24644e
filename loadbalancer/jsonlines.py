"""A map's inputs and outputs as JSON lines, the form people read and write.

Inputs: one job a line (blank lines are skipped and do not count). A JSON array
is the positional arguments, an object the keyword arguments, any other value
the single argument; bytes and arrays have a tagged JSON form
(:func:`loadbalancer.jsonform.to_json`). The whole file is read, checked and
encoded once at the start, so a bad line is one error before anything runs, not
a failure an hour in. Encoded inputs stay in memory up to a budget; beyond it they
wait in a temporary file and are read back, not parsed again, when a job is sent:
parsing a large input's JSON line again took half the master's time when it handed
over a map of 1 MiB inputs, and what runs is what was checked even if the file
changes meanwhile.

Output: one line a job, in input order: ``{"index": i, "result": ...}``, or
``{"index": i, "error": "Type: message", "traceback": "...", "attempts": n}``.
A line is written as soon as its job and every earlier one have their final
outcome. An outcome that arrives early waits in memory up to a budget and
beyond it in the journal, where it is read back when its turn comes, so the
master's memory does not grow with the results of a long map.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from loadbalancer import codec, jsonform
from loadbalancer.journal import Entry

STDOUT = "standard output"
HELD_INPUTS = 64 * 2**20  # bytes of encoded inputs kept in memory
HELD_OUTPUTS = 16 * 2**20  # bytes of early outcomes kept in memory; the rest wait in the journal
# Lines written in one go: when a late job frees a long run of early ones, they are written
# a slice at a time, between other work, not in one long turn of the event loop.
WRITE_SLICE = 2000
ENTRY_OVERHEAD = 96  # what an entry costs besides its bytes (object, index, dict slot)
NO_OFFSET = -1  # no early outcome waits in the journal for this index


class InputError(ValueError):
    """An inputs file that cannot be used; the message names the file and line."""


class Inputs:
    """The calls of a map, one per non-blank line of a JSON-lines file."""

    def __init__(self, lines: Iterable[bytes], name: str) -> None:
        self.name = name
        self._held: list[bytes | None] = []  # by job; None: in the spool
        self._spool: BinaryIO | None = None  # made when the first input goes beyond the budget
        self._starts = array("q")  # by job: where its encoded input begins in the spool
        self._ends = array("q")
        self.sha256 = self._index(lines)

    @classmethod
    def open(cls, path: str) -> Inputs:
        """The inputs in ``path``, or on standard input for ``-``."""
        if path == "-":
            return cls(sys.stdin.buffer, "standard input")
        try:
            with Path(path).open("rb") as file:
                return cls(file, path)
        except OSError as error:
            raise InputError(f"inputs {path}: {error.strerror}") from None

    @property
    def count(self) -> int:
        return len(self._held)

    def _index(self, lines: Iterable[bytes]) -> str:
        digest = hashlib.sha256()
        held = 0
        for number, line in enumerate(lines, start=1):
            digest.update(line)
            if line.strip():
                data = self._encode(line, number)
                if held + len(data) + ENTRY_OVERHEAD <= HELD_INPUTS:
                    held += len(data) + ENTRY_OVERHEAD
                    self._held.append(data)
                    start = end = 0
                else:
                    self._held.append(None)
                    start = self._spooled(data)
                    end = start + len(data)
                self._starts.append(start)
                self._ends.append(end)
        if self._spool is not None:
            with self._spooling():
                self._spool.flush()  # job_data reads the file beneath the buffer
        return digest.hexdigest()

    def _encode(self, line: bytes, number: int) -> bytes:
        try:
            return codec.encode_call(*jsonform.parse_call(line.decode()))
        except UnicodeDecodeError:
            raise InputError(f"{self.name} line {number}: not UTF-8 text") from None
        except codec.CodecError as error:
            raise InputError(f"{self.name} line {number}: {error}") from None

    def _spooled(self, data: bytes) -> int:
        """Where ``data`` begins in the spool, having written it there."""
        with self._spooling():
            if self._spool is None:
                self._spool = tempfile.TemporaryFile()  # noqa: SIM115  (lives as the inputs do)
            start = self._spool.tell()
            self._spool.write(data)
        return start

    @contextmanager
    def _spooling(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            raise InputError(f"{self.name}: inputs beyond {HELD_INPUTS // 2**20} MiB wait in a "
                             f"temporary file ({tempfile.gettempdir()}): "
                             f"{error.strerror}") from None

    def job_data(self, job: int) -> bytes:
        """Job ``job``'s input, encoded."""
        held = self._held[job]
        if held is not None:
            return held
        assert self._spool is not None
        start = self._starts[job]
        return os.pread(self._spool.fileno(), self._ends[job] - start, start)


def output_line(job: int, entry: Entry) -> str:
    """The output line of job ``job``'s final outcome."""
    if isinstance(entry, tuple):
        failure, attempts = entry
        return json.dumps({"index": job, "error": failure.line(),
                           "traceback": failure.traceback, "attempts": attempts})
    try:
        value = jsonform.to_json(codec.decode(entry))
    except codec.CodecError as error:  # a peer's result we cannot read is this job's error
        return json.dumps({"index": job, "error": f"CodecError: {error}", "traceback": "",
                           "attempts": 1})
    return json.dumps({"index": job, "result": value}, allow_nan=False)


class Output:
    """Outcomes as JSON lines in input order (see the module's docstring)."""

    def __init__(self, stream: IO[str] | None, name: str) -> None:
        self.name = name
        self._file = stream  # None: whatever sys.stdout is when a line is written
        # Where an outcome that waits by its offset is read back from (the journal's read).
        self.read_back: Callable[[int], tuple[int, Entry]] | None = None
        self.written = 0  # the next index to write
        # An early outcome waits in _early while the budget lasts, else as its journal
        # offset in _offsets (by index, NO_OFFSET where none): eight bytes a job, where a
        # dict of the half a map the slave ran early would cost a hundred.
        self._early: dict[int, Entry] = {}
        self._offsets = array("q")
        self._held = 0

    @classmethod
    def open(cls, path: str) -> Output:
        """Output to ``path``, or standard output for ``-``; checked now, so that a run does
        not end without a place for its results."""
        if path == "-":
            # Looked up at each write: the dashboard puts its own sys.stdout in place, which
            # prints lines above the live view.
            return cls(None, STDOUT)
        try:
            return cls(Path(path).open("w", encoding="utf-8"), path)
        except OSError as error:
            raise InputError(f"output {path}: {error.strerror}") from None

    def put(self, job: int, entry: Entry | None, offset: int | None) -> None:
        """Job ``job``'s final outcome (None: read it back from ``offset`` when needed).
        Written at once if every earlier one is; the run it frees, a slice at a time."""
        size = _size(entry)
        if entry is None or (offset is not None and self._held + size > HELD_OUTPUTS):
            assert offset is not None
            if len(self._offsets) <= job:  # jobs are the ledger's: the array stays bounded
                self._offsets.extend(array("q", [NO_OFFSET]) * (job + 1 - len(self._offsets)))
            self._offsets[job] = offset
        else:
            self._early[job] = entry
            self._held += size
        self.drain()

    def drain(self) -> bool:
        """Write up to WRITE_SLICE lines that are due; whether more are due."""
        for _ in range(WRITE_SLICE):
            entry = self._take(self.written)
            if entry is None:
                return False
            self._write(self.written, entry)
        return self._due(self.written)

    def _due(self, job: int) -> bool:
        return job in self._early or (job < len(self._offsets)
                                      and self._offsets[job] != NO_OFFSET)

    def _take(self, job: int) -> Entry | None:
        """Job ``job``'s outcome if it has come, no longer waiting."""
        entry = self._early.pop(job, None)
        if entry is not None:
            self._held -= _size(entry)
            return entry
        if not self._due(job):
            return None
        offset, self._offsets[job] = self._offsets[job], NO_OFFSET
        assert self.read_back is not None
        return self.read_back(offset)[1]

    @property
    def _stream(self) -> IO[str]:
        return sys.stdout if self._file is None else self._file

    def _write(self, job: int, entry: Entry) -> None:
        self._stream.write(output_line(job, entry) + "\n")
        self.written = job + 1

    def flush(self) -> None:
        if not self._stream.closed:  # the journal's sync may come after the end
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()


def _size(entry: Entry | None) -> int:
    if entry is None:
        return 0
    if isinstance(entry, tuple):
        return len(entry[0].traceback) + len(entry[0].message) + ENTRY_OVERHEAD
    return len(entry) + ENTRY_OVERHEAD
