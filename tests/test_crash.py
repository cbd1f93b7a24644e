"""A node that dies: the other finishes, a restarted one rejoins or resumes."""

from __future__ import annotations

import datetime
import signal
import struct
import time
import zlib

import pytest

from loadbalancer import journal
from loadbalancer.testing.loopback import Cluster

# 256 jobs of ~20 ms; a short heartbeat timeout keeps the tests quick.
MEDIUM = {"jobs": 256, "elements_per_job": 16384, "iterations": 4000,
          "heartbeat_timeout": 1.5, "state_interval": 0.25}


def kill(cluster: Cluster, role: str) -> float:
    process = cluster.processes.pop(role)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return time.time()


def logged_at(log: str, text: str) -> float:
    """Wall-clock time of the first log line holding ``text`` (logs say HH:MM:SS.mmm)."""
    line = next(line for line in log.splitlines() if text in line)
    clock = datetime.datetime.strptime(line.split()[0], "%H:%M:%S.%f").time()
    return datetime.datetime.combine(datetime.date.today(), clock).timestamp()


def test_the_master_takes_back_a_killed_slaves_work_and_verifies(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **MEDIUM)
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 10)
    killed = kill(cluster, "slave")
    assert cluster.wait() == {"master": 0}
    noticed = logged_at(cluster.log("master"), "slave lost (timeout)") - killed
    assert 1.0 <= noticed <= 1.5 + 0.3  # the heartbeat timeout, give or take a state period
    result = cluster.result()
    assert result["verified"] is True
    assert "slave lost (timeout)" in cluster.log("master")
    assert "took back" in cluster.log("master")


def test_a_restarted_slave_rejoins_and_gets_work_again(cluster: Cluster) -> None:
    # A batch of 256 can be all but done by the master alone in the ~2 s between the
    # kill and the restarted slave's join, leaving the new session nothing to do.
    cluster.configure(policy="symmetric", **{**MEDIUM, "jobs": 768})
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 10)
    kill(cluster, "slave")
    cluster.wait_for("master", lambda s: s["local"]["peer"] == "lost", timeout=10)
    cluster.start("slave")
    assert cluster.wait() == {"master": 0, "slave": 0}
    result = cluster.result()
    assert result["verified"] is True
    assert cluster.log("master").count("slave joined") == 2
    # Both slave sessions' work counts: every job ran somewhere (some twice: a dead
    # session's results are lost), and the ideal is the capacity that was there.
    assert result["executed"]["master"] + result["executed"]["slave"] >= 768
    assert result["executed"]["slave"] >= 10 + 5
    assert 0.95 <= result["ratio"] < 1.5
    slave = cluster.trace()["nodes"]["slave"]
    assert {sample.get("session") for sample in slave["samples"]} >= {1}  # the dead one
    assert [e["type"] for e in slave["events"]].count("joined") == 2


def test_a_slave_stopped_past_the_timeout_rejoins_as_soon_as_it_wakes(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **{**MEDIUM, "jobs": 768})
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["executed"] >= 10)
    cluster.signal("slave", signal.SIGSTOP)
    cluster.wait_for("master", lambda s: s["local"]["peer"] == "lost", timeout=10)
    time.sleep(0.5)  # the master greets again while the slave sleeps
    woke = time.time()
    cluster.signal("slave", signal.SIGCONT)
    assert cluster.wait() == {"master": 0, "slave": 0}
    assert cluster.result()["verified"] is True
    slave = cluster.log("slave")
    # Not its own heartbeat timeout (1.5 s) later: the master's first HELLO says it
    # dropped the session, and the slave starts over at once.
    assert "master lost (it had given this session up" in slave, slave[-2000:]
    assert logged_at(slave, "master lost (it had given this session up") - woke < 1.4
    assert cluster.log("master").count("slave joined") == 2


def test_a_killed_master_resumes_from_its_journal(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **{**MEDIUM, "jobs": 768})  # alive after a sync
    cluster.start_both()
    status = cluster.wait_for("master", lambda s: s["local"]["finished"] >= 100)
    time.sleep(1.2)  # a journal sync: everything finished by the status is on disk
    kill(cluster, "master")
    assert (cluster.directory / "master.journal").exists()
    cluster.start("master", "--resume")
    assert cluster.wait() == {"master": 0, "slave": 0}, cluster.log("master")
    result = cluster.result()
    assert result["verified"] is True
    # Durable up to the last sync: nothing finished before it is done again.
    assert result["recovered"] >= status["local"]["finished"]
    assert result["executed"]["master"] <= 768 - result["recovered"]
    # The resumed run's ideal is that of what it computed, not of the whole batch.
    assert 0.95 <= result["ratio"] < 2
    assert not (cluster.directory / "master.journal").exists()  # verified: nothing to resume
    assert "slave" in cluster.log("slave") and "joined" in cluster.log("slave")


