"""Request labels: the query parameters a booting machine sends, validated. Pure.

Every name and value that can reach a template, an iPXE script, /metadata, a log line or
the registry passes through here, and so does the raw query string templates see as
``request.raw_query``. The reserved selectors have their own shapes (a MAC must look like a
MAC, ...); any other label is a short word of letters, digits and ``._:/+,@=-``. Anything
else is refused as a whole (``LabelError``), never cleaned up and used: iPXE and shell
metacharacters (``$ { } ; & | < > ` ' " \\ ( )``), whitespace and control characters
(CR and LF included) cannot get through, in a name, a value or the raw query.

Empty values are kept, as matchbox keeps them (iPXE sends ``hostname=&serial=`` for
settings it does not have; ``/metadata`` shows ``REQUEST_QUERY_HOSTNAME=``); a missing label
and an empty one match a selector alike. An empty ``mac=`` is dropped, as matchbox drops a
MAC it cannot parse. The name of an empty label is still validated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from appliance.mac import normalize_mac

RESERVED = ("uuid", "mac", "hostname", "serial")
MAX_LABELS = 32
MAX_QUERY_LENGTH = 2048

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
# SMBIOS serials are free text; allow what real ones use ("To be filled by O.E.M.") but no
# quoting, expansion or control characters.
_SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/+#-]{0,63}$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+,@=-]{0,127}$")
# The raw query as sent: unreserved characters, the separators and percent escapes only.
_RAW_QUERY_RE = re.compile(r"^(?:[A-Za-z0-9_.~:/+,@=&-]|%[0-9A-Fa-f]{2})*$")


class LabelError(ValueError):
    """A query parameter was refused. ``str()`` is safe to show to the client and to log."""


@dataclass(frozen=True)
class Labels:
    """Validated labels (``values``) and the raw query as received, for templates."""

    values: Mapping[str, str] = field(default_factory=dict)
    raw_query: str = ""

    @property
    def mac(self) -> str | None:
        return self.values.get("mac") or None

    def get(self, key: str) -> str | None:
        """The label's value; None when it is missing or empty."""
        return self.values.get(key) or None


def _show(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return repr(shown)


def normalize_uuid(value: str) -> str:
    lowered = value.strip().lower()
    if not _UUID_RE.fullmatch(lowered):
        raise LabelError(f"uuid: not a UUID: {_show(value)}")
    return lowered


def validate_name(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise LabelError(f"label name not allowed: {_show(key)}")
    return key


def validate_label(key: str, value: str) -> str:
    """The normalised value of one label, or LabelError naming the label."""
    validate_name(key)
    if key.lower() == "mac":
        try:
            return normalize_mac(value)
        except ValueError:
            raise LabelError(f"mac: not a MAC address: {_show(value)}") from None
    if key == "uuid":
        return normalize_uuid(value)
    if key in ("hostname", "domain"):
        lowered = value.lower()
        if len(lowered) > 253 or not _HOSTNAME_RE.fullmatch(lowered):
            raise LabelError(f"{key}: not a host name: {_show(value)}")
        return lowered
    if key == "serial":
        if not _SERIAL_RE.fullmatch(value):
            raise LabelError(f"serial: not a serial number: {_show(value)}")
        return value
    if not _VALUE_RE.fullmatch(value):
        raise LabelError(f"{key}: value not allowed: {_show(value)}")
    return value


def parse_labels(pairs: Iterable[tuple[str, str]], raw_query: str = "") -> Labels:
    """Validate decoded query pairs and the raw query string they came from (as sent,
    percent escapes intact). A repeated label or too many labels is an error."""
    if len(raw_query) > MAX_QUERY_LENGTH:
        raise LabelError(f"query string longer than {MAX_QUERY_LENGTH} characters")
    if not _RAW_QUERY_RE.fullmatch(raw_query):
        raise LabelError(f"query string has characters that are not allowed: {_show(raw_query)}")
    values: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            raise LabelError(f"{_show(key)} given more than once")
        seen.add(key)
        if len(seen) > MAX_LABELS:
            raise LabelError(f"more than {MAX_LABELS} labels")
        validate_name(key)
        if value == "":
            if key.lower() != "mac":  # matchbox drops a MAC it cannot parse
                values[key] = ""
            continue
        values[key] = validate_label(key, value)
    return Labels(values=values, raw_query=raw_query)


def normalize_selector(key: str, value: str) -> str:
    """A group selector value in the form requests are normalised to (MAC, UUID, host).
    An empty value stays empty: it matches a request without the label (as in matchbox)."""
    if value == "":
        return value
    if key.lower() == "mac":
        return normalize_mac(value)
    if key == "uuid":
        return normalize_uuid(value)
    if key in ("hostname", "domain"):
        return value.lower()
    return value
