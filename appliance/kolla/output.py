"""Reading kolla-ansible's (Ansible's) output. Pure: lines in, findings out.

Ansible's default output reports a failed task as::

    TASK [prechecks : Checking the api_interface is present] ****
    fatal: [node1]: FAILED! => {"changed": false, "msg": "..."}

``failures`` collects those (host, task, message) so kpc can show kolla's own words at the
end of a long run; ``pull_failure`` recognises an image that could not be pulled and names
the image and the registry.
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

TASK_RE = re.compile(r"^(TASK|RUNNING HANDLER) \[(?P<task>.*)\] \**\s*$")
FAIL_RE = re.compile(
    r"^(fatal|failed): \[(?P<host>[^\]]+)\](?: \(item=(?P<item>.*?)\))?:? "
    r"(?:(?P<kind>FAILED|UNREACHABLE)! )?=> (?P<body>.*)$"
)
IGNORING = "...ignoring"
# The Docker API call in a failed pull: .../images/create?tag=T&fromImage=REGISTRY%2FNAME
CREATE_RE = re.compile(r"/images/create\?(?P<query>[^\s:\"']+)")
# registry[:port]/path/name:tag -- the registry part must look like a host (has . or :).
IMAGE_RE = re.compile(
    r"(?P<image>(?P<registry>[a-z0-9-]+(?:\.[a-z0-9-]+)+(?::\d+)?|[a-z0-9-]+:\d+)"
    r"/[a-z0-9._-]+(?:/[a-z0-9._-]+)*:[A-Za-z0-9._-]+)"
)
PULL_HINTS = (
    "requested image does not exist",
    "manifest unknown",
    "manifest for",
    "pull access denied",
    "images/create",
    "error pulling image",
    "failed to pull",
    "/v2/",
)
REASONS = (
    ("manifest unknown", "the registry does not have this image (manifest unknown)"),
    ("not found", "the registry does not have this image"),
    ("does not exist", "the registry does not have this image"),
    ("connection refused", "nothing answers at the registry address (connection refused)"),
    ("no such host", "the registry's name does not resolve"),
    ("i/o timeout", "the registry did not answer (timeout)"),
    ("timeout", "the registry did not answer (timeout)"),
    (
        "server gave http response to https client",
        "the registry speaks HTTP but Docker wants HTTPS",
    ),
    ("x509", "the registry's TLS certificate is not trusted"),
    ("unauthorized", "the registry refused the credentials (unauthorized)"),
    ("denied", "the registry refused access"),
)


@dataclass(frozen=True)
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass(frozen=True)
class PullFailure:
    host: str
    image: str
    registry: str
    reason: str


def _message(body: str) -> str:
    """The human part of a failed task's result: msg, else stderr/stdout, else the body."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return body.strip()
    if not isinstance(data, dict):
        return body.strip()
    parts: list[str] = []
    msg = data.get("msg")
    if isinstance(msg, list):
        parts.extend(str(m) for m in msg)
    elif msg:
        text = str(msg)
        if text.startswith(("'Traceback", '"Traceback')):
            # kolla's container module reports repr(traceback): keep its last line.
            with contextlib.suppress(ValueError, SyntaxError):
                text = str(ast.literal_eval(text))
            text = text.strip().splitlines()[-1]
        parts.append(text)
    for key in ("stderr", "module_stderr", "stdout"):
        value = data.get(key)
        if value and (not parts or "non-zero return code" in parts[0] or key == "module_stderr"):
            parts.append(str(value).strip())
    if data.get("assertion") and not parts:
        parts.append(f"assertion failed: {data['assertion']}")
    return "\n".join(parts) if parts else body.strip()


def failures(lines: Iterable[str]) -> list[Failure]:
    """Every failed or unreachable task in the output, in order (ignored failures skipped)."""
    found: list[Failure] = []
    task = ""
    pending: Failure | None = None
    for line in lines:
        if pending is not None:
            if line.strip() != IGNORING:
                found.append(pending)
            pending = None
        match = TASK_RE.match(line)
        if match:
            task = match.group("task")
            continue
        match = FAIL_RE.match(line)
        if match:
            pending = Failure(
                host=match.group("host"),
                task=task,
                message=_message(match.group("body")),
                unreachable=match.group("kind") == "UNREACHABLE",
            )
    if pending is not None:
        found.append(pending)
    return found


def _reason(text: str) -> str:
    lowered = text.lower()
    for needle, reason in REASONS:
        if needle in lowered:
            return reason
    return text.strip().splitlines()[-1] if text.strip() else "unknown error"


def _pull_reference(text: str, registries: tuple[str, ...]) -> tuple[str, str] | None:
    """(image, registry) named in a pull error: Docker's API URL, else any image reference."""
    query = CREATE_RE.search(text)
    if query:
        params = parse_qs(query.group("query"))
        name = (params.get("fromImage") or [""])[0].rstrip(":")
        tag = (params.get("tag") or [""])[0]
        first = name.split("/", 1)[0]
        if name and ("." in first or ":" in first or first == "localhost"):
            return (f"{name}:{tag}" if tag else name), first
    images = list(IMAGE_RE.finditer(text))
    if not images:
        return None
    chosen = next((m for m in images if m.group("registry") in registries), images[0])
    return chosen.group("image"), chosen.group("registry")


def pull_failure(failure: Failure, registries: Iterable[str] = ()) -> PullFailure | None:
    """If ``failure`` is an image pull that failed, which image from which registry, and why."""
    text = failure.message
    lowered = text.lower()
    if "pull" not in failure.task.lower() and not any(h in lowered for h in PULL_HINTS):
        return None
    found = _pull_reference(text, tuple(registries))
    if found is None:
        return None
    image, registry = found
    return PullFailure(failure.host, image, registry, _reason(text))
