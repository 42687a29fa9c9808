"""The outcome of checking nodes: per node, the connection and each check. Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from appliance.nodes.checks import CheckResult, Status
from appliance.nodes.targets import Target


class HostKeyStatus(StrEnum):
    MATCHED = "matched"  # the recorded key was presented
    RECORDED = "recorded"  # first use: the presented key is now recorded
    CHANGED = "changed"  # the node presented another key: refused
    UNTRUSTED = "not recorded"  # first use, but login failed: the key is not recorded
    UNKNOWN = "unknown"  # no key was seen (the connection failed before)


@dataclass(frozen=True)
class Failure:
    """Why a node could not be checked or used: ``kind`` is a word from the driver's
    SshFailure values, or ``no address`` / ``check failed``."""

    kind: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class NodeReport:
    target: Target
    failure: Failure | None = None  # connection-level failure; None when connected
    host_key: str | None = None  # "type base64" presented by the node
    host_key_fingerprint: str | None = None
    host_key_status: HostKeyStatus = HostKeyStatus.UNKNOWN
    checks: tuple[CheckResult, ...] = ()
    elapsed: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.failure is None

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status is Status.FAIL]

    @property
    def fit(self) -> bool:
        return self.failure is None and not self.failed_checks

    @property
    def reason(self) -> str:
        """One line: why the node is not fit (empty when it is)."""
        if self.failure is not None:
            return f"{self.failure.kind}: {self.failure.message}"
        failed = self.failed_checks
        if failed:
            return "check failed: " + "; ".join(f"{c.check}: {c.detail}" for c in failed)
        return ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mac": self.target.mac,
            "name": self.target.name,
            "address": self.target.address,
            "fit": self.fit,
            "reachable": self.reachable,
            "host_key": {
                "fingerprint": self.host_key_fingerprint,
                "status": str(self.host_key_status),
            },
            "checks": {str(c.check): c.as_json() for c in self.checks},
            "elapsed_s": round(self.elapsed, 3),
        }
        if self.failure is not None:
            out["failure"] = {"kind": self.failure.kind, "message": self.failure.message}
            if self.failure.hint:
                out["failure"]["hint"] = self.failure.hint
        if not self.fit:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class CheckReport:
    nodes: tuple[NodeReport, ...] = field(default_factory=tuple)

    @property
    def fit(self) -> bool:
        """True when there is at least one node and every node is fit."""
        return bool(self.nodes) and all(n.fit for n in self.nodes)

    @property
    def unfit(self) -> list[NodeReport]:
        return [n for n in self.nodes if not n.fit]

    def as_json(self) -> dict[str, Any]:
        return {
            "fit": self.fit,
            "nodes": [n.as_json() for n in self.nodes],
            "unfit": [n.target.mac for n in self.unfit],
        }
