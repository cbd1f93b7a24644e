"""Plots of a finished run: each node's pending jobs and its throughput over time.

The input is the master's ``--trace`` file. :func:`plot_trace` draws one run's
pending jobs into any matplotlib Axes, so a benchmark can put several runs side
by side; :func:`plot_throughput` draws each node's jobs per second;
:func:`write_report` makes the image of ``lb report``, both panels on one time
axis. matplotlib is imported only here and only when drawing (it is the
``plot`` extra).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadbalancer import fields
from loadbalancer.trace import event_flaw, sample_flaw

INSTALL_HINT = "matplotlib is not installed: pip install 'lb[plot]'"


class ReportError(ValueError):
    """The trace or the output path cannot make a report; the message says why, in one line."""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _check_records(records: object, where: str, flaw: Callable[[object], str | None]) -> None:
    if not isinstance(records, list):
        raise ReportError(f"{where} must be a list")
    for index, record in enumerate(records):
        problem = flaw(record)
        if problem is not None:
            raise ReportError(f"{where}[{index}] {problem}")


def check_trace(trace: object) -> dict[str, Any]:
    """The trace itself if it has what a plot needs, else ReportError naming the first flaw."""
    if not isinstance(trace, dict):
        raise ReportError("a trace is a JSON object")
    if not fields.finite(trace.get("start")):
        raise ReportError("the trace has no number 'start'")
    nodes = trace.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ReportError("the trace has no 'nodes'")
    for role, node in nodes.items():
        if not isinstance(node, dict):
            raise ReportError(f"nodes.{role} must be an object")
        _check_records(node.get("samples"), f"nodes.{role}.samples", sample_flaw)
        _check_records(node.get("events"), f"nodes.{role}.events", event_flaw)
    return trace


def load_trace(path: Path) -> dict[str, Any]:
    """Read and check a trace file; ReportError (one line) if it is missing or not a trace."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReportError(f"trace file {path} not found") from None
    except OSError as error:
        raise ReportError(f"trace file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ReportError(f"trace file {path} is not text") from None
    try:
        trace = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"trace file {path} is not valid JSON: {error}") from None
    try:
        return check_trace(trace)
    except ReportError as error:
        raise ReportError(f"trace file {path} is not an lb trace: {error}") from None


def title(trace: dict[str, Any]) -> str:
    parts = [f"lb run · policy {trace.get('policy', '?')}"]
    summary = trace.get("summary")
    if isinstance(summary, dict) and fields.finite(summary.get("ratio")):
        parts.append(f"makespan / ideal {summary['ratio']:.2f}")
    return " · ".join(parts)


MAX_THROTTLES_NAMED = 4  # throttles a legend entry lists before it says "…"
RATE_WINDOW = 1.0  # seconds a throughput point averages over


def _throttles(changes: list[dict[str, Any]]) -> str:
    values: list[str] = []
    for event in changes:
        value = f"{event['throttle']:g}"
        if not values or values[-1] != value:
            values.append(value)
    if len(values) > MAX_THROTTLES_NAMED:
        values = [*values[:MAX_THROTTLES_NAMED - 1], "…", values[-1]]
    return " → ".join(values)


