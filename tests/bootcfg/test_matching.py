"""Matching (table-driven, matchbox's rules and example shapes) and data-dir loading
(lenient like matchbox: a broken file is reported and left out, the rest serves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.bootcfg.catalog import TemplateKind, load_catalog
from appliance.bootcfg.labels import parse_labels
from appliance.bootcfg.matching import Outcome, decide, is_installer, select_group
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
        # 1 selector each: matchbox tries the greatest "key=value" string first
        ([("mac", MAC1), ("os", "installed")], "proxies"),  # "os=..." > "mac=..."
        ([("hostname", "NODE5.example.com")], "by-host"),
        ([("serial", "S1"), ("region", "r1")], "tie-b"),  # "serial=S1" > "region=r1"
        ([("region", "r2")], "install"),
        ([("region", "r1"), ("hostname", "node5.example.com")], "tie-a"),  # r > h
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


@pytest.mark.parametrize(
    ("groups", "query", "expected"),
    [
        # same selector count: greatest sorted "k=v,k=v" string first
        ([("a", {"os": "x", "zone": "1"}), ("b", {"os": "x", "arch": "x86_64"})],
         [("os", "x"), ("zone", "1"), ("arch", "x86_64")], "a"),
        ([("z", {"rack": "1"}), ("a", {"rack": "2"}), ("m", {"row": "1"})],
         [("rack", "1"), ("row", "1")], "m"),
        # identical selectors: the first file name wins (group ids do not matter)
        ([("zz", {"os": "x"}), ("aa", {"os": "x"})], [("os", "x")], "aa"),
        # a selector with an empty value matches a request without that label, or with it empty
        ([("e", {"os": "x", "stage": ""}), ("d", {"os": "x"})], [("os", "x")], "e"),
        ([("e", {"os": "x", "stage": ""}), ("d", {"os": "x"})], [("os", "x"), ("stage", "")], "e"),
        ([("e", {"os": "x", "stage": ""}), ("d", {"os": "x"})], [("os", "x"), ("stage", "1")], "d"),
        # arch from /boot.ipxe's chain
        ([("arm", {"arch": "arm64"}), ("x86", {"arch": "x86_64"})], [("arch", "x86_64")], "x86"),
        # MAC notations all match a selector in any notation
        ([("m", {"mac": "52:54:00:A1:9C:AE"})], [("mac", "52-54-00-a1-9c-ae")], "m"),
        ([("m", {"mac": "52-54-00-a1-9c-ae"})], [("mac", "5254.00a1.9cae")], "m"),
        ([("m", {"MAC": "52-54-00-a1-9c-ae"})], [("MAC", "52:54:00:A1:9C:AE")], "m"),
        # UUIDs compare case-insensitively (iPXE sends lower case)
        ([("u", {"uuid": UUID1.upper()})], [("uuid", UUID1)], "u"),
        # label names are case-sensitive, as in matchbox
        ([("c", {"Os": "x"})], [("os", "x")], None),
    ],
)  # fmt: skip
def test_matchbox_tie_rule(
    data: DataDir,
    groups: list[tuple[str, dict[str, str]]],
    query: list[tuple[str, str]],
    expected: str | None,
) -> None:
    data.profile("p")
    for gid, selector in groups:
        data.file("groups", f"{gid}.json", json.dumps({"profile": "p", "selector": selector}))
    catalog = load_catalog(data.root)
    assert catalog.problems == ()
    group = select_group(catalog.groups, parse_labels(query))
    assert (group.id if group else None) == expected


def test_second_default_group_is_served_first_by_file_name(data: DataDir) -> None:
    data.profile("p")
    data.profile("q")
    data.group("b", "p", file="1.json")
    data.group("a", "q", file="2.json")
    catalog = load_catalog(data.root)
    assert catalog.problems == ()
    assert any("2 default groups" in w and "1.json" in w for w in catalog.warnings)
    group = select_group(catalog.groups, parse_labels([]))
    assert group is not None and group.id == "b"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"id": "g", "profile": "p", "selector": {"mac": "zz"}}', "selector.mac"),
        ('{"id": "g", "profile": "p", "selector": {"os": 1}}', "selector.os"),
        ('{"id": "g", "profile": "p", "metadata": [1]}', "metadata: expected an object"),
    ],
)
def test_a_broken_group_is_left_out_and_the_rest_serves(
    data: DataDir, content: str, message: str
) -> None:
    data.profile("p")
    data.group("good", "p", {"os": "x"})
    bad = data.file("groups", "bad.json", content)
    catalog = load_catalog(data.root)
    assert [g.id for g in catalog.groups] == ["good"]
    assert any(str(bad) in p and message in p for p in catalog.problems), catalog.problems


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "g"}', "profile: required"),
        ('{"id": "g", "profile": "missing"}', "profile 'missing' does not exist"),
        ('{"id": "g", "profile": "broken"}', "profile 'broken' is broken"),
    ],
)
def test_a_group_without_its_profile_keeps_its_machines_and_gets_them_404(
    data: DataDir, content: str, message: str
) -> None:
    """Not handed to the default group: matchbox answers 404 for them too."""
    data.profile("p")
    data.file("profiles", "broken.json", "{")
    data.group("default", "p")
    bad = data.file("groups", "bad.json", content.replace("}", ', "selector": {"os": "x"}}'))
    catalog = load_catalog(data.root)
    assert any(str(bad) in p and message in p for p in catalog.problems), catalog.problems
    labels = parse_labels([("os", "x")])
    decision = decide(catalog, labels, None, ipxe=True)
    assert decision.outcome is Outcome.NO_MATCH
    assert decision.group is not None and decision.group.source == bad


def test_matchbox_doc_shapes_load(data: DataDir) -> None:
    """Groups without "id" (docs/matchbox.md), a selector with an empty value, a profile
    whose file name is its id, an ignition_id in a subdirectory, nested example groups."""
    data.file("profiles", "etcd.json", json.dumps({"id": "etcd", "ignition_id": "site/w.ign"}))
    data.file("groups", "node1.json", json.dumps({"name": "node1", "profile": "etcd",
              "selector": {"mac": "52:54:00:89:d8:10", "stage": ""}}))  # fmt: skip
    data.file("groups", "proxy.json", json.dumps({"name": "proxy", "profile": "etcd"}))
    data.file("groups", "flatcar-install/install.json", json.dumps({"profile": "etcd"}))
    data.file("ignition", "site/w.ign", json.dumps({"ignition": {"version": "3.4.0"}}))
    catalog = load_catalog(data.root)
    assert catalog.problems == ()
    assert sorted(g.id for g in catalog.groups) == ["node1", "proxy"]
    assert catalog.ignition["site/w.ign"].kind is TemplateKind.IGNITION
    assert any("flatcar-install" in w and "ignored directory" in w for w in catalog.warnings)


@pytest.mark.parametrize(
    ("boot", "message"),
    [
        ({"initrd": []}, "boot.kernel: required"),
        ({"kernel": "/k\nshell", "initrd": []}, "control chars"),
        ({"kernel": "/k", "initrd": ["/i\nshell"]}, "control chars"),
        ({"kernel": "/k", "args": ["a\nchain http://evil/"]}, "control characters"),
        ({"kernel": "/k", "args": "console=ttyS0"}, "expected a list"),
    ],
)
def test_a_broken_profile_is_left_out(data: DataDir, boot: dict[str, object], message: str) -> None:
    data.profile("good")
    bad = data.file("profiles", "bad.json", json.dumps({"id": "bad", "boot": boot}))
    catalog = load_catalog(data.root)
    assert list(catalog.profiles) == ["good"]
    assert any(str(bad) in p and message in p for p in catalog.problems), catalog.problems


def test_initrd_with_ipxe_options_loads(data: DataDir) -> None:
    """matchbox's Fedora CoreOS examples: "initrd": ["--name main /assets/..."]."""
    data.profile("fcos", initrd=["--name main /assets/f/initramfs.img"], args=["initrd=main"])
    catalog = load_catalog(data.root)
    assert catalog.problems == ()
    boot = catalog.profiles["fcos"].boot
    assert boot is not None and boot.initrd == ("--name main /assets/f/initramfs.img",)


