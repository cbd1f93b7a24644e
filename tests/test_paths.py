"""The paths harness (benchmarks/paths.py) at a tiny size on one veth path, so it cannot rot:
every byte the lb run and the TCP stream moved is counted, at positive rates."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `benchmarks` is not part of the installed package (see tests/test_simulate.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import paths
from loadbalancer.testing import netns

JOBS = 8
JOB_BYTES = 256 * 1024


def test_the_bootstrap_is_timed_from_the_masters_send_to_the_slaves_last_receipt() -> None:
    trace = {"nodes": {
        "master": {"events": [{"t": 10.0, "type": "throttle"},
                              {"t": 10.5, "type": "sent", "jobs": 3}]},
        "slave": {"events": [{"t": 10.7, "type": "received", "jobs": 2, "bootstrap": True},
                             {"t": 11.5, "type": "received", "jobs": 1, "bootstrap": True},
                             {"t": 12.0, "type": "received", "jobs": 5, "bootstrap": False}]}}}
    transfer = paths.bootstrap_transfer(trace, 10**6)
    assert transfer["jobs"] == 3 and transfer["bytes"] == 3 * 10**6
    assert transfer["seconds"] == pytest.approx(1.0)
    assert transfer["MB_s"] == pytest.approx(3.0)


def test_a_tiny_run_on_a_veth_path_counts_what_it_moved(tmp_path: Path) -> None:
    why = netns.available()
    if why is not None:
        pytest.skip(why)
    inputs = paths.write_inputs(tmp_path / "in.jsonl", JOBS, JOB_BYTES)
    lines: list[str] = []
    try:
        row = paths.measure_path(paths.NetPath("veth", 1500), inputs, JOBS, 1, lines.append,
                                 job_bytes=JOB_BYTES)
    except netns.NamespaceError as error:
        pytest.skip(f"cannot make network namespaces and a veth pair here: {error}")
    (lb,), (tcp,) = row["runs"]["lb"], row["runs"]["tcp"]
    assert lb["verified"] and row["verified"]
    assert lb["jobs"] == lb["jobs_sent"] == JOBS // 2
    assert lb["bytes"] == tcp["bytes"] == JOBS // 2 * JOB_BYTES
    assert lb["datagram"] == {"master": 1472, "slave": 1472}  # the path's MTU, not loopback's
    assert 0 < lb["seconds"] < 30 and 0 < tcp["seconds"] < 30 and lb["us_per_datagram"] > 0
    assert row["lb_MB_s"] > 0 and row["tcp_MB_s"] > 0
    assert row["ratio"] == pytest.approx(row["lb_MB_s"] / row["tcp_MB_s"], rel=0.01)
    assert len(lines) == 1 and "veth MTU 1500" in lines[0]
    measure = paths.goodput_measure(row)
    assert measure.target == ">= 118 MB/s" and measure.value == row["lb_MB_s"]
    assert paths.bootstrap_measure(row).passed is None  # too small to judge


def test_the_command_line_measures_the_paths_and_rounds_asked_for(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[tuple[list[str], int | None]] = []

    def measure_all(quick: bool, progress: object, chosen: list[paths.NetPath],
                    offload: bool, rounds: int | None) -> list[object]:
        asked.append(([path.key for path in chosen], rounds))
        return []

    monkeypatch.setattr(paths, "measure_all", measure_all)
    monkeypatch.setattr("benchmarks.report.print_paths", lambda console, measures: None)
    assert paths.main(["--path", "veth1500", "--path", "loopback", "--rounds", "7",
                       "--out", str(tmp_path)]) == 0
    assert paths.main(["--out", str(tmp_path)]) == 0
    assert asked == [(["loopback", "veth1500"], 7),
                     (["loopback", "veth1500", "veth9000"], None)]
    with pytest.raises(SystemExit):
        paths.main(["--rounds", "0"])
