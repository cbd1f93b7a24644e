"""The configuration: one JSON file, validated key by key into one object.

Command-line flags override the file. Every error names the key and what is
wrong with it, in one line.
"""

from __future__ import annotations

import json
import math
import os
import string
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loadbalancer import adaptor, fields, wire
from loadbalancer.addresses import Address, format_address, parse_address
from loadbalancer.messages import WorkloadSpec

# A secret is random symbols in one of these formats: its entropy is its length times the bits
# each symbol of the format's alphabet carries. `lb init` writes secrets.token_urlsafe(32):
# 43 base64url characters, 258 bits (256 of them random).
SECRET_BITS = 128
SECRET_FORMATS = (  # (name, alphabet, bits per symbol); hex first, the most conservative reading
    ("hex", frozenset(string.digits + "abcdef"), 4),
    ("base64url", frozenset(string.ascii_letters + string.digits + "-_"), 6),
    ("base64", frozenset(string.ascii_letters + string.digits + "+/"), 6),
)
# What config.example.json holds, now and before: a file copied from it must not run as is.
SECRET_PLACEHOLDERS = {
    "replace-me-with-32-or-more-random-characters",
    "run lb init, or: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
}
HOW_TO_MAKE_A_SECRET = ('`lb init` writes a good one, or make one with '
                        'python3 -c "import secrets; print(secrets.token_urlsafe(32))"')


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def default_journal() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "lb" / "master.journal"


def default_runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"lb-{os.getuid()}"


@dataclass(frozen=True)
class Config:
    master: Address
    slave: Address
    secret: str
    policy: str = "symmetric"
    state_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    master_timeout: float = 600.0  # a slave alone this long (at start or after a loss) gives up
    progress_interval: float = 10.0  # seconds between progress lines in the log (no dashboard)
    workers: int = 1
    throttle: float = 1.0
    max_datagram: int | None = None  # None: from the route's MTU (endpoint.path_max_datagram)
    offload: bool = True  # bursts of datagrams in one send (GSO) where the kernel has it
    runtime_dir: Path = field(default_factory=default_runtime_dir)
    journal: Path = field(default_factory=default_journal)
    workload: WorkloadSpec = field(default_factory=lambda: WorkloadSpec("vector", {}))
    workload_modules: tuple[str, ...] = ()  # modules (dotted names or .py paths) jobs may use
    retries: int = 2  # a job that raises runs again this many times, then fails for good

    def address(self, role: wire.Role) -> Address:
        return self.master if role is wire.Role.MASTER else self.slave


def _address(raw: dict[str, Any], key: str) -> Address:
    try:
        return parse_address(raw[key], key)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _number(raw: dict[str, Any], key: str, low: float, high: float, *,
            low_open: bool = False) -> float:
    value = raw[key]
    if not fields.finite(value):  # json reads NaN and Infinity: not numbers a setting can be
        raise ConfigError(f"{key} must be a number, not {value!r:.40}")
    if not fields.number(value, low, high) or (low_open and value == low):
        bound = f"above {low}" if low_open else f"at least {low}"
        raise ConfigError(f"{key} must be {bound} and at most {high}, not {value!r:.40}")
    return float(value)


def _integer(raw: dict[str, Any], key: str, low: int, high: int) -> int:
    value = raw[key]
    if not fields.integer(value, low, high):
        raise ConfigError(f"{key} must be a whole number from {low} to {high}, "
                          f"not {value!r:.40}")
    return value


def _secret_symbols(text: str) -> tuple[str, str, int] | None:
    """(format, its symbols, bits per symbol) of ``text``, or None if it is in no format.
    Hex is read without case; base64's padding carries nothing."""
    for name, alphabet, bits in SECRET_FORMATS:
        symbols = text.lower() if name == "hex" else text.rstrip("=")
        if symbols and len(text) - len(symbols) <= 2 and set(symbols) <= alphabet:
            return name, symbols, bits
    return None


