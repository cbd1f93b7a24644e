"""The master's journal: what is finished and who holds what, on disk.

An append-only file of records ``!IBI`` (length, type, CRC32 of the body) then
the body. The first record says what the run is (its workload, or its function
and inputs); then come final outcomes (a result, or a failure after its last
attempt) and ownership changes. A result's body is the job number, a codec
byte and the result, zstandard-compressed when that pays.

Reading never trusts the file. A record whose checksum fails is skipped, the
reader finds the next whole record, and what was lost is reported with its
offset; a record with a good checksum but bad contents is skipped the same
way; decompression is bounded. A damaged journal is kept aside (``.damaged``)
before appending goes on, so nothing is cut away for good. A lost result is
simply computed again.

Appends go to the page cache at once; ``sync`` (run every second off the
event loop, and at the end) makes them durable, so a crash loses at most the
last second of results, which are then computed again.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from loadbalancer.outcome import Failure
from loadbalancer.wire import Role

RECORD = struct.Struct("!IBI")
HEADER, RESULT, OWNERS, FAILURE = 1, 2, 3, 4
MAGIC = "lb journal 2"
MAX_RECORD = 80 * 2**20  # the largest result the messages carry, and room for its framing
_JOB = struct.Struct("!QB")  # job, codec
RAW, ZSTD = 0, 1
COMPRESS_FROM = 256  # bytes: smaller results are stored as they are


class JournalError(ValueError):
    """A journal that cannot be used for this run."""


# A job's final outcome as the journal keeps it: its result, or its failure and attempts.
Entry = bytes | tuple[Failure, int]


@dataclass
class Recovered:
    done: dict[int, int] = field(default_factory=dict)  # job -> offset of its final record
    owners: dict[int, Role] = field(default_factory=dict)
    damage: list[str] = field(default_factory=list)  # one line per stretch that was skipped


@dataclass
class _Scan:
    records: list[tuple[int, int, bytes]]  # (offset, type, body) of every whole record
    damaged: list[tuple[int, int]]  # (start, end) of stretches skipped between records
    end: int  # where the whole records end: a torn last record (a crash mid-write) is cut here


def _scan(data: bytes) -> _Scan:
    """After a bad record, reading resumes at the next offset where a record with a valid
    checksum starts. A bad record that nothing valid follows and whose stated length runs
    past the end was torn by a crash: that is no damage, only an unfinished write."""
    scan = _Scan([], [], 0)
    offset = 0
    while offset + RECORD.size <= len(data):
        record = _record_at(data, offset)
        if record is not None:
            scan.records.append((offset, record[0], record[1]))
            offset += RECORD.size + len(record[1])
            scan.end = offset
            continue
        start = offset
        offset += 1
        while offset + RECORD.size <= len(data) and _record_at(data, offset) is None:
            offset += 1
        if offset + RECORD.size > len(data):  # nothing valid follows
            if start + RECORD.size + RECORD.unpack_from(data, start)[0] > len(data):
                return scan  # torn
            offset = len(data)
        scan.damaged.append((start, offset))
    if offset < len(data) and scan.damaged:
        scan.damaged.append((offset, len(data)))
    return scan


def _record_at(data: bytes, offset: int) -> tuple[int, bytes] | None:
    length, kind, crc = RECORD.unpack_from(data, offset)
    if kind not in (HEADER, RESULT, OWNERS, FAILURE) or length > MAX_RECORD:
        return None
    body = data[offset + RECORD.size:offset + RECORD.size + length]
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    return kind, body


def decode_entry(kind: int, body: bytes) -> tuple[int, Entry]:
    """A final record's job and outcome; ValueError if its contents are bad."""
    if len(body) < _JOB.size:
        raise ValueError("record too short")
    job, codec = _JOB.unpack_from(body)
    data = body[_JOB.size:]
    if codec == ZSTD:
        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_RECORD)
        except zstandard.ZstdError as error:
            raise ValueError(f"zstd: {error}") from None
    elif codec != RAW:
        raise ValueError(f"codec {codec}")
    if kind == RESULT:
        return job, data
    fields = json.loads(data)
    if not (isinstance(fields, list) and len(fields) == 4
            and all(isinstance(text, str) for text in fields[:3])
            and isinstance(fields[3], int) and fields[3] > 0):
        raise ValueError("bad failure record")
    return job, (Failure(*fields[:3]), fields[3])


def _runs(jobs: Iterable[int]) -> list[list[int]]:
    """Jobs as [first, last + 1] runs: the jobs that move are mostly consecutive (taken
    from the tail of the queue), so half a million of them are a few runs, not 5 MB."""
    runs: list[list[int]] = []
    for job in jobs:
        if runs and runs[-1][1] == job:
            runs[-1][1] = job + 1
        else:
            runs.append([job, job + 1])
    return runs


def _owners(body: bytes) -> dict[int, Role]:
    record = json.loads(body)
    if not (isinstance(record, dict) and isinstance(record.get("runs"), list)):
        raise ValueError("owners record is not an object with runs")
    role = Role(record["role"])
    owners = {}
    for first, stop in record["runs"]:
        if not (isinstance(first, int) and isinstance(stop, int) and 0 <= stop - first <= 2**32):
            raise ValueError("bad run in an owners record")
        owners.update(dict.fromkeys(range(first, stop), role))
    return owners


