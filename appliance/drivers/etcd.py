"""etcd v3 over its JSON gateway (``/v3/...``): the only module that speaks to etcd.

A small synchronous client on the standard library's ``http.client``: kpc's store Protocol is
synchronous and runs on one registry thread per process, so it needs no event loop and no
third-party library (see docs/architecture.md, "The machine registry on etcd", for why not
``etcd3gw``). What it does:

- several endpoints (the members of a cluster): a request that cannot reach one member
  (refused, reset, timed out) moves on to the next; if none answers the call raises
  ``EtcdUnavailable``;
- TLS with a CA bundle and optionally a client certificate; user auth (``/v3/auth/
  authenticate``), the token renewed when etcd says it expired. The password and the
  client key are handed in by the caller (from kpc secret references) and never logged;
- keys and values are bytes on the wire (base64 in JSON) and ``str`` here (UTF-8);
- a watch is one streamed POST read as a sequence of JSON messages.

One connection per thread and endpoint; the client may be shared between threads.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 2.0  # seconds per request: a member without quorum must not hold a caller
# etcd's answers that mean "this member cannot serve now, another one (or later) may"
_UNAVAILABLE_MESSAGES = (
    "etcdserver: request timed out",
    "etcdserver: no leader",
    "etcdserver: leader changed",
    "etcdserver: too many requests",
    "etcdserver: server stopped",
    "etcdserver: not capable",
    "context deadline exceeded",
    "raft: stopped",
    "etcdserver: request timed out, possibly due to connection lost",
)
_TOKEN_MESSAGES = ("etcdserver: invalid auth token", "auth: invalid auth token")


class EtcdError(Exception):
    """etcd refused a request (bad credentials, permission, malformed request)."""


class EtcdUnavailable(EtcdError):
    """No member could serve the request now (down, no quorum, timed out). A write that
    raised this may or may not have been applied."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: str | None) -> str:
    return base64.b64decode(data or "").decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw).decode("latin-1")
        raw.pop()
    return "\0"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


def _kv(raw: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(raw.get("key")),
        value=_unb64(raw.get("value")),
        create_revision=int(raw.get("create_revision", 0)),
        mod_revision=int(raw.get("mod_revision", 0)),
        version=int(raw.get("version", 0)),
        lease=int(raw.get("lease", 0)),
    )


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int
    revision: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def ranges(self) -> list[list[KeyValue]]:
        """The key-values of each range operation in the branch that ran."""
        found = []
        for response in self.responses:
            rng = response.get("response_range")
            if rng is not None:
                found.append([_kv(kv) for kv in rng.get("kvs", [])])
        return found


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "PUT" or "DELETE"
    kv: KeyValue


# --- operations and comparisons for ``txn`` ---------------------------------------------


def op_put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def op_delete(key: str, range_end: str | None = None) -> dict[str, Any]:
    request = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    return {"request_delete_range": request}


def op_range(key: str, range_end: str | None = None) -> dict[str, Any]:
    request = {"key": _b64(key)}
    if range_end is not None:
        request["range_end"] = _b64(range_end)
    return {"request_range": request}


def cmp_mod_revision(key: str, revision: int) -> dict[str, Any]:
    """True while ``key`` was last changed at ``revision`` (0: the key does not exist)."""
    return {
        "key": _b64(key),
        "target": "MOD",
        "result": "EQUAL",
        "mod_revision": str(revision),
    }


def cmp_exists(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "VERSION", "result": "GREATER", "version": "0"}


def cmp_absent(key: str) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


# --- the client -------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    tls: bool


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EtcdError(f"not an etcd endpoint URL: {url!r} (use https://HOST:2379)")
    port = parts.port or 2379
    return Endpoint(url.rstrip("/"), parts.hostname, port, parts.scheme == "https")


class EtcdClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoints given")
        self.endpoints = [parse_endpoint(u) for u in endpoints]
        self.timeout = timeout
        self._user = user
        self._password = password
        self._token: str | None = None
        self._ssl: ssl.SSLContext | None = None
        if any(e.tls for e in self.endpoints):
            context = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                context.load_cert_chain(cert_file, key_file)
            self._ssl = context
        self._local = threading.local()
        self._preferred = 0
        self._lock = threading.Lock()

    # --- plumbing ---

    def _connection(self, endpoint: Endpoint, timeout: float) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        conn = pool.get(endpoint.url)
        if conn is None:
            if endpoint.tls:
                conn = http.client.HTTPSConnection(
                    endpoint.host, endpoint.port, timeout=timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
            pool[endpoint.url] = conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _drop(self, endpoint: Endpoint) -> None:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.get("pool", {})
        conn = pool.pop(endpoint.url, None)
        if conn is not None:
            conn.close()

    def _post_one(
        self, endpoint: Endpoint, path: str, body: Mapping[str, Any], auth: bool
    ) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if auth and self._token is not None:
            headers["Authorization"] = self._token
        conn = self._connection(endpoint, self.timeout)
        try:
            conn.request("POST", path, body=json.dumps(body), headers=headers)
            response = conn.getresponse()
            data = response.read()
        except ssl.SSLError as exc:
            self._drop(endpoint)
            raise EtcdError(
                f"{endpoint.url}: TLS failed ({exc.reason or exc}): check state.etcd.ca_file, "
                "cert_file and key"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop(endpoint)
            raise EtcdUnavailable(f"{endpoint.url}: {exc or type(exc).__name__}") from None
        try:
            answer: dict[str, Any] = json.loads(data or b"{}")
        except ValueError:
            raise EtcdError(
                f"{endpoint.url}{path}: not a JSON answer ({response.status})"
            ) from None
        if response.status != 200 or "error" in answer:
            message = str(answer.get("error") or answer.get("message") or response.status)
            if any(m in message for m in _UNAVAILABLE_MESSAGES) or response.status >= 502:
                raise EtcdUnavailable(f"{endpoint.url}: {message}")
            raise EtcdError(f"{endpoint.url}{path}: {message}")
        return answer

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST to the preferred member, moving on to the others when it cannot serve."""
        failures: list[str] = []
        count = len(self.endpoints)
        start = self._preferred
        for i in range(count):
            index = (start + i) % count
            endpoint = self.endpoints[index]
            try:
                if self._user is not None and self._token is None:
                    self._authenticate(endpoint)
                try:
                    answer = self._post_one(endpoint, path, body, auth=True)
                except EtcdError as exc:
                    if self._user is None or not any(m in str(exc) for m in _TOKEN_MESSAGES):
                        raise
                    self._authenticate(endpoint)  # the token expired: once more with a new one
                    answer = self._post_one(endpoint, path, body, auth=True)
            except EtcdUnavailable as exc:
                failures.append(str(exc))
                continue
            self._preferred = index
            return answer
        raise EtcdUnavailable("no etcd member could serve the request: " + "; ".join(failures))

    def _authenticate(self, endpoint: Endpoint) -> None:
        answer = self._post_one(
            endpoint,
            "/v3/auth/authenticate",
            {"name": self._user, "password": self._password},
            auth=False,
        )
        token = answer.get("token")
        if not token:
            raise EtcdError(f"{endpoint.url}: etcd gave no auth token for user {self._user}")
        self._token = str(token)

    def close(self) -> None:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.get("pool", {})
        for conn in pool.values():
            conn.close()
        pool.clear()

    # --- KV ---

    def range(
        self,
        key: str,
        range_end: str | None = None,
        *,
        limit: int = 0,
        serializable: bool = False,
        count_only: bool = False,
        keys_only: bool = False,
        sort_target: str | None = None,
        sort_order: str | None = None,
        min_create_revision: int = 0,
    ) -> RangeResult:
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        if limit:
            body["limit"] = str(limit)
        if serializable:
            body["serializable"] = True
        if count_only:
            body["count_only"] = True
        if keys_only:
            body["keys_only"] = True
        if sort_target:
            body["sort_target"] = sort_target
            body["sort_order"] = sort_order or "ASCEND"
        if min_create_revision:
            body["min_create_revision"] = str(min_create_revision)
        answer = self._post("/v3/kv/range", body)
        return RangeResult(
            kvs=[_kv(kv) for kv in answer.get("kvs", [])],
            count=int(answer.get("count", 0)),
            revision=int(answer.get("header", {}).get("revision", 0)),
        )

    def get(self, key: str, *, serializable: bool = False) -> KeyValue | None:
        kvs = self.range(key, serializable=serializable).kvs
        return kvs[0] if kvs else None

    def put(self, key: str, value: str, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        answer = self._post("/v3/kv/put", body)
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: str, range_end: str | None = None) -> int:
        body = {"key": _b64(key)}
        if range_end is not None:
            body["range_end"] = _b64(range_end)
        answer = self._post("/v3/kv/deleterange", body)
        return int(answer.get("deleted", 0))

    def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> TxnResult:
        answer = self._post(
            "/v3/kv/txn",
            {"compare": list(compare), "success": list(success), "failure": list(failure)},
        )
        return TxnResult(
            succeeded=bool(answer.get("succeeded", False)),
            revision=int(answer.get("header", {}).get("revision", 0)),
            responses=list(answer.get("responses", [])),
        )

    # --- leases ---

    def lease_grant(self, ttl: int) -> int:
        answer = self._post("/v3/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    def lease_keepalive(self, lease: int) -> int:
        """Renew ``lease``; its remaining TTL (0 or less: it has expired)."""
        answer = self._post("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def lease_revoke(self, lease: int) -> None:
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "requested lease not found" not in str(exc):
                raise

    # --- cluster ---

    def member_status(self) -> list[tuple[str, dict[str, Any] | str]]:
        """Each endpoint's ``/v3/maintenance/status`` answer, or why it gave none."""
        found: list[tuple[str, dict[str, Any] | str]] = []
        for endpoint in self.endpoints:
            try:
                found.append(
                    (endpoint.url, self._post_one(endpoint, "/v3/maintenance/status", {}, False))
                )
            except EtcdError as exc:
                found.append((endpoint.url, str(exc)))
        return found

    # --- watch ---

    def watch(
        self,
        key: str,
        range_end: str | None,
        start_revision: int,
        *,
        idle: float = 30.0,
        until: float | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes to ``key`` (to ``range_end``) from ``start_revision`` on, as they happen.
        Ends quietly at ``until`` (a ``time.monotonic()`` deadline), and raising
        ``EtcdUnavailable`` when the stream breaks; the caller resumes from the revision
        after the last event it saw."""
        request: dict[str, Any] = {"key": _b64(key), "start_revision": str(start_revision)}
        if range_end is not None:
            request["range_end"] = _b64(range_end)
        endpoint = self.endpoints[self._preferred]
        if self._user is not None and self._token is None:
            self._authenticate(endpoint)
        if endpoint.tls:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                endpoint.host, endpoint.port, timeout=idle, context=self._ssl
            )
        else:
            conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=idle)
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = self._token
        try:
            conn.request(
                "POST", "/v3/watch", body=json.dumps({"create_request": request}), headers=headers
            )
            response = conn.getresponse()
            decoder = json.JSONDecoder()
            buffer = ""
            while True:
                if until is not None:
                    left = until - time.monotonic()
                    if left <= 0:
                        return
                    if conn.sock is not None:
                        conn.sock.settimeout(min(idle, left))
                try:
                    chunk = response.read1(65536)
                except TimeoutError:
                    continue  # idle: no change yet
                if not chunk:
                    raise EtcdUnavailable(f"{endpoint.url}: the watch stream ended")
                buffer += chunk.decode()
                while True:
                    buffer = buffer.lstrip()
                    if not buffer:
                        break
                    try:
                        message, end = decoder.raw_decode(buffer)
                    except ValueError:
                        break
                    buffer = buffer[end:]
                    result = message.get("result", message)
                    if "error" in message:
                        raise EtcdUnavailable(f"{endpoint.url}: {message['error']}")
                    for event in result.get("events", []):
                        yield WatchEvent(event.get("type", "PUT"), _kv(event.get("kv", {})))
        except (OSError, http.client.HTTPException) as exc:
            raise EtcdUnavailable(f"{endpoint.url}: watch: {exc}") from None
        finally:
            conn.close()
