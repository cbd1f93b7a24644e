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
from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.netns import ROLES, Namespaces
from loadbalancer.testing.proxyprocess import ProxyProcess
from loadbalancer.testing.rundir import RunDirectory

START_TIMEOUT = 30.0
RUN_TIMEOUT = 60.0
# Seconds a benchmark gives a slave to leave after the master. It waits up to 5 s for the ack
# of its trace, which a lossy link may drop after the master has gone: nothing left to measure.
SLAVE_GRACE = 2.0
NETNS_PORT = 7700  # each node's UDP port in its own namespace: nothing else is there


class ClusterError(RuntimeError):
    """A node or the proxy did not start, did not finish, or never got where it was awaited."""


class Cluster(RunDirectory):
    """A loopback config in ``directory``, the nodes started on it and maybe the fault proxy
    between them; a context manager that stops whatever it started and has not finished. The
    run's files are :class:`RunDirectory`'s.

    ``cli_status``: ask a node's status with ``lb status --json`` in a process of its own, as
    a user does (the tests); else over the control socket from this process, as that command
    asks it (a benchmark: a process started mid-run takes 0.5-2 s and a share of the two busy
    cores from the nodes being measured).

    ``namespaces``: each node runs in its own network namespace, at its address there (the
    control sockets are files in the runtime directory, reachable from any namespace)."""

    def __init__(self, directory: Path, *, cli_status: bool = False,
                 namespaces: Namespaces | None = None) -> None:
        super().__init__(directory)
        self.cli_status = cli_status
        self.namespaces = namespaces
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.proxy: ProxyProcess | None = None

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

    def add_proxy(self, faults: Faults, seed: int | None = None) -> None:
        """Route both directions through the fault proxy, ``faults`` each way."""
        settings = self.settings
        self.proxy = ProxyProcess(faults, settings["master"], settings["slave"], seed)
        refusal = self.proxy.refusal()
        if refusal is not None:
            raise ClusterError(f"the fault proxy did not start: {refusal!r}")
        self.route(self.proxy.front, self.proxy.back)

    # ---- nodes -----------------------------------------------------------------------------
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

    # ---- teardown --------------------------------------------------------------------------
    def stop_proxy(self) -> dict[str, Any] | None:
        """Stop the proxy, if one runs; its per-direction counters, None if it printed none."""
        return None if self.proxy is None else self.proxy.stop()

    @property
    def proxy_stats(self) -> dict[str, Any] | None:
        """The proxy's counters, once it stopped."""
        return None if self.proxy is None else self.proxy.stats

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
