"""A map's JSON-lines inputs and its output in input order."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from loadbalancer import codec, jsonform, jsonlines
from loadbalancer.journal import Journal
from loadbalancer.jsonlines import InputError, Inputs, Output
from loadbalancer.outcome import Failure


def inputs_of(tmp_path: Path, text: str) -> Inputs:
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    return Inputs.open(str(path))


def test_each_line_is_a_call(tmp_path: Path) -> None:
    inputs = inputs_of(tmp_path, '[1, 2]\n\n{"x": 3}\n7\n{"$bytes": "AAE="}\n')
    assert inputs.count == 4  # the blank line is no job
    calls = [codec.decode_call(inputs.job_data(job)) for job in range(4)]
    assert calls == [([1, 2], {}), ([], {"x": 3}), ([7], {}), ([b"\x00\x01"], {})]
    assert len(inputs.sha256) == 64


def test_inputs_beyond_the_memory_budget_wait_encoded_in_a_spool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlines, "HELD_INPUTS", 200)
    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'[{i}, "{"x" * 10}"]\n' for i in range(20)))
    inputs = Inputs.open(str(path))
    held = sum(data is not None for data in inputs._held)
    assert 0 < held < 20
    path.write_text("[-1]\n" * 20)  # what runs is what was checked, not what the file says now
    parses = []
    monkeypatch.setattr(jsonform, "parse_call", lambda line: parses.append(line))
    assert [codec.decode_call(inputs.job_data(j))[0] for j in range(20)] == [
        [i, "x" * 10] for i in range(20)]
    assert parses == []  # read back, not parsed again


def test_inputs_on_standard_input_need_no_copy_of_their_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlines, "HELD_INPUTS", 100)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"[1]\n\n[2, 3]\n" * 30)))
    inputs = Inputs.open("-")
    assert inputs.count == 60 and inputs.name == "standard input"
    assert [codec.decode_call(inputs.job_data(j))[0] for j in (0, 1, 59)] == [[1], [2, 3],
                                                                               [2, 3]]


def test_a_spool_that_cannot_be_written_is_one_error(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlines, "HELD_INPUTS", 10)

    def full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonlines.tempfile, "TemporaryFile", full)
    with pytest.raises(InputError, match=r"in\.jsonl: inputs beyond .* No space left"):
        inputs_of(tmp_path, "[1]\n" * 5)


@pytest.mark.parametrize(("text", "words"), [
    ("[1]\n[2\n", "line 2: "),
    ('[1]\n{"$bytes": "!!"}\n', "line 2: "),
    ("[1]\n" + "[" * 150 + "]" * 150 + "\n", "line 2: "),
])
def test_a_bad_line_is_one_error_naming_it(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        inputs_of(tmp_path, text)


def test_not_utf8_and_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(b"[1]\n\xff\xfe\n")
    with pytest.raises(InputError, match="line 2: not UTF-8 text"):
        Inputs.open(str(tmp_path / "bad.jsonl"))
    with pytest.raises(InputError, match=r"absent\.jsonl"):
        Inputs.open(str(tmp_path / "absent.jsonl"))


def test_outcomes_are_written_in_input_order_as_soon_as_they_can_be(tmp_path: Path) -> None:
    stream = io.StringIO()
    output = Output(stream, "test")
    output.put(1, codec.encode({"b": np.arange(3)}), None)
    assert stream.getvalue() == ""  # 0 is not in yet
    output.put(0, codec.encode(b"\x00"), None)
    output.put(2, (Failure("ValueError", "no", "Traceback\n"), 3), None)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0] == {"index": 0, "result": {"$bytes": "AA=="}}
    assert lines[1]["index"] == 1
    assert jsonform.from_json(lines[1]["result"])["b"].tolist() == [0, 1, 2]
    assert lines[2] == {"index": 2, "error": "ValueError: no", "traceback": "Traceback\n",
                        "attempts": 3}


def test_early_outcomes_beyond_the_budget_wait_in_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlines, "HELD_OUTPUTS", 300)
    journal = Journal.create(tmp_path / "j", {"map": "test"})
    stream = io.StringIO()
    output = Output(stream, "test")
    output.read_back = journal.read
    for job in range(10, 0, -1):  # every one early but the last
        data = codec.encode("x" * 100 + str(job))
        output.put(job, data, journal.result(job, data))
    waiting = len(output._offsets) - output._offsets.count(jsonlines.NO_OFFSET)
    assert output._held <= 300 and len(output._early) + waiting == 10 and waiting > 5
    data = codec.encode("first")
    output.put(0, data, journal.result(0, data))
    results = [json.loads(line)["result"] for line in stream.getvalue().splitlines()]
    assert results == ["first"] + ["x" * 100 + str(job) for job in range(1, 11)]
    assert output._held == 0 and not output._early
    assert output._offsets.count(jsonlines.NO_OFFSET) == len(output._offsets)


def test_a_long_run_freed_at_once_is_written_a_slice_at_a_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jsonlines, "WRITE_SLICE", 10)
    stream = io.StringIO()
    output = Output(stream, "test")
    for job in range(1, 35):
        output.put(job, codec.encode(job), None)
    output.put(0, codec.encode(0), None)  # frees 35: a slice now, the rest as asked
    assert output.written == 10
    assert output.drain() and output.written == 20
    while output.drain():
        pass
    assert output.written == 35
    assert [json.loads(line)["result"] for line in stream.getvalue().splitlines()] == list(
        range(35))


def test_flushing_after_the_end_is_harmless(tmp_path: Path) -> None:
    output = Output.open(str(tmp_path / "out.jsonl"))
    output.put(0, codec.encode(1), None)
    output.close()
    output.flush()  # the master's periodic sync, once more after the end
    assert (tmp_path / "out.jsonl").read_text() == '{"index": 0, "result": 1}\n'


def test_a_result_that_cannot_be_read_is_that_jobs_error() -> None:
    stream = io.StringIO()
    Output(stream, "test").put(0, b"\x00\x00\x00\x09junk", None)
    line = json.loads(stream.getvalue())
    assert line["index"] == 0 and line["error"].startswith("CodecError:")
