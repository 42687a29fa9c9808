"""SSH key parsing and fingerprints, checked against the real ssh-keygen."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from appliance.keys import (
    SshKeyError,
    authorized_keys_path,
    collect_keys,
    parse_authorized_keys,
)
from tests.conftest import require_tool

GENERATED = [
    ("rsa", "2048"),
    ("ecdsa", "256"),
    ("ecdsa", "384"),
    ("ecdsa", "521"),
    ("ed25519", ""),
]


def _wire(*parts: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _fields(line: str) -> list[bytes]:
    blob = base64.b64decode(line.split()[1])
    out, pos = [], 0
    while pos < len(blob):
        size = int.from_bytes(blob[pos : pos + 4], "big")
        out.append(blob[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return out


@pytest.fixture(scope="module")
def pubkeys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh keys from ssh-keygen, plus security-key (sk-*) keys built from them."""
    require_tool("ssh-keygen")
    base = tmp_path_factory.mktemp("keys")
    made: dict[str, Path] = {}
    for kind, bits in GENERATED:
        name = f"{kind}{bits}"
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name} user@test"]
        argv += ["-b", bits] if bits else []
        subprocess.run([*argv, "-f", str(base / name)], check=True, capture_output=True)
        made[name] = base / f"{name}.pub"
    # A FIDO token is needed to generate sk-* keys; their public halves are plain wire
    # structures, so build them from a real ed25519 / nistp256 key.
    ed = _fields(made["ed25519"].read_text())
    sk_ed = _wire(b"sk-ssh-ed25519@openssh.com", ed[1], b"ssh:")
    ec = _fields(made["ecdsa256"].read_text())
    sk_ec = _wire(b"sk-ecdsa-sha2-nistp256@openssh.com", ec[1], ec[2], b"ssh:")
    for name, key_type, blob in (
        ("sk-ed25519", "sk-ssh-ed25519@openssh.com", sk_ed),
        ("sk-ecdsa", "sk-ecdsa-sha2-nistp256@openssh.com", sk_ec),
    ):
        path = base / f"{name}.pub"
        path.write_text(f"{key_type} {base64.b64encode(blob).decode()} {name} token\n")
        made[name] = path
    return made


def keygen_l(path: Path) -> str:
    """ssh-keygen's listing (bytes decoded by hand: text mode would turn a CR into a newline)."""
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], check=True, capture_output=True)
    return out.stdout.decode().strip()


def test_fingerprints_equal_ssh_keygen(pubkeys: dict[str, Path]) -> None:
    assert set(pubkeys) >= {"rsa2048", "ecdsa256", "ed25519", "sk-ed25519", "sk-ecdsa"}
    for name, path in pubkeys.items():
        result = parse_authorized_keys(path.read_text(), str(path))
        assert result.problems == [], name
        [key] = result.keys
        expected = keygen_l(path)
        assert key.describe() == expected, name
        assert key.fingerprint == expected.split()[1]
        assert key.line == path.read_text().strip()


def test_whole_authorized_keys_file_matches_ssh_keygen(
    pubkeys: dict[str, Path], tmp_path: Path
) -> None:
    """Options prefixes, CRLF, blanks, comments: ssh-keygen -lf lists the same keys."""
    lines = [
        "# managed by hand",
        "",
        f'restrict,from="10.0.0.0/8,192.168.1.1" {pubkeys["ed25519"].read_text().strip()}',
        f'command="echo \\"hi there\\"; exit 1",no-pty {pubkeys["rsa2048"].read_text().strip()}',
        "   ",
        pubkeys["ecdsa384"].read_text().strip(),
        f'environment="A=b c",no-agent-forwarding {pubkeys["sk-ecdsa"].read_text().strip()}',
    ]
    path = tmp_path / "authorized_keys"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    result = parse_authorized_keys(path.read_text(), str(path))
    assert result.problems == []
    # ssh-keygen keeps the CR in the comment; kpc drops it (a CR would end up on the nodes)
    assert [k.describe() for k in result.keys] == keygen_l(path).replace("\r", "").splitlines()
    assert [k.lineno for k in result.keys] == [3, 4, 6, 7]
    assert result.keys[0].options == 'restrict,from="10.0.0.0/8,192.168.1.1"'
    assert result.keys[1].options == 'command="echo \\"hi there\\"; exit 1",no-pty'
    assert all("\r" not in k.line and "\r" not in k.comment for k in result.keys)
    assert result.keys[2].comment == "ecdsa384 user@test"


