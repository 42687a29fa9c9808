"""SSH public keys: parse authorized_keys text for real, fingerprint keys, collect them.

A line of an ``authorized_keys`` file (sshd(8), "AUTHORIZED_KEYS FILE FORMAT") is
``[options] keytype base64-blob [comment]``. Each key is checked the way sshd would: the
options must be well formed and known, the type must be one kpc understands, and the blob
must decode to a public key of that same type. Fingerprints are the text ``ssh-keygen -lf``
prints (``SHA256:`` + unpadded base64 of the SHA-256 of the blob).

Parsing is pure. ``collect_keys`` reads the files it is given and nothing else; finding the
invoking user's file from the environment is ``authorized_keys_path``'s job, and the
environment is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import pwd
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import ConfigError, KpcError
from appliance.inputfile import MAX_KEYS_BYTES, read_text

# Key types sshd accepts in authorized_keys, with ssh-keygen's label for them.
KEY_LABELS: Mapping[str, str] = {
    "ssh-ed25519": "ED25519",
    "ssh-rsa": "RSA",
    "ecdsa-sha2-nistp256": "ECDSA",
    "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA",
    "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "ssh-dss": "DSA",
}
ECDSA_BITS: Mapping[str, int] = {"nistp256": 256, "nistp384": 384, "nistp521": 521}

# Options sshd(8) understands (matched case-insensitively); anything else makes sshd
# ignore the whole line, so kpc refuses it too.
FLAG_OPTIONS = frozenset(
    {
        "agent-forwarding",
        "cert-authority",
        "no-agent-forwarding",
        "no-port-forwarding",
        "no-pty",
        "no-user-rc",
        "no-x11-forwarding",
        "port-forwarding",
        "pty",
        "no-touch-required",
        "verify-required",
        "restrict",
        "user-rc",
        "x11-forwarding",
    }
)
VALUE_OPTIONS = frozenset(
    {
        "command",
        "environment",
        "expiry-time",
        "from",
        "permitlisten",
        "permitopen",
        "principals",
        "tunnel",
    }
)
OPTION_RE = re.compile(r'([A-Za-z0-9-]+)(?:="((?:[^"\\]|\\.)*)")?')
MAX_LINE = 8192  # sshd's limit on an authorized_keys line (SSH_MAX_PUBKEY_BYTES is 16 KiB)


class SshKeyError(KpcError):
    """An SSH key file named on the command line cannot be used."""

    exit_code = 2


def key_fingerprint(blob: bytes) -> str:
    """A public key's ``SHA256:...`` fingerprint exactly as ``ssh-keygen -lf`` prints it (the
    one place kpc computes it: authorized keys and SSH host keys alike)."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_text(key_type: str, blob: bytes) -> str:
    """``type base64``: a public key as known_hosts, authorized_keys and the registry hold it."""
    return f"{key_type} {base64.b64encode(blob).decode('ascii')}"


@dataclass(frozen=True)
class AuthorizedKey:
    """One public key, as sshd would read it."""

    type: str
    blob: bytes
    comment: str
    options: str = ""
    source: str = ""
    lineno: int = 0

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -lf`` prints it."""
        return key_fingerprint(self.blob)

    @property
    def line(self) -> str:
        """The canonical public-key line: type, base64 blob and comment (options dropped)."""
        text = key_text(self.type, self.blob)
        return f"{text} {self.comment}" if self.comment else text

    @property
    def label(self) -> str:
        """ssh-keygen's short name for the key type (``ED25519``, ``RSA``, ``ECDSA-SK``...)."""
        return KEY_LABELS[self.type]

    @property
    def bits(self) -> int:
        """Key size as ssh-keygen reports it."""
        return _key_bits(self.type, self.blob)

    def describe(self) -> str:
        """The line ``ssh-keygen -lf`` prints for this key."""
        return f"{self.bits} {self.fingerprint} {self.comment or 'no comment'} ({self.label})"


@dataclass(frozen=True)
class KeyProblem:
    """A line that is not a usable key, with where it is."""

    source: str
    lineno: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.lineno}: {self.message}"


@dataclass(frozen=True)
class ParseResult:
    keys: list[AuthorizedKey]
    problems: list[KeyProblem]


@dataclass
class KeyCollection:
    """Keys gathered from several files, de-duplicated by key (first occurrence wins)."""

    keys: list[AuthorizedKey] = field(default_factory=list)
    problems: list[KeyProblem] = field(default_factory=list)
    duplicates: list[AuthorizedKey] = field(default_factory=list)
    read: list[tuple[Path, int]] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)

    def add(self, result: ParseResult) -> None:
        seen = {(k.type, k.blob) for k in self.keys}
        for key in result.keys:
            if (key.type, key.blob) in seen:
                self.duplicates.append(key)
                continue
            seen.add((key.type, key.blob))
            self.keys.append(key)
        self.problems.extend(result.problems)


