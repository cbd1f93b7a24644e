"""Plots of a finished run: each node's pending jobs over time, throttle changes marked.

The input is the master's ``--trace`` file. :func:`plot_trace` draws one run
into any matplotlib Axes, so a benchmark can put several runs side by side;
:func:`write_report` makes the one-run image of ``lb report``. matplotlib is
imported only here and only when drawing (it is the ``plot`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "matplotlib is not installed: pip install 'lb[plot]'"


class ReportError(ValueError):
    """The trace or the output path cannot make a report; the message says why, in one line."""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_records(records: object, where: str, keys: Sequence[str]) -> None:
    if not isinstance(records, list):
        raise ReportError(f"{where} must be a list")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ReportError(f"{where}[{index}] must be an object")
        for key in keys:
            if not _is_number(record.get(key)):
                raise ReportError(f"{where}[{index}] has no number {key!r}")


def check_trace(trace: object) -> dict[str, Any]:
    """The trace itself if it has what a plot needs, else ReportError naming the first flaw."""
    if not isinstance(trace, dict):
        raise ReportError("a trace is a JSON object")
    if not _is_number(trace.get("start")):
        raise ReportError("the trace has no number 'start'")
    nodes = trace.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        raise ReportError("the trace has no 'nodes'")
    for role, node in nodes.items():
        if not isinstance(node, dict):
            raise ReportError(f"nodes.{role} must be an object")
        _check_records(node.get("samples"), f"nodes.{role}.samples", ("t", "pending"))
        _check_records(node.get("events"), f"nodes.{role}.events", ("t",))
        for index, event in enumerate(node["events"]):
            if event.get("type") == "throttle" and not _is_number(event.get("throttle")):
                raise ReportError(f"nodes.{role}.events[{index}] is a throttle event "
                                  "without a number 'throttle'")
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
    if isinstance(summary, dict) and _is_number(summary.get("ratio")):
        parts.append(f"makespan / ideal {summary['ratio']:.2f}")
    return " · ".join(parts)


def plot_trace(trace: dict[str, Any], ax: Any) -> None:
    """Draw one run into the matplotlib Axes ``ax``: pending jobs (queued and running) of each
    node against seconds since the master started, a dotted line where its throttle changed,
    and where a perfect schedule would have ended."""
    start = float(trace["start"])
    for role, node in sorted(trace["nodes"].items()):  # master before slave, in every plot
        seconds = [sample["t"] - start for sample in node["samples"]]
        pending = [sample["pending"] for sample in node["samples"]]
        changes = [e for e in node["events"] if e.get("type") == "throttle"]
        # The first is the starting throttle: it goes in the legend, not on the axis.
        label = f"{role} (throttle {changes[0]['throttle']:g})" if changes else role
        # Steps, not slopes: a queue changes at the sample, it does not glide between samples.
        (line,) = ax.step(seconds, pending, where="post", label=label)
        for event in changes[1:]:
            at = event["t"] - start
            ax.axvline(at, color=line.get_color(), linestyle=":", linewidth=1)
            ax.annotate(f"{role} throttle {event['throttle']:g}", xy=(at, 1),
                        xycoords=("data", "axes fraction"), rotation=90, ha="right", va="top",
                        fontsize=8, color=line.get_color())
    summary = trace.get("summary")
    if isinstance(summary, dict) and _is_number(summary.get("ideal_s")):
        ax.axvline(summary["ideal_s"], color="black", linestyle="--", linewidth=1,
                   label="ideal end")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("pending jobs")
    ax.set_title(title(trace))
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right")


def write_report(trace: dict[str, Any], path: Path) -> None:
    """Write the plot of one run to ``path``, in the format its extension names (png, svg,
    pdf...). Raises PlotUnavailable without matplotlib, ReportError for an unknown format,
    OSError when the file cannot be written."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    # A Figure with the Agg canvas, not pyplot: no global state, no display needed.
    figure = Figure(figsize=(10, 5), layout="constrained")
    canvas = FigureCanvasAgg(figure)
    formats = canvas.get_supported_filetypes()
    kind = path.suffix.removeprefix(".").lower()
    if kind not in formats:
        raise ReportError(f"cannot write {path}: name it with one of the extensions "
                          f"{', '.join('.' + name for name in sorted(formats))}")
    plot_trace(trace, figure.subplots())
    figure.savefig(path, format=kind)
