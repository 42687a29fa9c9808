"""The pure parts of the web view: sessions and CSRF tokens, rack rows, log reading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.state.model import Event, Machine, MachineState
from appliance.web import logs
from appliance.web.auth import Auth
from appliance.web.rack import age, counts, grouped, matches, power_result, row, state_since

STUCK = {"installing": 600.0}


def test_sessions_are_signed_expire_and_die_with_the_password() -> None:
    auth = Auth(password="a-long-site-secret", session_seconds=60)
    cookie = auth.new_session("alice", now=1000.0)
    assert auth.session_user(cookie, now=1059.0) == "alice"
    assert auth.session_user(cookie, now=1061.0) is None  # expired
    user, expiry, nonce, mac = cookie.split("|")
    assert auth.session_user(f"mallory|{expiry}|{nonce}|{mac}", 1000.0) is None
    assert auth.session_user(f"{user}|9999999999|{nonce}|{mac}", 1000.0) is None
    assert auth.session_user("garbage", 1000.0) is None
    assert Auth(password="another-site-secret").session_user(cookie, 1000.0) is None
    assert "a-long-site-secret" not in repr(auth) and "a-long-site-secret" not in cookie
    with pytest.raises(ValueError, match="letters, digits"):
        auth.new_session("bob|admin", 1000.0)


def test_csrf_tokens_belong_to_one_session() -> None:
    auth = Auth(password="a-long-site-secret")
    one, two = auth.new_session("alice", 0), auth.new_session("alice", 0)
    assert auth.check_csrf(one, auth.csrf_token(one))
    assert not auth.check_csrf(two, auth.csrf_token(one))
    assert not auth.check_csrf(one, None) and not auth.check_csrf(one, "")


def test_proxy_users_only_from_listed_proxies() -> None:
    auth = Auth(proxy_header="X-Remote-User", proxy_addresses=("127.0.0.1",))
    assert auth.proxy_user("127.0.0.1", "carol") == "carol"
    assert auth.proxy_user("127.0.0.2", "carol") is None
    assert auth.proxy_user("127.0.0.1", "carol; rm -rf") is None
    assert auth.proxy_user("127.0.0.1", None) is None
    assert not auth.check_password("anything")
    with pytest.raises(ValueError, match="exactly one"):
        Auth()


def ev(i: int, t: float, kind: str, **detail: object) -> Event:
    return Event(id=i, time=t, kind=kind, mac="52:54:00:00:00:01", detail=dict(detail))


def test_rows_time_in_state_stuck_and_power() -> None:
    events = [
        ev(1, 10, "request", endpoint="ipxe"),
        ev(2, 20, "state", to="installing"),
        ev(3, 25, "action", power=True, dry_run=False, result="done: powered on"),
        ev(4, 26, "action", power=True, dry_run=True, result="dry run: would"),
    ]
    assert state_since(events) == 20
    assert power_result(events) == "done: powered on"
    m = Machine("52:54:00:00:00:01", state=MachineState.INSTALLING, first_seen=5.0)
    r = row(m, state_since(events), power_result(events))
    assert not r.stuck(STUCK, now=620.0)
    assert r.stuck(STUCK, now=621.0)
    assert row(m, None).state_since == 5.0  # no state event: since first seen
    ready = row(Machine("52:54:00:00:00:02", state=MachineState.READY, hostname="b"), 0.0)
    c = counts([r, ready], STUCK, now=1000.0)
    assert (c["installing"], c["ready"], c["rescue"], c["total"], c["stuck"]) == (1, 1, 0, 2, 1)
    groups = dict(grouped([r, ready], "state"))
    assert list(groups) == [
        "discovered",
        "installing",
        "installed",
        "ready",
        "maintenance",
        "rescue",
    ]
    assert groups["installing"] == [r] and groups["discovered"] == []
    assert grouped([ready, r], "none") == [("all", [ready, r])]  # named first
    assert matches(r, "00:00:01", "") and matches(r, "", "installing")
    assert not matches(r, "", "ready") and not matches(r, "nothing-like-it", "")


def test_age() -> None:
    assert [age(s) for s in (-3, 59, 61, 3725, 90000)] == ["0s", "59s", "1m", "1h02m", "1d01h"]


ANSIBLE = """\
# kpc kolla deploy, 2026-11-29T00:10:00
PLAY [Apply role common] ****
TASK [common : Ensuring config directories exist] ****
ok: [node1]
TASK [prechecks : Checking the api_interface is present] ****
fatal: [node2]: FAILED! => {"changed": false, "msg": "Interface eth9 not present on node2"}
PLAY RECAP ****
"""


def test_kolla_runs_status_task_failures_and_tail(tmp_path: Path) -> None:
    kolla = tmp_path / "kolla"
    kolla.mkdir()
    (kolla / "20261129T001000-deploy.log").write_text(ANSIBLE)
    (kolla / "20261129T002000-prechecks.log").write_text("TASK [a : b] ****\n\x1b[31mred\x1b[0m\n")
    (kolla / "notes.txt").write_text("not a run")
    runs = logs.kolla_runs(tmp_path)
    assert [(r.step, r.started) for r in runs] == [
        ("prechecks", "2026-11-29 00:20:00"),
        ("deploy", "2026-11-29 00:10:00"),
    ]
    latest = logs.view_run(runs[0])
    assert (latest.status, latest.task, latest.tail) == (
        "running or interrupted",
        "a : b",
        (
            "TASK [a : b] ****",
            "red",
        ),
    )
    failed = logs.view_run(runs[1])
    assert failed.status == "failed"
    assert [(f.host, f.message) for f in failed.failures] == [
        ("node2", "Interface eth9 not present on node2")
    ]
    assert logs.kolla_runs(tmp_path / "missing") == []


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    path.write_text("".join(f"line {i}\n" for i in range(10000)))
    lines, size = logs.tail(path, 3, limit=100)
    assert lines == ["line 9997", "line 9998", "line 9999"]
    assert size == path.stat().st_size
    assert logs.tail(tmp_path / "none", 3) == ([], 0)


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_meet_wcag_aa_contrast() -> None:
    """Every text/background pair the stylesheet uses reaches 4.5:1 (WCAG 2.1 AA)."""
    css = (Path(__file__).parents[2] / "appliance" / "web" / "static" / "app.css").read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", css))
    pairs = [
        (var["fg"], var["bg"]),
        (var["muted"], var["bg"]),
        (var["muted"], var["panel"]),
        (var["link"], var["bg"]),
        (var["link"], var["panel"]),
        (var["bad"], var["bad-bg"]),
        (var["fg"], var["bad-bg"]),
        (var["muted"], var["bad-bg"]),
        ("#ffffff", var["bad"]),  # the STUCK flag
        ("#ffffff", "#14213d"),  # the top bar
        ("#ffffff", "#0a4fb3"),  # buttons
    ]
    states = re.findall(r"\.state-[a-z]+ \{ color: (#[0-9a-f]{6}); background: (#[0-9a-f]{6})", css)
    assert len(states) == 6
    for fg, bg in pairs + states:
        assert contrast(fg, bg) >= 4.5, f"{fg} on {bg}: {contrast(fg, bg):.2f}:1"


def test_login_throttle_counts_failures_in_a_window() -> None:
    from appliance.web.auth import Throttle

    t = Throttle(limit=3, window=100.0)
    for now in (0.0, 10.0, 20.0):
        assert t.wait("10.0.0.1", now) == 0
        t.failed("10.0.0.1", now)
    assert t.wait("10.0.0.1", 30.0) == 70.0
    assert t.wait("10.0.0.2", 30.0) == 0  # per address
    assert t.wait("10.0.0.1", 100.0) == 0  # the first failure left the window
