"""A small client for the Docker registry HTTP API v2 (the distribution spec), on urllib.

Enough to copy images between registries without a Docker engine: manifests (GET/HEAD/PUT),
blobs (HEAD, streamed GET, monolithic upload), the catalog and tag lists. Authentication:
anonymous or basic-credential bearer tokens (quay.io, Docker Hub) and plain basic auth.
Errors are ``RegistryError`` naming the registry, the call and the registry's own message;
credentials never appear in them.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPResponse
from ipaddress import ip_address
from typing import Any, Protocol

from appliance.errors import KpcError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[1::2])
DIGEST_HEADER = "Docker-Content-Digest"
CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')
CHUNK = 1 << 20
TIMEOUT = 60.0


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class RegistryError(KpcError):
    """A registry refused or failed a request."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None):
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> Any:
        return json.loads(self.body)


def registry_url(registry: str) -> str:
    """``host[:port]`` (or a URL) to a base URL: https, except http for loopback hosts."""
    if registry.startswith(("http://", "https://")):
        return registry.rstrip("/")
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    try:
        loopback = host == "localhost" or ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    return f"{'http' if loopback else 'https'}://{registry}"


class Registry:
    """One registry. ``user``/``password`` are used only when the registry asks for them."""

    def __init__(
        self,
        registry: str,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.name = registry
        self.base = registry_url(registry)
        self._user = user
        self._password = password
        self._timeout = timeout
        self._tokens: dict[str, str] = {}  # scope -> Authorization header value
        self._opener = urllib.request.build_opener()

    # --- plumbing --------------------------------------------------------------------

    def _basic(self) -> str | None:
        if self._user is None or self._password is None:
            return None
        raw = f"{self._user}:{self._password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authorize(self, challenge: str, scope: str) -> str | None:
        """The Authorization value answering a WWW-Authenticate challenge, or None."""
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            return self._basic()
        if scheme.lower() != "bearer":
            return None
        fields = dict(CHALLENGE_RE.findall(params))
        realm = fields.pop("realm", None)
        if not realm:
            return None
        fields.setdefault("scope", scope)
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(fields)}")
        basic = self._basic()
        if basic:
            request.add_unredirected_header("Authorization", basic)
        try:
            with self._opener.open(request, timeout=self._timeout) as reply:
                data = json.loads(reply.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(
                f"registry {self.name}: cannot get an access token from {realm}: {_why(exc)}"
            ) from None
        token = data.get("token") or data.get("access_token")
        return f"Bearer {token}" if token else None

    def _open(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        headers: Mapping[str, str] | None = None,
        data: bytes | Readable | None = None,
        ok: tuple[int, ...] = (200,),
        absolute: bool = False,
    ) -> HTTPResponse:
        url = path if absolute else f"{self.base}{path}"
        for attempt in (1, 2):
            request = urllib.request.Request(url, data=data, method=method)
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            auth = self._tokens.get(scope)
            if auth:
                # Not sent on to a redirect (blob downloads go to a CDN that refuses it).
                request.add_unredirected_header("Authorization", auth)
            try:
                reply: HTTPResponse = self._opener.open(request, timeout=self._timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1 and not hasattr(data, "read"):
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    exc.close()
                    answer = self._authorize(challenge, scope)
                    if answer:
                        self._tokens[scope] = answer
                        continue
                    raise RegistryError(
                        f"registry {self.name} wants credentials for {method} {path}",
                        hint="set registry.user and registry.password in the site config",
                        status=401,
                    ) from None
                if exc.code in ok:
                    return exc  # type: ignore[return-value]  # e.g. HEAD 404 wanted
                raise self._error(method, path, exc) from None
            except (urllib.error.URLError, OSError) as exc:
                where = self.name if self.name == self.base else f"{self.name} ({self.base})"
                raise RegistryError(
                    f"registry {where} cannot be reached: {_why(exc)}",
                    hint="check the registry's address and that it is running",
                ) from None
            if reply.status not in ok:
                reply.close()
                raise RegistryError(
                    f"registry {self.name}: {method} {path} answered {reply.status}",
                    status=reply.status,
                )
            return reply
        raise AssertionError("unreachable")

    def _error(self, method: str, path: str, exc: urllib.error.HTTPError) -> RegistryError:
        detail = ""
        try:
            data = json.loads(exc.read() or b"{}")
            errors = data.get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError, OSError):
            pass
        finally:
            exc.close()
        return RegistryError(
            f"registry {self.name}: {method} {path} failed with {exc.code}"
            + (f" ({detail})" if detail else ""),
            status=exc.code,
        )

    # --- the API -----------------------------------------------------------------------

    def ping(self) -> None:
        """Raise RegistryError unless the registry answers /v2/ (401 counts as an answer)."""
        with self._open("GET", "/v2/", ok=(200, 401)):
            pass

    def manifest(self, repo: str, reference: str) -> Manifest:
        path = f"/v2/{repo}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        with self._open("GET", path, scope=_pull(repo), headers=headers) as reply:
            body = reply.read()
            media = reply.headers.get("Content-Type", "").split(";")[0].strip()
            digest = reply.headers.get(DIGEST_HEADER, "")
        if not media or media == "application/json":
            media = str(json.loads(body).get("mediaType", MANIFEST_TYPES[0]))
        return Manifest(body, media, digest)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """The digest the registry has under ``reference``, or None if it has none."""
        path = f"/v2/{repo}/manifests/{reference}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        with self._open("HEAD", path, scope=_push(repo), headers=headers, ok=(200, 404)) as reply:
            if reply.status == 404:
                return None
            return reply.headers.get(DIGEST_HEADER) or None

    def has_blob(self, repo: str, digest: str) -> bool:
        path = f"/v2/{repo}/blobs/{digest}"
        with self._open("HEAD", path, scope=_push(repo), ok=(200, 404)) as reply:
            return reply.status == 200

    def copy_blob_to(
        self,
        target: Registry,
        repo: str,
        digest: str,
        size: int,
        target_repo: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        """Stream one blob from here into ``target`` (monolithic upload, verified there)."""
        with self._open("GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo)) as source:
            length = int(source.headers.get("Content-Length") or size)
            target.upload_blob(target_repo, digest, _Counting(source, on_bytes), length)

    def upload_blob(self, repo: str, digest: str, stream: Readable, length: int) -> None:
        with self._open(
            "POST", f"/v2/{repo}/blobs/uploads/", scope=_push(repo), data=b"", ok=(202,)
        ) as started:
            location = started.headers.get("Location", "")
        if not location:
            raise RegistryError(f"registry {self.name} gave no upload location for {repo}")
        url = urllib.parse.urljoin(self.base + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        with self._open(
            "PUT", url, scope=_push(repo), headers=headers, data=stream, ok=(201,), absolute=True
        ):
            pass

    def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> None:
        headers = {"Content-Type": manifest.media_type}
        path = f"/v2/{repo}/manifests/{reference}"
        with self._open(
            "PUT", path, scope=_push(repo), headers=headers, data=manifest.body, ok=(201,)
        ):
            pass

    def repositories(self) -> list[str]:
        """Every repository in the catalog (following the pagination links)."""
        names: list[str] = []
        path: str | None = "/v2/_catalog?n=1000"
        while path:
            with self._open("GET", path, scope="registry:catalog:*") as reply:
                names.extend(json.loads(reply.read()).get("repositories") or [])
                link = reply.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            path = match.group(1) if match else None
        return names

    def tags(self, repo: str) -> list[str]:
        with self._open("GET", f"/v2/{repo}/tags/list", scope=_pull(repo), ok=(200, 404)) as r:
            if r.status == 404:
                return []
            return sorted(json.loads(r.read()).get("tags") or [])


class _Counting:
    """A read-only stream that reports how many bytes went through."""

    def __init__(self, inner: Readable, on_bytes: Callable[[int], None]) -> None:
        self._inner = inner
        self._on_bytes = on_bytes

    def read(self, size: int = CHUNK) -> bytes:
        data = self._inner.read(size if size and size > 0 else CHUNK)
        if data:
            self._on_bytes(len(data))
        return data


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)
