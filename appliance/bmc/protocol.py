"""RMCP, ASF and IPMI-over-LAN wire formats used by discovery and the simulator. Pure.

Every constant names the specification it comes from:

- ASF: DMTF DSP0136 "Alert Standard Format Specification" 2.0 — the RMCP header (§3.2.2)
  and the Presence Ping / Presence Pong messages (§3.2.4.3, §3.2.4.8), also restated in
  IPMI 2.0 §13.2.3 and §13.2.4.
- IPMI: "IPMI v2.0 rev. 1.1" — RMCP port (§13.1.2), the IPMI v1.5 session header
  (§13.6), the LAN message format (§13.8), completion codes (§5.2, Table 5-2),
  Get Channel Authentication Capabilities (§22.13, Table 22-15), RMCP+ status codes
  (§13.24, Table 13-15), chassis commands (§28.2, §28.3, §28.12, §28.13, Table 28-14).

Only what kpc sends or answers is modelled: the two discovery probes and their replies.
Sessions (RMCP+/RAKP) are pyghmi's business (``appliance.drivers.ipmi``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# --- RMCP (ASF 2.0 §3.2.2; IPMI 2.0 §13.1) ------------------------------------------------
RMCP_PORT = 623  # IPMI 2.0 §13.1.2: "primary RMCP port", 26Fh
RMCP_VERSION_1_0 = 0x06  # ASF 2.0 §3.2.2.1: version 06h = RMCP 1.0
RMCP_SEQUENCE_NO_ACK = 0xFF  # ASF 2.0 §3.2.2.1: FFh = "no RMCP ACK wanted"
RMCP_CLASS_ASF = 0x06  # ASF 2.0 §3.2.2.1: message class 6 = ASF
RMCP_CLASS_IPMI = 0x07  # IPMI 2.0 §13.1.3: message class 7 = IPMI
RMCP_HEADER_LEN = 4

# --- ASF messages (ASF 2.0 §3.2.4) --------------------------------------------------------
ASF_IANA = 4542  # ASF 2.0 §3.2.4: IANA enterprise number of the ASF (0x000011BE)
ASF_TYPE_PRESENCE_PING = 0x80  # ASF 2.0 §3.2.4.8
ASF_TYPE_PRESENCE_PONG = 0x40  # ASF 2.0 §3.2.4.3
ASF_PONG_DATA_LEN = 16  # IANA, OEM-defined, entities, interactions, 6 reserved bytes
ASF_ENTITY_IPMI = 0x80  # pong "supported entities" bit 7: IPMI supported
ASF_ENTITY_VERSION_MASK = 0x0F  # bits 3:0: ASF version (0001b = ASF 1.0)
ASF_VERSION_1_0 = 0x01
ASF_INTERACTION_SECURITY_EXTENSIONS = 0x80  # pong "supported interactions" bit 7: RSP
ASF_HEADER_LEN = 8  # IANA(4), type, tag, reserved, data length

# --- IPMI v1.5 session header (IPMI 2.0 §13.6) --------------------------------------------
AUTH_TYPE_NONE = 0x00
AUTH_TYPE_MD2 = 0x01
AUTH_TYPE_MD5 = 0x02
AUTH_TYPE_PASSWORD = 0x04  # "straight password / key"
AUTH_TYPE_OEM = 0x05
AUTH_TYPE_RMCP_PLUS = 0x06  # IPMI 2.0 §13.6: "format = RMCP+ (IPMI v2.0 only)"
SESSION15_HEADER_LEN = 10  # auth type, sequence (4), session id (4), message length
SESSION15_AUTHCODE_LEN = 16
SESSION20_HEADER_LEN = 12  # auth type, payload type, session id (4), sequence (4), length (2)
PAYLOAD_TYPE_IPMI = 0x00  # IPMI 2.0 §13.27.3, Table 13-16

# --- IPMI LAN message (IPMI 2.0 §13.8) and addressing (§5) ---------------------------------
BMC_SLAVE_ADDRESS = 0x20  # IPMI 2.0 §5.5: the BMC's responder address
REMOTE_CONSOLE_SWID = 0x81  # IPMI 2.0 §5.5, Table 5-4: "remote console software ID" 81h
NETFN_CHASSIS = 0x00
NETFN_APP = 0x06

# --- commands -----------------------------------------------------------------------------
CMD_GET_CHANNEL_AUTH_CAPS = 0x38  # IPMI 2.0 §22.13 (NetFn App)
CMD_GET_CHASSIS_STATUS = 0x01  # IPMI 2.0 §28.2 (NetFn Chassis)
CMD_CHASSIS_CONTROL = 0x02  # IPMI 2.0 §28.3
CMD_SET_SYSTEM_BOOT_OPTIONS = 0x08  # IPMI 2.0 §28.12
CMD_GET_SYSTEM_BOOT_OPTIONS = 0x09  # IPMI 2.0 §28.13

# Get Channel Authentication Capabilities request (Table 22-15)
CHANNEL_CURRENT = 0x0E  # "Eh = retrieve information for channel this request was issued on"
AUTH_CAPS_GET_IPMI2_EXTENDED = 0x80  # request byte 1 bit 7: "get IPMI v2.0+ extended data"
PRIVILEGE_USER = 0x02
PRIVILEGE_OPERATOR = 0x03
PRIVILEGE_ADMINISTRATOR = 0x04

# Get Channel Authentication Capabilities response (Table 22-15)
AUTH_CAPS_IPMI2_EXTENDED_AVAILABLE = 0x80  # byte 2 bit 7
AUTH_CAPS_TYPE_BITS = (  # byte 2 bits 5:0: authentication types enabled
    (0x01, "none"),
    (0x02, "md2"),
    (0x04, "md5"),
    (0x10, "password"),
    (0x20, "oem"),
)
AUTH_STATUS_KG_NONZERO = 0x20  # byte 3 bit 5 (IPMI v2.0)
AUTH_STATUS_PER_MESSAGE_AUTH_DISABLED = 0x10  # bit 4
AUTH_STATUS_USER_LEVEL_AUTH_DISABLED = 0x08  # bit 3
AUTH_STATUS_NON_NULL_USERS = 0x04  # bit 2
AUTH_STATUS_NULL_USERS = 0x02  # bit 1
AUTH_STATUS_ANONYMOUS_LOGIN = 0x01  # bit 0
AUTH_CAPS_EXT_IPMI15 = 0x01  # byte 4 bit 0: channel supports IPMI v1.5 connections
AUTH_CAPS_EXT_IPMI20 = 0x02  # byte 4 bit 1: channel supports IPMI v2.0 connections

# Chassis Control (§28.3, Table 28-4)
CHASSIS_POWER_DOWN = 0x00
CHASSIS_POWER_UP = 0x01
CHASSIS_POWER_CYCLE = 0x02
CHASSIS_HARD_RESET = 0x03
CHASSIS_DIAGNOSTIC_INTERRUPT = 0x04
CHASSIS_SOFT_SHUTDOWN = 0x05

# Get Chassis Status response byte 1 (§28.2, Table 28-3)
CHASSIS_STATUS_POWER_ON = 0x01

# System boot options (§28.12, §28.13, Table 28-14)
BOOT_PARAM_SET_IN_PROGRESS = 0
BOOT_PARAM_INFO_ACK = 4
BOOT_PARAM_BOOT_FLAGS = 5
BOOT_PARAM_VERSION = 0x01  # get response byte 1: parameter version
BOOT_PARAM_INVALID = 0x80  # parameter selector bit 7: "parameter is locked/invalid"
BOOT_FLAGS_VALID = 0x80  # boot flags byte 1 bit 7
BOOT_FLAGS_PERSISTENT = 0x40  # bit 6: "options apply to all future boots"
BOOT_FLAGS_EFI = 0x20  # bit 5: boot type EFI
BOOT_DEVICE_SHIFT = 2  # boot flags byte 2 bits 5:2: boot device selector
BOOT_DEVICE_MASK = 0x0F
BOOT_DEVICE_NONE = 0x0
BOOT_DEVICE_PXE = 0x1
BOOT_DEVICE_DISK = 0x2
BOOT_DEVICE_DISK_SAFE = 0x3
BOOT_DEVICE_DIAGNOSTIC = 0x4
BOOT_DEVICE_CD = 0x5
BOOT_DEVICE_SETUP = 0x6

# --- completion codes (IPMI 2.0 §5.2, Table 5-2) -------------------------------------------
CC_OK = 0x00
CC_PARAMETER_NOT_SUPPORTED = 0x80  # command-specific: Get/Set Boot Options (Table 28-14)
CC_NODE_BUSY = 0xC0
CC_INVALID_COMMAND = 0xC1
CC_INVALID_FOR_LUN = 0xC2
CC_TIMEOUT = 0xC3
CC_OUT_OF_SPACE = 0xC4
CC_REQUEST_LENGTH_INVALID = 0xC7
CC_PARAMETER_OUT_OF_RANGE = 0xC9
CC_INVALID_DATA_FIELD = 0xCC
CC_RESPONSE_UNAVAILABLE = 0xCE
CC_DUPLICATED_REQUEST = 0xCF
CC_INITIALIZATION_IN_PROGRESS = 0xD2
CC_DESTINATION_UNAVAILABLE = 0xD3
CC_INSUFFICIENT_PRIVILEGE = 0xD4
CC_NOT_IN_PRESENT_STATE = 0xD5
CC_SUBFUNCTION_DISABLED = 0xD6
CC_UNSPECIFIED = 0xFF

COMPLETION_CODES = {
    CC_OK: "command completed normally",
    CC_NODE_BUSY: "node busy",
    CC_INVALID_COMMAND: "invalid command (not supported)",
    CC_INVALID_FOR_LUN: "command invalid for this LUN",
    CC_TIMEOUT: "timeout while processing the command",
    CC_OUT_OF_SPACE: "out of space",
    CC_REQUEST_LENGTH_INVALID: "request data length invalid",
    CC_PARAMETER_OUT_OF_RANGE: "parameter out of range",
    CC_INVALID_DATA_FIELD: "invalid data field in request",
    CC_RESPONSE_UNAVAILABLE: "response could not be provided",
    CC_DUPLICATED_REQUEST: "duplicated request",
    CC_INITIALIZATION_IN_PROGRESS: "BMC initialization in progress",
    CC_DESTINATION_UNAVAILABLE: "destination unavailable",
    CC_INSUFFICIENT_PRIVILEGE: "insufficient privilege level",
    CC_NOT_IN_PRESENT_STATE: "command not supported in present state",
    CC_SUBFUNCTION_DISABLED: "command sub-function disabled or unavailable",
    CC_UNSPECIFIED: "unspecified error",
}
# Retrying these later can succeed (Table 5-2: the BMC could not do it *now*).
TRANSIENT_COMPLETION_CODES = frozenset(
    {
        CC_NODE_BUSY,
        CC_TIMEOUT,
        CC_OUT_OF_SPACE,
        CC_RESPONSE_UNAVAILABLE,
        CC_INITIALIZATION_IN_PROGRESS,
        CC_DESTINATION_UNAVAILABLE,
    }
)
# The BMC does not do this (for this command, at all or in its present state).
UNSUPPORTED_COMPLETION_CODES = frozenset(
    {
        CC_PARAMETER_NOT_SUPPORTED,
        CC_INVALID_COMMAND,
        CC_INVALID_FOR_LUN,
        CC_INVALID_DATA_FIELD,
        CC_PARAMETER_OUT_OF_RANGE,
        CC_NOT_IN_PRESENT_STATE,
        CC_SUBFUNCTION_DISABLED,
    }
)

# --- RMCP+ open session / RAKP status codes (IPMI 2.0 §13.24, Table 13-15) ----------------
RMCPP_STATUS_INVALID_ROLE = 0x09
RMCPP_STATUS_UNAUTHORIZED_ROLE = 0x0A
RMCPP_STATUS_UNAUTHORIZED_NAME = 0x0D
RMCPP_STATUS_INVALID_INTEGRITY_CHECK = 0x0F
RMCPP_STATUS_NO_CIPHER_SUITE_MATCH = 0x11

# Cipher suite 3 (IPMI 2.0 §22.15.2, Table 22-20): RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128
AUTH_ALGORITHM_RAKP_HMAC_SHA1 = 0x01
INTEGRITY_ALGORITHM_HMAC_SHA1_96 = 0x01
CONFIDENTIALITY_ALGORITHM_AES_CBC_128 = 0x01


def checksum(data: bytes) -> int:
    """IPMI 2.0 §13.8: two's complement checksum, so that the bytes plus it sum to 0 mod 256."""
    return -sum(data) & 0xFF


