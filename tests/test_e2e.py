"""End to end: two real `lb launch` processes on loopback verify a run."""

from __future__ import annotations

import json
import re
import secrets
import socket
import stat
import time

import pytest

from loadbalancer import control, local, wire
from loadbalancer.addresses import parse_address
from loadbalancer.testing.loopback import Cluster

# 256 jobs of about 10 ms each: a run takes a few seconds.
SMALL = {"jobs": 256, "elements_per_job": 8192, "iterations": 3000}
SUMMARY_KEYS = {"verified", "jobs", "makespan_s", "ideal_s", "executed", "moved",
                "retransmits", "dropped", "policy"}


def run(cluster: Cluster) -> dict[str, int]:
    cluster.start_both()
    return cluster.wait()


@pytest.mark.parametrize("policy", ["none", "sender", "receiver", "symmetric", "seed"])
def test_every_policy_verifies(cluster: Cluster, policy: str) -> None:
    cluster.configure(policy=policy, **SMALL)
    assert run(cluster) == {"slave": 0, "master": 0}, cluster.log("master")
    result = cluster.result()
    assert set(result) >= SUMMARY_KEYS
    assert result["verified"] is True
    assert result["policy"] == policy
    assert result["jobs"] == 256
    assert result["executed"]["master"] > 0 and result["executed"]["slave"] > 0
    assert result["executed"]["master"] + result["executed"]["slave"] >= 256
    # Half of the queue when the slave joined; the master may have started a job or two.
    assert 120 <= result["bootstrap"] <= 128
    assert 0 < result["ideal_s"] <= result["makespan_s"]
    if policy == "none":
        assert result["moved"] == {"to_slave": 0, "to_master": 0}


def test_trace_holds_both_nodes(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **SMALL)
    assert run(cluster) == {"slave": 0, "master": 0}
    trace = cluster.trace()
    assert set(trace["nodes"]) == {"master", "slave"}
    for node in trace["nodes"].values():
        assert node["samples"], "no samples"
        assert {"t", "pending", "throttle", "cpu", "done"} <= set(node["samples"][0])
        assert any(e["type"] == "throttle" for e in node["events"])
    slave_done = trace["nodes"]["slave"]["samples"][-1]["done"]
    assert slave_done == cluster.result()["executed"]["slave"]


def test_master_first_then_slave(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **SMALL)
    cluster.start("master")
    time.sleep(0.3)
    cluster.start("slave")
    assert cluster.wait() == {"master": 0, "slave": 0}
    assert cluster.result()["verified"] is True


def test_throttle_zero_hands_the_slaves_work_to_the_master(cluster: Cluster) -> None:
    # Jobs of ~40 ms, so the run lasts long enough to act in the middle of it.
    cluster.configure(policy="symmetric", jobs=256, elements_per_job=32768, iterations=4000)
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 5)
    answer = cluster.lb("throttle", "0", "--role", "slave", "--config", str(cluster.config))
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "throttle 0"
    status = cluster.wait_for("slave", lambda s: s["local"]["queued"] == 0
                              and s["local"]["running"] == 0)
    executed_then = status["local"]["executed"]
    assert status["local"]["throttle"] == 0
    assert cluster.wait() == {"slave": 0, "master": 0}
    result = cluster.result()
    assert result["verified"] is True
    assert result["executed"]["slave"] == executed_then  # not one job more after throttle 0
    assert result["moved"]["to_master"] > 0
    events = cluster.trace()["nodes"]["slave"]["events"]
    assert [e["throttle"] for e in events if e["type"] == "throttle"][-1] == 0


