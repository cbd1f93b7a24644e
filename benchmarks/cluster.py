"""Real `lb launch` processes on loopback for one run, optionally through the fault proxy.

Nodes are started the way a user (and tests/conftest.py) starts them: a config written by
`loadbalancer.local.write_config`, the slave first, the master once the slave's control socket
exists. Throttle changes are `lb throttle` commands; status is asked over the control socket
as `lb status` asks it (a process started mid-run would take CPU from the nodes measured).

Through the proxy the two nodes need different configs (same secret, same runtime directory):
the master's names the proxy's front as "slave", the slave's names the proxy's back as "master".
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from loadbalancer import control, local
from loadbalancer.testing import loopback
from loadbalancer.testing.faultproxy import Faults

ROLES = ("master", "slave")
START_TIMEOUT = 30.0
# Seconds a slave may take to leave after the master. It waits up to 5 s for the ack of its
# trace, which a lossy link may drop after the master has gone: nothing left to measure then.
SLAVE_GRACE = 2.0
LOG_TAIL = 2000  # characters of a node's log kept in a failed run's note


class ClusterError(RuntimeError):
    """A node or the proxy did not start or did not finish."""


def proxy_flags(faults: Faults) -> list[str]:
    """The proxy's command-line flags for `faults` (both directions), defaults left out."""
    flags: list[str] = []
    for field in dataclasses.fields(Faults):
        value = getattr(faults, field.name)
        if value != field.default:
            flags += [f"--{field.name.replace('_', '-')}", repr(value)]
    return flags


# The `lb` console script, held until a line arrives on stdin.
_ARMED = ("import sys; from loadbalancer.cli import main; sys.argv = ['lb', *sys.argv[1:]]; "
          "print('armed', flush=True); sys.stdin.readline(); main()")


class Armed:
    """A started `lb` command waiting for `fire`."""

    def __init__(self, process: subprocess.Popen[str], command: str) -> None:
        self.process, self.command = process, command

    def wait_ready(self) -> None:
        """Until its imports are done: from then on it needs no CPU until fired."""
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "armed":
            self.cancel()
            raise ClusterError(f"lb {self.command}: did not start")

    def fire(self, timeout: float = 30.0) -> None:
        try:
            _, error = self.process.communicate("\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise ClusterError(f"lb {self.command}: no answer in {timeout:.0f}s") from None
        if self.process.returncode != 0:
            raise ClusterError(f"lb {self.command}: {error.strip()}")

    def cancel(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class NodePair:
    """A master, a slave and maybe a proxy in ``directory``; a context manager that kills
    whatever it started and has not finished."""

    def __init__(self, directory: Path, *, faults: Faults | None = None,
                 seed: int | None = None, **settings: Any) -> None:
        self.directory = directory
        self.faults = faults
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        config = local.write_config(directory, **settings)
        self.runtime_dir = Path(json.loads(config.read_text())["runtime_dir"])
        self.configs = {role: config for role in ROLES}
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_stats: dict[str, Any] | None = None
        if faults is not None:
            seeded = [] if seed is None else ["--seed", str(seed)]
            self.proxy, self.configs = loopback.start_proxy(config, *proxy_flags(faults), *seeded)

    # ---- nodes -----------------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.directory / "result.json"

    @property
    def trace_path(self) -> Path:
        return self.directory / "trace.json"

    def start(self, role: str, *args: str) -> None:
        extra = list(args)
        if role == "master":
            extra += ["--result", str(self.result_path), "--trace", str(self.trace_path)]
        self.processes[role] = local.launch(
            self.configs[role], role, *extra, log=self.log_path(role)
        )

    def start_both(self, throttles: dict[str, float]) -> None:
        """The slave first, the master once the slave listens (as tests/conftest.py does)."""
        self.start("slave", "--throttle", str(throttles["slave"]))
        self.wait_until_up("slave")
        self.start("master", "--throttle", str(throttles["master"]))

    def wait_until_up(self, role: str, timeout: float = START_TIMEOUT) -> None:
        try:
            local.wait_until_listening(self.configs[role], role, self.processes[role], timeout)
        except RuntimeError as error:
            raise ClusterError(f"{error}: {self.log_tail(role)}") from None

    def wait(self, timeout: float, slave_grace: float = SLAVE_GRACE) -> dict[str, int | None]:
        """Exit codes of the nodes; raises if the master is still running after ``timeout``.

        A slave still there ``slave_grace`` seconds after the master is stopped (exit code
        None): it is waiting for an ack that will never come, or it never joined."""
        codes: dict[str, int | None] = {}
        for role in sorted(self.processes, key=ROLES.index):  # the master first
            process = self.processes[role]
            limit = timeout if role == "master" else slave_grace
            try:
                codes[role] = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                if role == "master":
                    raise ClusterError(f"master did not finish in {timeout:.0f}s: "
                                       f"{self.log_tail(role)}") from None
                process.terminate()
                process.wait()
                codes[role] = None
        return codes

    # ---- control ----------------------------------------------------------------------
    def status(self, role: str) -> dict[str, Any] | None:
        """The node's status, asked the way `lb status --json` asks it, but from this process:
        a CLI process started mid-run would take 0.5-2 s and a share of the two busy cores
        from the nodes being measured."""
        try:
            return control.request(control.socket_path(self.runtime_dir, role), {"cmd": "status"})
        except control.ControlError:
            return None

    def wait_for_phase(self, role: str, phase: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(role)
            if status is not None and status["local"]["phase"] == phase:
                return
            time.sleep(0.02)
        raise ClusterError(f"{role} never reached phase {phase}: {self.log_tail(role)}")

    def arm_throttle(self, role: str, value: float) -> Armed:
        """`lb throttle VALUE --role ROLE --config CFG`, its interpreter started now and the
        command run when fired: a cold start mid-run takes 0.5-2 s and most of a core from the
        nodes being measured (seen as a dip in both nodes' rates before the change)."""
        args = ["throttle", str(value), "--role", role, "--config", str(self.configs[role])]
        return Armed(subprocess.Popen([sys.executable, "-c", _ARMED, *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True), " ".join(args))

    # ---- outputs ---------------------------------------------------------------------
    def log_path(self, role: str) -> Path:
        return self.directory / f"{role}.log"

    def log_tail(self, role: str) -> str:
        path = self.log_path(role)
        return path.read_text(errors="replace")[-LOG_TAIL:] if path.exists() else ""

    def read_json(self, path: Path) -> dict[str, Any] | None:
        return dict(json.loads(path.read_text())) if path.exists() else None

    # ---- teardown --------------------------------------------------------------------
    def __enter__(self) -> NodePair:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        if self.proxy is not None:
            self._stop_proxy(self.proxy)

    def _stop_proxy(self, proxy: subprocess.Popen[bytes]) -> None:
        # SIGTERM makes it print its per-direction counters: worth keeping with the run.
        proxy.terminate()
        try:
            out, _ = proxy.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.communicate()
            return
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("{"):
                self.proxy_stats = json.loads(line)
