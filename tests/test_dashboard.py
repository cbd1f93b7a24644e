"""Tests of the terminal dashboard: render to a plain 80x24 console and read the text."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

import pytest
from rich.console import Console, RenderableType

from loadbalancer.dashboard import Dashboard, status_table, summary_table


def status(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "role": "master",
        "phase": "processing",
        "queued": 120,
        "running": 1,
        "executed": 300,
        "throttle": 0.7,
        "workers": 1,
        "cpu": 63.5,
        "speed": 7.1,
        "eta": 17.0,
        "peer": "connected",
        "moved_out": 40,
        "moved_in": 12,
        "retransmits": 3,
        "dropped": {"bad_tag": 2},
        "total": 1024,
        "finished": 512,
    }
    return base | overrides


def slave_status(**overrides: Any) -> dict[str, Any]:
    return status(role="slave", queued=37, throttle=0.3, total=None, finished=200) | overrides


def text_of(renderable: RenderableType, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, height=24, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def line_with(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if label in line)


def hhmmss(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")


SUMMARY: dict[str, Any] = {
    "verified": True,
    "jobs": 1024,
    "makespan_s": 12.3,
    "ideal_s": 10.0,
    "ratio": 1.23,
    "executed": {"master": 600, "slave": 424},
    "moved": {"to_slave": 40, "to_master": 12},
    "retransmits": 3,
    "spurious": 1,
    "dropped": {"bad_tag": 2},
    "policy": "eta",
    "bytes_sent": 123456,
    "failed": {"count": 0, "first": [], "attempts_failed": 0},
    "bootstrap": 512,
}


def test_master_screen_shows_both_nodes_and_progress() -> None:
    dash = Dashboard("master", policy="eta")
    dash.update(status(), slave_status())
    out = text_of(dash.render())
    assert "lb — master ↔ slave" in out and "policy eta" in out
    assert "MASTER · this node" in out and "SLAVE · peer" in out
    queued = line_with(out, "queued")
    assert "120" in queued and "37" in queued
    throttle = line_with(out, "throttle")
    assert "0.70" in throttle and "0.30" in throttle and "63.5%" in throttle
    assert "7.1/s" in out and "17s" in out
    assert "512/1024" in out and " 50%" in out


def test_percent_is_floored_until_complete() -> None:
    dash = Dashboard("master")
    dash.update(status(finished=1023), None)
    assert "99%" in text_of(dash.render())
    dash.update(status(finished=1024), None)
    assert "100%" in text_of(dash.render())


def test_unknown_values_show_a_dash() -> None:
    dash = Dashboard("master")
    dash.update(status(speed=None, eta=None, throttle=None), None)
    out = text_of(dash.render())
    speed = line_with(out, "speed")
    assert "/s" not in speed and speed.count("—") == 2
    assert "—" in line_with(out, "throttle")
    assert "— jobs/s" in out  # a single sample gives no rate yet


def test_missing_remote_shows_waiting_state() -> None:
    dash = Dashboard("master")
    dash.update(status(peer="waiting"), None)
    out = text_of(dash.render())
    assert "waiting for slave to join" in out
    assert "not connected" in out
    assert "peer waiting" in out


def test_lost_peer_is_marked() -> None:
    dash = Dashboard("slave")
    dash.update(slave_status(peer="lost"), status(peer="lost"))
    assert text_of(dash.render()).count("peer LOST") == 2


def test_messages_carry_times_and_only_the_last_n_are_kept() -> None:
    dash = Dashboard("master", max_messages=3)
    base = 1_700_000_000.0
    for i, word in enumerate(["alpha", "bravo", "charlie", "delta", "echo"]):
        dash.message(f"event {word}", base + i)
    out = text_of(dash.render())
    assert "alpha" not in out and "bravo" not in out
    for i, word in [(2, "charlie"), (3, "delta"), (4, "echo")]:
        assert f"{hhmmss(base + i)}  event {word}" in out
    assert out.index("charlie") < out.index("delta") < out.index("echo")


def test_full_screen_fits_80x24() -> None:
    dash = Dashboard("master", policy="eta")
    dash.update(status(phase="aggregating"), slave_status())
    for i in range(10):
        dash.message(f"sent {i} jobs to slave (T 12.1s vs 4.0s) " + "x" * 80, 1_700_000_000 + i)
    lines = text_of(dash.render()).splitlines()
    assert len(lines) <= 24
    assert max(len(line) for line in lines) <= 80
    assert "aggregating" in lines[1]


def test_slave_without_master_status_shows_results_delivered() -> None:
    dash = Dashboard("slave")
    dash.update(slave_status(), None)
    out = text_of(dash.render())
    assert "results delivered 200" in out and "%" not in out.replace("63.5%", "")
    assert "waiting for master to join" in out


def test_slave_shows_the_masters_progress_once_known() -> None:
    dash = Dashboard("slave")
    dash.update(slave_status(), status())
    out = text_of(dash.render())
    assert "512/1024" in out and "50%" in out
    assert "SLAVE · this node" in out and "MASTER · peer" in out


def test_rate_is_measured_over_the_recent_window() -> None:
    now = [0.0]
    dash = Dashboard("master", clock=lambda: now[0])
    for t, done in [(0.0, 0), (10.0, 100), (20.0, 400)]:
        now[0] = t
        dash.update(status(finished=done), None)
    # The window drops the sample at t=0: (400 - 100) / 10 s, not 400 / 20 s.
    assert "30.0 jobs/s" in text_of(dash.render())
    now[0] = 30.0
    dash.update(status(finished=5), None)  # a count going backwards restarts the measurement
    assert "— jobs/s" in text_of(dash.render())


def test_live_context_leaves_the_final_frame() -> None:
    console = Console(file=io.StringIO(), width=80, height=24, color_system=None)
    with Dashboard("master", console=console, refresh_per_second=20) as dash:
        dash.update(status(finished=256), slave_status())
        dash.message("peer joined", 1_700_000_000)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "25%" in out and "peer joined" in out


@pytest.mark.parametrize(("verified", "shown"), [(True, "yes"), (False, "NO")])
def test_summary_table(verified: bool, shown: str) -> None:
    out = text_of(summary_table(SUMMARY | {"verified": verified}))
    assert shown in line_with(out, "verified")
    assert "1.23" in line_with(out, "ratio")
    assert "12.30 s" in line_with(out, "makespan")
    assert "master 600" in out and "slave 424" in out
    assert "to slave 40" in out and "to master 12" in out
    assert "bad_tag 2" in out and "120.6 KiB" in out and "eta" in out
    assert "3 (1 spurious)" in line_with(out, "retransmits")


def test_text_from_the_peer_is_shown_escaped_on_one_line() -> None:
    evil = "x\n\x1b[2J\x1b[31mforged"
    dash = Dashboard("master")
    dash.update(status(), slave_status(phase=evil, peer=evil))
    dash.message(f"slave refused ({evil}): 3 jobs", 1_700_000_000)
    plain = Dashboard("master")
    plain.update(status(), slave_status())
    plain.message("slave refused (x): 3 jobs", 1_700_000_000)
    out = text_of(dash.render(), width=120)
    assert "\x1b" not in out
    assert "slave refused (x\\n\\x1b[2J\\x1b[31mforged): 3 jobs" in out
    assert "x\\n\\x1b[2J" in line_with(out, "SLAVE · peer")  # the phase, in the panel's title
    assert len(out.splitlines()) == len(text_of(plain.render(), width=120).splitlines())
    table = text_of(summary_table({**SUMMARY, "dropped": {evil: 2}}))
    assert "\x1b" not in table and "x\\n\\x1b[2J\\x1b[31mforged 2" in table


def test_status_for_people_is_both_nodes_side_by_side_rounded() -> None:
    out = text_of(status_table(status(speed=7.1234, eta=17.42), slave_status(speed=3.0)))
    assert "master (this node)" in out and "slave (its peer)" in out
    assert line_with(out, "queued · running").split() [-6:] == ["120", "·", "1", "37", "·", "1"]
    assert "0.70 · 1" in line_with(out, "throttle") and "0.30 · 1" in line_with(out, "throttle")
    assert "7.1 jobs/s" in line_with(out, "speed") and "17s" in line_with(out, "ETA")
    assert "512 of 1024 (50%)" in line_with(out, "progress")
    assert "bad_tag 2" in line_with(out, "dropped")
    assert "—" in line_with(out, "datagram")  # not in this status
    # A peer whose status lacks the count (an older lb, or a value refused) shows the rest.
    counted = text_of(status_table(status(spurious=1), slave_status()))
    assert line_with(counted, "retransmits").split()[-4:] == ["3", "(1", "spurious)", "3"]
    sized = text_of(status_table(status(datagram=1472, datagram_steps=1), None))
    assert "1472 B (stepped down 1x)" in line_with(sized, "datagram")
    alone = text_of(status_table(status(peer="waiting"), None))
    assert line_with(alone, "phase").split()[-1] == "—"


def test_the_summary_names_failed_jobs() -> None:
    failed = {"count": 2, "first": [{"index": 7, "error": "ValueError: seven"},
                                    {"index": 9, "error": "KeyError: 'x'"}], "attempts_failed": 6}
    out = text_of(summary_table(SUMMARY | {"failed": failed}), width=120)
    assert "2 (7: ValueError: seven, 9: KeyError: 'x')" in line_with(out, "failed")
    assert "512" in line_with(out, "bootstrap")
