"""Config validation: every bad key is named; flags override the file."""

from __future__ import annotations

import base64
import json
import math
import secrets
from pathlib import Path

import pytest

from loadbalancer import config, endpoint
from loadbalancer.addresses import parse_address
from loadbalancer.config import ConfigError
from loadbalancer.endpoint import path_max_datagram

GOOD = {"master": "127.0.0.1:7001", "slave": "localhost:7002",
        "secret": secrets.token_urlsafe(32)}
EXAMPLE = Path(__file__).parent.parent / "config.example.json"


def test_minimal_config_gets_the_defaults() -> None:
    loaded = config.from_dict(GOOD)
    assert loaded.master == ("127.0.0.1", 7001)
    assert loaded.slave == ("localhost", 7002)
    assert loaded.policy == "symmetric"
    assert loaded.state_interval == 0.5
    assert loaded.workload.name == "vector"


def test_ipv6_address() -> None:
    assert parse_address("[::1]:9000", "master") == ("::1", 9000)


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
    ({"throttle": math.nan}, "throttle"),
    ({"state_interval": math.nan}, "state_interval"),
    ({"heartbeat_timeout": math.nan}, "heartbeat_timeout"),
    ({"heartbeat_timeout": math.inf}, "heartbeat_timeout"),
    ({"slave": "127.0.0.1:7001"}, "master and slave are both 127.0.0.1:7001"),
    ({"heartbeat_timeout": 10**400}, "heartbeat_timeout"),
    ({"workers": 10**400}, "workers"),
    ({"retries": -1}, "retries"),
    ({"workload_modules": "m.py"}, "workload_modules"),
    ({"master_timeout": 0}, "master_timeout"),
    ({"progress_interval": math.inf}, "progress_interval"),
])
def test_bad_values_name_their_key(change: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        config.from_dict({**GOOD, **change})


@pytest.mark.parametrize("key", ["throttle", "state_interval", "heartbeat_timeout"])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_json_s_non_numbers_are_refused_by_name(tmp_path: Path, key: str, number: str) -> None:
    path = tmp_path / "lb.json"
    path.write_text(json.dumps(GOOD)[:-1] + f', "{key}": {number}}}')
    with pytest.raises(ConfigError, match=f"{key} must be a number, not -?(nan|inf)$"):
        config.load(path)


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


@pytest.mark.parametrize("secret", [
    secrets.token_urlsafe(32),  # what lb init writes
    secrets.token_urlsafe(16),  # 22 characters: 132 bits
    secrets.token_hex(16),  # 32 hex digits: 128 bits
    secrets.token_hex(16).upper(),
    base64.b64encode(secrets.token_bytes(16)).decode(),  # openssl rand -base64 16
    base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    secrets.token_urlsafe(32) * 2,  # pasted twice: no less random than once
], ids=["token_urlsafe(32)", "token_urlsafe(16)", "token_hex(16)", "token_hex(16) upper",
        "base64 16 bytes", "base64url 32 bytes", "pasted twice"])
def test_random_secrets_of_the_documented_formats_are_accepted(secret: str) -> None:
    assert config.from_dict({**GOOD, "secret": secret}).secret == secret


def test_every_secret_lb_init_could_write_is_accepted() -> None:
    # The distinct-character check must not refuse random secrets: each has under 1e-8 odds.
    for make in (lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(16),
                 lambda: secrets.token_urlsafe(16)):
        for _ in range(2000):
            config.check_secret(make())


@pytest.mark.parametrize(("secret", "why"), [
    ("s" * 16, "holds 6 bits as base64url (it repeats every 1)"),
    ("a" * 64, "holds 4 bits as hex (it repeats every 1)"),
    ("ab" * 32, "holds 8 bits as hex (it repeats every 2)"),
    ("0123456789abcdef" * 2, "holds 64 bits as hex (it repeats every 16)"),
    ("1234567890" * 4, "holds 40 bits as hex (it repeats every 10)"),
    ("b13806f346693b6f57bac53c50f6059", "holds 124 bits as hex, fewer than 128"),  # 31 digits
    ("TT3MnCDM27lCHWa-9aeM0", "holds 126 bits as base64url"),  # 21 characters
    ("0" * 31 + "1", "uses only 2 distinct characters in 32"),
    ("x" * 40 + "yz", "uses only 3 distinct characters in 42"),
    ("correct horse battery staple", "and nothing else, not even a space"),
    ("djXh9wndfd2mTKi7lRWUT5MKd9jz5YrQMtBehFTirsw!", "and nothing else"),
    ("", "must be random hex"),
    ("replace-me-with-32-or-more-random-characters", "config.example.json's placeholder"),
])
def test_guessable_secrets_are_refused_saying_how_to_make_one(secret: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config.from_dict({**GOOD, "secret": secret})
    message = str(refused.value)
    assert message.startswith("secret ") and why in message
    assert "\n" not in message and "`lb init` writes a good one" in message
    assert 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"' in message


def test_a_secret_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^secret must be a string: `lb init`"):
        config.from_dict({**GOOD, "secret": 12345678901234567890})


def test_the_example_config_is_refused_as_it_stands() -> None:
    with pytest.raises(ConfigError, match=r"secret is still config\.example\.json's placeholder"):
        config.load(EXAMPLE)
    raw = json.loads(EXAMPLE.read_text())
    assert "lb init" in raw["secret"]  # the placeholder itself says how to make one
    config.from_dict({**raw, "secret": secrets.token_urlsafe(32)})  # and the rest is good


def test_an_integer_json_cannot_hold_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text('{"master": "127.0.0.1:1", "slave": "127.0.0.1:2", "workers": ' +
                    "9" * 5000 + "}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        config.load(path)
