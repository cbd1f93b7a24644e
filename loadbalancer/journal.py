"""The master's journal: what is finished and who holds what, on disk.

An append-only file of records ``!IBI`` (length, type, CRC32 of the body)
then the body. The first record names the workload; then come results
(zstandard-compressed) and ownership changes. A master killed mid-write
leaves at most a torn last record, which the CRC finds: reading stops there
and the file is cut back to its last whole record before appending again.

Appends go to the page cache at once; ``sync`` (run every second off the
event loop, and at the end) makes them durable, so a crash loses at most the
last second of results, which are then computed again.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from loadbalancer.messages import WorkloadSpec
from loadbalancer.wire import Role

RECORD = struct.Struct("!IBI")
HEADER, RESULT, OWNERS = 1, 2, 3
MAGIC = "lb journal 1"
_JOB = struct.Struct("!I")


class JournalError(ValueError):
    """A journal that cannot be used for this run."""


@dataclass
class Recovered:
    results: dict[int, bytes] = field(default_factory=dict)
    owners: dict[int, Role] = field(default_factory=dict)


def _body_records(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """The whole records in ``data`` and the offset where they end."""
    records, offset = [], 0
    while offset + RECORD.size <= len(data):
        length, kind, crc = RECORD.unpack_from(data, offset)
        body = data[offset + RECORD.size:offset + RECORD.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            break  # torn by a crash: everything before it stands
        records.append((kind, body))
        offset += RECORD.size + length
    return records, offset


class Journal:
    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file = file
        self._compressor = zstandard.ZstdCompressor(level=1)

    @classmethod
    def create(cls, path: Path, spec: WorkloadSpec) -> Journal:
        if path.exists():
            raise JournalError(f"journal {path} holds an unfinished run: resume it with "
                               "--resume, or delete it to start over")
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path, path.open("xb"))
        journal._append(HEADER, json.dumps(
            {"magic": MAGIC, "workload": {"name": spec.name, "params": spec.params}}).encode())
        journal.sync()
        return journal

    @classmethod
    def resume(cls, path: Path, spec: WorkloadSpec) -> tuple[Journal, Recovered]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise JournalError(f"no journal at {path} to resume") from None
        records, end = _body_records(data)
        _check_header(path, records, spec)
        recovered = Recovered()
        for kind, body in records[1:]:
            if kind == RESULT:
                (job,) = _JOB.unpack_from(body)
                recovered.results[job] = zstandard.ZstdDecompressor().decompress(body[4:])
            elif kind == OWNERS:
                for job, role in json.loads(body):
                    recovered.owners[job] = Role(role)
        file = path.open("r+b")
        file.truncate(end)
        file.seek(end)
        return cls(path, file), recovered

    def _append(self, kind: int, body: bytes) -> None:
        self._file.write(RECORD.pack(len(body), kind, zlib.crc32(body)) + body)

    def result(self, job: int, data: bytes) -> None:
        self._append(RESULT, _JOB.pack(job) + self._compressor.compress(data))

    def owners(self, jobs: list[int], role: Role) -> None:
        if not jobs:
            return
        self._append(OWNERS, json.dumps([[job, int(role)] for job in jobs]).encode())

    def sync(self) -> None:
        """Make everything appended so far durable (blocking: call off the event loop)."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self, *, finished: bool) -> None:
        self.sync()
        self._file.close()
        if finished:
            self.path.unlink()  # the run is verified: nothing left to resume


def _check_header(path: Path, records: list[tuple[int, bytes]], spec: WorkloadSpec) -> None:
    try:
        kind, body = records[0]
        header: dict[str, Any] = json.loads(body)
        ok = kind == HEADER and header.get("magic") == MAGIC
    except (IndexError, ValueError):
        ok = False
    if not ok:
        raise JournalError(f"{path} is not an lb journal")
    written = header.get("workload", {})
    if written != {"name": spec.name, "params": spec.params}:
        raise JournalError(f"journal {path} was written for workload {written.get('name')!r} "
                           f"{written.get('params')}, not {spec.name!r} {spec.params}: "
                           "use the config of that run, or delete the journal")
