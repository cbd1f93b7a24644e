"""The command line: one clear line and the right exit code for every mistake."""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_control import Impostor

from loadbalancer import local
from loadbalancer.addresses import parse_address


def lb(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadbalancer", *args], capture_output=True,
                          text=True, timeout=30, cwd=cwd)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert all(w in lines[0] for w in words), result.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return local.write_config(tmp_path, jobs=8, elements_per_job=16, iterations=1)


def test_version() -> None:
    result = lb("--version")
    assert result.returncode == 0
    assert "lb, version" in result.stdout


@pytest.mark.parametrize(("args", "words"), [
    (["launch", "--role", "boss"], ["role", "boss"]),
    (["launch", "--role", "master", "--policy", "fastest"], ["policy", "fastest"]),
    (["launch", "--role", "master", "--throttle", "1.5"], ["throttle", "1.5"]),
    (["launch", "--role", "master", "--jobs", "0"], ["jobs", "0"]),
    (["throttle", "abc"], ["abc"]),
    (["throttle", "--", "-0.1"], ["-0.1"]),
    (["launch", "--role", "master", "--throttle", "nan"], ["--throttle", "nan"]),
    (["throttle", "nan"], ["nan", "0<=x<=1"]),
    (["throttle", "inf"], ["inf", "0<=x<=1"]),
    (["demo", "--slave-throttle", "NaN"], ["--slave-throttle", "NaN"]),
])
def test_bad_arguments_exit_2(args: list[str], words: list[str], config: Path) -> None:
    one_line_error(lb(*args, "--config", str(config)) if args[0] == "launch"
                   else lb(*args), 2, *words)


def test_missing_config_exits_2(tmp_path: Path) -> None:
    one_line_error(lb("launch", "--role", "master", cwd=tmp_path), 2, "lb.json", "not found")


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text(json.dumps({"master": "127.0.0.1:1", "slave": "127.0.0.1:2",
                                "secret": secrets.token_urlsafe(32), "state_interval": "soon"}))
    one_line_error(lb("launch", "--role", "slave", "--config", str(path)), 2, "state_interval")


def test_the_example_config_does_not_run_as_it_stands() -> None:
    example = Path(__file__).parent.parent / "config.example.json"
    one_line_error(lb("launch", "--role", "slave", "--config", str(example)), 2,
                   "config.example.json: secret is still config.example.json's placeholder",
                   "lb init", "secrets.token_urlsafe(32)")


def test_bad_workload_parameter_exits_2(tmp_path: Path) -> None:
    path = local.write_config(tmp_path, jobs=8, elements_per_job=16, iterations=-3)
    one_line_error(lb("launch", "--role", "master", "--config", str(path)), 2, "iterations")


def test_unreachable_node_exits_1(config: Path) -> None:
    one_line_error(lb("throttle", "0.5", "--role", "slave", "--config", str(config)), 1,
                   "no node is running")
    one_line_error(lb("status", "--config", str(config)), 1, "no node is running")


def test_a_port_in_use_exits_1_and_leaves_no_journal(config: Path) -> None:
    import socket
    address = parse_address(json.loads(config.read_text())["master"], "master")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        one_line_error(lb("launch", "--role", "master", "--config", str(config)), 1,
                       "cannot start the master")
    assert not (config.parent / "master.journal").exists()  # the next start is a fresh one


