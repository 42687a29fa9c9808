"""Redfish over HTTPS to many BMCs at once: the only importer of aiohttp's client.

Runs one job per target (``appliance.bmc.redfish_jobs``) on one asyncio loop with one
connection pool, a bounded fan-out and a deadline per host. Per host:

1. TLS, checked before any credential is sent: a pinned fingerprint must match
   (``aiohttp.Fingerprint``: SHA-256 of the certificate; a different one stops the host as
   "certificate changed"); with a site CA bundle the chain and name are verified; with
   neither, the certificate is trusted on first use and its fingerprint handed back for the
   registry; ``insecure`` checks nothing (only when the operator asks).
2. Login: a ``SessionService`` session (``POST Sessions``, ``X-Auth-Token``, ``DELETE`` at
   the end) when the service root links one, else HTTP basic auth per request. A BMC with
   no free session is "busy", never silently switched to another login.
3. The job's requests; ``503``/``429`` answers are retried with a back-off; a request that
   changes state and whose outcome is unknown (no answer) is never sent again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import aiohttp

from appliance.bmc.jobs import (
    Failure,
    HostError,
    HostOutcome,
    RunOptions,
    Target,
    with_timing,
)
from appliance.bmc.redfish_jobs import (
    SERVICE_ROOT,
    Done,
    Job,
    JobFactory,
    Reply,
    Request,
    RequestError,
    describe_error,
)

log = logging.getLogger(__name__)

BUSY_BACKOFF = (0.2, 0.5, 1.0)
SESSION_LIMIT_WORDS = ("session", "limit", "maximum", "exceed")


class _Stop(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


class _Host:
    def __init__(self, http: aiohttp.ClientSession, target: Target, contexts: _Contexts) -> None:
        self.http = http
        self.target = target
        self.base = f"https://{target.address}:{target.effective_port}"
        self.ssl = contexts.for_target(target)
        self.basic: str | None = None  # Authorization header value without a session
        self.token: str | None = None
        self.session_url: str | None = None
        self.seen: str | None = None
        self.answered = False
        self.done: list[str] = []
        self.step = "connect"
        self.in_flight: Request | None = None  # the job's request waiting for an answer

    async def send(self, request: Request) -> Reply:
        headers = {"Accept": "application/json", "OData-Version": "4.0", **request.headers}
        if self.token is not None:
            headers["X-Auth-Token"] = self.token
        elif self.basic is not None:
            headers["Authorization"] = self.basic
        url = request.path if request.path.startswith("https://") else self.base + request.path
        quiet = request.label == "log out"  # the job's step stays the one reported
        for attempt in range(len(BUSY_BACKOFF) + 1):
            if not quiet:
                self.step = request.label or f"{request.method} {request.path}"
                self.in_flight = request
            try:
                async with self.http.request(
                    request.method,
                    url,
                    json=request.body if request.body is not None else None,
                    headers=headers,
                    ssl=self.ssl,
                    allow_redirects=False,
                ) as response:
                    self.answered = True
                    if self.seen is None:
                        self.seen = _peer_fingerprint(response)
                    raw = await response.read()
                    reply = Reply(response.status, _json(raw), dict(response.headers))
            except aiohttp.ServerFingerprintMismatch as exc:
                raise _Stop(
                    Failure.CERT_CHANGED,
                    f"TLS certificate changed: pinned {exc.expected.hex()[:16]}…, "
                    f"got {exc.got.hex()[:16]}…; nothing was sent",
                ) from None
            except aiohttp.ClientConnectorCertificateError as exc:
                raise _Stop(
                    Failure.TLS, f"certificate not trusted: {exc.certificate_error}"
                ) from None
            except aiohttp.ClientSSLError as exc:
                raise _Stop(Failure.TLS, f"TLS handshake failed: {exc}") from None
            except (aiohttp.ClientConnectorError, ConnectionRefusedError, OSError) as exc:
                if self.answered and not request.repeatable:
                    raise _Stop(
                        Failure.NO_ANSWER,
                        f"connection lost during '{self.step}' (unknown whether it was done)",
                    ) from None
                raise _Stop(Failure.NO_ANSWER, f"cannot connect: {_reason(exc)}") from None
            except aiohttp.ClientError as exc:
                raise _Stop(Failure.ERROR, f"'{self.step}': {exc}") from None
            if reply.status in (429, 503) and attempt < len(BUSY_BACKOFF):
                await asyncio.sleep(BUSY_BACKOFF[attempt])
                continue
            if not quiet:
                self.in_flight = None
            return reply
        return reply

    async def login(self, root: Any) -> None:
        creds = self.target.credentials
        sessions = _sessions_path(root)
        if sessions is None:
            self.basic = _basic(creds.user, creds.password)
            return
        reply = await self.send(
            Request(
                "POST",
                sessions,
                {"UserName": creds.user, "Password": creds.password},
                label="log in (session)",
            )
        )
        if reply.status in (401, 403):
            raise _Stop(Failure.BAD_CREDENTIALS, "login refused: wrong user name or password")
        if reply.status in (429, 503) or (reply.status >= 400 and _mentions_limit(reply)):
            raise _Stop(
                Failure.BUSY,
                f"no free session on the BMC ({describe_error(reply)}); close sessions in its "
                "web UI or wait for them to expire",
            )
        if reply.status in (404, 405, 501):  # linked but not implemented: basic auth
            self.basic = _basic(creds.user, creds.password)
            return
        token = reply.headers.get("X-Auth-Token")
        if reply.status >= 400 or not token:
            raise _Stop(Failure.ERROR, f"login failed: {describe_error(reply)}")
        self.token = token
        self.session_url = reply.headers.get("Location")

    async def logout(self) -> None:
        if self.token is None or not self.session_url:
            return
        path = self.session_url
        if path.startswith("https://"):
            path = "/" + path.split("/", 3)[3]
        try:
            async with asyncio.timeout(2.0):
                await self.send(Request("DELETE", path, label="log out"))
        except (_Stop, TimeoutError):
            log.debug("%s: session not closed", self.target.label)
        self.token = None

    async def run(self, factory: JobFactory) -> Done:
        root_reply = await self.send(Request("GET", SERVICE_ROOT, label="read the service root"))
        if root_reply.status >= 400 or not isinstance(root_reply.body, dict):
            raise _Stop(Failure.NOT_SUPPORTED, f"no Redfish service root: HTTP {root_reply.status}")
        await self.login(root_reply.body)
        try:
            return await self._drive(factory(self.target), root_reply)
        finally:
            await self.logout()

    async def _drive(self, job: Job, root: Reply) -> Done:
        step: Callable[[], Request] = lambda: next(job)  # noqa: E731
        first = True
        while True:
            try:
                request = step()
            except StopIteration as stop:
                done: Done = stop.value
                return done
            if first and request.method == "GET" and request.path == SERVICE_ROOT:
                reply = root  # already read, before login
            else:
                reply = await self.send(request)
            first = False
            if reply.status in (401, 403):
                raise _Stop(
                    Failure.BAD_CREDENTIALS,
                    f"'{request.label}': {describe_error(reply)} (check the user and password)",
                )
            if reply.status >= 400:
                error = RequestError(request, reply)
                step = lambda error=error: job.throw(error)  # type: ignore[misc]  # noqa: E731
                continue
            if request.changes_state:
                self.done.append(request.label)
            step = lambda reply=reply: job.send(reply)  # type: ignore[misc]  # noqa: E731


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _sessions_path(root: Any) -> str | None:
    links = root.get("Links") if isinstance(root, dict) else None
    sessions = links.get("Sessions") if isinstance(links, dict) else None
    if isinstance(sessions, dict) and isinstance(sessions.get("@odata.id"), str):
        return str(sessions["@odata.id"])
    return None


def _mentions_limit(reply: Reply) -> bool:
    text = json.dumps(reply.body).lower() if reply.body is not None else ""
    return "session" in text and any(w in text for w in SESSION_LIMIT_WORDS[1:])


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, ConnectionRefusedError) or isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on its HTTPS port)"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _peer_fingerprint(response: aiohttp.ClientResponse) -> str | None:
    connection = response.connection
    transport = connection.transport if connection is not None else None
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


class _Contexts:
    """One SSL context per kind of check (built once, shared by all hosts)."""

    def __init__(self) -> None:
        self._ca: dict[str, ssl.SSLContext] = {}

    def for_target(self, target: Target) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
        tls = target.tls
        if tls.insecure:
            return False
        if tls.ca_bundle is not None:
            if tls.ca_bundle not in self._ca:
                try:
                    self._ca[tls.ca_bundle] = ssl.create_default_context(cafile=tls.ca_bundle)
                except (OSError, ssl.SSLError) as exc:
                    raise _Stop(
                        Failure.TLS, f"cannot load the CA bundle {tls.ca_bundle}: {exc}"
                    ) from None
            return self._ca[tls.ca_bundle]
        if tls.pinned is not None:
            return aiohttp.Fingerprint(bytes.fromhex(tls.pinned))
        return False  # first use: the fingerprint is read from the connection and pinned


async def _one(
    http: aiohttp.ClientSession,
    target: Target,
    factory: JobFactory,
    options: RunOptions,
    contexts: _Contexts,
) -> HostOutcome:
    started = time.monotonic()
    host: _Host | None = None
    try:
        host = _Host(http, target, contexts)
        async with asyncio.timeout(options.timeout):
            done = await host.run(factory)
        outcome = HostOutcome(
            target, True, done.result, done=tuple(host.done), inventory=done.inventory
        )
    except _Stop as stop:
        outcome = _failed(target, host, stop.failure, stop.message)
    except HostError as exc:
        outcome = _failed(target, host, exc.failure, exc.message)
    except RequestError as exc:
        outcome = _failed(target, host, _kind(exc), str(exc))
    except TimeoutError:
        seconds = options.timeout
        if host is None or not host.answered:
            outcome = _failed(target, host, Failure.NO_ANSWER, f"no answer within {seconds:g}s")
        else:
            pending = host.in_flight
            unknown = (
                " (unknown whether it was done)"
                if pending is not None and not pending.repeatable
                else ""
            )
            outcome = _failed(
                target, host, Failure.TIMEOUT, f"no result within {seconds:g}s, during "
                f"'{host.step}'{unknown} (slow BMC, or it never answered)",
            )  # fmt: skip
    except Exception as exc:  # a bug in a job: report it for this host, go on
        log.exception("%s: Redfish job failed", target.label)
        outcome = _failed(target, host, Failure.ERROR, f"internal error: {exc}")
    tls = target.tls
    first_use = tls.pinned is None and not tls.insecure and tls.ca_bundle is None
    if host is not None and first_use and host.seen is not None:
        outcome = replace(outcome, seen_fingerprint=host.seen)
    return with_timing(outcome, attempts=1, elapsed=time.monotonic() - started)


def _kind(exc: RequestError) -> Failure:
    status = exc.reply.status
    if status in (400, 405, 501) or status == 404:
        return Failure.NOT_SUPPORTED
    if status in (429, 503):
        return Failure.BUSY
    return Failure.ERROR


def _failed(target: Target, host: _Host | None, kind: Failure, error: str) -> HostOutcome:
    done = tuple(host.done) if host is not None else ()
    if done and kind is not Failure.PARTIAL:
        error, kind = f"{kind.value}: {error}", Failure.PARTIAL
    return HostOutcome(target, False, failure=kind, error=error, done=done)


async def run_jobs_async(
    work: Iterable[tuple[Target, JobFactory]],
    options: RunOptions,
    on_result: Callable[[HostOutcome], None] | None = None,
) -> list[HostOutcome]:
    limit = asyncio.Semaphore(options.fanout)
    contexts = _Contexts()
    connector = aiohttp.TCPConnector(limit=options.fanout, limit_per_host=4)
    results: list[HostOutcome] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as http:

        async def one(target: Target, factory: JobFactory) -> None:
            async with limit:
                outcome = await _one(http, target, factory, options, contexts)
            results.append(outcome)
            if on_result is not None:
                on_result(outcome)

        await asyncio.gather(*(one(t, f) for t, f in work))
    return results


def run_jobs(
    work: Iterable[tuple[Target, JobFactory]],
    options: RunOptions = RunOptions(),
    on_result: Callable[[HostOutcome], None] | None = None,
) -> list[HostOutcome]:
    """Run one job per target; results in the order hosts finished."""
    return asyncio.run(run_jobs_async(list(work), options, on_result))
