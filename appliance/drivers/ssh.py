"""SSH client driver: the only importer of paramiko.

One connection per node: TCP connect, key exchange, host key check, public-key login, then
commands on channels. Every failure becomes an :class:`SshError` whose ``kind`` says what
happened (refused, timeout, auth failed, host key changed, ...), so callers never see a
paramiko or socket exception.

Host keys: the caller passes the key it recorded for the node (or None on first use). The
transport then only negotiates that key's type, and a different key stops the connection
*before* authenticating, as OpenSSH does. Trust decisions (record on first use, forget) are
the caller's; this module only compares.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import paramiko
from paramiko.agent import AgentKey, AgentSSH
from paramiko.ssh_exception import IncompatiblePeer

from appliance.drivers.process import which
from appliance.errors import ConfigError, KpcError
from appliance.keys import key_fingerprint, key_text

log = logging.getLogger(__name__)

SSH_PORT = 22  # RFC 4253 section 4.1 (IANA well-known port)
READ_CHUNK = 32768
POLL = 0.2  # seconds between checks for an exit status, a timeout or a cancellation
STOP_GRACE = 1.0  # seconds a command given up on has after TERM, then after KILL
MAX_CAPTURE = 4 * 1024 * 1024  # bytes kept per output stream; older output is dropped
# Host key algorithms that may carry a recorded key of each type (RFC 8332 for RSA).
KEY_ALGORITHMS: dict[str, tuple[str, ...]] = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


class SshFailure(StrEnum):
    """What went wrong, in the words an operator reads in a report."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth failed"
    HOST_KEY_CHANGED = "host key changed"
    PROTOCOL = "protocol error"
    DISCONNECTED = "disconnected"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class HostKey:
    """A server's public host key: its type name and its wire-format blob."""

    type: str
    blob: bytes

    @property
    def line(self) -> str:
        """``type base64``, as in known_hosts and as the machine registry stores it."""
        return key_text(self.type, self.blob)

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -lf`` prints it."""
        return key_fingerprint(self.blob)

    @classmethod
    def parse(cls, line: str) -> HostKey:
        """Read ``type base64 [comment]``; ValueError when it is not a key."""
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"not a host key line: {line[:40]!r}")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"host key is not valid base64: {parts[1][:20]!r}...") from None
        return cls(parts[0], blob)


class SshError(KpcError):
    """An SSH connection or command failed. ``kind`` classifies it; ``host_key`` is the key
    the server presented, when the failure happened after the key exchange."""

    def __init__(
        self,
        kind: SshFailure,
        message: str,
        hint: str | None = None,
        host_key: HostKey | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.kind = kind
        self.host_key = host_key


@dataclass(frozen=True)
class PrivateKey:
    """A loaded private key (opaque outside this module)."""

    path: Path
    fingerprint: str
    _key: paramiko.PKey


@dataclass(frozen=True)
class Credentials:
    """Who to log in as and with which keys: key files, the agent's keys, or both (the
    files are offered first)."""

    user: str
    keys: tuple[PrivateKey, ...] = ()
    agent_socket: str | None = None


@dataclass(frozen=True)
class CommandResult:
    exit_status: int  # -1 when the server sent none (e.g. the command was killed)
    stdout: str
    stderr: str
    started: float  # time.time() when the command was sent
    first_output: float | None  # time.time() when its first output arrived
    finished: float


@dataclass(frozen=True)
class TimedReply:
    output: str  # what the command printed after its ready line (all of it if none came)
    exit_status: int
    sent: float | None  # time.time() when the newline went out; None if never ready
    received: float | None  # time.time() when the first byte of the answer arrived


OutputCallback = Callable[[str, str], None]  # (stream "stdout"|"stderr", line)


def load_private_key(path: Path) -> PrivateKey:
    """Load an unencrypted private key file (OpenSSH or PEM format)."""
    try:
        key = paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise ConfigError(
            f"ssh.private_key: {path} does not exist",
            hint="point ssh.private_key at the deploy host's private key, or remove it to use "
            "the SSH agent",
        ) from None
    except PermissionError:
        raise ConfigError(f"ssh.private_key: cannot read {path} (permission denied)") from None
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        # cryptography says "password-protected" with a TypeError; paramiko has its own class
        if isinstance(exc, paramiko.PasswordRequiredException) or "password" in str(exc):
            raise ConfigError(
                f"ssh.private_key: {path} is protected by a passphrase",
                hint="load it into an agent instead (ssh-add) and remove ssh.private_key",
            ) from None
        raise ConfigError(f"ssh.private_key: {path} is not a usable private key: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"ssh.private_key: cannot read {path}: {exc.strerror}") from None
    return PrivateKey(path=path, fingerprint=_host_key(key).fingerprint, _key=key)


def _host_key(key: paramiko.PKey) -> HostKey:
    return HostKey(key.get_name(), key.asbytes())


class _Agent(AgentSSH):
    """An ssh-agent client on an explicit socket path (paramiko's Agent reads the
    environment itself; kpc passes the path down from its CLI)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            self._connect(sock)  # type: ignore[attr-defined]  # paramiko's own entry point
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._close()  # type: ignore[attr-defined]


