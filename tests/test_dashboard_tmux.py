"""The live dashboard as a person sees it: `lb demo` in a real terminal, tmux's."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed: this test needs a real terminal")

TITLE = "lb — master ↔ slave"


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A tmux server of this test's own (-L), without the user's config (-f): their sessions
    are never touched, and killing it ends whatever still runs in it. Its name is new for
    every test: a server killed by the test before may still be going away, and a client
    that finds its socket says "server exited unexpectedly"."""
    command = ["tmux", "-L", f"lb-test-{os.getpid()}-{secrets.token_hex(4)}", "-f", os.devnull]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, timeout=10)


def screen(tmux: list[str], *, history: bool = False) -> str:
    args = ["capture-pane", "-p", "-t", "demo", *(["-S", "-"] if history else [])]
    return subprocess.run([*tmux, *args], capture_output=True, text=True, timeout=10).stdout


def watch(tmux: list[str], done: Callable[[str], bool], timeout: float) -> list[str]:
    """Every screen seen until ``done`` is true of one."""
    frames: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames.append(screen(tmux))
        if done(frames[-1]):
            return frames
        time.sleep(0.2)
    pytest.fail("the demo did not get there; the screen:\n" + screen(tmux, history=True))


def test_the_demo_dashboard_in_a_terminal(tmux: list[str], tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    # Jobs of ~40 ms: the slave joins well before the master could finish alone.
    demo = [sys.executable, "-m", "loadbalancer", "demo", "--jobs", "64", "--iterations", "4000",
            "--log-file", str(log)]
    shell = f"{shlex.join(demo)}; echo lb exited $?; sleep 60"
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "-s", "demo", shell],
                   check=True, timeout=10, cwd=tmp_path)
    frames = watch(tmux, lambda text: "lb exited" in text, timeout=60)

    # While it runs: both nodes' panels live, the bar part way.
    running = [f for f in frames if "MASTER · this node · processing" in f
               and "SLAVE · peer · processing" in f]
    assert running, "no screen showed both nodes at work:\n" + frames[-1]
    partway = [int(m[2]) for f in running for m in re.finditer(r"(\d+)/64 +(\d+)%", f)]
    assert any(pct < 100 for pct in partway), partway

    # The end: the last frame stays on screen, the summary below it.
    end = screen(tmux, history=True)
    end = end[end.rindex(TITLE):]
    # Each panel shows the state its node ended in, and a peer that left is not "LOST".
    assert "MASTER · this node · done" in end
    assert "SLAVE · peer · done" in end
    assert "LOST" not in end
    assert re.search(r"results ━+ 64/64 100%", end), end
    events = end[end.index("events"):end.index("lb run summary")]
    assert "slave joined" in events
    assert re.search(r"sent \d+ jobs to the slave: half of the queue", events), events
    assert "verified" in events
    assert re.search(r"verified\s+│ yes", end), end
    # The panel and the summary count the same jobs.
    panel = re.search(r"executed\s+(\d+) workers", end)  # the first: the master's panel
    summary = re.search(r"executed\s+│ master (\d+) · slave (\d+)", end)
    assert panel is not None and summary is not None, end
    assert panel[1] == summary[1] and int(summary[1]) + int(summary[2]) >= 64
    assert "lb exited 0" in end

    # --log-file took the dashboard's messages, and the slave's (the demo passes it on).
    text = log.read_text()
    assert " INFO master: slave joined" in text and " INFO master: verified" in text
    assert " INFO slave: master joined" in text


def test_ctrl_c_leaves_the_screen_restored_and_says_so(tmux: list[str], tmp_path: Path) -> None:
    # Long jobs: the run is well under way when Ctrl-C comes.
    demo = [sys.executable, "-m", "loadbalancer", "demo", "--jobs", "64", "--iterations",
            "40000"]
    shell = f"{shlex.join(demo)}; echo lb exited $?; sleep 60"
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "-s", "demo", shell],
                   check=True, timeout=10, cwd=tmp_path)
    watch(tmux, lambda text: "SLAVE · peer · processing" in text, timeout=30)
    subprocess.run([*tmux, "send-keys", "-t", "demo", "C-c"], check=True, timeout=10)
    frames = watch(tmux, lambda text: "lb exited" in text, timeout=30)
    end = screen(tmux, history=True)
    assert "interrupted (Ctrl-C): stopping" in end
    assert "lb exited 130" in frames[-1]
    assert "its log" not in end  # the slave stopped too: not shown as a failure
    # The live view stopped (the screen no longer changes) and the cursor is back.
    before = screen(tmux)
    time.sleep(1)
    assert screen(tmux) == before
    cursor = subprocess.run([*tmux, "display", "-p", "-t", "demo", "#{cursor_flag}"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    assert cursor == "1"
