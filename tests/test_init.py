"""`lb init` writes a private config both machines can use; shell completion works."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from loadbalancer import config as configuration
from loadbalancer.cli import cli


def invoke(*args: str) -> Result:
    """`lb ARGS` in this process: much faster than a new one, for commands that start no node."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_error(result: Result, code: int, *words: str) -> None:
    """Exit ``code`` and exactly one error line, holding every one of ``words``."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert all(word in errors[0] for word in words), result.output


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    # The usual 022 would leave a file created the naive way readable by everyone.
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_init_writes_a_private_config_for_two_machines(tmp_path: Path) -> None:
    result = invoke("init", "--master", "10.0.0.1:7700", "--slave", "10.0.0.2:7700")
    assert result.exit_code == 0, result.output
    path = tmp_path / "lb.json"
    assert mode(path) == 0o600
    config = configuration.load(path)
    assert config.master == ("10.0.0.1", 7700) and config.slave == ("10.0.0.2", 7700)
    assert len(config.secret) >= 43  # token_urlsafe(32): 256 random bits
    assert "scp lb.json 10.0.0.2:" in result.output
    assert "UDP port 7700" in result.output
    assert "lb launch --config lb.json --role slave     # on 10.0.0.2" in result.output


def test_defaults_are_a_loopback_pair_with_a_fresh_secret_each_time(tmp_path: Path) -> None:
    assert invoke("init", "-o", "a.json").exit_code == 0
    result = invoke("init", "-o", "b.json")
    assert result.exit_code == 0
    a, b = (configuration.load(tmp_path / name) for name in ("a.json", "b.json"))
    assert (a.master, a.slave) == (("127.0.0.1", 7700), ("127.0.0.1", 7701))
    assert a.secret != b.secret
    assert "lb init --master HOST:PORT --slave HOST:PORT" in result.output


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text("{}")
    path.chmod(0o644)
    one_error(invoke("init"), 1, "lb.json exists", "--force")
    assert path.read_text() == "{}"
    assert invoke("init", "--force").exit_code == 0
    assert mode(path) == 0o600  # replaced by a file born private, not the old 0644 one
    assert json.loads(path.read_text())["secret"]
    assert [p.name for p in tmp_path.iterdir()] == ["lb.json"]  # no temporary file left


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--master", "10.0.0.1"], 2, ["--master", "HOST:PORT"]),
    (["--slave", "10.0.0.2:99999"], 2, ["--slave", "99999"]),
    (["--master", "10.0.0.1:7700", "--slave", "10.0.0.1:7700"], 2, ["must differ"]),
    (["-o", "missing/lb.json"], 1, ["cannot write missing/lb.json", "No such file"]),
])
def test_bad_init_arguments(tmp_path: Path, args: list[str], code: int,
                            words: list[str]) -> None:
    one_error(invoke("init", *args), code, *words)
    assert list(tmp_path.iterdir()) == []


def lb_program() -> Path:
    # Completion keys on the program's name, so it needs the installed `lb`, not python -m.
    program = Path(sys.executable).with_name("lb")
    if not program.exists():
        pytest.skip(f"the lb console script is not installed next to {sys.executable}")
    return program


def test_click_completion_mechanism_works() -> None:
    program = lb_program()
    source = subprocess.run([program], env={**os.environ, "_LB_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=30)
    assert source.returncode == 0
    assert "complete -o nosort -F _lb_completion lb" in source.stdout
    answer = subprocess.run([program], capture_output=True, text=True, timeout=30, env={
        **os.environ, "_LB_COMPLETE": "bash_complete", "COMP_WORDS": "lb la", "COMP_CWORD": "1"})
    assert answer.stdout.split() == ["plain,launch"]
    assert invoke("completion", "--shell", "bash").output == source.stdout


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_for_other_shells(shell: str) -> None:
    result = invoke("completion", "--shell", shell)
    assert result.exit_code == 0
    assert "_LB_COMPLETE" in result.output and f"{shell}_complete" in result.output


def test_help_tells_how_to_enable_completion() -> None:
    assert 'eval "$(lb completion --shell bash)"' in invoke("--help").output
    one_error(invoke("completion", "--shell", "tcsh"), 2, "tcsh")


def test_completion_takes_the_shell_from_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    result = invoke("completion")
    assert result.exit_code == 0 and "zsh_complete" in result.output
    monkeypatch.setenv("SHELL", "/bin/tcsh")
    one_error(invoke("completion"), 2, "$SHELL is '/bin/tcsh'", "--shell")


def test_help_lists_each_command_in_full() -> None:
    listed = invoke("--help").output.split("Commands:")[1]
    assert "Set a running node's throttle, from 0 to 1." in listed
    assert not any(line.endswith("...") for line in listed.splitlines())