def rmcp_header(message_class: int) -> bytes:
    return bytes((RMCP_VERSION_1_0, 0x00, RMCP_SEQUENCE_NO_ACK, message_class))


def ipmi_message(
    *,
    rs_addr: int,
    netfn: int,
    rq_addr: int,
    seq: int,
    cmd: int,
    data: bytes,
    rs_lun: int = 0,
    rq_lun: int = 0,
) -> bytes:
    """An IPMI LAN message (§13.8): header, checksum, body, checksum."""
    head = bytes((rs_addr, (netfn << 2) | rs_lun))
    body = bytes((rq_addr, ((seq & 0x3F) << 2) | rq_lun, cmd)) + data
    return head + bytes((checksum(head),)) + body + bytes((checksum(body),))


def session15(message: bytes) -> bytes:
    """An IPMI v1.5 session wrapper without authentication (§13.6), for sessionless messages."""
    return (
        bytes((AUTH_TYPE_NONE,))
        + struct.pack("<II", 0, 0)  # session sequence number, session id
        + bytes((len(message),))
        + message
    )


# --- the two discovery probes ------------------------------------------------------------


def presence_ping(tag: int) -> bytes:
    """RMCP/ASF Presence Ping (ASF 2.0 §3.2.4.8): no data; the message tag comes back."""
    return (
        rmcp_header(RMCP_CLASS_ASF)
        + struct.pack(">I", ASF_IANA)
        + bytes((ASF_TYPE_PRESENCE_PING, tag & 0xFF, 0x00, 0x00))
    )