class Journal:
    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file = file
        self._compressor = zstandard.ZstdCompressor(level=1)
        self._closing = threading.Lock()

    @staticmethod
    def check_free(path: Path) -> None:
        """JournalError if a journal of an unfinished run is in the way."""
        if path.exists():
            raise JournalError(f"journal {path} holds an unfinished run: resume it with "
                               "--resume, or delete it to start over")

    @classmethod
    def create(cls, path: Path, run: dict[str, Any]) -> Journal:
        """A new journal for the run described by ``run`` (JSON)."""
        cls.check_free(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            journal = cls(path, path.open("x+b"))
        except OSError as error:
            raise JournalError(f"cannot create the journal {path}: {error.strerror}") from None
        journal._append(HEADER, json.dumps({"magic": MAGIC, "run": run}).encode())
        journal.sync()
        return journal

    @classmethod
    def resume(cls, path: Path, run: dict[str, Any]) -> tuple[Journal, Recovered]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise JournalError(f"no journal at {path} to resume") from None
        except OSError as error:
            raise JournalError(f"cannot read the journal {path}: {error.strerror}") from None
        scan = _scan(data)
        _check_header(path, scan.records, run)
        recovered = Recovered(damage=[f"bytes {start}..{end} are damaged and were skipped"
                                      for start, end in scan.damaged])
        file = path.open("r+b")
        if scan.damaged:
            # Keep the file as it was aside, and lay the good records out again.
            shutil.copyfile(path, path.with_name(path.name + ".damaged"))
            file.truncate(0)
        else:
            file.truncate(scan.end)
            file.seek(scan.end)
        for offset, kind, body in scan.records:
            if scan.damaged:
                offset = file.tell()
                file.write(RECORD.pack(len(body), kind, zlib.crc32(body)) + body)
            try:
                if kind in (RESULT, FAILURE):
                    # The last final record of a job wins: one computed again after a
                    # failed check of the whole comes after the wrong one.
                    recovered.done[decode_entry(kind, body)[0]] = offset
                elif kind == OWNERS:
                    recovered.owners.update(_owners(body))
            except (ValueError, TypeError, KeyError) as error:
                recovered.damage.append(f"the record at byte {offset} is unreadable ({error})"
                                        " and was skipped")
        return cls(path, file), recovered

    def _append(self, kind: int, body: bytes) -> int:
        offset = self._file.tell()
        self._file.write(RECORD.pack(len(body), kind, zlib.crc32(body)) + body)
        return offset

    def _final(self, kind: int, job: int, data: bytes) -> int:
        codec = RAW
        if len(data) >= COMPRESS_FROM:
            packed = self._compressor.compress(data)
            if len(packed) < len(data):
                codec, data = ZSTD, packed
        return self._append(kind, _JOB.pack(job, codec) + data)

    def result(self, job: int, data: bytes) -> int:
        """Record a job's result; the record's offset, for :meth:`read`."""
        return self._final(RESULT, job, data)

    def failure(self, job: int, failure: Failure, attempts: int) -> int:
        fields = [failure.type, failure.message, failure.traceback, attempts]
        return self._final(FAILURE, job, json.dumps(fields).encode())

    def read(self, offset: int) -> tuple[int, Entry]:
        """The final record at ``offset`` (as :meth:`result` and :meth:`failure` returned)."""
        self._file.flush()
        head = os.pread(self._file.fileno(), RECORD.size, offset)
        length, kind, _ = RECORD.unpack(head)
        return decode_entry(kind, os.pread(self._file.fileno(), length, offset + RECORD.size))

    def owners(self, jobs: Sequence[int], role: Role) -> None:
        if not jobs:
            return
        self._append(OWNERS, json.dumps({"role": int(role), "runs": _runs(jobs)}).encode())

    def sync(self) -> None:
        """Make everything appended so far durable (blocking: call off the event loop)."""
        with self._closing:
            self._sync()

    def _sync(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self, *, finished: bool) -> None:
        with self._closing:  # a sync on another thread must not find it half closed
            if self._file.closed:
                return
            self._sync()
            self._file.close()
        if finished:
            self.path.unlink()  # the run is over: nothing left to resume


def _check_header(path: Path, records: list[tuple[int, int, bytes]], run: dict[str, Any]) -> None:
    try:
        _, kind, body = records[0]
        header: dict[str, Any] = json.loads(body)
        ok = kind == HEADER and isinstance(header, dict) and header.get("magic") == MAGIC
    except (IndexError, ValueError):
        ok = False
    if not ok:
        raise JournalError(f"{path} is not a journal of this version of lb")
    written = header.get("run")
    if written != run:
        raise JournalError(f"journal {path} was written for another run ({_describe(written)}),"
                           f" not this one ({_describe(run)}): use the config and inputs of "
                           "that run, or delete the journal")


def _describe(run: object) -> str:
    return json.dumps(run, sort_keys=True)[:300]
