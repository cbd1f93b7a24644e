"""Config validation: every bad key is named; flags override the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadbalancer import config, endpoint
from loadbalancer.config import ConfigError
from loadbalancer.endpoint import path_max_datagram

GOOD = {"master": "127.0.0.1:7001", "slave": "localhost:7002", "secret": "s" * 16}


def test_minimal_config_gets_the_defaults() -> None:
    loaded = config.from_dict(GOOD)
    assert loaded.master == ("127.0.0.1", 7001)
    assert loaded.slave == ("localhost", 7002)
    assert loaded.policy == "symmetric"
    assert loaded.state_interval == 0.5
    assert loaded.workload.name == "vector"


def test_ipv6_address() -> None:
    assert config.parse_address("[::1]:9000", "master") == ("::1", 9000)


@pytest.mark.parametrize(("change", "named"), [
    ({"master": "nohost"}, "master"),
    ({"slave": "host:99999"}, "slave"),
    ({"secret": "short"}, "secret"),
    ({"policy": "fastest"}, "policy"),
    ({"state_interval": "fast"}, "state_interval"),
    ({"state_interval": 0}, "state_interval"),
    ({"heartbeat_timeout": -1}, "heartbeat_timeout"),
    ({"workers": 0}, "workers"),
    ({"workers": 1.5}, "workers"),
    ({"throttle": 1.5}, "throttle"),
    ({"throttle": True}, "throttle"),
    ({"max_datagram": 100}, "max_datagram"),
    ({"max_datagram": "large"}, "max_datagram"),
    ({"workload": []}, "workload"),
    ({"runtime_dir": 3}, "runtime_dir"),
    ({"colour": "blue"}, "colour"),
    ({"state_interval": 2.0}, "heartbeat_timeout"),
])
def test_bad_values_name_their_key(change: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.from_dict({**GOOD, **change})


def test_max_datagram_is_a_number_or_auto() -> None:
    assert config.from_dict(GOOD).max_datagram is None
    assert config.from_dict({**GOOD, "max_datagram": "auto"}).max_datagram is None
    assert config.from_dict({**GOOD, "max_datagram": 9000}).max_datagram == 9000


def test_auto_datagrams_fit_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback's MTU is 65,536: less 28 bytes of IPv4 and UDP headers, or 48 of IPv6.
    assert path_max_datagram(("127.0.0.1", 9)) == 65507
    assert path_max_datagram(("::1", 9)) == 65488

    def no_route(*args: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(endpoint.socket.socket, "connect", no_route)
    assert path_max_datagram(("127.0.0.1", 9)) == 1400  # safe on any Ethernet
    monkeypatch.undo()
    monkeypatch.setattr(endpoint.sys, "platform", "darwin")
    assert path_max_datagram(("127.0.0.1", 9)) == 1400


@pytest.mark.parametrize("missing", ["master", "slave", "secret"])
def test_missing_keys_are_named(missing: str) -> None:
    raw = dict(GOOD)
    del raw[missing]
    with pytest.raises(ConfigError, match=missing):
        config.from_dict(raw)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        config.load(broken)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="JSON object"):
        config.load(listed)