def get_channel_auth_caps(
    seq: int, *, extended: bool = True, privilege: int = PRIVILEGE_ADMINISTRATOR
) -> bytes:
    """Get Channel Authentication Capabilities (§22.13), sessionless, in an IPMI v1.5 wrapper.

    With ``extended`` the request asks for the IPMI v2.0 extended data (request byte 1,
    bit 7); a v1.5-only BMC may refuse that with 0xCC, which still proves it is there.
    """
    channel = CHANNEL_CURRENT | (AUTH_CAPS_GET_IPMI2_EXTENDED if extended else 0)
    message = ipmi_message(
        rs_addr=BMC_SLAVE_ADDRESS,
        netfn=NETFN_APP,
        rq_addr=REMOTE_CONSOLE_SWID,
        seq=seq,
        cmd=CMD_GET_CHANNEL_AUTH_CAPS,
        data=bytes((channel, privilege & 0x0F)),
    )
    return rmcp_header(RMCP_CLASS_IPMI) + session15(message)


# --- what comes back -----------------------------------------------------------------------


@dataclass(frozen=True)
class PresencePong:
    """An RMCP/ASF Presence Pong (ASF 2.0 §3.2.4.3)."""

    tag: int
    iana: int  # 4542 (ASF) when the vendor defines no OEM capabilities
    oem: int
    ipmi_supported: bool
    asf_version: int  # 1 = ASF 1.0
    security_extensions: bool


