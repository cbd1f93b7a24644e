"""The master's journal: what it recovers, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadbalancer.journal import Journal, JournalError
from loadbalancer.messages import WorkloadSpec
from loadbalancer.wire import Role

SPEC = WorkloadSpec("vector", {"elements": 8, "jobs": 4, "iterations": 2})


def test_results_and_owners_come_back(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, SPEC)
    journal.result(1, b"one" * 100)
    journal.owners([2, 3], Role.SLAVE)
    journal.owners([3], Role.MASTER)
    journal.close(finished=False)
    resumed, recovered = Journal.resume(path, SPEC)
    assert recovered.results == {1: b"one" * 100}
    assert recovered.owners == {2: Role.SLAVE, 3: Role.MASTER}
    resumed.close(finished=True)
    assert not path.exists()


def test_a_torn_last_record_is_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal.create(path, SPEC)
    journal.result(0, b"zero")
    journal.result(2, b"two")
    journal.close(finished=False)
    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # a crash in the middle of the last write
    resumed, recovered = Journal.resume(path, SPEC)
    assert recovered.results == {0: b"zero"}
    resumed.result(3, b"three")
    resumed.close(finished=False)
    assert Journal.resume(path, SPEC)[1].results == {0: b"zero", 3: b"three"}


def test_an_unfinished_journal_is_not_overwritten(tmp_path: Path) -> None:
    Journal.create(tmp_path / "j", SPEC).close(finished=False)
    with pytest.raises(JournalError, match="--resume"):
        Journal.create(tmp_path / "j", SPEC)


def test_another_workload_or_another_file_is_refused(tmp_path: Path) -> None:
    Journal.create(tmp_path / "j", SPEC).close(finished=False)
    with pytest.raises(JournalError, match="written for workload 'vector'"):
        Journal.resume(tmp_path / "j", WorkloadSpec("vector", {**SPEC.params, "jobs": 2}))
    (tmp_path / "other").write_bytes(b"not a journal at all")
    with pytest.raises(JournalError, match="not an lb journal"):
        Journal.resume(tmp_path / "other", SPEC)
    with pytest.raises(JournalError, match="no journal"):
        Journal.resume(tmp_path / "absent", SPEC)


def test_nothing_to_record_after_closing_is_not_an_error(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "j", SPEC)
    journal.close(finished=True)
    journal.owners([], Role.MASTER)  # a peer lost after the end: nothing taken back
    journal.sync()