def _connect_socket(address: str, port: int, timeout: float) -> socket.socket:
    where = f"{address}:{port}"
    try:
        return socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        raise SshError(
            SshFailure.REFUSED,
            f"{where}: connection refused",
            hint="is the node up and its SSH server running on this port?",
        ) from None
    except TimeoutError:
        raise SshError(
            SshFailure.TIMEOUT,
            f"{where}: no answer to the TCP connection within {timeout:g}s",
            hint="check that the node is powered on and the address is right",
        ) from None
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            raise SshError(
                SshFailure.UNREACHABLE,
                f"{where}: {exc.strerror or exc}",
                hint="check the node's address and the deploy host's routes",
            ) from None
        raise SshError(SshFailure.UNREACHABLE, f"{where}: {exc.strerror or exc}") from None


class Session:
    """An authenticated SSH connection to one node. Close it (or use ``with``)."""

    def __init__(
        self,
        where: str,
        transport: paramiko.Transport,
        host_key: HostKey,
        cancel: threading.Event | None = None,
    ) -> None:
        self.where = where
        self.host_key = host_key
        self._transport = transport
        self._cancel = cancel

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def run(
        self,
        command: str,
        *,
        timeout: float,
        on_output: OutputCallback | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run ``command`` through the node's login shell and wait for its exit status.

        Output lines go to ``on_output`` as they arrive; the result holds all of it (up to
        MAX_CAPTURE bytes per stream, the newest kept). SshError(TIMEOUT) if the command
        has not finished within ``timeout`` seconds.
        """
        try:
            channel = self._transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        try:
            return self._run_on(channel, command, timeout, on_output, stdin)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        finally:
            self._stop(channel)
            channel.close()

    def timed_reply(
        self, command: str, *, ready: str, timeout: float, then: bytes = b""
    ) -> TimedReply:
        """Time one exchange with a command that prints the line ``ready``, then reads a line
        from stdin and answers it (e.g. ``echo R; read _; date``). The answer is timed from
        the newline kpc sends to its first byte, so the shell's start-up is not counted.
        ``then`` follows the newline on stdin (more input for the command), then EOF."""
        try:
            channel = self._transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        try:
            return self._timed_on(channel, command, ready, timeout, then)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from None
        finally:
            self._stop(channel)
            channel.close()

    def _timed_on(
        self, channel: paramiko.Channel, command: str, ready: str, timeout: float, then: bytes
    ) -> TimedReply:
        deadline = time.monotonic() + timeout
        channel.exec_command(command)
        wake = channel.fileno()
        before = b""
        after = b""
        sent: float | None = None
        received: float | None = None
        marker = ready.encode() + b"\n"
        while True:
            while channel.recv_ready():
                chunk = channel.recv(READ_CHUNK)
                if sent is None:
                    before += chunk
                else:
                    if received is None and chunk:
                        received = time.time()
                    after += chunk
            if sent is None and marker in before:
                after = before.split(marker, 1)[1]
                sent = time.time()
                channel.sendall(b"\n" + then)
                channel.shutdown_write()
            while channel.recv_stderr_ready():
                channel.recv_stderr(READ_CHUNK)
            if channel.eof_received and (channel.exit_status_ready() or channel.closed):
                break
            self._wait(wake, deadline, timeout, command)
        channel.status_event.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
        status = channel.exit_status if channel.exit_status_ready() else -1
        if sent is None:
            return TimedReply(before.decode("utf-8", "replace"), status, None, None)
        return TimedReply(after.decode("utf-8", "replace"), status, sent, received or time.time())

    def _stop(self, channel: paramiko.Channel) -> None:
        """Stop the channel's command if it is still running (given up on: cancelled, timed
        out, or its output callback raised). Closing the channel alone would leave a command
        that writes nothing running on the node. A "signal" request (RFC 4254 section 6.9;
        OpenSSH sends it to the command's whole process group): TERM, then KILL."""
        for name in ("TERM", "KILL"):
            if channel.closed or channel.eof_received or channel.exit_status_ready():
                return
            message = paramiko.Message()
            message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
            message.add_int(channel.remote_chanid)
            message.add_string("signal")
            message.add_boolean(False)
            message.add_string(name)
            try:
                self._transport._send_user_message(message)  # type: ignore[attr-defined]
            except (paramiko.SSHException, OSError, EOFError):
                return  # the connection is gone: sshd ends the session itself
            log.debug("%s: sent SIG%s to a command given up on", self.where, name)
            deadline = time.monotonic() + STOP_GRACE
            while time.monotonic() < deadline and not (channel.closed or channel.eof_received):
                select.select([channel.fileno()], [], [], POLL)
                while channel.recv_ready():
                    channel.recv(READ_CHUNK)  # keep the window open for its last words
                while channel.recv_stderr_ready():
                    channel.recv_stderr(READ_CHUNK)

    def _wait(self, wake: int, deadline: float, timeout: float, command: str) -> None:
        """Sleep until the channel has news, at most POLL seconds (the pipe wakes us on data
        and EOF; the exit status alone does not). Raises on timeout or cancellation."""
        if self._cancel is not None and self._cancel.is_set():
            raise SshError(
                SshFailure.CANCELLED,
                f"{self.where}: cancelled while running: {command[:80]}",
                host_key=self.host_key,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SshError(
                SshFailure.TIMEOUT,
                f"{self.where}: command did not finish within {timeout:g}s: {command[:80]}",
                host_key=self.host_key,
            )
        select.select([wake], [], [], min(remaining, POLL))

    def _lost(self, exc: BaseException) -> SshError:
        return SshError(
            SshFailure.DISCONNECTED,
            f"{self.where}: connection lost: {exc or type(exc).__name__}",
            host_key=self.host_key,
        )

    def _run_on(
        self,
        channel: paramiko.Channel,
        command: str,
        timeout: float,
        on_output: OutputCallback | None,
        stdin: bytes | None,
    ) -> CommandResult:
        deadline = time.monotonic() + timeout
        started = time.time()
        channel.exec_command(command)
        if stdin is not None:
            channel.sendall(stdin)
        channel.shutdown_write()
        streams = {"stdout": _Lines("stdout", on_output), "stderr": _Lines("stderr", on_output)}
        first_output: float | None = None
        wake = channel.fileno()
        while True:
            got = False
            while channel.recv_ready():
                streams["stdout"].feed(channel.recv(READ_CHUNK))
                got = True
            while channel.recv_stderr_ready():
                streams["stderr"].feed(channel.recv_stderr(READ_CHUNK))
                got = True
            if got and first_output is None:
                first_output = time.time()
            if channel.eof_received and (channel.exit_status_ready() or channel.closed):
                break
            self._wait(wake, deadline, timeout, command)
        channel.status_event.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
        status = channel.exit_status if channel.exit_status_ready() else -1
        return CommandResult(
            exit_status=status,
            stdout=streams["stdout"].finish(),
            stderr=streams["stderr"].finish(),
            started=started,
            first_output=first_output,
            finished=time.time(),
        )


class _Lines:
    """Splits a byte stream into decoded lines for the callback and keeps the text."""

    def __init__(self, name: str, callback: OutputCallback | None) -> None:
        self.name = name
        self.callback = callback
        self.pending = b""
        self.kept = bytearray()

    def feed(self, data: bytes) -> None:
        self.kept += data
        if len(self.kept) > MAX_CAPTURE:
            del self.kept[: len(self.kept) - MAX_CAPTURE]
        if self.callback is None:
            return
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self.callback(self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def finish(self) -> str:
        if self.callback is not None and self.pending:
            self.callback(self.name, self.pending.decode("utf-8", "replace").rstrip("\r"))
        self.pending = b""
        return self.kept.decode("utf-8", "replace")


def connect(
    address: str,
    port: int,
    credentials: Credentials,
    *,
    known_host_key: HostKey | None,
    timeout: float,
    cancel: threading.Event | None = None,
) -> Session:
    """Connect, check the host key, log in. ``known_host_key`` None means first use: any
    key is accepted and returned as ``Session.host_key`` for the caller to record.
    Setting ``cancel`` makes the session's running command stop waiting (SshError
    CANCELLED) within POLL seconds."""
    where = f"{address}:{port}" if port != SSH_PORT else address
    sock = _connect_socket(address, port, timeout)
    try:
        transport = paramiko.Transport(sock)
    except BaseException:
        sock.close()
        raise
    try:
        # paramiko's own timers run a little longer than ours, so a silent server is
        # always reported by the wait in _negotiate, as a timeout.
        transport.banner_timeout = timeout + 1
        transport.handshake_timeout = timeout + 1
        transport.auth_timeout = timeout
        if known_host_key is not None:
            _restrict_key_types(transport, known_host_key, where)
        presented = _negotiate(transport, where, known_host_key, timeout)
        _authenticate(transport, where, credentials, presented, timeout)
    except BaseException:
        transport.close()
        raise
    return Session(where, transport, presented, cancel)


def _restrict_key_types(transport: paramiko.Transport, key: HostKey, where: str) -> None:
    types = KEY_ALGORITHMS.get(key.type, (key.type,))
    try:
        transport.get_security_options().key_types = types
    except ValueError:
        raise SshError(
            SshFailure.PROTOCOL,
            f"{where}: the recorded host key has type {key.type}, which kpc cannot check",
            hint="forget the recorded key with 'kpc nodes forget-hostkey MAC' if the node "
            "really has new keys",
        ) from None


def _negotiate(
    transport: paramiko.Transport, where: str, known: HostKey | None, timeout: float
) -> HostKey:
    done = threading.Event()
    try:
        transport.start_client(event=done)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError(SshFailure.PROTOCOL, f"{where}: SSH negotiation failed: {exc}") from None
    if not done.wait(timeout):
        raise SshError(
            SshFailure.TIMEOUT,
            f"{where}: the SSH server did not complete the handshake within {timeout:g}s",
            hint="something accepts connections on this port but does not speak SSH in time; "
            "check the node's SSH server",
        )
    if not transport.is_active():
        failure = transport.get_exception()
        text = str(failure) if failure else "the server closed the connection"
        if isinstance(failure, EOFError) or "banner" in text:
            raise SshError(
                SshFailure.DISCONNECTED,
                f"{where}: the server closed the connection before the SSH handshake"
                + (f": {text}" if text else ""),
                hint="the SSH server refused this client (MaxStartups, tcp wrappers) or is "
                "not an SSH server",
            )
        if known is not None and isinstance(failure, IncompatiblePeer) and "host key" in text:
            raise SshError(
                SshFailure.HOST_KEY_CHANGED,
                f"{where}: HOST KEY CHANGED: the node no longer offers a {known.type} host key "
                f"(recorded {known.fingerprint})",
                hint=_changed_hint(),
            )
        raise SshError(SshFailure.PROTOCOL, f"{where}: SSH negotiation failed: {text}")
    presented = _host_key(transport.get_remote_server_key())
    if known is not None and presented != known:
        raise SshError(
            SshFailure.HOST_KEY_CHANGED,
            f"{where}: HOST KEY CHANGED: recorded {known.type} {known.fingerprint}, "
            f"the server presented {presented.type} {presented.fingerprint}. Someone could "
            "be intercepting the connection, or the node was reinstalled outside kpc",
            hint=_changed_hint(),
            host_key=presented,
        )
    return presented


def _changed_hint() -> str:
    return (
        "if the node was really reinstalled, forget the old key with "
        "'kpc nodes forget-hostkey MAC' and check again; otherwise investigate"
    )


def _authenticate(
    transport: paramiko.Transport,
    where: str,
    credentials: Credentials,
    presented: HostKey,
    timeout: float,
) -> None:
    agent: _Agent | None = None
    tried: list[str] = []
    try:
        keys: list[paramiko.PKey] = []
        keys.extend(k._key for k in credentials.keys)
        if credentials.agent_socket:
            try:
                agent = _Agent(credentials.agent_socket, timeout)
            except (OSError, paramiko.SSHException) as exc:
                log.debug("ssh-agent at %s unusable: %s", credentials.agent_socket, exc)
            else:
                keys.extend(k for k in agent.get_keys() if isinstance(k, AgentKey))
        if not keys:
            raise SshError(
                SshFailure.AUTH_FAILED,
                f"{where}: no key to log in with",
                hint="set ssh.private_key in the site config or load a key into ssh-agent",
                host_key=presented,
            )
        for key in keys:
            fp = _host_key(key).fingerprint
            tried.append(fp)
            try:
                transport.auth_publickey(credentials.user, key)
            except paramiko.BadAuthenticationType as exc:
                raise SshError(
                    SshFailure.AUTH_FAILED,
                    f"{where}: the server does not accept public keys for "
                    f"{credentials.user} (it allows: {', '.join(exc.allowed_types) or 'none'})",
                    host_key=presented,
                ) from None
            except paramiko.AuthenticationException:
                continue
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if not transport.is_active():
                    raise SshError(
                        SshFailure.AUTH_FAILED,
                        f"{where}: the server closed the connection during login as "
                        f"{credentials.user}: {exc}",
                        hint="too many keys offered, or the server refuses this user",
                        host_key=presented,
                    ) from None
                raise SshError(
                    SshFailure.PROTOCOL, f"{where}: login failed: {exc}", host_key=presented
                ) from None
            if transport.is_authenticated():
                return
        raise SshError(
            SshFailure.AUTH_FAILED,
            f"{where}: {credentials.user} refused every key offered ({', '.join(tried)})",
            hint=f"the node's authorized_keys for {credentials.user} must hold one of these "
            "keys; kpc puts the collected keys there at install time",
            host_key=presented,
        )
    finally:
        if agent is not None:
            agent.close()


def known_hosts_options(known_hosts: Path, key_types: Sequence[str]) -> list[str]:
    """OpenSSH options for strict checking against kpc's own known_hosts file."""
    return [
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        f"HostKeyAlgorithms={','.join(key_types)}",
    ]


def key_algorithms(key_type: str) -> tuple[str, ...]:
    """The host key algorithms that negotiate a key of ``key_type``."""
    return KEY_ALGORITHMS.get(key_type, (key_type,))


def exec_program(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``argv`` (for interactive ``ssh``)."""
    program = which(argv[0], "openssh-client")
    os.execv(program, list(argv))
