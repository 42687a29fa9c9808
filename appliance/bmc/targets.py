"""Which BMCs a command acts on: the inventory, the operator's targets and filters. Pure.

The inventory is the site config's ``bmc.hosts`` (names and per-host credentials) plus
the BMCs discovery recorded in the registry. A target on the command line is

- an address (``10.0.1.5``, or ``10.0.1.5:6230`` for another port: UDP for IPMI, TCP for
  Redfish) — known or not;
- a network (``10.0.1.0/28``): every known BMC inside it;
- a name or a glob over names, addresses and the MACs a Redfish inventory recorded
  (``rack1-*``, ``10.0.1.1?``, ``52:54:00:12:34:56``).

``--only`` and ``--exclude`` take the same networks and globs and filter the result.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from appliance.config import BmcHost, SecretRef
from appliance.errors import UsageError
from appliance.state.model import Bmc


@dataclass(frozen=True)
class Candidate:
    """A BMC kpc may act on, with its per-host credential overrides (None = site default)."""

    address: str
    port: int | None = None  # None: the protocol's own
    name: str | None = None
    user: str | None = None
    password: SecretRef | None = None
    source: str = "inventory"  # inventory | discovered | argument
    protocol: str | None = None  # configured for this host (bmc.hosts[].protocol)
    protocols: tuple[str, ...] = ()  # what discovery found it speaks
    fingerprint: str | None = None  # its pinned TLS certificate
    macs: tuple[str, ...] = ()  # its machine's MACs (Redfish inventory)

    @property
    def label(self) -> str:
        where = self.address if self.port is None else f"{self.address}:{self.port}"
        return f"{self.name} ({where})" if self.name else where


def inventory(hosts: Sequence[BmcHost], discovered: Sequence[Bmc]) -> list[Candidate]:
    """Configured hosts first (in config order), then discovered BMCs not configured; what
    the registry knows of each (protocols, pinned certificate, MACs) comes along."""
    recorded = {b.address: b for b in discovered}
    out = []
    for h in hosts:
        b = recorded.get(str(h.address))
        out.append(
            Candidate(
                str(h.address),
                name=h.name,
                user=h.user,
                password=h.password,
                protocol=h.protocol,
                protocols=b.protocols if b else (),
                fingerprint=b.tls_fingerprint if b else None,
                macs=b.macs if b else (),
            )
        )
    known = {c.address for c in out}
    out += [
        Candidate(
            b.address,
            source="discovered",
            protocols=b.protocols,
            fingerprint=b.tls_fingerprint,
            macs=b.macs,
        )
        for b in discovered
        if b.address not in known and not _only_a_pin(b)
    ]
    return out


def _only_a_pin(bmc: Bmc) -> bool:
    """A record made only by pinning the certificate of a BMC given by address (never
    discovered): not part of the default set of BMCs."""
    return bmc.tls_fingerprint is not None and bmc.first_seen is None and not bmc.protocols


def _address(text: str) -> tuple[str, int | None] | None:
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    if not sep:
        return str(address), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"bad port in {text!r}", hint="write ADDRESS or ADDRESS:PORT")
    return str(address), int(port)


def _network(text: str) -> ipaddress.IPv4Network | None:
    if "/" not in text:
        return None
    try:
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise UsageError(f"not a network: {text!r}", hint="write networks as 10.0.1.0/24") from None


def matches(candidate: Candidate, pattern: str) -> bool:
    """A network contains the address, or a glob matches the name or the address."""
    network = _network(pattern)
    if network is not None:
        return ipaddress.IPv4Address(candidate.address) in network
    return (
        fnmatch.fnmatchcase(candidate.address, pattern)
        or (candidate.name is not None and fnmatch.fnmatchcase(candidate.name, pattern))
        or any(fnmatch.fnmatchcase(mac, pattern.lower()) for mac in candidate.macs)
    )


def select(
    known: Sequence[Candidate],
    targets: Sequence[str] = (),
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[Candidate]:
    """The BMCs to act on, without duplicates, in the order given (or inventory order)."""
    chosen: list[Candidate] = []
    if not targets:
        chosen = list(known)
    for target in targets:
        target = target.strip()
        address = _address(target)
        if address is not None:
            match = [c for c in known if c.address == address[0]]
            if address[1] is not None:
                match = [replace(c, port=address[1]) for c in match]
            chosen += match or [Candidate(address[0], address[1], source="argument")]
            continue
        match = [c for c in known if matches(c, target)]
        if not match:
            raise UsageError(
                f"no known BMC matches {target!r}",
                hint="'kpc bmc list' shows the known BMCs; give an address, a network or a "
                "name from bmc.hosts (run 'kpc bmc discover' to find more)",
            )
        chosen += match
    if only:
        chosen = [c for c in chosen if any(matches(c, pattern) for pattern in _split(only))]
    if exclude:
        chosen = [c for c in chosen if not any(matches(c, pattern) for pattern in _split(exclude))]
    return _unique(chosen)


def _split(patterns: Iterable[str]) -> list[str]:
    out = [part.strip() for pattern in patterns for part in pattern.split(",")]
    for pattern in out:
        _network(pattern)  # a bad network is an error, not a pattern that matches nothing
    return [pattern for pattern in out if pattern]


def _unique(candidates: Iterable[Candidate]) -> list[Candidate]:
    seen: set[tuple[str, int | None]] = set()
    out = []
    for candidate in candidates:
        key = (candidate.address, candidate.port)
        if key not in seen:
            seen.add(key)
            out.append(candidate)
    return out
