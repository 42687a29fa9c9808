"""IPMI over LAN (RMCP+) to many BMCs at once, through pyghmi's session layer.

The only client-side importer of pyghmi. pyghmi's ``Session`` does the protocol work
(RMCP+ open session, RAKP, keys, integrity, encryption, per-packet retransmission); this
module drives many sessions from ONE thread with its own selectors loop, because pyghmi's
client deadlocks when used from many threads and its IO thread hands every packet across
threads (see the lab notes). It therefore takes over pyghmi's IO for the whole process
(``_take_over_io``): nothing else in kpc uses pyghmi's client.

What a host does is a *job*: a generator that yields ``Command``s and receives
``Response``s (written by the use cases, e.g. ``appliance.bmc.power``). A command that
ends with an error completion code is thrown into the job as ``CommandError``; a job may
catch it. ``run_jobs`` runs one job per target with a bounded fan-out, a per-host deadline,
retries of transient failures (BMC busy; lost packets and dropped sessions, as long as no
non-repeatable command is left with an unknown outcome) and maps everything that can go
wrong to a ``Failure`` an operator can act on.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import pyghmi.exceptions as pyghmi_exceptions
import pyghmi.ipmi.private.session as pyghmi_session

from appliance.bmc import protocol as p
from appliance.bmc.jobs import (
    Failure,
    HostError,
    HostOutcome,
    RunOptions,
    Target,
    with_timing,
)

log = logging.getLogger(__name__)

BUSY_BACKOFF = (0.2, 0.4, 0.8, 1.6, 3.2)  # waits before re-sending a command the BMC was busy for
POLL_INTERVAL = 0.05
SILENCE = 2.0  # a BMC silent this long at the deadline "stopped answering" (else: "slow")


@dataclass(frozen=True)
class Command:
    """One IPMI request. ``label`` names it in results ("set boot device to PXE")."""

    netfn: int
    cmd: int
    data: bytes = b""
    label: str = ""
    changes_state: bool = False  # counts as progress for "partial success"
    repeatable: bool = True  # safe to send again when its outcome is unknown


@dataclass(frozen=True)
class Response:
    code: int
    data: bytes


class CommandError(Exception):
    """A command ended with a completion code other than 0 (thrown into the job)."""

    def __init__(self, command: Command, code: int) -> None:
        super().__init__(f"{command.label}: {p.completion_code_text(code)}")
        self.command = command
        self.code = code


Job = Generator[Command, Response, str]
JobFactory = Callable[[Target], Job]


# --- pyghmi plumbing -------------------------------------------------------------------------


class _NoIoThread:
    """Stands in for pyghmi's IO thread: its presence stops pyghmi from starting one."""

    def join(self) -> None:
        return None


def _no_blocking_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    raise RuntimeError("pyghmi tried to wait synchronously inside kpc's IPMI loop")


def _take_over_io() -> None:
    """Run pyghmi's client IO from our loop: no IO thread, no blocking waits, our clock."""
    current = pyghmi_session.iothread
    if current is not None and not isinstance(current, _NoIoThread):
        raise RuntimeError("pyghmi's IO thread is already running in this process")
    pyghmi_session.iothread = _NoIoThread()
    pyghmi_session.iothreadready = True
    pyghmi_session._io_wait = _no_blocking_wait
    # pyghmi's clock is os.times() (a system call, 10 ms steps); its retransmission
    # deadlines are compared with ours, so both use time.monotonic
    pyghmi_session._monotonic_time = time.monotonic


