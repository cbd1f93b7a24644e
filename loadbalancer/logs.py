"""Where a node's log goes: lines for people or JSON for machines, on stderr and to a file.

Everything logs through the standard :mod:`logging` module. The handlers hang
on the root logger, not on ``lb``, so that what asyncio reports about a crash
(its "asyncio" logger) lands in the same stream and file; the root stays at
WARNING so that other libraries' chatter does not, while the ``lb`` logger
carries the chosen level (``debug`` shows every transfer decision).

Text from the peer (a REFUSE's reason, the strings of its STATE) reaches the log
and the screen, so every argument of a log call is made printable first: a
newline in it cannot forge a line, nor an escape sequence drive the terminal.
The format string is the program's own and is left as it is, so data goes in as
an argument (``log.info("%s: %s", role, text)``, as Node.say does), never into it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported only when a dashboard is shown
    from loadbalancer.dashboard import Dashboard

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
FORMATS = ("text", "json")
log = logging.getLogger("lb")
_installed: list[logging.Handler] = []  # ours, so a second configure() replaces only these

# What every LogRecord carries; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
MAX_SHOWN = 1000  # characters of one value shown; the rest is counted, not shown


def printable(value: object, limit: int = MAX_SHOWN) -> str:
    """``value`` as text that is safe on a terminal and in a log line: every character that is
    not printable (newline, carriage return, escape, U+2028...) and the backslash written as
    in a Python string literal (``\\n``, ``\\x1b``), and at most ``limit`` characters."""
    text = str(value)
    rest = len(text) - limit
    text = text[:limit]
    if not text.isprintable() or "\\" in text:
        text = "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)
    return f"{text}… ({rest} more characters)" if rest > 0 else text


def jobs(count: int) -> str:
    """'1 job', '12 jobs'."""
    return f"{count} job" if count == 1 else f"{count} jobs"


def duration(seconds: float) -> str:
    """Seconds as people read them: 4.2s, 38s, 3m05s, 2h10m."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _shown(value: object) -> object:
    return value if isinstance(value, int | float) else printable(value)  # numbers for %d, %f


def _message(record: logging.LogRecord) -> str:
    """The record's message with each argument made printable: the format is the program's
    own, the arguments are data, and may have come from the peer (Node.say's text is one)."""
    args = record.args
    if not args:
        return record.getMessage()
    if isinstance(args, Mapping):
        return str(record.msg) % {key: _shown(value) for key, value in args.items()}
    return str(record.msg) % tuple(_shown(value) for value in args)


class _RoleFilter(logging.Filter):
    """Stamps each record with the role of this process (one node per process)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "role"):
            record.role = self.role
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, role, message, then any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "role": getattr(record, "role", None),
            "message": _message(record),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "role"}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # default=str: an extra field that JSON cannot hold is still logged, as text.
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """logging's own format, with the message's arguments made printable."""

    def format(self, record: logging.LogRecord) -> str:
        # A copy: the same record goes to the other handlers, which escape it themselves.
        shown = logging.makeLogRecord(vars(record))
        shown.msg, shown.args = _message(record), None
        return super().format(shown)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes, not when the handler was made
    (as logging's own last-resort handler does): the live dashboard swaps sys.stderr so that
    log lines print above it instead of through it."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: it would pin today's stream

    @property
    def stream(self) -> Any:
        return sys.stderr


def _formatter(fmt: str, *, with_date: bool) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    # A terminal is read as it happens; a file is read later, maybe days later.
    datefmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return TextFormatter("%(asctime)s.%(msecs)03d %(levelname)s %(message)s", datefmt)


@dataclass(frozen=True)
class LogSettings:
    """The ``--log-level``, ``--log-format`` and ``--log-file`` of a command."""

    level: str = "info"
    fmt: str = "text"
    file: Path | None = None

    def args(self) -> list[str]:
        """The same settings as ``lb launch`` options, for a node this process starts."""
        args = ["--log-level", self.level, "--log-format", self.fmt]
        return args if self.file is None else [*args, "--log-file", str(self.file)]


def configure(role: str, settings: LogSettings, *, dashboard: bool = False) -> None:
    """Send the log to stderr (and to the file, appended), replacing any earlier setup.

    With the dashboard on it shows the node's messages itself, so stderr gets only warnings
    and errors; the file still gets everything at the chosen level. Raises OSError when the
    file cannot be opened.
    """
    handlers: list[logging.Handler] = []
    console = _Stderr()
    console.setFormatter(_formatter(settings.fmt, with_date=False))
    if dashboard:
        console.setLevel(logging.WARNING)
    handlers.append(console)
    if settings.file is not None:
        to_file = logging.FileHandler(settings.file, mode="a", encoding="utf-8")
        to_file.setFormatter(_formatter(settings.fmt, with_date=True))
        handlers.append(to_file)
    root = logging.getLogger()
    while _installed:
        old = _installed.pop()
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.addFilter(_RoleFilter(role))
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(logging.WARNING)
    log.setLevel(LEVELS[settings.level])


class LoggedMessages:
    """Wraps the dashboard handed to a node so that its messages also go to the log, for
    ``--log-file`` with the live view: the node logs its messages only when it has no
    dashboard. They are logged in the words the node would have used."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def message(self, text: str, now: float) -> None:
        self.dashboard.message(text, now)
        log.info("%s: %s", self.dashboard.role, text)

    def update(self, local: dict[str, Any], remote: dict[str, Any] | None) -> None:
        self.dashboard.update(local, remote)


def summary_line(summary: Mapping[str, Any]) -> str:
    """A run's summary for people, in one line (the JSON has the rest)."""
    ratio = f" ({summary['ratio']:.2f} x the ideal)" if summary.get("ratio") else ""
    executed, moved = summary["executed"], summary["moved"]
    return (f"done: {summary['jobs']} jobs in {duration(summary['makespan_s'])}{ratio}; "
            f"run here {executed['master']}, on the slave {executed['slave']}; "
            f"{summary['failed']['count']} failed; bootstrap {summary['bootstrap']}, "
            f"then moved {moved['to_slave']} to the slave and {moved['to_master']} back")
