"""The readiness checks' parsers, on outputs from the systems kpc meets (pure, no SSH)."""

from __future__ import annotations

import pytest

from appliance.nodes.checks import (
    GIB,
    MARK,
    Check,
    ClockSample,
    Policy,
    Section,
    Status,
    check_clock,
    check_disk,
    check_docker,
    check_os,
    check_python,
    evaluate,
    parse_os_release,
    parse_remote_time,
    parse_sections,
)

POLICY = Policy()

FLATCAR_OS_RELEASE = """\
NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=3815.2.5
VERSION_ID=3815.2.5
BUILD_ID=2024-06-25-2204
PRETTY_NAME="Flatcar Container Linux by Kinvolk 3815.2.5 (Oklo)"
"""


def test_sections_ignore_noise_and_keep_exit_codes() -> None:
    text = (
        "/usr/bin/env: 'bash': No such file or directory\n"  # shell start-up noise
        f"\n{MARK} begin os\nNAME=x\n\n{MARK} end 0\n"
        f"\n{MARK} begin python\nsh: python3: not found\n{MARK} end 127\n"
        f"\n{MARK} begin disk\npartial output, no end marker\n"
    )
    sections = parse_sections(text)
    assert sections == {
        "os": Section("NAME=x", 0),
        "python": Section("sh: python3: not found", 127),
    }


def test_os_release_quoting() -> None:
    values = parse_os_release(FLATCAR_OS_RELEASE + "# comment\nBAD LINE\nX='a \\\"b\\\"'\n")
    assert values["NAME"] == "Flatcar Container Linux by Kinvolk"
    assert values["VERSION_ID"] == "3815.2.5"
    assert values["X"] == 'a "b"'


def test_os_check() -> None:
    ok = check_os(Section(FLATCAR_OS_RELEASE, 0), POLICY)
    assert ok.status is Status.OK
    assert ok.summary == "flatcar 3815.2.5"
    assert ok.data["name"] == "Flatcar Container Linux by Kinvolk"
    assert ok.data["id"] == "flatcar"
    missing = check_os(Section("cat: can't open '/usr/lib/os-release'", 1), POLICY)
    assert missing.status is Status.FAIL
    assert "os-release" in missing.detail


@pytest.mark.parametrize(
    ("output", "code", "status", "summary"),
    [
        ("Python 3.11.2", 0, Status.OK, "3.11.2"),
        ("Python 3.12.0rc1", 0, Status.OK, "3.12.0rc1"),
        ("Python 2.7.18", 0, Status.FAIL, "2.7.18"),  # `python` only, too old
        ("sh: python3: not found\nsh: python: not found", 127, Status.FAIL, "absent"),
        ("bash: line 1: python3: command not found", 127, Status.FAIL, "absent"),
    ],
)
def test_python_check(output: str, code: int, status: Status, summary: str) -> None:
    result = check_python(Section(output, code), POLICY)
    assert (result.status, result.summary) == (status, summary)


@pytest.mark.parametrize(
    ("client", "server", "status", "words"),
    [
        (
            Section("Docker version 24.0.9, build 2936816", 0),
            Section("24.0.9", 0),
            Status.OK,
            "24.0.9",
        ),
        (
            Section("sh: docker: not found", 127),
            Section("sh: docker: not found", 127),
            Status.FAIL,
            "not installed",
        ),
        (
            Section("Docker version 24.0.9, build 2936816", 0),
            Section(
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                "Is the docker daemon running?",
                1,
            ),
            Status.FAIL,
            "not running: Cannot connect",
        ),
        (
            Section("Docker version 24.0.9, build 2936816", 0),
            Section("permission denied while trying to connect to the Docker daemon socket", 1),
            Status.FAIL,
            "may not use the Docker daemon",
        ),
        (
            Section("Docker version 20.10.24+dfsg1, build 297e128", 0),
            Section("", 124),
            Status.FAIL,
            "did not answer within",
        ),
    ],
)
def test_docker_check(client: Section, server: Section, status: Status, words: str) -> None:
    result = check_docker(client, server, POLICY)
    assert result.status is status
    assert words in (result.summary if status is Status.OK else result.detail)


def test_docker_optional_is_a_warning() -> None:
    policy = Policy(required=frozenset(Check) - {Check.DOCKER})
    result = check_docker(Section("", 127), Section("", 127), policy)
    assert result.status is Status.WARN


GNU_DF = """\
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda1        264212084 24165756  82225156      23% /
"""
BUSYBOX_DF = """\
Filesystem           1024-blocks    Used Available Capacity Mounted on
rootfs                   121484      1840    119644   2% /
"""


def test_disk_check() -> None:
    big = check_disk(Section(GNU_DF, 0), POLICY)
    assert big.status is Status.OK
    assert big.data == {"free_bytes": 82225156 * 1024, "total_bytes": 264212084 * 1024}
    small = check_disk(Section(BUSYBOX_DF, 0), POLICY)
    assert small.status is Status.FAIL
    assert "116.8 MiB free on /, need 20.0 GiB" in small.detail
    # Docker's own file system (a node whose /var/lib/docker is a disk of its own) is named
    docker_df = BUSYBOX_DF.replace("rootfs ", "/dev/vda").replace("% /", "% /var/lib/docker")
    assert "free on /var/lib/docker, need" in check_disk(Section(docker_df, 0), POLICY).detail
    relaxed = check_disk(Section(BUSYBOX_DF, 0), Policy(min_free_bytes=GIB // 10))
    assert relaxed.status is Status.OK
    broken = check_disk(Section("df: /: No such file", 1), POLICY)
    assert broken.status is Status.FAIL and "No such file" in broken.detail


def test_remote_time_formats() -> None:
    assert parse_remote_time("1700000000.250000000\n") == (1700000000.25, 1e-9)
    # busybox date without %N support prints the directive literally
    assert parse_remote_time("1700000000.%N") == (1700000000.5, 1.0)
    assert parse_remote_time("1700000000.N") == (1700000000.5, 1.0)
    assert parse_remote_time("date: invalid format") is None


def test_clock_offset_and_uncertainty() -> None:
    ok = check_clock(ClockSample("1000.020000000", 0, sent=1000.0, received=1000.02), POLICY)
    assert ok.status is Status.OK
    assert ok.data == {"offset_s": pytest.approx(0.01), "uncertainty_s": pytest.approx(0.01)}
    late = check_clock(ClockSample("1005.000000000", 0, sent=1000.0, received=1000.02), POLICY)
    assert late.status is Status.FAIL
    assert "+4.990s off" in late.detail
    # one-second resolution widens the tolerance instead of failing a good clock
    coarse = check_clock(ClockSample("1001.%N", 0, sent=1000.9, received=1000.95), POLICY)
    assert coarse.status is Status.OK
    never = check_clock(ClockSample("", -1, sent=None, received=None), POLICY)
    assert never.status is Status.FAIL


def test_evaluate_reports_every_check_even_from_a_bare_node() -> None:
    results = evaluate("", None, POLICY)
    assert [r.check for r in results] == [
        Check.OS,
        Check.DOCKER,
        Check.PYTHON,
        Check.CLOCK,
        Check.DISK,
    ]
    assert all(r.status is Status.FAIL for r in results)
