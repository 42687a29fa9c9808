"""How kpc reaches a node over SSH: settings from the site config, and one connection
under the trust-on-first-use host key policy."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.config import SiteConfig
from appliance.drivers.ssh import (
    SSH_PORT,
    Credentials,
    HostKey,
    PrivateKey,
    Session,
    SshError,
    SshFailure,
    connect,
    load_private_key,
)
from appliance.errors import ConfigError
from appliance.nodes.report import Failure, HostKeyStatus
from appliance.nodes.targets import Target

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")  # as ssh(1) tries them
NO_ADDRESS = "no address"
BAD_RECORD = "bad host key record"


@dataclass(frozen=True)
class SshSettings:
    """Everything a connection needs, resolved once (key loaded, agent located)."""

    credentials: Credentials
    port: int = SSH_PORT
    timeout: float = 10.0  # TCP connect, handshake and login, each
    command_timeout: float = 60.0  # one command, start to exit
    fanout: int = 32
    key_file: Path | None = None  # ssh.private_key, when configured

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
    """Settings from ``config.ssh`` and the caller's environment (SSH_AUTH_SOCK, HOME).

    Keys: ``ssh.private_key`` if set, else, as ssh(1) does, the unencrypted default
    identities in ~/.ssh; plus the agent's keys. ConfigError when the configured key is
    unusable or there is no key at all.
    """
    agent = environ.get("SSH_AUTH_SOCK") or None
    if agent is not None and not Path(agent).is_socket():
        agent = None
    skipped: list[str] = []
    if config.ssh.private_key:
        keys: tuple[PrivateKey, ...] = (load_private_key(config.ssh.private_key),)
    else:
        keys, skipped = default_keys(environ.get("HOME"))
    if not keys and agent is None:
        found = f" ({', '.join(skipped)} need a passphrase)" if skipped else ""
        raise ConfigError(
            "no SSH key to log in to the nodes with: ssh.private_key is not set, no usable "
            f"key in ~/.ssh{found} and no ssh-agent is running (SSH_AUTH_SOCK)",
            hint="set ssh.private_key in the site config to the deploy host's private key, "
            "or start ssh-agent and ssh-add the key",
        )
    return SshSettings(
        credentials=Credentials(config.ssh.user, keys, agent),
        port=config.ssh.port,
        timeout=timeout if timeout is not None else config.ssh.timeout,
        command_timeout=command_timeout if command_timeout is not None else 60.0,
        fanout=fanout if fanout is not None else config.ssh.fanout,
        key_file=config.ssh.private_key,
    )


def default_keys(home: str | None) -> tuple[tuple[PrivateKey, ...], list[str]]:
    """The loadable default identities of ``home`` (and the names of those skipped)."""
    keys: list[PrivateKey] = []
    skipped: list[str] = []
    if not home:
        return (), skipped
    for name in DEFAULT_IDENTITIES:
        path = Path(home) / ".ssh" / name
        if not path.is_file():
            continue
        try:
            keys.append(load_private_key(path))
        except ConfigError:
            skipped.append(str(path))
    return tuple(keys), skipped


class AccessError(Exception):
    """A node could not be reached or logged in to (carried as data, never shown raw)."""

    def __init__(self, failure: Failure, host_key: HostKey | None, status: HostKeyStatus) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.host_key = host_key
        self.status = status


def failure_of(error: SshError) -> Failure:
    return Failure(str(error.kind), error.message, error.hint)


def open_session(
    target: Target, settings: SshSettings, cancel: threading.Event | None = None
) -> tuple[Session, HostKeyStatus]:
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
            cancel=cancel,
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