@dataclass(frozen=True)
class AuthCaps:
    """A Get Channel Authentication Capabilities response (§22.13, Table 22-15)."""

    completion_code: int
    channel: int = 0
    auth_types: tuple[str, ...] = ()
    ipmi_versions: tuple[str, ...] = ()
    anonymous_login: bool = False
    null_users: bool = False
    non_null_users: bool = False
    user_level_auth: bool = True
    per_message_auth: bool = True
    kg_set: bool = False
    oem_iana: int = 0
    seq: int = 0


Reply = PresencePong | AuthCaps


def parse_reply(data: bytes) -> Reply | None:
    """Decode a reply to one of the discovery probes; None for anything else or malformed."""
    if len(data) < RMCP_HEADER_LEN or data[0] != RMCP_VERSION_1_0:
        return None
    message_class = data[3] & 0x1F
    if message_class == RMCP_CLASS_ASF:
        return _parse_pong(data[RMCP_HEADER_LEN:])
    if message_class == RMCP_CLASS_IPMI:
        message = _unwrap_session(data[RMCP_HEADER_LEN:])
        return _parse_auth_caps(message) if message is not None else None
    return None


def _parse_pong(asf: bytes) -> PresencePong | None:
    if len(asf) < ASF_HEADER_LEN + ASF_PONG_DATA_LEN:
        return None
    iana, kind, tag, _reserved, length = struct.unpack_from(">IBBBB", asf)
    if iana != ASF_IANA or kind != ASF_TYPE_PRESENCE_PONG or length < ASF_PONG_DATA_LEN:
        return None
    oem_iana, oem, entities, interactions = struct.unpack_from(">IIBB", asf, ASF_HEADER_LEN)
    return PresencePong(
        tag=tag,
        iana=oem_iana,
        oem=oem,
        ipmi_supported=bool(entities & ASF_ENTITY_IPMI),
        asf_version=entities & ASF_ENTITY_VERSION_MASK,
        security_extensions=bool(interactions & ASF_INTERACTION_SECURITY_EXTENSIONS),
    )


