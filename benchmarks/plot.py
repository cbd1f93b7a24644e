"""One PNG per scenario: a panel per policy, each node's pending jobs over time (DESIGN.md 5).

Input is the master's trace (``--trace``): ``start``, ``summary`` and, per node, ``samples``
({t, pending, throttle, ...}) and ``events`` ({t, type, ...}); throttle changes are the
events of type "throttle" after a node's first one (its starting throttle, shown in the
legend instead). The harness adds ``paused`` ([since, until] wall clock) where it stopped the
slave.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # not pyplot: no backend, no display, nothing global

from loadbalancer.report import plot_trace

Trace = Mapping[str, Any]


def plot_scenario(scenario: str, traces: Mapping[str, Trace | None], path: Path) -> list[str]:
    """Write ``path``; the panel titles, one per policy in the order given."""
    policies = list(traces)
    figure = Figure(figsize=(9, 1.9 * len(policies) + 0.8))
    axes = figure.subplots(len(policies), 1, sharex=True, squeeze=False)
    titles = []
    for ax, policy in zip(axes[:, 0], policies, strict=True):
        trace = traces[policy]
        titles.append(_panel(ax, policy, trace))
    # The slave starts first and idles until the master is up: not worth a quarter of the axis.
    axes[-1, 0].set_xlim(left=-0.25)
    axes[-1, 0].set_xlabel("seconds since the master started")
    figure.suptitle(f"{scenario}: pending jobs per node (queued + running)", fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return titles


def _panel(ax: Axes, policy: str, trace: Trace | None) -> str:
    if trace is None:
        ax.text(0.5, 0.5, "run failed: no trace", transform=ax.transAxes, ha="center")
        ax.set_title(policy, loc="left", fontsize=9)
        return policy
    plot_trace(dict(trace), ax)
    # One panel among several: a short title naming the policy, the axis label once below.
    title = f"{policy}: {_describe(trace.get('summary') or {})}"
    ax.set_title("")  # plot_trace's title for a lone plot; here the panel names the policy
    ax.set_title(title, loc="left", fontsize=9)
    ax.set_xlabel("")
    for since, until in trace.get("paused") or ():  # `pause`: when the slave was stopped
        ax.axvspan(since - trace["start"], until - trace["start"], color="grey", alpha=0.15,
                   label="slave stopped")
    ax.set_ylabel("pending")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    return policy


def _describe(summary: Mapping[str, Any]) -> str:
    ratio = summary.get("ratio")
    if ratio is None:
        return "no summary"
    moved = summary.get("moved", {})
    return (f"ratio {ratio:.3f}, makespan {summary.get('makespan_s', 0):.2f}s, "
            f"moved {moved.get('to_slave', 0)}\u2192slave {moved.get('to_master', 0)}\u2192master")
