"""Verify OpenSSH signatures (``ssh-keygen -Y sign``, the SSHSIG format of OpenSSH's
PROTOCOL.sshsig) against one known public key. The only importer of ``cryptography``.

``ssh-keygen -Y verify`` semantics: the signature names its public key, namespace and hash
(sha256 or sha512); it is valid only when that key is exactly the expected one, the
namespace is the expected one and the signature over
``"SSHSIG" || string(namespace) || string(reserved) || string(hash) || string(H(message))``
verifies. Ed25519, ECDSA (P-256/384/521) and RSA (rsa-sha2-256/512) keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from appliance.keys import parse_line

MAGIC = b"SSHSIG"
VERSION = 1
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-256": hashes.SHA256(),
    "rsa-sha2-512": hashes.SHA512(),
}


class SignatureError(ValueError):
    """The signature is malformed, for another key or namespace, or does not verify."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise SignatureError("the signature is truncated")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def u32(self) -> int:
        return int.from_bytes(self.raw(4), "big")

    def string(self) -> bytes:
        return self.raw(self.u32())

    def end(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError("the signature has trailing data")


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def decode(signature: str) -> bytes:
    """The SSHSIG blob from ssh-keygen's armored output, or from its base64 body alone."""
    lines = [line.strip() for line in signature.strip().splitlines()]
    if lines and lines[0].startswith("-----BEGIN SSH SIGNATURE-----"):
        if lines[-1] != "-----END SSH SIGNATURE-----":
            raise SignatureError("the armored signature has no END line")
        lines = lines[1:-1]
    try:
        return base64.b64decode("".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not base64") from None


def verify(public_key: str, namespace: str, message: bytes, signature: str) -> None:
    """Return when ``signature`` (armored or base64) is ``public_key``'s signature of
    ``message`` in ``namespace``; raise ``SignatureError`` saying why not otherwise."""
    try:
        expected = parse_line(public_key)
    except ValueError as exc:
        raise SignatureError(f"the recorded public key is unusable: {exc}") from None
    blob = _Reader(decode(signature))
    if blob.raw(6) != MAGIC:
        raise SignatureError("not an SSH signature (no SSHSIG magic)")
    if blob.u32() != VERSION:
        raise SignatureError("unsupported SSH signature version")
    signer = blob.string()
    signed_namespace = blob.string()
    reserved = blob.string()
    hash_name = blob.string().decode("ascii", errors="replace")
    sig = blob.string()
    blob.end()
    if signer != expected.blob:
        raise SignatureError("signed with another key than the one recorded for this machine")
    if signed_namespace != namespace.encode():
        raise SignatureError(f"signed for namespace {signed_namespace!r}, not {namespace!r}")
    if hash_name not in _HASHES:
        raise SignatureError(f"unsupported hash {hash_name!r}")
    digest = _HASHES[hash_name](message).digest()
    signed = (
        MAGIC
        + _string(namespace.encode())
        + _string(reserved)
        + _string(hash_name.encode())
        + _string(digest)
    )
    _check(expected.type, expected.blob, sig, signed)


def _check(key_type: str, key_blob: bytes, sig: bytes, signed: bytes) -> None:
    key = _Reader(key_blob)
    key.string()  # the type, already checked by parse_line
    outer = _Reader(sig)
    sig_type = outer.string().decode("ascii", errors="replace")
    sig_blob = outer.string()
    outer.end()
    try:
        if key_type == "ssh-ed25519":
            if sig_type != "ssh-ed25519":
                raise SignatureError(f"a {sig_type} signature from an Ed25519 key")
            ed25519.Ed25519PublicKey.from_public_bytes(key.string()).verify(sig_blob, signed)
        elif key_type.startswith("ecdsa-sha2-"):
            curve_name = key.string().decode("ascii")
            curve, algorithm = _CURVES[curve_name]
            point = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.string())
            if sig_type != key_type:
                raise SignatureError(f"a {sig_type} signature from a {key_type} key")
            numbers = _Reader(sig_blob)
            r = int.from_bytes(numbers.string(), "big")
            s = int.from_bytes(numbers.string(), "big")
            point.verify(encode_dss_signature(r, s), signed, ec.ECDSA(algorithm))
        elif key_type == "ssh-rsa":
            if sig_type not in _RSA_HASHES:
                raise SignatureError(f"RSA signature type {sig_type!r} (need rsa-sha2-256/512)")
            e = int.from_bytes(key.string(), "big")
            n = int.from_bytes(key.string(), "big")
            public = rsa.RSAPublicNumbers(e, n).public_key()
            public.verify(sig_blob, signed, padding.PKCS1v15(), _RSA_HASHES[sig_type])
        else:
            raise SignatureError(f"{key_type} keys cannot sign check-ins")
    except SignatureError:
        raise
    except InvalidSignature:
        raise SignatureError("the signature does not verify") from None
    except (ValueError, KeyError) as exc:
        raise SignatureError(f"the signature or key is malformed: {exc}") from None