def _unwrap_session(session: bytes) -> bytes | None:
    """The IPMI message inside a v1.5 (§13.6) or v2.0 (§13.6, RMCP+) session wrapper."""
    if not session:
        return None
    if session[0] == AUTH_TYPE_RMCP_PLUS:
        if len(session) < SESSION20_HEADER_LEN or session[1] & 0x3F != PAYLOAD_TYPE_IPMI:
            return None
        (length,) = struct.unpack_from("<H", session, 10)
        start = SESSION20_HEADER_LEN
    else:
        start = SESSION15_HEADER_LEN - 1
        if session[0] != AUTH_TYPE_NONE:
            start += SESSION15_AUTHCODE_LEN
        if len(session) <= start:
            return None
        length = session[start]
        start += 1
    message = session[start : start + length]
    return message if len(message) == length else None


def _parse_auth_caps(message: bytes) -> AuthCaps | None:
    # rqAddr, netFn/LUN, checksum, rsAddr, rqSeq/LUN, cmd, completion code, data..., checksum
    if len(message) < 8:
        return None
    if checksum(message[:2]) != message[2] or checksum(message[3:-1]) != message[-1]:
        return None
    netfn = message[1] >> 2
    if netfn != NETFN_APP + 1 or message[5] != CMD_GET_CHANNEL_AUTH_CAPS:
        return None
    seq = message[4] >> 2
    code = message[6]
    data = message[7:-1]
    if code != CC_OK or len(data) < 8:
        return AuthCaps(completion_code=code, seq=seq)
    channel, types, status, ext = data[0], data[1], data[2], data[3]
    auth_types = [name for bit, name in AUTH_CAPS_TYPE_BITS if types & bit]
    if types & AUTH_CAPS_IPMI2_EXTENDED_AVAILABLE:
        versions = [
            v
            for bit, v in ((AUTH_CAPS_EXT_IPMI15, "1.5"), (AUTH_CAPS_EXT_IPMI20, "2.0"))
            if ext & bit
        ]
        if ext & AUTH_CAPS_EXT_IPMI20:
            auth_types.append("rmcp+")
    else:
        versions = ["1.5"]
    return AuthCaps(
        completion_code=code,
        channel=channel & 0x0F,
        auth_types=tuple(auth_types),
        ipmi_versions=tuple(versions),
        anonymous_login=bool(status & AUTH_STATUS_ANONYMOUS_LOGIN),
        null_users=bool(status & AUTH_STATUS_NULL_USERS),
        non_null_users=bool(status & AUTH_STATUS_NON_NULL_USERS),
        user_level_auth=not status & AUTH_STATUS_USER_LEVEL_AUTH_DISABLED,
        per_message_auth=not status & AUTH_STATUS_PER_MESSAGE_AUTH_DISABLED,
        kg_set=bool(status & AUTH_STATUS_KG_NONZERO),
        oem_iana=int.from_bytes(data[4:7], "little"),
        seq=seq,
    )


# --- what a BMC sends (the simulator) ------------------------------------------------------


def presence_pong(tag: int, *, iana: int = ASF_IANA, oem: int = 0) -> bytes:
    """A Presence Pong from an IPMI-capable ASF 1.0 entity without security extensions."""
    data = struct.pack(">IIBB", iana, oem, ASF_ENTITY_IPMI | ASF_VERSION_1_0, 0) + bytes(6)
    return (
        rmcp_header(RMCP_CLASS_ASF)
        + struct.pack(">I", ASF_IANA)
        + bytes((ASF_TYPE_PRESENCE_PONG, tag & 0xFF, 0x00, len(data)))
        + data
    )


