"""ARP frames and the split of a sweep into attached and routed parts (pure)."""

from __future__ import annotations

import ipaddress

from appliance.bmc import arp
from appliance.drivers.redfish import _http_body

MAC = bytes.fromhex("020000aabbcc")


def test_request_is_a_broadcast_who_has() -> None:
    frame = arp.request(MAC, "10.0.0.1", "10.0.0.77")
    assert len(frame) == arp.FRAME_LEN == 42
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    assert frame[20:22] == b"\x00\x01"  # op: request
    assert frame[38:42] == bytes([10, 0, 0, 77])
    assert arp.parse_reply(frame) is None  # a request is not a reply


def test_reply_parsed_and_junk_refused() -> None:
    request = arp.request(MAC, "10.0.0.77", "10.0.0.1")
    reply = request[:20] + b"\x00\x02" + request[22:]
    assert arp.parse_reply(reply) == ("10.0.0.77", "02:00:00:aa:bb:cc")
    assert arp.parse_reply(reply[:30]) is None
    assert arp.parse_reply(reply[:12] + b"\x08\x00" + reply[14:]) is None  # IPv4, not ARP
    assert arp.parse_reply(reply + b"\x00" * 18) is not None  # padded to 60 bytes


def test_attached_and_routed_parts() -> None:
    eth = arp.Link("eth1", ipaddress.IPv4Interface("10.0.1.1/24"))
    lo = arp.Link("lo", ipaddress.IPv4Interface("127.0.0.1/8"))
    by_link, routed = arp.attached(["10.0.1.1", "10.0.1.2", "10.0.2.9", "127.0.0.5"], [lo, eth])
    assert by_link == {eth: ["10.0.1.2"]}  # its own address is left out
    assert routed == ["10.0.2.9", "127.0.0.5"]  # loopback is never swept by ARP


def test_probe_reads_plain_and_chunked_bodies() -> None:
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert _http_body(plain) == b"{}"
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n'
    )
    assert _http_body(chunked) == b'{"a":1}'
    assert _http_body(b"HTTP/1.1 401 Unauthorized\r\n\r\n{}") is None
    assert _http_body(b"garbage") is None
