"""Process setup of a node."""

from __future__ import annotations

import os
import platform
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loadbalancer import app, exits
from loadbalancer.testing.loopback import Cluster


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_the_allocator_keeps_buffers_for_reuse() -> None:
    assert app.tune_allocator() is True


def test_elsewhere_the_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.sys, "platform", "darwin")
    assert app.tune_allocator() is False


STOPS = [(signal.SIGTERM, 143, "stopped by SIGTERM"),
         (signal.SIGINT, 130, "interrupted (Ctrl-C): stopping")]


@pytest.mark.parametrize(("signum", "code", "words"), STOPS)
def test_a_signal_stops_a_node_cleanly_with_its_code_and_a_word(
        cluster: Cluster, signum: signal.Signals, code: int, words: str) -> None:
    cluster.configure(jobs=16, elements_per_job=16, iterations=1)
    process = cluster.start("master", "--throttle", "0")  # works at nothing: waits for a slave
    cluster.wait_until_up("master")
    process.send_signal(signum)
    assert process.wait(timeout=30) == code, cluster.log("master")
    assert cluster.log("master").splitlines()[-1].endswith(f" INFO master: {words}")
    assert not (cluster.directory / "run" / "master.sock").exists()  # it shut down, not died


def read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return
        if not chunk:
            return
        into.extend(chunk)


@pytest.mark.parametrize(("signum", "code", "words"), STOPS)
def test_a_signal_leaves_the_dashboard_saying_so_and_the_terminal_restored(
        cluster: Cluster, signum: signal.Signals, code: int, words: str) -> None:
    config = cluster.configure(jobs=16, elements_per_job=16, iterations=1)
    screen, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "loadbalancer", "launch", "--role", "master", "--config",
         str(config), "--throttle", "0"], stdin=terminal, stdout=terminal, stderr=terminal,
        env={**os.environ, "COLUMNS": "100", "LINES": "30", "TERM": "xterm"})
    os.close(terminal)
    out = bytearray()
    reader = threading.Thread(target=read_all, args=(screen, out), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while b"16 jobs of workload 'vector'" not in out:  # the dashboard's events show it
            assert process.poll() is None and time.monotonic() < deadline, out.decode()
            time.sleep(0.05)
        process.send_signal(signum)
        assert process.wait(timeout=30) == code
        reader.join(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(screen)
    shown = out.decode(errors="replace")
    last_frame = shown[shown.rfind("lb — master"):]
    assert words in last_frame
    assert shown.rfind("\x1b[?25h") > shown.rfind("\x1b[?25l")  # the cursor is back


def test_the_systemd_unit_counts_sigterm_s_exit_as_a_clean_stop() -> None:
    unit = (Path(__file__).parent.parent / "contrib" / "lb@.service").read_text()
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line
                and not line.startswith("#")]
    success = [value.split() for key, value in settings if key == "SuccessExitStatus"]
    assert success == [[str(exits.EXIT_TERMINATED)]]
