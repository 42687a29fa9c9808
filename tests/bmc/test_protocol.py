"""Packet building and parsing against byte layouts written out from the specifications."""

from __future__ import annotations

import pytest

from appliance.bmc import protocol as p


def test_presence_ping_bytes() -> None:
    # RMCP: version 06, reserved, seq FF (no ACK), class 06 (ASF);
    # ASF: IANA 4542 (00 00 11 BE), type 80 (ping), tag, reserved, data length 0
    assert p.presence_ping(0x2A) == bytes.fromhex("0600ff06000011be802a0000")


def test_get_channel_auth_caps_bytes() -> None:
    packet = p.get_channel_auth_caps(5)
    # RMCP class 07 (IPMI); v1.5 session header: auth none, seq 0, id 0, length 9
    assert packet[:14] == bytes.fromhex("0600ff07" + "00" + "00000000" + "00000000" + "09")
    message = packet[14:]
    # rsAddr 20, netFn App (06) << 2, checksum; rqAddr 81, seq 5 << 2, cmd 38,
    # channel 0E | 80 (IPMI v2.0 data), privilege 04 (administrator), checksum
    assert message[:2] == bytes.fromhex("2018")
    assert message[2] == (-(0x20 + 0x18)) & 0xFF == 0xC8
    assert message[3:8] == bytes.fromhex("8114388e04")
    assert sum(message[3:]) & 0xFF == 0
    plain = p.get_channel_auth_caps(5, extended=False)
    assert plain[14 + 6] == 0x0E


def test_pong_round_trip() -> None:
    reply = p.parse_reply(p.presence_pong(7, iana=674, oem=0x1234))
    assert reply == p.PresencePong(
        tag=7, iana=674, oem=0x1234, ipmi_supported=True, asf_version=1, security_extensions=False
    )


def test_auth_caps_request_and_answer_round_trip() -> None:
    request = p.parse_request(p.get_channel_auth_caps(9))
    assert request == p.AuthCapsRequest(
        rq_addr=0x81, rq_seq=9, rq_lun=0, rs_lun=0, channel=0x0E, extended=True, privilege=4
    )
    assert isinstance(request, p.AuthCapsRequest)
    caps = p.parse_reply(p.auth_caps_response(request))
    assert isinstance(caps, p.AuthCaps)
    assert caps.completion_code == 0
    assert caps.channel == 1
    assert caps.ipmi_versions == ("2.0",)
    assert caps.auth_types == ("rmcp+",)
    assert caps.non_null_users and not caps.anonymous_login and not caps.null_users
    assert caps.seq == 9


def test_auth_caps_of_an_ipmi15_bmc() -> None:
    # a v1.5 BMC: no extended data bit; MD5 and straight password enabled; anonymous login
    message = p.ipmi_message(
        rs_addr=0x81, netfn=p.NETFN_APP + 1, rq_addr=0x20, seq=3, cmd=0x38,
        data=bytes((0x00, 0x02, 0b0001_0100, 0b0000_0001, 0, 0, 0, 0, 0)),
    )  # fmt: skip
    caps = p.parse_reply(p.rmcp_header(p.RMCP_CLASS_IPMI) + p.session15(message))
    assert isinstance(caps, p.AuthCaps)
    assert caps.ipmi_versions == ("1.5",)
    assert caps.auth_types == ("md5", "password")
    assert caps.anonymous_login


def test_refused_auth_caps_keeps_the_completion_code() -> None:
    request = p.parse_request(p.get_channel_auth_caps(1))
    assert isinstance(request, p.AuthCapsRequest)
    other_channel = p.AuthCapsRequest(**{**request.__dict__, "channel": 5})
    caps = p.parse_reply(p.auth_caps_response(other_channel))
    assert caps == p.AuthCaps(completion_code=p.CC_INVALID_DATA_FIELD, seq=1)


def test_reply_inside_an_rmcp_plus_wrapper() -> None:
    request = p.parse_request(p.get_channel_auth_caps(2))
    assert isinstance(request, p.AuthCapsRequest)
    message = p.auth_caps_response(request)[14:]
    wrapped = (
        p.rmcp_header(p.RMCP_CLASS_IPMI)
        + bytes((p.AUTH_TYPE_RMCP_PLUS, p.PAYLOAD_TYPE_IPMI))
        + bytes(8)
        + len(message).to_bytes(2, "little")
        + message
    )
    caps = p.parse_reply(wrapped)
    assert isinstance(caps, p.AuthCaps) and caps.ipmi_versions == ("2.0",)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x06\x00\xff",
        bytes.fromhex("0700ff06000011be402a0010") + bytes(16),  # wrong RMCP version
        bytes.fromhex("0600ff06000011bf402a0010") + bytes(16),  # wrong IANA
        bytes.fromhex("0600ff06000011be802a0000"),  # a ping, not a pong
        bytes.fromhex("0600ff06000011be402a0010") + bytes(4),  # truncated pong
    ],
)
def test_malformed_replies_are_ignored(data: bytes) -> None:
    assert p.parse_reply(data) is None


def test_bad_checksum_is_ignored() -> None:
    request = p.parse_request(p.get_channel_auth_caps(2))
    assert isinstance(request, p.AuthCapsRequest)
    good = bytearray(p.auth_caps_response(request))
    good[-1] ^= 0xFF
    assert p.parse_reply(bytes(good)) is None


def test_checksum_makes_the_sum_zero() -> None:
    for data in (b"", b"\x20\x18", bytes(range(200))):
        assert (sum(data) + p.checksum(data)) & 0xFF == 0


def test_names() -> None:
    assert p.vendor_name(674) == "Dell (674)"
    assert p.vendor_name(99999) == "99999"
    assert p.vendor_name(None) == "-"
    assert p.completion_code_text(0xC0) == "0xC0 (node busy)"