class _Session(pyghmi_session.Session):  # type: ignore[misc]  # pyghmi is untyped
    """pyghmi's client session, made fully asynchronous.

    - the privilege-level request that ends a login is sent with a callback instead of
      waiting for its answer in place;
    - a command that gets no answer ends the session (the engine decides about a new one)
      instead of pyghmi's re-login, and a re-login during a login does not wait first;
    - it notes whether the BMC ever answered and the RMCP+ status of a refused login, so a
      failure can be told apart: nobody there, or wrong credentials.
    """

    kpc_answered = False
    kpc_last_heard = 0.0
    kpc_rmcp_status: int | None = None
    privlevel: int  # pyghmi's; declared for the type checker

    def process_pktqueue(self) -> None:
        if self.pktqueue:
            self.kpc_answered = True
            self.kpc_last_heard = time.monotonic()
        super().process_pktqueue()

    def _note_status(self, data: Any, context: str) -> None:
        """The status of the latest RMCP+/RAKP answer (a later success clears a refusal)."""
        if self.sessioncontext == context and len(data) > 1:
            self.kpc_rmcp_status = data[1] or None

    def _got_rmcp_response(self, data: Any) -> Any:
        self._note_status(data, "OPENSESSION")
        return super()._got_rmcp_response(data)

    def _got_rakp2(self, data: Any) -> Any:
        self._note_status(data, "EXPECTINGRAKP2")
        return super()._got_rakp2(data)

    def _got_rakp4(self, data: Any) -> Any:
        self._note_status(data, "EXPECTINGRAKP4")
        return super()._got_rakp4(data)

    def _relog(self) -> Any:
        self.incommand = False
        return super()._relog()

    def _req_priv_level(self) -> None:
        self.logged = 1
        self.logoutexpiry = None
        # once logged in: 3 sends of a command over ~5 s, then give up and tell the callback
        # (pyghmi would log in again and re-send on its own, delivering the answer to the
        # wrong callback in asynchronous use; the engine starts a fresh session instead)
        self.maxtimeout = 3
        self.logontries = 0
        self._kpc_request_privilege()

    def _kpc_request_privilege(self) -> None:
        self.raw_command(
            netfn=p.NETFN_APP, command=0x3B, data=[self.privlevel], callback=self._kpc_privilege
        )

    def _kpc_privilege(self, response: dict[str, Any]) -> None:
        self.incommand = False
        code = response.get("code", 0)
        if "error" not in response and code in (0x80, 0x81) and self.privlevel == 4:
            # some BMCs grant this user only operator rights: enough for power and boot
            self.privlevel = p.PRIVILEGE_OPERATOR
            self._kpc_request_privilege()
            return
        if "error" in response or code:
            self.logged = 0
            self.logging = False
            error = response.get("error") or f"privilege level refused: {code:#04x}"
            self.onlogon({"error": error, "code": code})
            return
        self.logging = False
        self.onlogon({"success": True})


# --- one host ------------------------------------------------------------------------------


