"""How kpc reaches a node over SSH: settings from the site config, and one connection
under the trust-on-first-use host key policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliance.config import SiteConfig
from appliance.drivers.ssh import (
    Credentials,
    HostKey,
    Session,
    SshError,
    SshFailure,
    connect,
    load_private_key,
)
from appliance.errors import ConfigError
from appliance.nodes.report import Failure, HostKeyStatus
from appliance.nodes.targets import Target

NO_ADDRESS = "no address"
BAD_RECORD = "bad host key record"


@dataclass(frozen=True)
class SshSettings:
    """Everything a connection needs, resolved once (key loaded, agent located)."""

    credentials: Credentials
    port: int = 22
    timeout: float = 10.0  # TCP connect, handshake and login, each
    command_timeout: float = 60.0  # one command, start to exit
    fanout: int = 32

    @property
    def user(self) -> str:
        return self.credentials.user


def ssh_settings(
    config: SiteConfig,
    environ: Mapping[str, str],
    *,
    timeout: float | None = None,
    command_timeout: float | None = None,
    fanout: int | None = None,
) -> SshSettings:
    """Settings from ``config.ssh`` plus the caller's environment (only SSH_AUTH_SOCK is
    read). ConfigError when there is no key at all, or the key file is unusable."""
    key = load_private_key(config.ssh.private_key) if config.ssh.private_key else None
    agent = environ.get("SSH_AUTH_SOCK") or None
    if key is None and agent is None:
        raise ConfigError(
            "no SSH key to log in to the nodes with: ssh.private_key is not set and no "
            "ssh-agent is running (SSH_AUTH_SOCK is empty)",
            hint="set ssh.private_key in the site config to the deploy host's private key, "
            "or start ssh-agent and ssh-add the key",
        )
    connect_timeout = timeout if timeout is not None else config.ssh.timeout
    return SshSettings(
        credentials=Credentials(config.ssh.user, key, agent),
        port=config.ssh.port,
        timeout=connect_timeout,
        command_timeout=command_timeout if command_timeout is not None else 60.0,
        fanout=fanout if fanout is not None else config.ssh.fanout,
    )


class AccessError(Exception):
    """A node could not be reached or logged in to (carried as data, never shown raw)."""

    def __init__(self, failure: Failure, host_key: HostKey | None, status: HostKeyStatus) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.host_key = host_key
        self.status = status


def failure_of(error: SshError) -> Failure:
    return Failure(str(error.kind), error.message, error.hint)


def open_session(target: Target, settings: SshSettings) -> tuple[Session, HostKeyStatus]:
    """Connect and log in. The status says whether the recorded key matched or the key is
    new (first use: the caller records it). AccessError otherwise."""
    if not target.address:
        raise AccessError(
            Failure(
                NO_ADDRESS,
                f"{target.name}: the registry has no address for this machine",
                "it gets one when it checks in after installing; see 'kpc nodes show MAC'",
            ),
            None,
            HostKeyStatus.UNKNOWN,
        )
    known: HostKey | None = None
    if target.host_key:
        try:
            known = HostKey.parse(target.host_key)
        except ValueError as exc:
            raise AccessError(
                Failure(
                    BAD_RECORD,
                    f"{target.name}: the recorded host key is unreadable: {exc}",
                    f"kpc nodes forget-hostkey {target.mac}",
                ),
                None,
                HostKeyStatus.UNKNOWN,
            ) from None
    try:
        session = connect(
            target.address,
            settings.port,
            settings.credentials,
            known_host_key=known,
            timeout=settings.timeout,
        )
    except SshError as exc:
        if exc.kind is SshFailure.HOST_KEY_CHANGED:
            status = HostKeyStatus.CHANGED
            hint = (
                f"if {target.name} was really reinstalled, run 'kpc nodes forget-hostkey "
                f"{target.mac}' and check again; otherwise investigate before logging in"
            )
            failure = Failure(str(exc.kind), exc.message, hint)
        else:
            if exc.host_key is None:
                status = HostKeyStatus.UNKNOWN
            elif known is not None:
                status = HostKeyStatus.MATCHED
            else:
                status = HostKeyStatus.UNTRUSTED
            failure = failure_of(exc)
        raise AccessError(failure, exc.host_key, status) from None
    return session, HostKeyStatus.MATCHED if known else HostKeyStatus.RECORDED
