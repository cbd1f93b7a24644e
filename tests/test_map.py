"""Function jobs end to end: two real processes map a function over JSON-lines inputs."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np

from loadbalancer import jsonform
from loadbalancer.exits import EXIT_JOBS_FAILED
from loadbalancer.functions import import_spec
from loadbalancer.testing.loopback import Cluster

JOBS = Path(__file__).with_name("mapjobs.py")


def write_inputs(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(jsonform.to_json(line)) + "\n" for line in lines))
    return path


def read_output(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def start_map(cluster: Cluster, function: str, inputs: Path, *master_args: str,
              slave_args: tuple[str, ...] = ("--workload-module", str(JOBS))) -> Path:
    output = cluster.directory / "out.jsonl"
    cluster.start("slave", *slave_args)
    cluster.wait_until_up("slave")
    cluster.start("master", "--map", f"{JOBS}:{function}", "--inputs", str(inputs),
                  "--output", str(output), *master_args)
    return output


def test_a_map_gives_what_a_local_call_gives_with_arrays_and_bytes(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    rng = np.random.default_rng(1)
    calls = [[i, rng.bytes(i * 7), rng.standard_normal((3, i % 4 + 1)).astype(
        np.float32 if i % 2 else np.float64)] for i in range(60)]
    calls[5] = {"i": 5, "blob": b"\x00\xff", "grid": np.arange(6, dtype=np.int16).reshape(2, 3),
                "scale": 3}
    output = start_map(cluster, "transform", write_inputs(cluster.directory / "in.jsonl",
                                                           calls))
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    transform = import_spec(str(JOBS)).transform
    expected = [jsonform.to_json(transform(*c) if isinstance(c, list) else transform(**c))
                for c in calls]
    lines = read_output(output)
    assert [line["index"] for line in lines] == list(range(60))
    assert [line["result"] for line in lines] == json.loads(json.dumps(expected))
    back = jsonform.from_json(lines[8]["result"])
    assert isinstance(back, dict) and back["grid"].dtype == np.float64
    assert back["reversed"] == calls[8][1][::-1]  # type: ignore[index]
    result = cluster.result()
    assert result["executed"]["master"] > 0 and result["executed"]["slave"] > 0
    assert result["failed"]["count"] == 0 and result["verified"] is True
    assert result["map"]["function"] == "transform"


def test_a_raising_job_is_retried_on_the_other_node_then_reported(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    inputs = write_inputs(cluster.directory / "in.jsonl", list(range(40)))
    output = start_map(cluster, "fail_on_seven", inputs)
    assert cluster.wait() == {"slave": 0, "master": EXIT_JOBS_FAILED}, cluster.log("master")
    lines = read_output(output)
    assert [line["index"] for line in lines] == list(range(40))
    assert all(line["result"] == i * i for i, line in enumerate(lines) if i != 7)
    seven = lines[7]
    assert seven["attempts"] == 3 and "result" not in seven
    assert str(seven["error"]).startswith("ValueError: seven is not allowed")
    assert "in fail_on_seven" in str(seven["traceback"])
    assert "jobworker" not in str(seven["traceback"])
    result = cluster.result()
    assert result["failed"]["count"] == 1 and result["verified"] is False
    assert result["failed"]["first"][0]["index"] == 7
    assert result["failed"]["attempts_failed"] == 3
    pids = {str(line).rsplit("pid ", 1)[1] for line in [seven["error"]]}
    assert pids  # the last attempt's
    master_log, slave_log = cluster.log("master"), cluster.log("slave")
    assert "Traceback" not in master_log and "Traceback" not in slave_log
    assert "job 7 failed 3 times: ValueError" in master_log


def test_a_worker_process_that_dies_fails_only_its_job_which_is_retried(
        cluster: Cluster) -> None:
    cluster.configure(policy="none")  # the master keeps job 3: it dies there first
    marker = cluster.directory / "died"
    inputs = write_inputs(cluster.directory / "in.jsonl",
                          [[i, str(marker)] for i in range(10)])
    output = start_map(cluster, "die_once", inputs)
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    assert marker.read_text() == "died"
    assert [line["result"] for line in read_output(output)] == [i + 100 for i in range(10)]
    assert cluster.result()["failed"]["attempts_failed"] == 1


def test_a_slave_without_the_module_says_so_once_and_the_master_finishes_alone(
        cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    inputs = write_inputs(cluster.directory / "in.jsonl", list(range(30)))
    output = start_map(cluster, "square", inputs, slave_args=())
    assert cluster.wait(timeout=30) == {"slave": 0, "master": 0}, cluster.log("master")
    assert [line["result"] for line in read_output(output)] == [i * i for i in range(30)]
    slave_log, master_log = cluster.log("slave"), cluster.log("master")
    said = [line for line in slave_log.splitlines() if "cannot run" in line]
    assert len(said) == 1 and "mapjobs:square" in said[0]
    assert "--workload-module" in said[0]
    told = [line for line in master_log.splitlines() if "cannot run" in line]
    assert len(told) == 1 and "mapjobs:square" in told[0] and "carrying on" in told[0]
    result = cluster.result()
    assert result["executed"]["slave"] == 0 and result["refused"] <= 1
    assert result["bootstrap"] == 0


def test_a_killed_master_resumes_a_map_without_recomputing(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric", heartbeat_timeout=1.5, state_interval=0.25)
    inputs = write_inputs(cluster.directory / "in.jsonl", [[0.05]] * 120)
    output = start_map(cluster, "spin", inputs)
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 40, timeout=60)
    time.sleep(1.2)  # a journal sync
    master = cluster.processes.pop("master")
    master.send_signal(signal.SIGKILL)
    master.wait()
    cluster.start("master", "--map", f"{JOBS}:spin", "--inputs", str(inputs),
                  "--output", str(output), "--resume")
    assert cluster.wait(timeout=90) == {"slave": 0, "master": 0}, cluster.log("master")
    lines = read_output(output)
    assert [line["index"] for line in lines] == list(range(120))
    assert all(line["result"] == 0.05 for line in lines)
    result = cluster.result()
    assert result["recovered"] >= 30
    assert result["executed"]["master"] + result["executed"]["slave"] <= 120 - 30 + 20


def test_throttle_zero_stops_a_pure_python_job_at_once(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    # Jobs of 3 s: seeing the slave run one and throttling it take two `lb` processes, a
    # second or more on a busy 2-core machine, and the job must still be running then.
    inputs = write_inputs(cluster.directory / "in.jsonl", [[3.0]] * 4)
    start_map(cluster, "spin", inputs)
    cluster.wait_for("slave", lambda s: s["local"]["running"] == 1)
    answer = cluster.lb("throttle", "0", "--role", "slave", "--config", str(cluster.config))
    assert answer.returncode == 0, answer.stderr
    # It stops at once; it does not run out its 3 s.
    stopped = cluster.wait_for("slave", lambda s: s["local"]["running"] == 0, timeout=1.0)
    assert stopped["local"]["executed"] == 0
    assert cluster.wait(timeout=60) == {"slave": 0, "master": 0}
    assert cluster.result()["executed"] == {"master": 4, "slave": 0}


def test_the_throttle_holds_for_pure_python_that_never_calls_back(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    inputs = write_inputs(cluster.directory / "in.jsonl", [[0.2]] * 6)
    output = cluster.directory / "out.jsonl"
    spin = Path(__file__).parent.parent / "benchmarks" / "jobs.py"  # spin, timed inside
    cluster.start("master", "--map", f"{spin}:spin", "--inputs", str(inputs),
                  "--output", str(output), "--throttle", "0.5")  # no slave: all of them here
    assert cluster.wait(timeout=60) == {"master": 0}, cluster.log("master")
    ratios = sorted(wall / cpu for wall, cpu in (line["result"] for line in read_output(output)))
    # Its pauses double the wall time of every job; the benchmark holds it to 5 % on a quiet
    # machine, where a busy one adds the time a job waits for a core.
    assert 1.7 < ratios[len(ratios) // 2] < 3.5, ratios