def _sessions(node: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The node's samples cut where a session ended (a slave lost, a new one joined), so
    that no line is drawn across the time it was not there."""
    runs: list[list[dict[str, Any]]] = [[]]
    for sample in node["samples"]:
        if runs[-1] and sample.get("session") != runs[-1][-1].get("session"):
            runs.append([])
        runs[-1].append(sample)
    return [run for run in runs if run]


def plot_trace(trace: dict[str, Any], ax: Any) -> None:
    """Draw one run into the matplotlib Axes ``ax``: pending jobs (queued and running) of each
    node against seconds since the master started, a dotted line where its throttle changed,
    and where a perfect schedule would have ended."""
    start = float(trace["start"])
    for role, node in sorted(trace["nodes"].items()):  # master before slave, in every plot
        changes = [e for e in node["events"] if e.get("type") == "throttle"]
        # The legend names the throttles the node ran at, in order; the axis marks the changes.
        label = f"{role} (throttle {_throttles(changes)})" if changes else role
        color = None
        for session in _sessions(node):
            seconds = [sample["t"] - start for sample in session]
            pending = [sample["pending"] for sample in session]
            # Steps, not slopes: a queue changes at the sample, it does not glide between.
            (line,) = ax.step(seconds, pending, where="post", color=color,
                              label=label if color is None else "_nolegend_")
            color = line.get_color()
        for previous, event in itertools.pairwise(changes):
            if event["throttle"] == previous["throttle"]:
                continue  # a new session at the same throttle: nothing changed
            at = event["t"] - start
            ax.axvline(at, color=color, linestyle=":", linewidth=1)
            # Inside the axes, below the top, so the label is never cut off.
            ax.annotate(f"{role} throttle {event['throttle']:g}", xy=(at, 0.97),
                        xycoords=("data", "axes fraction"), rotation=90, ha="right", va="top",
                        fontsize=8, color=color)
    summary = trace.get("summary")
    if isinstance(summary, dict) and fields.finite(summary.get("ideal_s")):
        ax.axvline(summary["ideal_s"], color="black", linestyle="--", linewidth=1,
                   label="ideal end")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("pending jobs")
    ax.set_title(title(trace))
    _, top = ax.get_ylim()
    ax.set_ylim(bottom=0, top=top * 1.35)  # room for the throttle labels above the lines
    # Beside the axes: inside, it would hide the lines or the labels of late changes.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


def throughput(samples: list[dict[str, Any]], start: float) -> list[tuple[list[float],
                                                                         list[float]]]:
    """(seconds since start, jobs/s) of one node, a line a session: jobs done over the
    trailing RATE_WINDOW, from the cumulative ``done`` of its samples."""
    lines = []
    for session in _sessions({"samples": samples}):
        counted = [sample for sample in session if fields.finite(sample.get("done"))]
        seconds, rates = [], []
        first = 0
        for sample in counted:
            while counted[first]["t"] < sample["t"] - RATE_WINDOW:
                first += 1
            span = sample["t"] - counted[first]["t"]
            seconds.append(sample["t"] - start)
            rates.append((sample["done"] - counted[first]["done"]) / span if span > 0 else 0.0)
        lines.append((seconds, rates))
    return lines


def plot_throughput(trace: dict[str, Any], ax: Any) -> None:
    """Each node's jobs per second over time, into the matplotlib Axes ``ax``."""
    start = float(trace["start"])
    for role, node in sorted(trace["nodes"].items()):
        color = None
        for seconds, rates in throughput(node["samples"], start):
            (line,) = ax.plot(seconds, rates, color=color, linewidth=1.2,
                              label=role if color is None else "_nolegend_")
            color = line.get_color()
    ax.set_xlabel("seconds since start")
    ax.set_ylabel(f"jobs/s (over {RATE_WINDOW:g} s)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


KINDS = ("load", "timeline")
NODE_COLORS = {"master": "tab:blue", "slave": "tab:orange"}


def runs_of(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace's job runs that a timeline can draw (older traces have none)."""
    runs = trace.get("runs")
    if not isinstance(runs, list):
        return []
    return [run for run in runs if isinstance(run, dict) and fields.finite(run.get("t"))
            and fields.finite(run.get("job")) and run.get("node") in NODE_COLORS]


def plot_timeline(trace: dict[str, Any], ax: Any) -> None:
    """Which job ended where and when, into the matplotlib Axes ``ax``: a dot a job in its
    node's colour; jobs that moved between the nodes after the start as crosses; a copy
    (a job that ended again, its outcome already in) or a failed attempt ringed in red."""
    start = float(trace["start"])
    runs = runs_of(trace)
    for node, color in NODE_COLORS.items():
        for moved, marker in ((False, "."), (True, "x")):
            points = [r for r in runs if r["node"] == node and bool(r.get("moved")) is moved
                      and r.get("kind") == "ok"]
            if points:
                ax.scatter([r["t"] - start for r in points], [r["job"] for r in points],
                           s=6 if marker == "." else 14, marker=marker, color=color,
                           linewidths=0.8,
                           label=f"{node}{' (moved)' if moved else ''} · {len(points)}")
    again = [r for r in runs if r.get("kind") in ("copy", "failed")]
    if again:
        ax.scatter([r["t"] - start for r in again], [r["job"] for r in again], s=40,
                   facecolors="none", edgecolors="red", linewidths=0.8,
                   label=f"copy or failed attempt · {len(again)}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("job")
    ax.set_title(f"{title(trace)} · where each job ended")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)


def write_report(trace: dict[str, Any], path: Path, kind: str = "load") -> None:
    """Write a plot of one run to ``path``, in the format its extension names (png, svg,
    pdf...): ``kind`` "load" (pending jobs over throughput) or "timeline" (where each job
    ended). Raises PlotUnavailable without matplotlib, ReportError for an unknown format,
    OSError when the file cannot be written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    # A Figure with the Agg canvas, not pyplot: no global state, no display needed.
    figure = Figure(figsize=(10, 8), layout="constrained")
    canvas = FigureCanvasAgg(figure)
    formats = canvas.get_supported_filetypes()
    suffix = path.suffix.removeprefix(".").lower()
    if suffix not in formats:
        raise ReportError(f"cannot write {path}: name it with one of the extensions "
                          f"{', '.join('.' + name for name in sorted(formats))}")
    if kind == "timeline":
        if not runs_of(trace):
            raise ReportError("this trace records no job runs (it is older than the timeline)")
        figure.set_size_inches(10, 6)
        plot_timeline(trace, figure.subplots())
    else:
        pending, rates = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        plot_trace(trace, pending)
        pending.set_xlabel("")  # the panel below has the time axis
        plot_throughput(trace, rates)
    figure.savefig(path, format=suffix)
