"""/metadata's env-file body: matchbox's shape, and no line can be forged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.bootcfg.catalog import Group
from appliance.bootcfg.context import metadata_env
from appliance.bootcfg.labels import parse_labels


def _group(metadata: dict[str, Any], selector: dict[str, str] | None = None) -> Group:
    return Group("g", Path("g.json"), "p", selector=selector or {}, metadata=metadata)


@pytest.mark.parametrize(
    ("metadata", "lines"),
    [
        ({"name": "node1"}, ["NAME=node1"]),
        ({"a-b.c": "x"}, ["A-B.C=x"]),  # matchbox only upper-cases names
        ({"n": 3, "big": 1000000, "f": 0.5, "t": True, "no": False},
         ["BIG=1e+06", "F=0.5", "N=3", "NO=false", "T=true"]),
        ({"nested": {"zone": {"id": "z1"}, "k": "v"}}, ["NESTED_K=v", "NESTED_ZONE_ID=z1"]),
        ({"list": [1, 2], "null": None}, []),  # matchbox writes nothing for these
        ({"evil": "a\r\nFORGED=1"}, ["EVIL=a\\r\\nFORGED=1"]),  # one key, one line
        ({"tab": "a\tb\\c"}, ["TAB=a\\tb\\\\c"]),
        ({"plain": "back\\slash"}, ["PLAIN=back\\slash"]),  # unchanged without controls
        ({"k\nX": "v"}, ["K\\nX=v"]),
    ],
)  # fmt: skip
def test_metadata_lines(metadata: dict[str, Any], lines: list[str]) -> None:
    body = metadata_env(_group(metadata), parse_labels([]))
    assert body.splitlines() == sorted([*lines, "REQUEST_RAW_QUERY="])
    assert "\r" not in body


def test_selectors_override_metadata_and_request_comes_last() -> None:
    group = _group({"os": "from-metadata", "request": {"query": "shadowed"}}, {"os": "installed"})
    labels = parse_labels([("os", "installed"), ("hostname", "")], "os=installed&hostname=")
    assert metadata_env(group, labels).splitlines() == [
        "OS=installed",
        "REQUEST_QUERY_HOSTNAME=",
        "REQUEST_QUERY_OS=installed",
        "REQUEST_RAW_QUERY=os=installed&hostname=",
    ]
