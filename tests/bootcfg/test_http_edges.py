"""HTTP edge cases an attacker (or a confused client) sends: Range per RFC 9110, malformed
requests (one log line, no traceback), slow request bodies (408)."""

from __future__ import annotations

import logging
import socket

import pytest

from appliance.bootcfg import machines
from appliance.bootcfg.files import RangeVerdict, judge_range
from tests.bootcfg.conftest import MAC
from tests.bootcfg.server import Server
from tests.conftest import wait_for

BODY = b"0123456789" * 10


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, RangeVerdict.ABSENT),
        ("bytes=0-0", RangeVerdict.SINGLE),
        ("bytes=5-", RangeVerdict.SINGLE),
        ("bytes=-5", RangeVerdict.SINGLE),
        ("bytes=200-300", RangeVerdict.SINGLE),  # valid syntax; FileResponse answers 416
        ("bytes=-0", RangeVerdict.UNSATISFIABLE),
        ("bytes=3-1", RangeVerdict.IGNORE),
        ("bytes=abc", RangeVerdict.IGNORE),
        ("bytes=0-1,5-6", RangeVerdict.IGNORE),
        ("items=0-1", RangeVerdict.IGNORE),
        ("bytes=" + "9" * 40 + "-", RangeVerdict.IGNORE),
        ("bytes=1-2\r\nX: y", RangeVerdict.IGNORE),
    ],
)
def test_judge_range(header: str | None, verdict: RangeVerdict) -> None:
    assert judge_range(header) is verdict


@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=-0", 416, b"", "bytes */100"),
        ("bytes=200-300", 416, b"", "bytes */100"),
        ("bytes=abc", 200, BODY, None),
        ("items=0-1", 200, BODY, None),
        ("bytes=0-1,5-6", 200, BODY, None),
        ("bytes=3-1", 200, BODY, None),
        ("bytes=0-0", 206, b"0", "bytes 0-0/100"),
        ("bytes=-5", 206, b"56789", "bytes 95-99/100"),
    ],
)
def test_range_requests_follow_rfc_9110(
    server: Server, header: str, status: int, body: bytes, content_range: str | None
) -> None:
    (server.service.catalog.assets_dir / "f.bin").write_bytes(BODY)
    reply = server.get("/assets/f.bin", headers={"Range": header})
    assert (reply.status, reply.body) == (status, body)
    assert reply.headers.get("Content-Range") == content_range


def _raw(server: Server, payload: bytes, *, then: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(payload)
        if then:
            s.sendall(then)
        return s.recv(4096)


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",  # a TLS hello
        b"POST /checkin HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /ipxe?mac=1 HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
    ],
)
def test_malformed_http_is_400_and_one_log_line(
    server: Server, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = _raw(server, payload)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aiohttp.server"]

    wait_for(logged, 10, "the log line about the malformed request")
    records = logged()
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.exc_info is None and not record.exc_text
    line = record.getMessage()
    assert "malformed HTTP request refused" in line
    assert "\n" not in line and "\r" not in line
    assert server.store.machines() == []


def test_a_slow_body_times_out_with_408(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machines, "BODY_DEADLINE", 0.5)
    head = (
        f"POST /checkin?mac={MAC} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    answer = _raw(server, head, then=b'{"hostname":')
    assert b" 408 " in answer.split(b"\r\n")[0], answer
    assert server.store.get(MAC) is None