def _secret_problem(text: str) -> str | None:
    """What makes ``text`` a guessable secret, or None if it is a good one."""
    if text in SECRET_PLACEHOLDERS:
        return "is still config.example.json's placeholder"
    found = _secret_symbols(text)
    if found is None:
        return ("must be random hex (32+ digits) or base64/base64url (22+ characters), "
                "and nothing else, not even a space")
    name, symbols, bits = found
    needed = math.ceil(SECRET_BITS / bits)  # symbols
    # A string made of a run of p symbols over again says no more than that run does.
    period = next((p for p in range(1, min(needed, len(symbols) // 2 + 1))
                   if symbols[p:] == symbols[:-p]), len(symbols))
    if period < needed:
        repeats = f" (it repeats every {period})" if period < len(symbols) else ""
        return f"holds {period * bits} bits as {name}{repeats}, fewer than {SECRET_BITS}"
    # Drawn at random, n symbols of an alphabet of `size` hold about this many distinct ones;
    # fewer than half as many is a typo or a pattern (for a random secret: under 1 in 10^8).
    size, distinct = 2**bits, len(set(symbols))
    if distinct < size * (1 - (1 - 1 / size) ** len(symbols)) / 2:
        return f"uses only {distinct} distinct characters in {len(symbols)}: it is not random"
    return None


def check_secret(value: object) -> str:
    """``value`` if it is a secret no one can guess; else ConfigError, saying how to make one."""
    if not isinstance(value, str):
        raise ConfigError(f"secret must be a string: {HOW_TO_MAKE_A_SECRET}")
    problem = _secret_problem(value)
    if problem is not None:
        raise ConfigError(f"secret {problem}: {HOW_TO_MAKE_A_SECRET}")
    return value


def _workload(value: object) -> WorkloadSpec:
    if not isinstance(value, dict):
        raise ConfigError(f"workload must be an object, not {value!r}")
    params = dict(value)
    name = params.pop("name", "vector")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"workload.name must be a workload's name, not {name!r}")
    return WorkloadSpec(name, params)


KEYS = {"master", "slave", "secret", "policy", "state_interval", "heartbeat_timeout",
        "master_timeout", "progress_interval", "workers", "throttle", "max_datagram",
        "offload", "runtime_dir", "journal", "workload", "workload_modules", "retries"}
MAX_RETRIES = 100


def from_dict(raw: dict[str, Any]) -> Config:
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    for key in ("master", "slave", "secret"):
        if key not in raw:
            raise ConfigError(f"missing key {key!r}")
    config = Config(_address(raw, "master"), _address(raw, "slave"), check_secret(raw["secret"]))
    if config.master == config.slave:
        raise ConfigError(f"master and slave are both {format_address(config.master)}: "
                          "each node binds its own address, so they must differ")
    changes: dict[str, Any] = {}
    if "policy" in raw:
        if raw["policy"] not in adaptor.POLICIES:
            raise ConfigError(f"policy must be one of {', '.join(adaptor.POLICIES)}, "
                              f"not {raw['policy']!r}")
        changes["policy"] = raw["policy"]
    if "state_interval" in raw:
        changes["state_interval"] = _number(raw, "state_interval", 0.01, 60, low_open=False)
    if "heartbeat_timeout" in raw:
        changes["heartbeat_timeout"] = _number(raw, "heartbeat_timeout", 0.1, 3600)
    if "master_timeout" in raw:
        changes["master_timeout"] = _number(raw, "master_timeout", 1, 7 * 86400)
    if "progress_interval" in raw:
        changes["progress_interval"] = _number(raw, "progress_interval", 0.1, 86400)
    if "workers" in raw:
        changes["workers"] = _integer(raw, "workers", 1, 256)
    if "throttle" in raw:
        changes["throttle"] = _number(raw, "throttle", 0, 1)
    if raw.get("max_datagram", "auto") != "auto":
        changes["max_datagram"] = _integer(raw, "max_datagram", wire.MIN_DATAGRAM,
                                           wire.MAX_DATAGRAM)
    if "offload" in raw:
        if not isinstance(raw["offload"], bool):
            raise ConfigError(f"offload must be true or false, not {raw['offload']!r}")
        changes["offload"] = raw["offload"]
    for key in ("runtime_dir", "journal"):
        if key in raw:
            if not isinstance(raw[key], str) or not raw[key]:
                raise ConfigError(f"{key} must be a path, not {raw[key]!r}")
            changes[key] = Path(raw[key]).expanduser()
    if "workload" in raw:
        changes["workload"] = _workload(raw["workload"])
    if "workload_modules" in raw:
        modules = raw["workload_modules"]
        if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
            raise ConfigError("workload_modules must be a list of module names or .py paths")
        changes["workload_modules"] = tuple(modules)
    if "retries" in raw:
        changes["retries"] = _integer(raw, "retries", 0, MAX_RETRIES)
    config = replace(config, **changes)
    if config.heartbeat_timeout <= 2 * config.state_interval:
        raise ConfigError("heartbeat_timeout must be more than twice state_interval, "
                          "or a live peer would be declared lost")
    return config


def override(config: Config, **changes: Any) -> Config:
    """``config`` with the changes that are not None, each checked as the file's key is."""
    raw = {key: value for key, value in changes.items() if value is not None}
    checked = from_dict({"master": format_address(config.master),
                         "slave": format_address(config.slave), "secret": config.secret, **raw})
    return replace(config, **{key: getattr(checked, key) for key in raw})


def load(path: Path) -> Config:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (write one with `lb init`, "
                          "or pass --config)") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    try:
        raw = json.loads(text)
    except ValueError as error:  # not JSON, or an integer past Python's 4,300 digits
        raise ConfigError(f"config file {path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    try:
        return from_dict(raw)
    except ConfigError as error:
        raise ConfigError(f"config file {path}: {error}") from None