def test_garbage_lines_are_reported_with_line_numbers(pubkeys: dict[str, Path]) -> None:
    good = pubkeys["ed25519"].read_text().strip()
    blob = good.split(" ", 2)[1]
    rsa_blob = pubkeys["rsa2048"].read_text().split()[1]
    text = "\n".join(
        [
            good,  # 1
            "this is not a key",  # 2
            f"ssh-ed25519 {blob[:-4]}!!!! broken",  # 3
            f"ssh-ed25519 {rsa_blob} mislabelled",  # 4
            "ssh-ed25519",  # 5
            f"ssh-foo {blob} who",  # 6
            f"bogus-option {good}",  # 7
            f'command="unterminated {good}',  # 8
            f"from {good}",  # 9
            f"ssh-ed25519-cert-v01@openssh.com {blob}",  # 10
            f"ssh-ed25519 {base64.b64encode(_wire(b'ssh-ed25519', b'short')).decode()}",  # 11
            good,  # 12: duplicate is still parsed; collect_keys de-duplicates
        ]
    )
    result = parse_authorized_keys(text, "keys.txt")
    assert [k.lineno for k in result.keys] == [1, 12]
    problems = {p.lineno: p.message for p in result.problems}
    assert sorted(problems) == list(range(2, 12))
    assert problems[2].startswith("not a public key line")
    assert problems[3] == "key data is not valid base64"
    assert problems[4] == (
        "key data is damaged: the key data is a 'ssh-rsa' key, but the line says 'ssh-ed25519'"
    )
    assert problems[5] == "ssh-ed25519 key with no key data"
    assert problems[6].startswith("unknown key type 'ssh-foo' (kpc knows ")
    assert problems[7] == "options: unknown option 'bogus-option' (sshd ignores this line)"
    assert problems[8] == "options: a double quote is not closed"
    assert problems[9] == 'options: from needs a value (from="...")'
    assert "certificates are not supported" in problems[10]
    assert problems[11] == "key data is damaged: an Ed25519 public key is 32 bytes"
    assert str(result.problems[0]) == "keys.txt:2: not a public key line " + (
        "(expected '[OPTIONS] TYPE BASE64 [COMMENT]')"
    )


def test_unknown_option_is_refused(pubkeys: dict[str, Path]) -> None:
    good = pubkeys["ed25519"].read_text().strip()
    result = parse_authorized_keys(f"no-pty,frobnicate {good}\n")
    assert result.keys == []
    assert result.problems[0].message == (
        "options: unknown option 'frobnicate' (sshd ignores this line)"
    )


def test_collect_deduplicates_and_requires_named_files(
    pubkeys: dict[str, Path], tmp_path: Path
) -> None:
    auth = tmp_path / "authorized_keys"
    auth.write_text(pubkeys["ed25519"].read_text() + "junk\n" + pubkeys["rsa2048"].read_text())
    found = collect_keys(auth, [pubkeys["rsa2048"], pubkeys["sk-ed25519"]])
    assert [k.label for k in found.keys] == ["ED25519", "RSA", "ED25519-SK"]
    assert [d.source for d in found.duplicates] == [str(pubkeys["rsa2048"])]
    assert [str(p) for p in found.problems] == [
        f"{auth}:2: not a public key line (expected '[OPTIONS] TYPE BASE64 [COMMENT]')"
    ]
    assert found.read == [(auth, 2), (pubkeys["rsa2048"], 1), (pubkeys["sk-ed25519"], 1)]

    absent = collect_keys(tmp_path / "nope", [])
    assert absent.keys == [] and absent.missing == [tmp_path / "nope"]

    with pytest.raises(SshKeyError, match=r"cannot read SSH key file .*nope\.pub"):
        collect_keys(None, [tmp_path / "nope.pub"])
    private = tmp_path / "id_ed25519"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n")
    with pytest.raises(SshKeyError, match="holds no usable SSH public key") as info:
        collect_keys(None, [private])
    assert info.value.hint and ".pub" in info.value.hint


def test_authorized_keys_path_follows_sudo_user() -> None:
    import pwd

    root_home = Path(pwd.getpwuid(0).pw_dir)
    env = {"HOME": "/root", "SUDO_USER": "root"}
    assert authorized_keys_path(env, 0) == root_home / ".ssh" / "authorized_keys"
    someone = next((p for p in pwd.getpwall() if p.pw_uid >= 1), None)
    assert someone is not None
    env = {"HOME": "/root", "SUDO_USER": someone.pw_name}
    assert authorized_keys_path(env, 0) == Path(someone.pw_dir) / ".ssh" / "authorized_keys"
    # SUDO_USER means nothing when kpc is not running as root
    assert authorized_keys_path(env, 1000) == Path("/root/.ssh/authorized_keys")
    assert authorized_keys_path({}, 0) == root_home / ".ssh" / "authorized_keys"