def test_a_selector_no_valid_request_can_carry_is_a_warning(data: DataDir) -> None:
    data.profile("p")
    data.group("g", "p", {"rack": "row 1"})
    catalog = load_catalog(data.root)
    assert len(catalog.groups) == 1
    assert any("selector.rack: no request can match it" in w for w in catalog.warnings)


def test_duplicate_group_ids_are_a_warning(data: DataDir) -> None:
    data.profile("p")
    data.group("g", "p", {"os": "a"}, file="one.json")
    data.group("g", "p", {"os": "b"}, file="two.json")
    catalog = load_catalog(data.root)
    assert len(catalog.groups) == 2
    assert any("one.json" in w and "two.json" in w for w in catalog.warnings)


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
        ("a.ignition", '{"ignition": {"version": "3.4.0"}}', TemplateKind.IGNITION, None),
        ("a.ign.j2", '{"ignition": {"version": {{ v | json }}}}', TemplateKind.IGNITION_J2, None),
        ("a.ign", '{"ignition": {{.version}}}', TemplateKind.IGNITION_GO, None),
        ("a.json", '{"ignition": {"version": "{{.v}}"}}', TemplateKind.IGNITION_GO, None),
        ("a.tmpl", '{{/* c */}}\n{"ignition": {}}', TemplateKind.IGNITION_GO, None),
        ("a.ign", '{"x": "{{.mac"}', TemplateKind.REFUSED, "a.ign:1: unclosed action"),
        ("a.ign", '{\n"x": "{{if .a}}"}', TemplateKind.REFUSED,
         "a.ign:2: unexpected EOF: this {{if}} has no {{end}}"),
        ("a.ign.j2", '{"x": "{{.mac}}"}', TemplateKind.REFUSED, "Go template syntax"),
        ("a.yaml", "variant: flatcar\nversion: 1.0.0\n", TemplateKind.REFUSED, "butane --strict"),
        ("a.yaml", "variant: fcos\npasswd:\n  - name: {{.u}}\n", TemplateKind.REFUSED,
         "a Butane config"),
        ("a.yaml", "passwd: {}\n", TemplateKind.REFUSED, "neither Ignition JSON"),
        ("a.ign", '{"storage": {}}', TemplateKind.REFUSED, "not an Ignition config"),
        ("a.ign", '{"ignition": {"version": "2.2.0"}}', TemplateKind.REFUSED, "3.0-3.4"),
        ("a.ign", "{", TemplateKind.REFUSED, "not valid Ignition JSON"),
    ],
)  # fmt: skip
def test_ignition_files_classified(
    data: DataDir, name: str, text: str, kind: TemplateKind, message: str | None
) -> None:
    path = data.file("ignition", name, text)
    unused = load_catalog(data.root)
    data.profile("p", ignition_id=name)
    catalog = load_catalog(data.root)
    template = catalog.ignition[name]
    assert template.kind is kind
    if message is None:
        assert catalog.problems == ()
    else:
        assert template.problem is not None
        assert str(path) in template.problem
        assert message in template.problem
        # broken when a profile uses it; a warning only while none does
        assert any(str(path) in p for p in catalog.problems)
        assert unused.problems == ()
        assert any(str(path) in w and "no profile uses it" in w for w in unused.warnings)


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("setup.cfg", "plain text\n", TemplateKind.TEXT_GO),
        ("dc.tmpl", "{{.dc}}\n", TemplateKind.TEXT_GO),
        ("x.j2", "{{ dc }}\n", TemplateKind.TEXT_J2),
        ("bad.tmpl", "{{if .x}}\n", TemplateKind.REFUSED),
        ("bad2.tmpl", '{{template "x"}}\n', TemplateKind.REFUSED),
    ],
)
def test_generic_files_classified(data: DataDir, name: str, text: str, kind: TemplateKind) -> None:
    data.file("generic", name, text)
    assert load_catalog(data.root).generic[name].kind is kind


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_catalog(tmp_path / "nope")
    assert info.value.hint is not None and "kpc bootcfg init" in info.value.hint


@pytest.mark.parametrize(
    ("pid", "args", "installer"),
    [
        ("install", [], True),
        ("flatcar-install", [], True),
        ("fedora-coreos-install", [], True),
        ("install-reboot", [], True),  # an older matchbox example name
        ("etcd_install.v2", [], True),
        ("Flatcar-Install", [], True),
        ("installed", [], False),
        ("flatcar", [], False),
        ("reinstalled-node", [], False),
        ("fcos-live", ["coreos.inst.install_dev=/dev/sda", "x"], True),
        ("fcos-live", ["coreos.inst=yes"], True),
        ("fcos-live", ["ignition.firstboot"], False),
    ],
)
def test_installer_profiles_are_recognised(
    data: DataDir, pid: str, args: list[str], installer: bool
) -> None:
    data.profile(pid, args=args)
    profile = load_catalog(data.root).profiles[pid]
    assert is_installer(profile) is installer