@dataclass(frozen=True)
class Ping:
    tag: int


@dataclass(frozen=True)
class AuthCapsRequest:
    """A sessionless Get Channel Authentication Capabilities request, as a BMC sees it."""

    rq_addr: int
    rq_seq: int
    rq_lun: int
    rs_lun: int
    channel: int
    extended: bool
    privilege: int


def parse_request(data: bytes) -> Ping | AuthCapsRequest | None:
    """What the simulator answers itself: a presence ping or a sessionless auth-caps request."""
    if len(data) < RMCP_HEADER_LEN or data[0] != RMCP_VERSION_1_0:
        return None
    message_class = data[3] & 0x1F
    if message_class == RMCP_CLASS_ASF:
        asf = data[RMCP_HEADER_LEN:]
        if len(asf) >= ASF_HEADER_LEN:
            iana, kind, tag = struct.unpack_from(">IBB", asf)
            if iana == ASF_IANA and kind == ASF_TYPE_PRESENCE_PING:
                return Ping(tag)
        return None
    if message_class != RMCP_CLASS_IPMI:
        return None
    session = data[RMCP_HEADER_LEN:]
    if not session or session[0] != AUTH_TYPE_NONE or len(session) < SESSION15_HEADER_LEN:
        return None
    message = _unwrap_session(session)
    if message is None or len(message) < 9:
        return None
    if message[1] >> 2 != NETFN_APP or message[5] != CMD_GET_CHANNEL_AUTH_CAPS:
        return None
    return AuthCapsRequest(
        rq_addr=message[3],
        rq_seq=message[4] >> 2,
        rq_lun=message[4] & 0x03,
        rs_lun=message[1] & 0x03,
        channel=message[6] & 0x0F,
        extended=bool(message[6] & AUTH_CAPS_GET_IPMI2_EXTENDED),
        privilege=message[7] & 0x0F,
    )


def auth_caps_response(request: AuthCapsRequest, *, lan_channel: int = 1) -> bytes:
    """The answer of an IPMI v2.0-only BMC (RMCP+ logins with user names and passwords).

    A request for the current channel (Eh) or for the LAN channel gets the capabilities;
    any other channel gets 0xCC (invalid data field), as a BMC without such a channel would.
    """
    if request.channel not in (CHANNEL_CURRENT, lan_channel):
        data = bytes((CC_INVALID_DATA_FIELD,))
    else:
        data = bytes(
            (
                CC_OK,
                lan_channel,
                AUTH_CAPS_IPMI2_EXTENDED_AVAILABLE,  # no IPMI v1.5 authentication types
                AUTH_STATUS_NON_NULL_USERS,
                AUTH_CAPS_EXT_IPMI20,
                0,
                0,
                0,  # OEM IANA
                0,  # OEM auxiliary data
            )
        )
    message = ipmi_message(
        rs_addr=request.rq_addr,
        netfn=NETFN_APP + 1,
        rq_addr=BMC_SLAVE_ADDRESS,
        seq=request.rq_seq,
        cmd=CMD_GET_CHANNEL_AUTH_CAPS,
        data=data,
        rs_lun=request.rq_lun,
        rq_lun=request.rs_lun,
    )
    return rmcp_header(RMCP_CLASS_IPMI) + session15(message)


# --- naming things for people --------------------------------------------------------------

# A few IANA private enterprise numbers seen in BMC pongs (https://www.iana.org/assignments/
# enterprise-numbers); anything else is shown as its number.
VENDORS = {
    2: "IBM",
    11: "HP",
    343: "Intel",
    674: "Dell",
    2011: "Huawei",
    4542: "ASF (no OEM data)",
    7244: "Quanta",
    10876: "Supermicro",
    19046: "Lenovo",
}


def vendor_name(iana: int | None) -> str:
    if iana is None:
        return "-"
    name = VENDORS.get(iana)
    return f"{name} ({iana})" if name else str(iana)


def completion_code_text(code: int) -> str:
    return f"0x{code:02X} ({COMPLETION_CODES.get(code, 'unknown completion code')})"
