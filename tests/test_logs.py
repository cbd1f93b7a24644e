"""Logs: text for people, JSON lines for machines, on stderr and appended to a file."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from test_init import invoke, one_error

from loadbalancer import logs
from loadbalancer.dashboard import Dashboard
from loadbalancer.testing.loopback import Cluster

log = logging.getLogger("lb")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() sets up the root logger of a process; give the test process its own back."""
    root = logging.getLogger()
    handlers, root_level, lb_level = root.handlers[:], root.level, log.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    log.setLevel(lb_level)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_json_lines_carry_time_level_role_message_and_extra_fields(
        tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "lb.log"
    logs.configure("slave", logs.LogSettings("info", "json", path))
    log.info("sent %d jobs", 3, extra={"jobs": 3, "peer": "master"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it broke")
    first, second = (json.loads(line) for line in lines(path))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first.pop("time"))
    assert first == {"level": "info", "role": "slave", "message": "sent 3 jobs", "jobs": 3,
                     "peer": "master"}
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_the_file_is_appended_to_and_the_level_filters(
        tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lb.log"
    path.write_text("an earlier run\n")
    logs.configure("master", logs.LogSettings("info", "text", path))
    log.debug("adaptor: hold")
    log.info("slave joined")
    assert lines(path)[0] == "an earlier run"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO slave joined",
                        lines(path)[1])
    assert len(lines(path)) == 2  # the debug line is below the level
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO slave joined\n", capsys.readouterr().err)
    logs.configure("master", logs.LogSettings("debug", "text", path))  # replaces, not adds
    log.debug("adaptor: hold")
    assert lines(path)[2].endswith("DEBUG adaptor: hold")
    assert capsys.readouterr().err.count("adaptor: hold") == 1


def test_with_the_dashboard_stderr_gets_only_warnings_and_the_file_everything(
        tmp_path: Path, restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lb.log"
    logs.configure("master", logs.LogSettings("info", "text", path), dashboard=True)
    screen = io.StringIO()
    dashboard = Dashboard("master", console=Console(file=screen, width=100))
    ui = logs.LoggedMessages(dashboard)
    ui.message("slave joined", 0.0)
    log.warning("the slave's trace did not arrive")
    dashboard.console.print(dashboard.render())
    assert "slave joined" in screen.getvalue()
    assert [line.split(" ", 2)[2] for line in lines(path)] == [
        "INFO master: slave joined", "WARNING the slave's trace did not arrive"]
    err = capsys.readouterr().err
    assert "slave joined" not in err and "trace did not arrive" in err


def test_stderr_is_looked_up_when_writing(restore_logging: None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # The live dashboard swaps sys.stderr to print log lines above itself.
    logs.configure("master", logs.LogSettings())
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    log.info("through the swap")
    assert "through the swap" in swapped.getvalue()


def test_an_unwritable_log_file_exits_2(tmp_path: Path, restore_logging: None) -> None:
    one_error(invoke("demo", "--log-file", str(tmp_path / "missing" / "lb.log")), 2,
              "cannot open the log file", "No such file or directory")


def test_a_node_logs_json_to_its_file_and_every_decision_at_debug(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=64, elements_per_job=32768, iterations=2000)
    path = cluster.directory / "master.jsonl"
    cluster.start("slave")
    cluster.wait_until_up("slave")
    cluster.start("master", "--log-format", "json", "--log-file", str(path),
                  "--log-level", "debug")
    assert cluster.processes["master"].wait(timeout=60) == 0, cluster.log("master")
    entries = [json.loads(line) for line in lines(path)]
    assert {entry["role"] for entry in entries} == {"master"}
    assert all(set(entry) >= {"time", "level", "message"} for entry in entries)
    messages = [(entry["level"], entry["message"]) for entry in entries]
    assert ("info", "master: slave joined") in messages
    assert ("info", "master: verified") in messages
    assert any(level == "debug" and "adaptor: T_local=" in text for level, text in messages)
    # The same log on stderr, as JSON too; the slave at the default level shows no decisions.
    printed = [json.loads(line) for line in cluster.log("master").splitlines()
               if line.startswith("{")]
    stderr = [entry["message"] for entry in printed if "level" in entry]  # not the summary
    assert stderr == [text for _, text in messages]
    assert "adaptor:" not in cluster.log("slave")
    assert " INFO slave: master joined" in cluster.log("slave")


@pytest.mark.parametrize(("text", "shown"), [
    ("plain words, quotes ' \" and é", "plain words, quotes ' \" and é"),
    ("two\nlines\r", "two\\nlines\\r"),
    ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
    ("tab\t nul\x00 del\x7f csi\x9b", "tab\\t nul\\x00 del\\x7f csi\\x9b"),
    ("line\u2028separator \u202eright-to-left", "line\\u2028separator \\u202eright-to-left"),
    ("a \\n that was typed", "a \\\\n that was typed"),  # so that it differs from a newline
])
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert logs.printable(text) == shown
    assert logs.printable(text).isprintable()


def test_printable_shows_at_most_its_limit() -> None:
    assert logs.printable("x" * 1500) == "x" * 1000 + "… (500 more characters)"
    assert logs.printable("ab\ncd", limit=3) == "ab\\n… (2 more characters)"
    assert logs.printable(12) == "12"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_value_cannot_forge_a_line(tmp_path: Path, restore_logging: None,
                                            capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    path = tmp_path / "lb.log"
    logs.configure("master", logs.LogSettings("info", fmt, path))
    # As Node.say logs a message that quotes the peer: the text is an argument.
    log.info("%s: %s", "master", "slave refused (x\n12:00:00.000 INFO forged\x1b[2J): 3 jobs")
    log.info("sent %d jobs in %.1f s to %s", 3, 0.5, "the\nslave")  # numbers stay numbers
    written, err = lines(path), capsys.readouterr().err.splitlines()
    for got in (written, err):
        assert len(got) == 2
        messages = ([json.loads(line)["message"] for line in got] if fmt == "json"
                    else [line.split(" INFO ", 1)[1] for line in got])
        assert messages == ["master: slave refused (x\\n12:00:00.000 INFO forged\\x1b[2J): 3 jobs",
                            "sent 3 jobs in 0.5 s to the\\nslave"]
