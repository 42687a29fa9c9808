"""MAC addresses: the one way kpc writes them (``aa:bb:cc:dd:ee:ff``) and reads them."""

from __future__ import annotations

import re

MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")  # the normal form
_DIGITS_RE = re.compile(r"[0-9a-f]{12}")


def normalize_mac(value: str) -> str:
    """``AA-BB-..``, ``aabb..`` or ``aa:bb:..`` to ``aa:bb:cc:dd:ee:ff``; ValueError otherwise."""
    digits = re.sub(r"[:\-.]", "", value.strip().lower())
    if not _DIGITS_RE.fullmatch(digits):
        raise ValueError(f"not a MAC address: {value!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))
