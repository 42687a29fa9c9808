"""Who is asking: the site password or a trusted proxy header; sessions and CSRF. Pure.

A session is a signed cookie (``user|expiry|mac``) whose key is derived from the site
password, so a restart keeps operators logged in and changing the password logs everyone
out. The CSRF token of a form is a second MAC over the session cookie: it cannot be read
by another origin (the cookie is HttpOnly and SameSite=Strict) and is checked on every POST.
Secrets are compared in constant time and never leave this module.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

SESSION_COOKIE = "kpc_session"
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
USER_HELP = "1-64 letters, digits, '.', '_', '@' or '-' (your name, kept in the audit log)"


@dataclass(frozen=True)
class Auth:
    """How this server authenticates. Exactly one of ``password`` and ``proxy_header``."""

    password: str | None = None
    proxy_header: str | None = None
    proxy_addresses: Sequence[str] = ("127.0.0.1",)
    session_seconds: float = 12 * 3600
    # proxy mode has no site secret: its CSRF tokens are signed with a key made per server
    process_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def __post_init__(self) -> None:
        if (self.password is None) == (self.proxy_header is None):
            raise ValueError("give exactly one of a password and a proxy header")

    def __repr__(self) -> str:  # never show the password
        mode = "password" if self.password is not None else f"header {self.proxy_header}"
        return f"Auth({mode})"

    @property
    def _key(self) -> bytes:
        assert self.password is not None
        return hashlib.sha256(b"kpc-web-session\0" + self.password.encode()).digest()

    # --- password logins -------------------------------------------------------------------

    def check_password(self, given: str) -> bool:
        if self.password is None:
            return False
        return hmac.compare_digest(given.encode(), self.password.encode())

    def new_session(self, user: str, now: float) -> str:
        """The cookie value for ``user``, valid for ``session_seconds``."""
        if not USER_RE.fullmatch(user):
            raise ValueError(f"not a usable name: {USER_HELP}")
        nonce = secrets.token_hex(8)
        body = f"{user}|{int(now + self.session_seconds)}|{nonce}"
        return f"{body}|{self._sign('session', body)}"

    def session_user(self, cookie: str | None, now: float) -> str | None:
        """The user a session cookie belongs to, if it is genuine and not expired."""
        if not cookie or self.password is None:
            return None
        parts = cookie.split("|")
        if len(parts) != 4:
            return None
        user, expiry, nonce, mac = parts
        body = f"{user}|{expiry}|{nonce}"
        if not hmac.compare_digest(mac, self._sign("session", body)):
            return None
        if not expiry.isdigit() or int(expiry) < now:
            return None
        return user

    # --- proxy header ----------------------------------------------------------------------

    def proxy_user(self, remote: str | None, value: str | None) -> str | None:
        """The proxy's user, only from a listed proxy address and only when well-formed."""
        if self.proxy_header is None or remote is None or not value:
            return None
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return None
        if str(address) not in {str(ipaddress.ip_address(a)) for a in self.proxy_addresses}:
            return None
        return value if USER_RE.fullmatch(value) else None

    # --- CSRF --------------------------------------------------------------------------------

    def csrf_token(self, session: str) -> str:
        """The token forms carry for this session (proxy mode: for the user name)."""
        return self._sign("csrf", session)

    def check_csrf(self, session: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))

    def _sign(self, purpose: str, text: str) -> str:
        key = self._key if self.password is not None else self.process_key
        return hmac.new(key, f"{purpose}\0{text}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Throttle:
    """Failed logins per client address: after ``limit`` failures within ``window`` seconds
    the address is refused until the oldest of them is ``window`` seconds old."""

    limit: int = 10
    window: float = 300.0
    failures: dict[str, list[float]] = field(default_factory=dict)

    def _recent(self, address: str, now: float) -> list[float]:
        recent = [t for t in self.failures.get(address, []) if now - t < self.window]
        if recent:
            self.failures[address] = recent
        else:
            self.failures.pop(address, None)
        return recent

    def wait(self, address: str, now: float) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        recent = self._recent(address, now)
        return recent[0] + self.window - now if len(recent) >= self.limit else 0.0

    def failed(self, address: str, now: float) -> None:
        self.failures.setdefault(address, []).append(now)
        if len(self.failures) > 10_000:  # bound the memory a scan of many addresses can take
            for other in list(self.failures):
                self._recent(other, now)
