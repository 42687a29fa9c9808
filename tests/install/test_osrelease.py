"""OS detection from fixture trees, and how the site config's os section overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Os, parse_config
from appliance.errors import ConfigError
from appliance.install.osrelease import detect_os, parse_env_file, resolve_target

TREES = Path(__file__).parent / "fixtures" / "os"


@pytest.mark.parametrize(
    ("tree", "flavor", "channel", "version"),
    [
        ("flatcar-stable", "flatcar", "stable", "3815.2.0"),
        ("flatcar-beta", "flatcar", "beta", "3850.1.0"),
        ("flatcar-alpha", "flatcar", "alpha", "3874.0.0"),
        ("flatcar-override", "flatcar", "beta", "3815.2.0"),
        ("coreos-legacy", "coreos", "stable", "2512.3.0"),
        ("coreos-override", "coreos", "alpha", "2512.3.0"),
    ],
)
def test_detects_flavor_channel_version(tree: str, flavor: str, channel: str, version: str) -> None:
    found = detect_os(TREES / tree)
    assert found.flavor is not None and found.flavor.value == flavor
    assert found.channel is not None and found.channel.value == channel
    assert found.version is not None and found.version.value == version


def test_etc_update_conf_overrides_the_image_and_says_so() -> None:
    found = detect_os(TREES / "flatcar-override")
    assert found.channel is not None
    assert found.channel.source == "/etc/flatcar/update.conf (GROUP)"
    legacy = detect_os(TREES / "coreos-override")
    assert legacy.channel is not None
    assert legacy.channel.source == "/etc/coreos/update.conf (GROUP)"


def test_release_file_is_the_version_source() -> None:
    found = detect_os(TREES / "flatcar-stable")
    assert found.version is not None
    assert found.version.source == "/usr/share/flatcar/release (FLATCAR_RELEASE_VERSION)"
    assert found.pretty_name == "Flatcar Container Linux by Kinvolk 3815.2.0 (Oklo)"


def test_absolute_symlink_is_followed_inside_the_root_not_on_this_host() -> None:
    # etc/os-release -> /usr/lib/os-release; this test host's own file says Debian.
    found = detect_os(TREES / "flatcar-os-release-only")
    assert found.flavor is not None and found.flavor.value == "flatcar"
    assert found.version is not None and found.version.value == "3602.2.3"
    assert found.version.source == "/etc/os-release (VERSION_ID)"
    assert found.channel is None


def test_not_coreos_at_all() -> None:
    found = detect_os(TREES / "debian")
    assert found.flavor is None and found.version is None and found.channel is None
    assert found.describe() == "Debian GNU/Linux 12 (bookworm)"
    with pytest.raises(ConfigError, match="cannot tell which release channel"):
        resolve_target(found, Os())


def test_empty_root(tmp_path: Path) -> None:
    found = detect_os(tmp_path)
    assert found.flavor is None
    assert found.describe() == "an unknown OS"


def test_parse_env_file_quotes_comments_and_junk() -> None:
    text = "# c\nA=1\nB=\"two words\"\nC='x'\n  D = spaced \nnot a pair\nE=\n"
    assert parse_env_file(text) == {"A": "1", "B": "two words", "C": "x", "D": "spaced", "E": ""}


def test_host_values_are_used_when_the_config_says_nothing() -> None:
    target = resolve_target(detect_os(TREES / "flatcar-beta"), Os())
    assert (target.flavor, target.channel, target.version, target.baseurl) == (
        "flatcar",
        "beta",
        "3850.1.0",
        None,
    )
    assert "channel beta: from /usr/share/flatcar/update.conf (GROUP)" in target.reasons


def test_config_overrides_channel_version_and_mirror() -> None:
    config = parse_config(
        "provisioning: {interface: eth0, address: 10.0.0.2, subnet: 10.0.0.0/24}\n"
        "os: {channel: alpha, version: '3874.0.0', mirror: 'http://mirror.example/{channel}'}\n"
    )
    target = resolve_target(detect_os(TREES / "flatcar-stable"), config.os)
    assert (target.channel, target.version) == ("alpha", "3874.0.0")
    assert target.baseurl == "http://mirror.example/alpha"
    assert "channel alpha: from the site config (os.channel)" in target.reasons


def test_default_channel_in_config_does_not_hide_the_host_channel() -> None:
    # os.channel defaults to "stable", but only an explicit value overrides the host.
    config = parse_config("provisioning: {interface: eth0, address: 10.0.0.2, subnet: 10.0.0.0/24}")
    target = resolve_target(detect_os(TREES / "flatcar-alpha"), config.os)
    assert target.channel == "alpha"


def test_custom_update_group_needs_an_explicit_channel() -> None:
    found = detect_os(TREES / "flatcar-custom-group")
    with pytest.raises(ConfigError, match="update group 'my-nebraska-group'") as info:
        resolve_target(found, Os())
    assert info.value.hint is not None and "os.channel" in info.value.hint
    target = resolve_target(found, Os(channel="lts"))
    assert target.channel == "lts"


def test_unknown_version_needs_the_config() -> None:
    found = detect_os(TREES / "debian")
    with pytest.raises(ConfigError, match="cannot tell which version"):
        resolve_target(found, Os(channel="stable"))
    target = resolve_target(found, Os(channel="stable", version="current"))
    assert target.version == "current"


def test_legacy_coreos_installs_flatcar_of_the_same_version() -> None:
    target = resolve_target(detect_os(TREES / "coreos-legacy"), Os())
    assert (target.flavor, target.version) == ("flatcar", "2512.3.0")
    assert any("runs coreos" in reason for reason in target.reasons)
