"""A master and a slave on loopback for a test or a benchmark, optionally through the fault proxy,
or each in a network namespace of :class:`loadbalancer.testing.netns.Namespaces`.

Nodes are started the way a user starts them: a config written by
:func:`loadbalancer.local.write_config`, the slave first, the master once the slave's control
socket exists. Through the proxy the two nodes need different configs (same secret, same
runtime directory): the master's names the proxy's front as "slave", the slave's names the
proxy's back as "master".
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from loadbalancer import control, local
from loadbalancer.addresses import Address, format_address
from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.netns import ROLES, Namespaces

START_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0
# Seconds a benchmark gives a slave to leave after the master. It waits up to 5 s for the ack
# of its trace, which a lossy link may drop after the master has gone: nothing left to measure.
SLAVE_GRACE = 2.0
LOG_TAIL = 2000  # characters of a node's log that an error carries
NETNS_PORT = 7700  # each node's UDP port in its own namespace: nothing else is there


class ClusterError(RuntimeError):
    """A node or the proxy did not start, did not finish, or never got where it was awaited."""


class Cluster:
    """A loopback config in ``directory``, the nodes started on it and maybe the fault proxy
    between them; a context manager that stops whatever it started and has not finished.

    ``cli_status``: ask a node's status with ``lb status --json`` in a process of its own, as
    a user does (the tests); else over the control socket from this process, as that command
    asks it (a benchmark: a process started mid-run takes 0.5-2 s and a share of the two busy
    cores from the nodes being measured).

    ``namespaces``: each node runs in its own network namespace, at its address there (the
    control sockets are files in the runtime directory, reachable from any namespace)."""

    config: Path  # the config both nodes share, once configured

    def __init__(self, directory: Path, *, cli_status: bool = False,
                 namespaces: Namespaces | None = None) -> None:
        self.directory = directory
        self.cli_status = cli_status
        self.namespaces = namespaces
        self.configs: dict[str, Path] = {}  # per role: through a proxy they differ
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_stats: dict[str, Any] | None = None  # the proxy's counters, once it stopped

    # ---- the config ------------------------------------------------------------------------
    def configure(self, **settings: Any) -> Path:
        """Write the config: fresh secret, free ports, ``settings`` as local.write_config takes
        them; in namespaces, the nodes' addresses there unless ``settings`` name others."""
        if self.namespaces is not None:
            settings = {role: self.namespaces.address(role, NETNS_PORT) for role in ROLES} \
                | settings
        self.config = local.write_config(self.directory, **settings)
        self.configs = {role: self.config for role in ROLES}
        return self.config

    @property
    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self.config.read_text()))

    def add_proxy(self, faults: Faults, seed: int | None = None) -> None:
        """Route both directions through the fault proxy, ``faults`` each way."""
        front, back = ("127.0.0.1", local.free_port()), ("127.0.0.1", local.free_port())
        settings = self.settings
        seeded = [] if seed is None else ["--seed", str(seed)]
        command = [sys.executable, "-m", "loadbalancer.testing.faultproxy",
                   "--front", format_address(front), "--back", format_address(back),
                   "--master", settings["master"], "--slave", settings["slave"],
                   *proxy_flags(faults), *seeded]
        self.proxy = subprocess.Popen(command, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        assert self.proxy.stdout is not None
        ready = self.proxy.stdout.readline().decode()
        if not ready.startswith("ready"):
            self.proxy.kill()
            raise ClusterError(f"the fault proxy did not start: {ready!r}")
        self.route(front, back)

    def route(self, front: Address, back: Address) -> None:
        """A config per role: the master sends to the slave at ``front``, the slave to the
        master at ``back``, where something (the proxy, a test's tap) relays to the node."""
        settings = self.settings
        for role, peer, via in (("master", "slave", front), ("slave", "master", back)):
            path = self.directory / f"lb-{role}.json"
            path.write_text(json.dumps({**settings, peer: format_address(via)}, indent=1))
            os.chmod(path, 0o600)
            self.configs[role] = path

    # ---- nodes -----------------------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.directory / "result.json"

    @property
    def trace_path(self) -> Path:
        return self.directory / "trace.json"

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        """``lb launch`` for ``role``; the master writes its summary and its trace here."""
        extra = list(args)
        if role == "master":
            extra += ["--result", str(self.result_path), "--trace", str(self.trace_path)]
        prefix = () if self.namespaces is None else self.namespaces.prefix(role)
        process = local.launch(self.configs[role], role, *extra, log=self.log_path(role),
                               prefix=prefix)
        self.processes[role] = process
        return process

    def start_both(self, *slave_args: str, master_args: Sequence[str] = ()) -> None:
        """The slave first, and the master once the slave listens."""
        self.start("slave", *slave_args)
        self.wait_until_up("slave")
        self.start("master", *master_args)

    def wait_until_up(self, role: str, timeout: float = START_TIMEOUT) -> None:
        try:
            local.wait_until_listening(self.configs[role], role, self.processes[role], timeout)
        except RuntimeError as error:
            raise ClusterError(f"{error}: {self.log_tail(role)}") from None

    def wait(self, timeout: float = RUN_TIMEOUT,
             slave_grace: float | None = None) -> dict[str, int | None]:
        """The nodes' exit codes, the master's first; ClusterError if one is still running
        after ``timeout``. With ``slave_grace``, a slave still there that many seconds after the
        master is stopped instead, its code None: it is waiting for an ack that will never
        come, or it never joined."""
        codes: dict[str, int | None] = {}
        for role in sorted(self.processes, key=ROLES.index):
            process = self.processes[role]
            grace = slave_grace if role == "slave" else None
            try:
                codes[role] = process.wait(timeout=timeout if grace is None else grace)
            except subprocess.TimeoutExpired:
                if grace is None:
                    raise ClusterError(f"{role} did not finish in {timeout:.0f}s: "
                                       f"{self.log_tail(role)}") from None
                process.terminate()
                process.wait()
                codes[role] = None
        return codes

    # ---- control ---------------------------------------------------------------------------
    def lb(self, *args: str) -> subprocess.CompletedProcess[str]:
        """An ``lb`` command, its output captured."""
        return subprocess.run([sys.executable, "-m", "loadbalancer", *args],
                              capture_output=True, text=True, timeout=30)

    def status(self, role: str) -> dict[str, Any] | None:
        """The node's status as ``lb status --json`` prints it; None if it does not answer."""
        if self.cli_status:
            answer = self.lb("status", "--role", role, "--config", str(self.config), "--json")
            return dict(json.loads(answer.stdout)) if answer.returncode == 0 else None
        try:
            return control.request(self._control_path(role), {"cmd": "status"})
        except control.ControlError:
            return None

    def set_throttle(self, role: str, value: float) -> None:
        """What `lb throttle VALUE` does, over the control socket from this process (no
        process of its own to start mid-run); ClusterError if the node refuses or is gone."""
        try:
            control.request(self._control_path(role), {"cmd": "throttle", "value": value})
        except control.ControlError as error:
            raise ClusterError(f"throttle {value} for the {role}: {error}") from None

    def _control_path(self, role: str) -> Path:
        return control.socket_path(Path(self.settings["runtime_dir"]), role)

    def wait_for(self, role: str, check: Callable[[dict[str, Any]], bool],
                 timeout: float = START_TIMEOUT, *,
                 what: str = "the expected state") -> dict[str, Any]:
        """The node's first status that passes ``check``; ClusterError after ``timeout``."""
        pause = 0.1 if self.cli_status else 0.02  # a process per poll takes a share of a core
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(role)
            if status is not None and check(status):
                return status
            time.sleep(pause)
        raise ClusterError(f"{role} never reached {what}: {self.log_tail(role)}")

    def wait_for_phase(self, role: str, phase: str, timeout: float = START_TIMEOUT) -> None:
        self.wait_for(role, lambda status: status["local"]["phase"] == phase, timeout,
                      what=f"phase {phase}")

    def arm_throttle(self, role: str, value: float) -> Armed:
        """`lb throttle VALUE --role ROLE --config CFG`, its interpreter started now and the
        command run when fired: a cold start mid-run takes 0.5-2 s and most of a core from the
        nodes being measured (seen as a dip in both nodes' rates before the change)."""
        args = ["throttle", str(value), "--role", role, "--config", str(self.configs[role])]
        return Armed(subprocess.Popen([sys.executable, "-c", _ARMED, *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True), " ".join(args))

    # ---- outputs ---------------------------------------------------------------------------
    def log_path(self, role: str) -> Path:
        return self.directory / f"{role}.log"

    def log(self, role: str) -> str:
        path = self.log_path(role)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, role: str) -> str:
        return self.log(role)[-LOG_TAIL:]

    def result(self) -> dict[str, Any] | None:
        """The master's summary; None if it wrote none."""
        return _read_json(self.result_path)

    def trace(self) -> dict[str, Any] | None:
        """The master's trace of both nodes; None if it wrote none."""
        return _read_json(self.trace_path)

    # ---- teardown --------------------------------------------------------------------------
    def stop_proxy(self) -> dict[str, Any] | None:
        """Stop the proxy, if one runs; its per-direction counters (SIGTERM makes it print
        them), None if it printed none."""
        if self.proxy is None or self.proxy.returncode is not None:
            return self.proxy_stats
        self.proxy.terminate()
        try:
            out, _ = self.proxy.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
            self.proxy.communicate()
            return None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("{"):
                self.proxy_stats = json.loads(line)
        return self.proxy_stats

    def signal(self, role: str, signum: int) -> None:
        """Send ``signum`` to the node of ``role`` and the processes it started (worker
        processes of function jobs): SIGSTOP and SIGCONT pause a node as a machine that hangs
        does (the benchmarks' `pause`). Nothing if it has exited."""
        process = self.processes[role]
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        for pid in [process.pid, *(child.pid for child in children)]:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                os.kill(pid, signum)

    def stop(self) -> None:
        """Kill the nodes still running; stop the proxy, keeping its counters."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self.stop_proxy()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def proxy_flags(faults: Faults) -> list[str]:
    """The proxy's command-line flags for ``faults`` (both directions), defaults left out."""
    flags: list[str] = []
    for field in dataclasses.fields(Faults):
        value = getattr(faults, field.name)
        if value != field.default:
            flags += [f"--{field.name.replace('_', '-')}", repr(value)]
    return flags


def _read_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.exists() else None


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
