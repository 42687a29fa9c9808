"""The BMC vocabulary both protocols share: targets, run options, outcomes, failure kinds.

Pure data. A *target* is one BMC with its credentials and the protocol kpc speaks to it;
an *outcome* is what happened there, with a ``Failure`` an operator can act on. The IPMI
driver (``appliance.drivers.ipmi``) and the Redfish driver (``appliance.drivers.redfish``)
both take targets and return outcomes in these terms, so the use cases and the CLI report
a mixed fleet in one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from appliance.bmc import protocol as p

REDFISH_PORT = 443


class Protocol(StrEnum):
    IPMI = "ipmi"
    REDFISH = "redfish"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Tls:
    """How a Redfish target's certificate is checked.

    ``pinned``: the fingerprint recorded on first use (None: not seen yet; kpc pins what it
    sees). ``ca_bundle``: verify the chain against the site's CA bundle instead. ``insecure``:
    no check at all (only when the operator asks for it)."""

    pinned: str | None = None
    ca_bundle: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Target:
    address: str  # an IP address literal
    credentials: Credentials
    port: int | None = None  # None: the protocol's own (UDP 623, HTTPS 443)
    name: str | None = None
    protocol: Protocol = Protocol.IPMI
    tls: Tls = Tls()

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return p.RMCP_PORT if self.protocol is Protocol.IPMI else REDFISH_PORT

    @property
    def label(self) -> str:
        where = self.address if self.port is None else f"{self.address}:{self.port}"
        return f"{self.name} ({where})" if self.name else where


class Failure(StrEnum):
    NO_ANSWER = "no answer"
    BAD_CREDENTIALS = "wrong credentials"
    CERT_CHANGED = "certificate changed"
    TLS = "TLS error"
    BUSY = "BMC busy"
    NOT_SUPPORTED = "not supported"
    PARTIAL = "partial success"
    TIMEOUT = "timed out"
    ERROR = "error"


class HostError(Exception):
    """A job's own verdict that this host cannot be done (e.g. "the machine is off")."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


HINTS = {
    Failure.NO_ANSWER: "check the address, that the BMC's IPMI over LAN (UDP 623) or Redfish "
    "(HTTPS) is enabled and reachable from this host",
    Failure.BAD_CREDENTIALS: "check bmc.user and the password reference (or KPC_BMC_PASSWORD); "
    "per-host overrides go in bmc.hosts",
    Failure.CERT_CHANGED: "the BMC's TLS certificate differs from the one pinned on first use: "
    "if it was replaced on purpose, 'kpc bmc forget-cert ADDRESS' and run again",
    Failure.TLS: "the TLS handshake or certificate check failed: check bmc.ca_bundle "
    "(--ca-bundle), or pass --insecure only if you accept an unchecked connection",
    Failure.BUSY: "the BMC kept answering 'busy' (or has no free session); retry in a minute",
    Failure.NOT_SUPPORTED: "the BMC refused the request (see each error); if it lacks the "
    "feature, use its web UI",
    Failure.PARTIAL: "some steps were done (see the result); check the machine and retry",
    Failure.TIMEOUT: "the BMC answers, but too slowly: raise bmc.timeout or --timeout",
    Failure.ERROR: "see the error; rerun with -v for details",
}


@dataclass(frozen=True)
class HostOutcome:
    target: Target
    ok: bool
    result: str = ""
    failure: Failure | None = None
    error: str | None = None
    done: tuple[str, ...] = ()  # state-changing steps the BMC confirmed
    attempts: int = 1
    elapsed: float = 0.0
    seen_fingerprint: str | None = None  # a Redfish certificate seen for the first time
    inventory: Inventory | None = None


@dataclass(frozen=True)
class Inventory:
    """What a BMC says about its machine (Redfish ComputerSystem, EthernetInterfaces)."""

    manufacturer: str | None
    model: str | None
    serial: str | None
    uuid: str | None
    macs: tuple[str, ...]
    power: str | None


@dataclass(frozen=True)
class RunOptions:
    fanout: int = 50
    timeout: float = 10.0  # per host, from its first packet to its result
    attempts: int = 2  # sessions per host (a second one after a lost session)


def with_timing(outcome: HostOutcome, *, attempts: int, elapsed: float) -> HostOutcome:
    return replace(outcome, attempts=attempts, elapsed=elapsed)
