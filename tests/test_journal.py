"""The master's journal: what it recovers, what it refuses, and how it survives damage."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import zstandard

from loadbalancer.journal import FAILURE, RECORD, RESULT, Journal, JournalError
from loadbalancer.outcome import Failure
from loadbalancer.wire import Role

RUN = {"workload": {"name": "vector", "params": {"elements": 8, "jobs": 4, "iterations": 2}}}


def outcomes(journal: Journal, done: dict[int, int]) -> dict[int, object]:
    return {job: journal.read(offset)[1] for job, offset in done.items()}


def test_results_failures_and_owners_come_back(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, RUN)
    one = journal.result(1, b"one" * 100)
    journal.failure(2, Failure("ValueError", "bad", "Traceback ..."), 3)
    journal.owners([2, 3], Role.SLAVE)
    journal.owners([3], Role.MASTER)
    assert journal.read(one) == (1, b"one" * 100)  # read back while still appending
    journal.close(finished=False)
    resumed, recovered = Journal.resume(path, RUN)
    assert outcomes(resumed, recovered.done) == {
        1: b"one" * 100, 2: (Failure("ValueError", "bad", "Traceback ..."), 3)}
    assert recovered.owners == {2: Role.SLAVE, 3: Role.MASTER}
    assert recovered.damage == []
    resumed.close(finished=True)
    assert not path.exists()


def test_a_torn_last_record_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, RUN)
    journal.result(0, b"zero")
    journal.result(2, b"two")
    journal.close(finished=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # a crash in the middle of the last write
    resumed, recovered = Journal.resume(path, RUN)
    assert outcomes(resumed, recovered.done) == {0: b"zero"}
    assert recovered.damage == []  # an unfinished write is no damage
    assert not path.with_name("j.damaged").exists()
    resumed.result(3, b"three")
    resumed.close(finished=False)
    again, recovered = Journal.resume(path, RUN)
    assert outcomes(again, recovered.done) == {0: b"zero", 3: b"three"}


def test_a_flipped_byte_costs_one_record_and_the_file_is_kept_aside(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, RUN)
    offsets = [journal.result(job, bytes([job]) * 50) for job in range(40)]
    journal.close(finished=False)
    data = bytearray(path.read_bytes())
    data[offsets[5] + RECORD.size + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    resumed, recovered = Journal.resume(path, RUN)
    assert sorted(recovered.done) == [job for job in range(40) if job != 5]
    assert outcomes(resumed, recovered.done)[39] == bytes([39]) * 50
    assert len(recovered.damage) == 1 and f"bytes {offsets[5]}.." in recovered.damage[0]
    assert path.with_name("j.damaged").read_bytes() == bytes(data)
    resumed.result(5, b"again")
    resumed.close(finished=False)
    _, recovered = Journal.resume(path, RUN)
    assert sorted(recovered.done) == list(range(40)) and recovered.damage == []


def record(kind: int, body: bytes) -> bytes:
    return RECORD.pack(len(body), kind, zlib.crc32(body)) + body


@pytest.mark.parametrize("body", [
    pytest.param(b"\x00", id="too short"),
    pytest.param(struct.pack("!QB", 1, 7) + b"x", id="unknown codec"),
    pytest.param(struct.pack("!QB", 1, 1) + b"not zstandard", id="not zstandard"),
    pytest.param(struct.pack("!QB", 1, 1) + zstandard.ZstdCompressor().compress(b"x" * 1000)[:4]
                 + struct.pack("<Q", 8 * 2**30), id="a frame declaring 8 GiB"),
])
def test_a_record_with_a_good_checksum_and_bad_contents_is_skipped(tmp_path: Path,
                                                                   body: bytes) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, RUN)
    journal.result(0, b"fine")
    journal.close(finished=False)
    path.write_bytes(path.read_bytes() + record(RESULT, body) + record(
        FAILURE, struct.pack("!QB", 2, 0) + b"[not json"))
    resumed, recovered = Journal.resume(path, RUN)
    assert outcomes(resumed, recovered.done) == {0: b"fine"}
    assert len(recovered.damage) == 2 and "unreadable" in recovered.damage[0]


def test_an_unfinished_journal_is_not_overwritten(tmp_path: Path) -> None:
    Journal.create(tmp_path / "j", RUN).close(finished=False)
    with pytest.raises(JournalError, match="--resume"):
        Journal.create(tmp_path / "j", RUN)


def test_another_run_or_another_file_is_refused(tmp_path: Path) -> None:
    Journal.create(tmp_path / "j", RUN).close(finished=False)
    other = json.loads(json.dumps(RUN))
    other["workload"]["params"]["jobs"] = 2
    with pytest.raises(JournalError, match="written for another run"):
        Journal.resume(tmp_path / "j", other)
    (tmp_path / "other").write_bytes(b"not a journal at all")
    with pytest.raises(JournalError, match="not a journal"):
        Journal.resume(tmp_path / "other", RUN)
    with pytest.raises(JournalError, match="no journal"):
        Journal.resume(tmp_path / "absent", RUN)


def test_nothing_to_record_after_closing_is_not_an_error(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "j", RUN)
    journal.close(finished=True)
    journal.owners([], Role.MASTER)  # a peer lost after the end: nothing taken back
    journal.sync()