# --- wire format ------------------------------------------------------------------------


class _Damaged(ValueError):
    pass


def _wire_strings(blob: bytes) -> list[bytes]:
    """Split an SSH wire-format blob into its length-prefixed strings (RFC 4251 5)."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise _Damaged("truncated length field")
        size = int.from_bytes(blob[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(blob):
            raise _Damaged("truncated field")
        parts.append(blob[pos : pos + size])
        pos += size
    return parts


# Number of wire strings after the type name, per key type.
_FIELDS: Mapping[str, int] = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
    "sk-ecdsa-sha2-nistp256@openssh.com": 3,
    "sk-ssh-ed25519@openssh.com": 2,
    "ssh-dss": 4,
}


def _check_blob(key_type: str, blob: bytes) -> None:
    parts = _wire_strings(blob)
    if not parts:
        raise _Damaged("empty key data")
    inner = parts[0].decode("ascii", errors="replace")
    if inner != key_type:
        raise _Damaged(f"the key data is a {inner!r} key, but the line says {key_type!r}")
    if len(parts) != 1 + _FIELDS[key_type]:
        raise _Damaged(f"the key data does not have the fields of a {key_type} key")
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com") and len(parts[1]) != 32:
        raise _Damaged("an Ed25519 public key is 32 bytes")
    if key_type.startswith(("ecdsa-", "sk-ecdsa-")):
        curve = parts[1].decode("ascii", errors="replace")
        if not key_type.removesuffix("@openssh.com").endswith(curve):
            raise _Damaged(f"curve {curve!r} does not match key type {key_type}")


def _key_bits(key_type: str, blob: bytes) -> int:
    parts = _wire_strings(blob)
    if key_type == "ssh-rsa":
        return int.from_bytes(parts[2], "big").bit_length()
    if key_type == "ssh-dss":
        return int.from_bytes(parts[1], "big").bit_length()
    if key_type.startswith(("ecdsa-", "sk-ecdsa-")):
        return ECDSA_BITS.get(parts[1].decode("ascii", errors="replace"), 0)
    return 256  # ed25519, sk-ed25519


# --- parsing ----------------------------------------------------------------------------


def _split_options(line: str) -> tuple[str, str]:
    """Split a leading options field (quote-aware) from the rest of the line."""
    in_quotes = False
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\" and in_quotes and i + 1 < len(line):
            i += 2
            continue
        if char == '"':
            in_quotes = not in_quotes
        elif char in " \t" and not in_quotes:
            return line[:i], line[i:].lstrip(" \t")
        i += 1
    if in_quotes:
        raise ValueError("options: a double quote is not closed")
    return line, ""


def _check_options(options: str) -> None:
    pos = 0
    while True:
        match = OPTION_RE.match(options, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"options: cannot read {options[pos : pos + 20]!r}")
        name = match.group(1).lower()
        has_value = match.group(2) is not None
        if name in FLAG_OPTIONS and has_value:
            raise ValueError(f"options: {match.group(1)} takes no value")
        if name in VALUE_OPTIONS and not has_value:
            raise ValueError(f'options: {match.group(1)} needs a value ({name}="...")')
        if name not in FLAG_OPTIONS and name not in VALUE_OPTIONS:
            raise ValueError(f"options: unknown option {match.group(1)!r} (sshd ignores this line)")
        pos = match.end()
        if pos == len(options):
            return
        if options[pos] != ",":
            raise ValueError(f"options: expected ',' at {options[pos : pos + 20]!r}")
        pos += 1


def _type_note(key_type: str) -> str:
    if "-cert-" in key_type:
        return " (certificates are not supported; give the plain public key)"
    return f" (kpc knows {', '.join(sorted(KEY_LABELS))})"


def parse_line(text: str, source: str = "<keys>", lineno: int = 0) -> AuthorizedKey:
    """Parse one non-blank, non-comment line; ValueError says what is wrong with it."""
    if len(text) > MAX_LINE:
        raise ValueError(f"line is longer than {MAX_LINE} characters")
    first, _, _ = text.partition(" ")
    first = first.split("\t", 1)[0]
    options = ""
    rest = text
    if first not in KEY_LABELS:
        options, rest = _split_options(text)
        if not rest:
            raise ValueError("not a public key line (expected '[OPTIONS] TYPE BASE64 [COMMENT]')")
        after = rest.split(None, 1)[0]
        if after not in KEY_LABELS and "=" not in options and "," not in options:
            # one word, then not a key type: an unknown key type, or not a key at all
            if re.fullmatch(r"[A-Za-z0-9+/]{16,}={0,2}", after):
                raise ValueError(f"unknown key type {options!r}{_type_note(options)}")
            raise ValueError("not a public key line (expected '[OPTIONS] TYPE BASE64 [COMMENT]')")
        _check_options(options)
    fields = rest.split(None, 2)
    key_type = fields[0]
    if key_type not in KEY_LABELS:
        raise ValueError(f"unknown key type {key_type!r}{_type_note(key_type)}")
    if len(fields) < 2:
        raise ValueError(f"{key_type} key with no key data")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key data is not valid base64") from None
    try:
        _check_blob(key_type, blob)
    except _Damaged as exc:
        raise ValueError(f"key data is damaged: {exc}") from None
    comment = fields[2].strip() if len(fields) > 2 else ""
    return AuthorizedKey(key_type, blob, comment, options, source, lineno)


def parse_authorized_keys(text: str, source: str = "<keys>") -> ParseResult:
    """Every key in ``text`` (authorized_keys or .pub format) and every unusable line."""
    keys: list[AuthorizedKey] = []
    problems: list[KeyProblem] = []
    text = text.removeprefix("\ufeff")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip(" \t\r\n")
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(parse_line(line, source, lineno))
        except ValueError as exc:
            problems.append(KeyProblem(source, lineno, str(exc)))
    return ParseResult(keys, problems)


# --- collecting -------------------------------------------------------------------------


def authorized_keys_path(environ: Mapping[str, str], uid: int) -> Path:
    """The invoking user's authorized_keys: under sudo the real user's (SUDO_USER)."""
    sudo_user = environ.get("SUDO_USER")
    if uid == 0 and sudo_user and sudo_user != "root":
        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir) / ".ssh" / "authorized_keys"
        except KeyError:
            pass
    home = environ.get("HOME")
    if not home:
        try:
            home = pwd.getpwuid(uid).pw_dir
        except KeyError:
            home = "/root" if uid == 0 else "/"
    return Path(home) / ".ssh" / "authorized_keys"


def authorized_keys_fragments(authorized_keys: Path) -> list[Path]:
    """The files in ``authorized_keys.d/`` beside ``authorized_keys``, sorted.

    Flatcar's (and Fedora CoreOS's) Ignition writes the keys of its config to
    ``~/.ssh/authorized_keys.d/ignition``, and sshd there reads that directory too; on a live
    system booted with an Ignition config they may be the operator's only keys.
    """
    folder = authorized_keys.parent / "authorized_keys.d"
    try:
        return sorted(p for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


def _read(path: Path) -> str:
    try:  # a comment in another encoding does not spoil the keys
        return read_text(path, what="SSH key file", limit=MAX_KEYS_BYTES, lenient=True)
    except FileNotFoundError:
        raise SshKeyError(
            f"cannot read SSH key file {path}: no such file",
            hint="give a readable public key file (e.g. ~/.ssh/id_ed25519.pub)",
        ) from None
    except ConfigError as exc:
        raise SshKeyError(exc.message, hint=exc.hint) from None


def collect_keys(authorized_keys: Path | None = None, extra: Sequence[Path] = ()) -> KeyCollection:
    """Keys from the user's authorized_keys (may be absent) plus each ``extra`` file.

    An ``extra`` file that cannot be read, or holds no usable key, is an error: the operator
    named it on purpose.
    """
    found = KeyCollection()
    if authorized_keys is not None:
        if authorized_keys.is_file():
            result = parse_authorized_keys(_read(authorized_keys), str(authorized_keys))
            found.read.append((authorized_keys, len(result.keys)))
            found.add(result)
        else:
            found.missing.append(authorized_keys)
    for path in extra:
        result = parse_authorized_keys(_read(path), str(path))
        if not result.keys:
            detail = "; ".join(str(p) for p in result.problems[:3])
            raise SshKeyError(
                f"{path} holds no usable SSH public key" + (f" ({detail})" if detail else ""),
                hint="--ssh-key takes a public key file (the .pub), one key per line",
            )
        found.read.append((path, len(result.keys)))
        found.add(result)
    return found


__all__ = [
    "KEY_LABELS",
    "AuthorizedKey",
    "KeyCollection",
    "KeyProblem",
    "ParseResult",
    "SshKeyError",
    "authorized_keys_path",
    "collect_keys",
    "parse_authorized_keys",
    "parse_line",
]
