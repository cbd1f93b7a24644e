"""`lb report`: a finished run's trace as a plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from test_init import invoke, one_error

from loadbalancer import report
from loadbalancer.testing.loopback import Cluster

START = 1_700_000_000.0


def samples(*pending: int) -> list[dict[str, Any]]:
    return [{"t": START + i * 0.2, "pending": p, "throttle": 1.0, "cpu": 50.0, "done": i}
            for i, p in enumerate(pending)]


TRACE: dict[str, Any] = {
    "start": START, "policy": "receiver",
    "summary": {"verified": True, "ratio": 1.084, "makespan_s": 1.0, "ideal_s": 0.9},
    "nodes": {
        "slave": {"samples": samples(0, 10, 6, 2, 0),
                  "events": [{"t": START + 0.1, "type": "throttle", "throttle": 0.3,
                              "workers": 1},
                             {"t": START + 0.2, "type": "joined"},
                             {"t": START + 0.5, "type": "throttle", "throttle": 1.0,
                              "workers": 1}]},
        "master": {"samples": samples(20, 9, 5, 1, 0),
                   "events": [{"t": START, "type": "throttle", "throttle": 1.0, "workers": 1}]},
    },
}


def xs(line: Line2D) -> list[float]:
    return [float(x) for x in np.asarray(line.get_xdata(), dtype=float)]


def ys(line: Line2D) -> list[float]:
    return [float(y) for y in np.asarray(line.get_ydata(), dtype=float)]


def test_plot_draws_each_nodes_pending_jobs_and_marks_throttle_changes() -> None:
    ax = Figure().subplots()
    report.plot_trace(TRACE, ax)
    steps = {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() == "-"}
    # The legend names every throttle a node ran at; the changes are marked on the axis.
    assert list(steps) == ["master (throttle 1)", "slave (throttle 0.3 → 1)"]
    assert xs(steps["master (throttle 1)"]) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    assert ys(steps["slave (throttle 0.3 → 1)"]) == [0, 10, 6, 2, 0]
    marks = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [xs(line)[0] for line in marks] == pytest.approx([0.5])
    # The mark in its node's colour, with the new throttle written beside it.
    assert [text.get_text() for text in ax.texts] == ["slave throttle 1"]
    assert marks[0].get_color() == steps["slave (throttle 0.3 → 1)"].get_color()
    # Inside the axes, so it is never cut off at the top.
    assert all(text.xy[1] < 1 for text in ax.texts)
    ideal = [line for line in ax.get_lines() if line.get_label() == "ideal end"]
    assert xs(ideal[0])[0] == pytest.approx(0.9)
    assert ax.get_title() == "lb run · policy receiver · makespan / ideal 1.08"
    assert ax.get_xlabel() == "seconds since start"


def test_every_session_is_a_line_of_its_own_and_throughput_follows_done() -> None:
    first = [{"t": START + i * 0.5, "pending": p, "done": d, "session": 1}
             for i, (p, d) in enumerate([(10, 0), (8, 2), (6, 4), (0, 4)])]
    second = [{"t": START + 3 + i * 0.5, "pending": p, "done": d}
              for i, (p, d) in enumerate([(5, 0), (3, 3), (0, 6)])]
    trace = {**TRACE, "nodes": {"slave": {"samples": first + second, "events": []}}}
    ax = Figure().subplots()
    report.plot_trace(trace, ax)
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [ys(line) for line in lines] == [[10, 8, 6, 0], [5, 3, 0]]  # no line between
    assert lines[0].get_color() == lines[1].get_color()
    rates = report.throughput(first + second, START)
    assert [seconds for seconds, _ in rates] == [[0, 0.5, 1.0, 1.5], [3, 3.5, 4.0]]
    assert [rate for _, rate in rates] == [[0, 4, 4, 2], [0, 6, 6]]  # jobs/s over 1 s


RUNS = [{"t": START + 0.1 * i, "job": i, "node": "master" if i < 6 else "slave",
         "kind": "ok", "moved": i in (4, 7)} for i in range(10)] + [
    {"t": START + 1.2, "job": 3, "node": "slave", "kind": "copy", "moved": False},
    {"t": START + 1.3, "job": 8, "node": "slave", "kind": "failed", "moved": False}]


def test_the_timeline_puts_each_job_where_it_ended_moves_and_copies_marked() -> None:
    ax = Figure().subplots()
    report.plot_timeline({**TRACE, "runs": RUNS}, ax)
    drawn = {c.get_label(): [(round(x, 2), y) for x, y in c.get_offsets()]
             for c in ax.collections}
    assert drawn == {
        "master · 5": [(0.0, 0), (0.1, 1), (0.2, 2), (0.3, 3), (0.5, 5)],
        "master (moved) · 1": [(0.4, 4)],
        "slave · 3": [(0.6, 6), (0.8, 8), (0.9, 9)],
        "slave (moved) · 1": [(0.7, 7)],
        "copy or failed attempt · 2": [(1.2, 3), (1.3, 8)]}
    assert ax.get_ylabel() == "job"


def test_lb_report_kind_timeline_writes_its_image(tmp_path: Path) -> None:
    from matplotlib.image import imread
    path = write_trace(tmp_path, {**TRACE, "runs": RUNS})
    result = invoke("report", str(path), "--kind", "timeline", "-o", str(tmp_path / "t.png"))
    assert result.exit_code == 0, result.output
    height, width, _ = imread(tmp_path / "t.png").shape
    assert (width, height) == (1000, 600)
    one_error(invoke("report", str(write_trace(tmp_path, TRACE)), "--kind", "timeline"), 2,
              "records no job runs")


def test_a_trace_without_a_ratio_is_titled_with_its_policy_alone() -> None:
    ax = Figure().subplots()
    report.plot_trace({**TRACE, "summary": None}, ax)
    assert ax.get_title() == "lb run · policy receiver"


def test_the_image_has_both_panels(tmp_path: Path) -> None:
    from matplotlib.image import imread
    report.write_report(TRACE, tmp_path / "run.png")
    height, width, _ = imread(tmp_path / "run.png").shape
    assert (width, height) == (1000, 800)  # 10 x 8 inches at 100 dpi: pending over jobs/s


def test_the_extension_picks_the_format(tmp_path: Path) -> None:
    report.write_report(TRACE, tmp_path / "run.PDF")  # png and svg: see the command's test
    assert (tmp_path / "run.PDF").read_bytes().startswith(b"%PDF")


def write_trace(tmp_path: Path, trace: object) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    return path


def test_lb_report_writes_the_plot_next_to_the_trace(tmp_path: Path) -> None:
    path = write_trace(tmp_path, TRACE)
    result = invoke("report", str(path))
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {tmp_path / 'trace.png'}\n"
    assert (tmp_path / "trace.png").read_bytes().startswith(b"\x89PNG")
    assert invoke("report", str(path), "-o", str(tmp_path / "plot.svg")).exit_code == 0
    assert (tmp_path / "plot.svg").read_text().startswith("<?xml")


@pytest.mark.parametrize(("trace", "words"), [
    (None, ["missing.json", "not found"]),
    ("{not json", ["not valid JSON"]),
    ({"start": START}, ["not an lb trace", "no 'nodes'"]),
    ({"start": START, "nodes": {"master": {"samples": [{"t": 1}], "events": []}}},
     ["nodes.master.samples[0]", "'pending'"]),
    ({"start": START, "nodes": {"master": {"samples": [], "events": [{"t": 1,
                                                                       "type": "throttle"}]}}},
     ["nodes.master.events[0]", "throttle event"]),
    ({"start": START, "nodes": {"master": {"samples": [], "events": [{"t": 1}]}}},
     ["nodes.master.events[0]", "no type"]),
    ([1, 2], ["not an lb trace", "JSON object"]),
])
def test_a_bad_trace_exits_2(tmp_path: Path, trace: object, words: list[str]) -> None:
    if trace is None:
        path = tmp_path / "missing.json"
    elif isinstance(trace, str):
        path = tmp_path / "broken.json"
        path.write_text(trace)
    else:
        path = write_trace(tmp_path, trace)
    one_error(invoke("report", str(path)), 2, *words)
    assert not path.with_suffix(".png").exists()


def test_an_unknown_image_format_exits_2(tmp_path: Path) -> None:
    one_error(invoke("report", str(write_trace(tmp_path, TRACE)), "-o",
                     str(tmp_path / "plot.txt")), 2, "plot.txt", ".png", ".svg")


def test_an_unwritable_output_exits_1(tmp_path: Path) -> None:
    one_error(invoke("report", str(write_trace(tmp_path, TRACE)), "-o",
                     str(tmp_path / "missing" / "plot.png")), 1, "cannot write",
              "No such file or directory")


def test_without_matplotlib_one_line_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes importing it fail
    one_error(invoke("report", str(write_trace(tmp_path, TRACE))), 1,
              "matplotlib is not installed", "pip install 'lb[plot]'")


def test_a_real_runs_trace_plots(cluster: Cluster, tmp_path: Path) -> None:
    cluster.configure(policy="symmetric", jobs=128, elements_per_job=32768, iterations=4000)
    cluster.start("slave", "--throttle", "0.5")
    cluster.wait_until_up("slave")
    cluster.start("master")
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 3)
    answer = cluster.lb("throttle", "0.2", "--role", "slave", "--config", str(cluster.config))
    assert answer.returncode == 0, answer.stderr
    assert cluster.processes["master"].wait(timeout=60) == 0, cluster.log("master")
    trace = report.load_trace(cluster.directory / "trace.json")
    ax = Figure().subplots()
    report.plot_trace(trace, ax)
    assert {line.get_label() for line in ax.get_lines()} >= {
        "master (throttle 1)", "slave (throttle 0.5 → 0.2)", "ideal end"}
    assert "slave throttle 0.2" in [text.get_text() for text in ax.texts]
    assert ax.get_title().startswith("lb run · policy symmetric · makespan / ideal ")
    # Every job's outcome is in the runs, on the node that computed it.
    runs = report.runs_of(trace)
    ended = {run["job"] for run in runs if run["kind"] == "ok"}
    assert ended == set(range(128))
    summary = trace["summary"]
    assert sum(run["node"] == "slave" and run["kind"] == "ok" for run in runs) \
        <= summary["executed"]["slave"]
    if summary["moved"]["to_slave"] + summary["moved"]["to_master"]:
        assert any(run["moved"] for run in runs)
