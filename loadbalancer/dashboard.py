"""Live terminal dashboard of one lb node: both nodes' state, overall progress, recent events."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from loadbalancer.logs import duration, printable

DASH = "—"
# Jobs/s is measured over this trailing window so that it follows changes in throttle and
# load balancing instead of averaging over the whole run.
RATE_WINDOW_S = 10.0
PEER_STYLES = {"connected": "green", "waiting": "yellow", "lost": "bold red", "left": "dim"}
PHASE_STYLES = {"done": "bold green", "failed": "bold red", "waiting": "yellow"}
# Seven rows of figures plus the border; a waiting peer's panel gets the same height so the
# two panels line up.
NODE_HEIGHT = 9


def _other(role: str) -> str:
    return "slave" if role == "master" else "master"


def _fmt_duration(seconds: float | None) -> str:
    return DASH if seconds is None else duration(seconds)


def _fmt(value: Any, spec: str = "", suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return DASH
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class Dashboard:
    """Renders the screen of one node; `with dashboard:` keeps it live on the console."""

    def __init__(
        self,
        role: str,
        *,
        policy: str | None = None,
        console: Console | None = None,
        max_messages: int = 10,
        refresh_per_second: float = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self.policy = policy
        self.console = console if console is not None else Console()
        self._clock = clock  # injectable so tests can measure jobs/s deterministically
        self._local: dict[str, Any] | None = None
        self._remote: dict[str, Any] | None = None
        self._messages: deque[tuple[float, str]] = deque(maxlen=max_messages)
        # (clock, count) samples of the progress count; the source tag resets them when the
        # count shown switches, e.g. from the slave's deliveries to the master's results.
        self._samples: deque[tuple[float, int]] = deque()
        self._rate_source: str | None = None
        # Live renders from its own refresh thread while the event loop updates the state.
        self._lock = threading.Lock()
        self._live = Live(
            get_renderable=self.render,
            console=self.console,
            refresh_per_second=refresh_per_second,
            transient=False,
            screen=False,
        )

    def update(self, local: dict[str, Any], remote: dict[str, Any] | None) -> None:
        with self._lock:
            self._local, self._remote = local, remote
            source, done, _ = self._progress_source()
            if done is None:
                return
            now = self._clock()
            if source != self._rate_source or (self._samples and done < self._samples[-1][1]):
                self._samples.clear()
                self._rate_source = source
            self._samples.append((now, done))
            # Keep one sample at or beyond the window edge so the rate spans the full window.
            while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW_S:
                self._samples.popleft()

    def message(self, text: str, now: float) -> None:
        with self._lock:
            self._messages.append((now, printable(text)))  # it may quote the peer

    def render(self) -> RenderableType:
        with self._lock:
            return Group(self._title(), self._panels(), self._progress(), *self._events())

    def __enter__(self) -> Dashboard:
        self._live.start(refresh=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.stop()  # draws a last frame, which stays on screen

    def _title(self) -> Text:
        title = Text(f"lb — {self.role} ↔ {_other(self.role)}", style="bold")
        if self.policy is not None:
            title.append(f" · policy {self.policy}", style="cyan")
        title.justify = "center"
        return title

    def _panels(self) -> Table:
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1)
        grid.add_column(ratio=1)
        grid.add_row(
            _node_panel(self.role, "this node", self._local),
            _node_panel(_other(self.role), "peer", self._remote),
        )
        return grid

    def _progress_source(self) -> tuple[str, int | None, int | None]:
        """(source tag, count, total): the master's results whenever its status is known."""
        for tag, status in (("local", self._local), ("remote", self._remote)):
            if status is not None and status["total"] is not None:
                return tag, status["finished"], status["total"]
        return "delivered", None if self._local is None else self._local["finished"], None

    def _rate(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def _progress(self) -> Table:
        _, done, total = self._progress_source()
        rate = f"{_fmt(self._rate(), '.1f')} jobs/s"
        row = Table.grid(expand=True, padding=(0, 1))
        if total is None:
            # A slave that has not heard from the master only knows what it delivered itself.
            row.add_column()
            row.add_row(f"results delivered {_fmt(done)} · {rate}")
            return row
        done = done or 0
        pct = 100 if total == 0 else 100 * done // total  # floor: "100%" only when complete
        row.add_column(no_wrap=True)
        row.add_column(ratio=1)
        row.add_column(no_wrap=True, justify="right")
        row.add_row(
            "results",
            ProgressBar(total=total, completed=done),
            f"{done}/{total} {pct:3d}% · {rate}",
        )
        return row

    def _events(self) -> list[RenderableType]:
        lines: list[RenderableType] = [Rule("events", style="dim")]
        for stamp, text in self._messages:
            clock = time.strftime("%H:%M:%S", time.localtime(stamp))
            lines.append(
                Text.assemble((clock, "dim"), "  ", text, overflow="ellipsis", no_wrap=True)
            )
        return lines


def _node_panel(role: str, label: str, status: dict[str, Any] | None) -> Panel:
    if status is None:
        body = Text(f"waiting for {role} to join…", style="yellow")
        return Panel(
            body,
            title=Text.assemble((role.upper(), "bold"), f" · {label}"),
            subtitle=Text("not connected", "yellow"),
            border_style="yellow",
            height=NODE_HEIGHT,
        )
    # Text objects rather than markup, and printable: these strings come off the network.
    phase, peer = printable(status["phase"]), printable(status["peer"])
    title = Text.assemble(
        (role.upper(), "bold"), f" · {label} · ", (phase, PHASE_STYLES.get(phase, ""))
    )
    peer_style = PEER_STYLES.get(peer, "")
    # Colour alone is lost on monochrome terminals, so a lost peer is also shouted in capitals.
    subtitle = Text(f"peer {peer.upper() if peer == 'lost' else peer}", peer_style)
    grid = Table.grid(expand=True, padding=(0, 1, 0, 0))
    # Labels are the same in both panels and value columns share the rest equally, so the
    # two panels' figures line up for comparison.
    for _ in range(2):
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", no_wrap=True, ratio=1)
    dropped = status["dropped"]
    grid.add_row("queued", _fmt(status["queued"]), "running", _fmt(status["running"]))
    grid.add_row("executed", _fmt(status["executed"]), "workers", _fmt(status["workers"]))
    grid.add_row(
        "throttle", _fmt(status["throttle"], ".2f"), "CPU", _fmt(status["cpu"], ".1f", "%")
    )
    grid.add_row("speed", _fmt(status["speed"], ".1f", "/s"), "ETA", _fmt_duration(status["eta"]))
    grid.add_row("bootstrap", _fmt(status.get("bootstrap")), "moved",
                 f"{_fmt(status['moved_out'])} out · {_fmt(status['moved_in'])} in")
    grid.add_row(
        "retrans",
        _fmt(status["retransmits"]),
        "dropped",
        DASH if dropped is None else str(sum(dropped.values())),
    )
    grid.add_row("datagram", _fmt(status.get("datagram"), "", " B"),
                 "steps", _fmt(status.get("datagram_steps")))
    return Panel(
        grid, title=title, subtitle=subtitle, border_style=peer_style or "blue", height=NODE_HEIGHT
    )


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary as a two-column table."""
    table = Table(title="lb run summary", show_header=False, title_style="bold")
    table.add_column(style="bold")
    table.add_column()
    executed, moved = summary["executed"], summary["moved"]
    verified = Text("yes", "bold green") if summary["verified"] else Text("NO", "bold red")
    table.add_row("verified", verified)
    table.add_row("policy", _fmt(summary["policy"]))
    table.add_row("jobs", _fmt(summary["jobs"]))
    table.add_row("makespan", _fmt(summary["makespan_s"], ".2f", " s"))
    table.add_row("ideal", _fmt(summary["ideal_s"], ".2f", " s"))
    table.add_row("ratio", _fmt(summary["ratio"], ".2f"))
    table.add_row(
        "executed", f"master {_fmt(executed['master'])} · slave {_fmt(executed['slave'])}"
    )
    failed = summary["failed"]
    first = ", ".join(printable(f"{f['index']}: {f['error']}", 60) for f in failed["first"])
    table.add_row("failed", Text(f"{failed['count']} ({first})", "bold red") if failed["count"]
                  else Text("none"))
    table.add_row("bootstrap", _fmt(summary["bootstrap"]))
    table.add_row(
        "moved", f"to slave {_fmt(moved['to_slave'])} · to master {_fmt(moved['to_master'])}"
    )
    table.add_row("retransmits", _retransmits(summary))
    datagram = summary.get("datagram") or {}
    table.add_row("datagram", f"master {_fmt(datagram.get('master'))} B · slave "
                  f"{_fmt(datagram.get('slave'))} B · "
                  f"stepped down {_fmt(summary.get('datagram_steps'))}")
    dropped = ", ".join(printable(f"{reason} {n}") for reason, n in summary["dropped"].items())
    table.add_row("dropped", dropped or "none")
    table.add_row("bytes sent", _fmt_bytes(summary["bytes_sent"]))
    return table


def _retransmits(counts: dict[str, Any]) -> str:
    """"12 (3 spurious)": how many went again, and how many of those need not have."""
    spurious = counts.get("spurious")
    shown = _fmt(counts["retransmits"])
    return shown if spurious is None else f"{shown} ({_fmt(spurious)} spurious)"


# (label, how to show a status) for `lb status`: what a person asks of a running pair.
STATUS_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("phase", lambda s: printable(s["phase"])),
    ("queued · running", lambda s: f"{_fmt(s['queued'])} · {_fmt(s['running'])}"),
    ("executed · failed", lambda s: f"{_fmt(s['executed'])} · {_fmt(s.get('failed'))}"),
    ("throttle · workers", lambda s: f"{_fmt(s['throttle'], '.2f')} · {_fmt(s['workers'])}"),
    ("speed", lambda s: _fmt(s["speed"], ".1f", " jobs/s")),
    ("ETA", lambda s: _fmt_duration(s["eta"])),
    ("progress", lambda s: DASH if s.get("total") is None else
     f"{_fmt(s['finished'])} of {s['total']}" + (
         f" ({100 * (s['finished'] or 0) // s['total']}%)" if s["total"] else "")),
    ("peer", lambda s: printable(s["peer"])),
    ("datagram", lambda s: DASH if s.get("datagram") is None else
     f"{s['datagram']} B" + (f" (stepped down {s['datagram_steps']}x)"
                             if s.get("datagram_steps") else "")),
    ("bootstrap", lambda s: _fmt(s.get("bootstrap"))),
    ("moved out · in", lambda s: f"{_fmt(s['moved_out'])} · {_fmt(s['moved_in'])}"),
    ("retransmits", _retransmits),
    ("dropped", lambda s: ", ".join(printable(f"{reason} {count}")
                                    for reason, count in (s["dropped"] or {}).items()) or "none"),
)


def status_table(local: dict[str, Any], remote: dict[str, Any] | None) -> Table:
    """`lb status` for people: both nodes side by side, rounded."""
    role = str(local["role"])
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2, 0, 0))
    table.add_column("")
    table.add_column(f"{role} (this node)", justify="right")
    table.add_column(f"{_other(role)} (its peer)", justify="right")
    for label, shown in STATUS_ROWS:
        table.add_row(label, shown(local), DASH if remote is None else shown(remote))
    return table