def test_a_wrong_result_in_the_journal_is_computed_again_not_failed_for_ever(
        cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **MEDIUM)
    cluster.start("master")  # alone: every result is its own
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 80)
    time.sleep(1.2)  # a journal sync
    kill(cluster, "master")
    path = cluster.directory / "master.journal"
    data = path.read_bytes()
    # A record whose checksum is right and whose values are not: job 3's result, zeroed.
    for offset, kind, body in journal._scan(data).records:
        if kind == journal.RESULT and journal.decode_entry(kind, body)[0] == 3:
            wrong = struct.pack("!QB", 3, journal.RAW) + bytes(16384 * 8)
            record = journal.RECORD.pack(len(wrong), kind, zlib.crc32(wrong)) + wrong
            data = data[:offset] + data[offset + journal.RECORD.size + len(body):] + record
            break
    else:
        pytest.fail("job 3 was not journaled")
    path.write_bytes(data)
    cluster.start("master", "--resume")
    assert cluster.wait() == {"master": 0}, cluster.log("master")
    assert cluster.result()["verified"] is True
    assert "found 1 wrong results (first: job 3): computing them again" in cluster.log("master")
    assert not path.exists()


def test_a_flipped_byte_in_the_journal_costs_one_result_said_with_its_offset(
        cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **MEDIUM)
    cluster.start("master")
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 80)
    time.sleep(1.2)  # a journal sync
    kill(cluster, "master")
    path = cluster.directory / "master.journal"
    data = bytearray(path.read_bytes())
    records = journal._scan(bytes(data)).records
    offset, body = next((o, b) for o, kind, b in records if kind == journal.RESULT)
    data[offset + journal.RECORD.size + len(body) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    cluster.start("master", "--resume")
    assert cluster.wait() == {"master": 0}, cluster.log("master")
    result = cluster.result()
    assert result["verified"] is True
    results = sum(kind == journal.RESULT for _, kind, _ in records)
    assert result["recovered"] == results - 1  # that one, not the ones after it
    said = [line for line in cluster.log("master").splitlines() if "damaged" in line]
    assert len(said) == 1 and f"bytes {offset}.." in said[0] and "computed again" in said[0]
    assert path.with_name("master.journal.damaged").read_bytes() == bytes(data)


def test_a_journal_of_another_workload_is_refused(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **MEDIUM)
    cluster.start("master")
    cluster.wait_until_up("master")
    kill(cluster, "master")
    settings = cluster.settings
    settings["workload"]["iterations"] = 5
    cluster.config.write_text(__import__("json").dumps(settings))
    answer = cluster.lb("launch", "--role", "master", "--config", str(cluster.config),
                        "--resume", "--no-dashboard")
    assert answer.returncode == 2
    assert "was written for another run" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_an_unfinished_journal_is_not_overwritten(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", **MEDIUM)
    cluster.start("master")
    cluster.wait_until_up("master")
    kill(cluster, "master")
    answer = cluster.lb("launch", "--role", "master", "--config", str(cluster.config),
                        "--no-dashboard")
    assert answer.returncode == 2
    assert "resume it with --resume" in answer.stderr


@pytest.mark.parametrize("role", ["slave"])
def test_resume_is_for_the_master(cluster: Cluster, role: str) -> None:
    cluster.configure(**MEDIUM)
    answer = cluster.lb("launch", "--role", role, "--config", str(cluster.config), "--resume")
    assert answer.returncode == 2
    assert "--resume is for the master" in answer.stderr


def test_a_slave_whose_master_never_comes_gives_up_in_words(cluster: Cluster) -> None:
    cluster.configure(master_timeout=1.5)
    began = time.monotonic()
    cluster.start("slave")
    assert cluster.wait(timeout=20) == {"slave": 1}
    assert 1.5 <= time.monotonic() - began < 8
    last = cluster.log("slave").splitlines()[-1]
    assert "no master for 1.5s" in last and "giving up" in last


def test_a_slave_that_loses_its_master_gives_up_in_words(cluster: Cluster) -> None:
    cluster.configure(master_timeout=5, heartbeat_timeout=1, state_interval=0.2, jobs=256,
                      elements_per_job=16384, iterations=4000)
    cluster.start_both()
    cluster.wait_for("slave", lambda s: s["local"]["peer"] == "connected")
    kill(cluster, "master")
    assert cluster.wait(timeout=20) == {"slave": 1}
    log = cluster.log("slave")
    assert "master lost (timeout)" in log and "no master for 5s" in log.splitlines()[-1]