@pytest.mark.parametrize("flag", ["--result", "--trace", "--output"])
def test_an_output_in_a_folder_that_does_not_exist_is_refused_at_once(
        config: Path, tmp_path: Path, flag: str) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("[1]\n")
    target = f"{Path(__file__).with_name('mapjobs.py')}:square"
    answer = lb("launch", "--role", "master", "--config", str(config), "--map", target,
                "--inputs", str(inputs), flag, str(tmp_path / "absent" / "out.json"))
    one_line_error(answer, 2, flag if flag != "--output" else "output", "absent")
    assert not (config.parent / "master.journal").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--jobs", "5"], ["--jobs does not apply to --map"]),
    (["--inputs", "IN"], ["--inputs is for the master"]),
])
def test_map_flags_are_checked(config: Path, tmp_path: Path, args: list[str],
                               words: list[str]) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("[1]\n")
    target = f"{Path(__file__).with_name('mapjobs.py')}:square"
    role = "slave" if "--inputs" in args else "master"
    base = ["launch", "--role", role, "--config", str(config)]
    if role == "master":
        base += ["--map", target, "--inputs", str(inputs)]
    one_line_error(lb(*base, *[str(inputs) if a == "IN" else a for a in args]), 2, *words)


def test_a_bad_input_line_or_function_is_one_line(config: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("[1]\n[2,\n")
    jobs = Path(__file__).with_name("mapjobs.py")
    base = ["launch", "--role", "master", "--config", str(config), "--inputs", str(inputs)]
    one_line_error(lb(*base, "--map", f"{jobs}:square"), 2, "in.jsonl line 2")
    one_line_error(lb(*base, "--map", f"{jobs}:nothing"), 2, "has no function 'nothing'")
    one_line_error(lb(*base, "--map", "no_module_anywhere:f"), 2, "ModuleNotFoundError")


def test_jobs_is_for_a_workload_that_takes_a_count(tmp_path: Path) -> None:
    path = local.write_config(tmp_path, jobs=8, elements_per_job=16, iterations=1)
    module = tmp_path / "fixed.py"
    module.write_text("""
from loadbalancer.workload import Vector, register

@register
class Fixed(Vector):
    name = "fixed"
    jobs_param = None
""")
    raw = json.loads(path.read_text())
    raw["workload"] = {"name": "fixed", "elements": 8, "jobs": 2}
    path.write_text(json.dumps(raw))
    one_line_error(lb("launch", "--role", "master", "--config", str(path),
                      "--workload-module", str(module), "--jobs", "4"), 2,
                   "--jobs does not apply to workload 'fixed'")


@pytest.fixture
def planted_runtime_dir(tmp_path: Path) -> Iterator[tuple[Path, Path, Impostor]]:
    """A config whose runtime_dir is a link to a directory open to all, with a master.sock
    that answers as a node would: what another user could have left in /tmp."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    impostor = Impostor(theirs / "master.sock")
    link = tmp_path / "lb-run"
    link.symlink_to(theirs)
    yield local.write_config(tmp_path / "cfg", jobs=8, elements_per_job=16, iterations=1,
                             runtime_dir=str(link)), theirs, impostor
    impostor.close()


@pytest.mark.parametrize("args", [["status"], ["status", "--role", "master"],
                                  ["throttle", "0.5"], ["throttle", "0", "--role", "master"]])
def test_a_planted_control_directory_is_refused_by_the_commands(
        planted_runtime_dir: tuple[Path, Path, Impostor], args: list[str]) -> None:
    config, _, impostor = planted_runtime_dir
    one_line_error(lb(*args, "--config", str(config)), 1, "the control directory",
                   "is a symbolic link", "set runtime_dir")
    assert impostor.connections == 0


def test_a_planted_control_directory_stops_a_node_at_its_start(
        planted_runtime_dir: tuple[Path, Path, Impostor]) -> None:
    config, theirs, _ = planted_runtime_dir
    one_line_error(lb("launch", "--role", "master", "--config", str(config)), 1,
                   "cannot start the master: the control directory", "is a symbolic link")
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o777
    assert [p.name for p in theirs.iterdir()] == ["master.sock"]


def test_a_one_job_demo_ends_as_soon_as_it_is_done() -> None:
    began = time.monotonic()
    answer = lb("demo", "--jobs", "1", "--no-dashboard", "--iterations", "10")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout.splitlines()[-1])["jobs"] == 1
    assert time.monotonic() - began < 8  # it waited 10 s for a slave that never joined
