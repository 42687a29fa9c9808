"""Reading kolla-build's output, summary and per-image logs. Pure: text in, facts out.

kolla-build logs through Python's logging with the basic format: ``LEVEL:logger:message``,
one logger per image (``kolla.common.utils.<image>``); its JSON summary lists the images
built, failed (with a status), skipped (already there: ``skip_existing``) and unbuildable.
A failed image's own log holds the Docker build output (``Step N/M : INSTRUCTION`` lines).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

_LINE = re.compile(r"^(INFO|ERROR|WARNING|DEBUG|CRITICAL):kolla\.common\.utils\.([\w.-]+):(.*)$")
_TOOK = re.compile(r"\(took ([\d:.]+)\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STEP = re.compile(r"^(?:INFO|ERROR):[\w.-]+:(?:Step \d+/\d+ : |#\d+ \[[^\]]*\] )(.*)$")


@dataclass(frozen=True)
class Event:
    image: str
    kind: str  # started | built | skipped | error | output
    text: str


def event(line: str) -> Event | None:
    """The per-image event a console line reports, if any."""
    match = _LINE.match(line.rstrip())
    if not match:
        return None
    level, image, text = match.groups()
    if text.startswith("Building started at"):
        return Event(image, "started", text)
    if text.startswith("Built at"):
        took = _TOOK.search(text)
        return Event(image, "built", took.group(1) if took else "")
    if text.startswith("Skipping"):
        return Event(image, "skipped", text)
    if level in ("ERROR", "CRITICAL"):
        return Event(image, "error", text)
    return Event(image, "output", text)


def seconds(took: str) -> float | None:
    """``0:01:02.345`` (kolla's timedelta) as seconds."""
    parts = took.split(":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])
    except ValueError:
        return None


@dataclass(frozen=True)
class Summary:
    built: tuple[str, ...]
    failed: dict[str, str]  # image -> kolla's status (error, parent_error, ...)
    skipped: tuple[str, ...]
    unbuildable: tuple[str, ...]
    not_matched: tuple[str, ...] = ()

    def knows(self, name: str) -> bool:
        """Whether kolla has an image of that name at all."""
        return any(
            name in group
            for group in (self.built, self.failed, self.skipped, self.unbuildable, self.not_matched)
        )


def summary(text: str) -> Summary:
    data = json.loads(text)
    return Summary(
        built=tuple(i["name"] for i in data.get("built", [])),
        failed={i["name"]: str(i.get("status", "error")) for i in data.get("failed", [])},
        skipped=tuple(i["name"] for i in data.get("skipped", [])),
        unbuildable=tuple(i["name"] for i in data.get("unbuildable", [])),
        not_matched=tuple(i["name"] for i in data.get("not_matched", [])),
    )


def failed_step(log_lines: Iterable[str]) -> tuple[str, list[str]]:
    """The Dockerfile step an image failed at, and the last error lines of its log."""
    step = ""
    after: list[str] = []
    errors: list[str] = []
    for raw in log_lines:
        line = _ANSI.sub("", raw).rstrip()
        match = _STEP.match(line)
        if match:
            step, after = match.group(1), []
            continue
        text = line.split(":", 2)[2] if line.count(":") >= 2 else line
        after.append(text)
        if line.startswith(("ERROR:", "CRITICAL:")):
            errors.append(text)
    useful = [t for t in errors if t.strip() and not t.startswith("Traceback")]
    tail = useful[-8:] if useful else [t for t in after if t.strip()][-8:]
    return step, tail