class _Host:
    """The state of one target: its session, its job and what has been confirmed."""

    def __init__(self, engine: _Engine, target: Target, factory: JobFactory) -> None:
        self.engine = engine
        self.target = target
        self.factory = factory
        self.started = time.monotonic()
        self.deadline = self.started + engine.options.timeout
        self.attempt = 0
        self.session: _Session | None = None
        self.job: Job | None = None
        self.command: Command | None = None
        self.busy_tries = 0
        self.done: list[str] = []
        self.answered = False
        self.finished = False
        self.generation = 0  # callbacks of an abandoned session carry an older number

    # --- lifecycle ---
    def start(self) -> None:
        self.attempt += 1
        self.generation += 1
        generation = self.generation
        self.job = None
        self.command = None
        self.busy_tries = 0
        creds = self.target.credentials
        try:
            self.session = _Session(
                self.target.address,
                creds.user,
                creds.password,
                port=self.target.effective_port,
                onlogon=lambda response: self._on_login(generation, response),
                keepalive=False,
            )
        except (pyghmi_exceptions.IpmiException, OSError) as exc:
            self.fail(Failure.ERROR, f"cannot open a session: {exc}")
            return
        _forget_initting(self.session)
        self.engine.watch_sockets()

    def _current(self, generation: int) -> bool:
        return not self.finished and generation == self.generation

    # pyghmi calls back from inside its packet handling, and tidies up its request table
    # after the callback returns: anything sent from within a callback would be forgotten.
    # So callbacks only schedule; the engine runs the scheduled work after the packet.
    def _on_login(self, generation: int, response: dict[str, Any]) -> None:
        self.engine.soon(lambda: self._logged_in(generation, response))

    def _logged_in(self, generation: int, response: dict[str, Any]) -> None:
        if not self._current(generation):
            return
        session = self.session
        assert session is not None
        self.answered = self.answered or session.kpc_answered
        if "error" in response:
            self._login_failed(str(response["error"]), session)
            return
        self.job = self.factory(self.target)
        self._advance(lambda job: next(job))

    def _login_failed(self, error: str, session: _Session) -> None:
        status = session.kpc_rmcp_status
        if (
            status
            in (
                p.RMCPP_STATUS_UNAUTHORIZED_NAME,
                p.RMCPP_STATUS_INVALID_ROLE,
                p.RMCPP_STATUS_UNAUTHORIZED_ROLE,
                p.RMCPP_STATUS_INVALID_INTEGRITY_CHECK,
            )
            or session.sessioncontext == "FAILED"
            or "password" in error.lower()
            or "user name" in error.lower()
        ):
            what = "the BMC refused the user name" if status == 0x0D else "wrong password"
            if status in (p.RMCPP_STATUS_INVALID_ROLE, p.RMCPP_STATUS_UNAUTHORIZED_ROLE):
                what = "the user may not log in with operator or administrator rights"
            self.fail(Failure.BAD_CREDENTIALS, f"login refused: {what}")
            return
        if not session.kpc_answered:
            self._lost("no answer to the login", Failure.NO_ANSWER)
            return
        if status == p.RMCPP_STATUS_NO_CIPHER_SUITE_MATCH:
            self.fail(
                Failure.NOT_SUPPORTED,
                "login refused: the BMC offers none of the cipher suites kpc speaks (3, 17)",
            )
            return
        if status is not None:
            self.fail(Failure.ERROR, f"login refused: {error}")
            return
        self._lost(f"login failed: {error}", Failure.NO_ANSWER)

    # --- the job ---
    def _advance(self, step: Callable[[Job], Command]) -> None:
        job = self.job
        assert job is not None
        try:
            command = step(job)
        except StopIteration as stop:
            self.succeed(str(stop.value or "ok"))
            return
        except CommandError as exc:
            self._command_failed(exc)
            return
        except HostError as exc:
            self.fail(exc.failure, exc.message)
            return
        except Exception as exc:  # a bug in a job: report it for this host, go on
            log.exception("%s: job failed", self.target.label)
            self.fail(Failure.ERROR, f"internal error: {exc}")
            return
        self.command = command
        self.busy_tries = 0
        self._send()

    def _send(self) -> None:
        session, command, generation = self.session, self.command, self.generation
        assert session is not None and command is not None
        session.incommand = False
        try:
            session.raw_command(
                netfn=command.netfn,
                command=command.cmd,
                data=list(command.data),
                callback=lambda response: self._on_response(generation, response),
            )
        except pyghmi_exceptions.IpmiException:
            self._lost(f"session lost before '{command.label}'", Failure.NO_ANSWER, sent=False)

    def _on_response(self, generation: int, response: dict[str, Any]) -> None:
        self.engine.soon(lambda: self._responded(generation, response))

    def _responded(self, generation: int, response: dict[str, Any]) -> None:
        if not self._current(generation):
            return
        session, command = self.session, self.command
        assert session is not None and command is not None
        session.incommand = False
        if "error" in response:  # pyghmi gave up: no answer after its retransmissions
            self._lost(f"stopped answering during '{command.label}'", Failure.NO_ANSWER)
            return
        code = int(response["code"])
        if code in p.TRANSIENT_COMPLETION_CODES and self.busy_tries < len(BUSY_BACKOFF):
            delay = BUSY_BACKOFF[self.busy_tries]
            self.busy_tries += 1
            self.engine.later(delay, lambda: self._retry_busy(generation))
            return
        if code != p.CC_OK:
            self._advance(lambda job: job.throw(CommandError(command, code)))
            return
        if command.changes_state:
            self.done.append(command.label)
        self._advance(lambda job: job.send(Response(code, bytes(response["data"]))))

    def _retry_busy(self, generation: int) -> None:
        if self._current(generation):
            self._send()

    def _command_failed(self, exc: CommandError) -> None:
        code = exc.code
        if code in p.TRANSIENT_COMPLETION_CODES:
            kind = Failure.BUSY
        elif code in p.UNSUPPORTED_COMPLETION_CODES:
            kind = Failure.NOT_SUPPORTED
        elif code == p.CC_INSUFFICIENT_PRIVILEGE:
            kind = Failure.BAD_CREDENTIALS
        else:
            kind = Failure.ERROR
        self.fail(kind, str(exc))

    # --- endings ---
    def _lost(self, error: str, kind: Failure, *, sent: bool = True) -> None:
        """The session is gone. Start over if that is safe and there is time."""
        self.answered = self.answered or bool(self.session and self.session.kpc_answered)
        command = self.command
        unknown = sent and command is not None and not command.repeatable
        if (
            not unknown
            and self.attempt < self.engine.options.attempts
            and time.monotonic() < self.deadline
        ):
            log.debug("%s: %s; starting over", self.target.label, error)
            self._drop_session()
            self.start()
            return
        if unknown and command is not None:
            error += f" (unknown whether '{command.label}' was done)"
        self.fail(kind, error)

    def timed_out(self) -> None:
        """The per-host deadline passed: say whether the BMC was silent, busy or slow."""
        session = self.session
        answered = self.answered or bool(session and session.kpc_answered)
        seconds = self.engine.options.timeout
        if not answered:
            self.fail(Failure.NO_ANSWER, f"no answer within {seconds:g}s")
            return
        step = f"'{self.command.label}'" if self.command else "login"
        if self.busy_tries:
            self.fail(Failure.BUSY, f"{step}: the BMC answered 'busy' {self.busy_tries} times")
            return
        heard = session.kpc_last_heard if session is not None else 0.0
        silent = time.monotonic() - heard if heard else seconds
        if silent >= min(SILENCE, seconds / 2):
            self.fail(Failure.NO_ANSWER, f"stopped answering during {step} ({silent:.1f}s silent)")
            return
        self.fail(Failure.TIMEOUT, f"no result within {seconds:g}s, during {step} (slow BMC)")

    def succeed(self, result: str) -> None:
        self._finish(HostOutcome(self.target, True, result, done=tuple(self.done)))

    def fail(self, kind: Failure, error: str) -> None:
        if self.done and kind is not Failure.PARTIAL:
            error = f"{kind.value}: {error}"
            kind = Failure.PARTIAL
        self._finish(
            HostOutcome(self.target, False, failure=kind, error=error, done=tuple(self.done))
        )

    def _finish(self, outcome: HostOutcome) -> None:
        if self.finished:
            return
        self.finished = True
        self._drop_session()
        elapsed = time.monotonic() - self.started
        self.engine.finished(self, with_timing(outcome, attempts=self.attempt, elapsed=elapsed))

    def _drop_session(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        try:
            session.incommand = False
            if session.logged and not session.broken:
                session.logout()  # sends Close Session, waits for nothing
            else:
                session._mark_broken()
        except Exception:  # a session that is already half torn down
            log.debug("%s: error closing the session", self.target.label, exc_info=True)
        finally:
            pyghmi_session.Session.waiting_sessions.pop(session, None)
            _forget_initting(session)


def _forget_initting(session: _Session) -> None:
    """pyghmi files a new session under its str credentials but removes it under bytes, so
    the entry stays, and the next session to the same BMC would be this (dead) one."""
    initting = pyghmi_session.Session.initting_sessions
    for key, value in list(initting.items()):
        if value is session:
            del initting[key]


# --- the loop --------------------------------------------------------------------------------


class _Engine:
    def __init__(
        self,
        options: RunOptions,
        on_result: Callable[[HostOutcome], None] | None,
    ) -> None:
        self.options = options
        self.on_result = on_result
        self.selector = selectors.DefaultSelector()
        self.watched: set[int] = set()
        self.active: dict[int, _Host] = {}
        self.results: list[HostOutcome] = []
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.pending: collections.deque[Callable[[], None]] = collections.deque()
        self.order = itertools.count()

    def watch_sockets(self) -> None:
        for sock in pyghmi_session.iosockets:
            if sock.fileno() not in self.watched:
                self.watched.add(sock.fileno())
                self.selector.register(sock, selectors.EVENT_READ)

    def soon(self, action: Callable[[], None]) -> None:
        self.pending.append(action)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self.order), action))

    def finished(self, host: _Host, outcome: HostOutcome) -> None:
        self.active.pop(id(host), None)
        self.results.append(outcome)
        if self.on_result is not None:
            self.on_result(outcome)

    def run(self, work: Iterable[tuple[Target, JobFactory]]) -> list[HostOutcome]:
        queue = collections.deque(work)
        try:
            while queue or self.active:
                while queue and len(self.active) < self.options.fanout:
                    target, factory = queue.popleft()
                    host = _Host(self, target, factory)
                    self.active[id(host)] = host
                    host.start()
                self._step()
        finally:
            for host in list(self.active.values()):
                host.fail(Failure.ERROR, "interrupted")
            self.selector.close()
        return self.results

    def _step(self) -> None:
        now = time.monotonic()
        for host in list(self.active.values()):
            if now >= host.deadline:
                host.timed_out()
        while self.timers and self.timers[0][0] <= now:
            heapq.heappop(self.timers)[2]()
        waiting = pyghmi_session.Session.waiting_sessions
        for session, parms in list(waiting.items()):
            if parms["timeout"] <= now:
                waiting.pop(session, None)
                self._guard(session._timedout)
        if not self.active:
            return
        timeout = 0.0 if self.pending else POLL_INTERVAL
        if self.timers:
            timeout = min(timeout, self.timers[0][0] - now)
        for parms in waiting.values():
            timeout = min(timeout, parms["timeout"] - now)
        ready = self.selector.select(max(0.0, timeout))
        if ready:
            pyghmi_session._io_graball([key.fileobj for key, _ in ready], {})
            queue = pyghmi_session.sessionqueue
            while queue:
                self._guard(queue.popleft().process_pktqueue)
        while self.pending:
            self._guard(self.pending.popleft())

    @staticmethod
    def _guard(action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception:
            log.exception("error in an IPMI session")


def run_jobs(
    work: Iterable[tuple[Target, JobFactory]],
    options: RunOptions = RunOptions(),
    on_result: Callable[[HostOutcome], None] | None = None,
) -> list[HostOutcome]:
    """Run one job per target; results in the order hosts finished."""
    _take_over_io()
    return _Engine(options, on_result).run(work)