def test_datagrams_with_a_bad_tag_are_dropped_and_counted(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=256, elements_per_job=32768, iterations=2000)
    cluster.start_both()
    cluster.wait_for("master", lambda s: s["local"]["peer"] == "connected")
    settings = cluster.settings
    # A well-formed header with an empty body, and a tag of zeros.
    forged = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.Kind.JOBS, 0, 0, 0, 0, 0, 0)
    forged += bytes(wire.TAG_SIZE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(50):
            for role in ("master", "slave"):
                sock.sendto(forged, parse_address(settings[role], role))
    assert cluster.wait() == {"slave": 0, "master": 0}
    result = cluster.result()
    assert result["verified"] is True
    assert result["dropped"]["bad_tag"] == 100


def test_the_control_channel_refuses_bad_values_and_changes_nothing(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=64, elements_per_job=32768, iterations=4000)
    cluster.start("master")
    cluster.wait_until_up("master")
    path = cluster.directory / "run" / "master.sock"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for value, words in (("fast", "must be a number"), (1.5, "between 0 and 1"),
                         (-0.1, "between 0 and 1"), (True, "must be a number")):
        with pytest.raises(control.ControlError, match=words):
            control.request(path, {"cmd": "throttle", "value": value})
    with pytest.raises(control.ControlError, match="unknown command"):
        control.request(path, {"cmd": "reboot"})
    assert control.request(path, {"cmd": "status"})["local"]["throttle"] == 1.0
    cluster.processes["master"].terminate()


def test_without_a_terminal_the_log_says_how_far_the_run_is(cluster: Cluster) -> None:
    # About 2 s of work: a few progress lines at 0.3 s apart.
    cluster.configure(policy="symmetric", progress_interval=0.3, jobs=128,
                      elements_per_job=32768, iterations=8000)
    assert run(cluster) == {"slave": 0, "master": 0}
    lines = cluster.log("master").splitlines()
    progress = [line for line in lines if " INFO master: progress: " in line]
    assert len(progress) >= 2, lines
    assert re.search(r"progress: \d+ of 128 jobs done \(\d+%\), [\d.]+ jobs/s, about \S+ left; "
                     r"queued: here \d+, the slave \d+", progress[0]), progress[0]
    done = [line for line in lines if " INFO master: done: 128 jobs in " in line]
    assert len(done) == 1 and "x the ideal" in done[0] and "0 failed" in done[0]
    slave = [line for line in cluster.log("slave").splitlines() if "progress: " in line]
    assert slave and re.search(r"progress: \d+ jobs done here \([\d.]+/s\), \d+ queued", slave[0])


def test_the_log_says_in_words_why_jobs_moved(cluster: Cluster) -> None:
    # The slave at 0.3: the master runs dry first and asks it for jobs.
    cluster.configure(policy="receiver", jobs=128, elements_per_job=32768, iterations=4000)
    cluster.start_both("--throttle", "0.3")
    assert cluster.wait() == {"slave": 0, "master": 0}
    log = cluster.log("master")
    assert re.search(r"INFO master: sent \d+ jobs to the slave: half of the queue, to start "
                     r"with", log), log
    assert re.search(r"INFO master: asked the slave for \d+ jobs?: the slave would finish "
                     r"[\d.]+s after this node; both about [\d.]+s then", log), log
    assert "T_local" not in log and " 1 jobs" not in log  # the numbers are for debug


def test_the_bootstrap_is_its_own_count_everywhere(cluster: Cluster) -> None:
    # ~20 ms jobs: the run lasts long enough for the slave's state to show all of it.
    cluster.configure(policy="symmetric", jobs=128, elements_per_job=32768, iterations=8000)
    cluster.start_both()
    # The bootstrap comes in several JOBS messages, and the slave may state its first
    # before the last has come (it did once, 4 of 63): wait until it has them all.
    seen = cluster.wait_for("master", lambda s: s["remote"] is not None
                            and s["remote"].get("bootstrap") == s["local"]["bootstrap"] > 0)
    assert cluster.wait() == {"slave": 0, "master": 0}
    result = cluster.result()
    # What the master sent at the start, what the slave says it got, what the summary says.
    assert seen["local"]["bootstrap"] == seen["remote"]["bootstrap"] == result["bootstrap"]
    assert 60 <= result["bootstrap"] <= 64
    assert seen["local"]["moved_out"] <= result["moved"]["to_slave"]  # moves only


def test_a_wrong_secret_is_said_on_both_sides(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=64, elements_per_job=32768, iterations=4000,
                      master_timeout=3)
    other = dict(cluster.settings, secret=secrets.token_urlsafe(32))
    cluster.configs["slave"] = cluster.directory / "lb-slave.json"
    cluster.configs["slave"].write_text(json.dumps(other))
    cluster.start_both()
    assert cluster.wait(timeout=60) == {"slave": 1, "master": 0}
    for role, peer in (("master", "slave"), ("slave", "master")):
        address = cluster.settings[peer]
        said = [line for line in cluster.log(role).splitlines() if "fail authentication" in line]
        assert len(said) == 1, cluster.log(role)
        assert f"datagrams from {address} fail authentication: do both nodes use the same " \
               "secret?" in said[0]
    assert cluster.result()["executed"]["slave"] == 0


def test_a_second_slave_with_the_same_config_is_refused_and_gives_up(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=256, elements_per_job=32768, iterations=4000,
                      master_timeout=2)
    cluster.start_both()
    cluster.wait_for("master", lambda s: s["local"]["peer"] == "connected")
    second = dict(cluster.settings, slave=f"127.0.0.1:{local.free_port()}")
    path = cluster.directory / "lb-second.json"
    path.write_text(json.dumps(second))
    intruder = local.launch(path, "slave", log=cluster.directory / "second.log")
    assert intruder.wait(timeout=30) == 1
    assert "no master for 2s" in (cluster.directory / "second.log").read_text()
    assert cluster.wait(timeout=60) == {"slave": 0, "master": 0}
    told = [line for line in cluster.log("master").splitlines() if "asked to join" in line]
    assert len(told) == 1 and f"another slave at {second['slave']} asked to join" in told[0]
    # The first one kept its place while the run lasted (once it has left, the place is free).
    during = cluster.log("master").split("every job has its outcome")[0]
    assert during.count("slave joined") == 1


def test_an_idle_master_copies_the_slow_slaves_last_job_and_the_first_result_wins(
        cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", jobs=96, elements_per_job=32768, iterations=8000)
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 3)
    # Its job now computes 0.5 ms of every 100: an 80 ms job would take 16 s there.
    answer = cluster.lb("throttle", "0.005", "--role", "slave", "--config", str(cluster.config))
    assert answer.returncode == 0, answer.stderr
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    result = cluster.result()
    assert result["verified"] is True
    # It failed once on a loaded machine (no copy made): the logs say why, next time.
    assert result["copies"]["made"] >= 1 and result["copies"]["won"] >= 1, (
        result["copies"], cluster.log_tail("master"), cluster.log_tail("slave"))
    assert "copying 1 job the slave is running" in cluster.log("master")
    # The copy won: the slave's original was stopped, not counted as a second run.
    assert result["executed"]["master"] + result["executed"]["slave"] == 96
