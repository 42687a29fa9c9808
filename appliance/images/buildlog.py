"""Reading BuildKit's plain progress output. Pure: lines in, facts out.

BuildKit prints every vertex as ``#N <text>``: its title first (``#5 [2/3] RUN ...``), then
``#N 0.337 <output>`` lines, then ``#N DONE 0.3s``, ``#N CACHED`` or ``#N ERROR: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_VERTEX = re.compile(r"^#(\d+) (.*)$")
_TIMESTAMPED = re.compile(r"^\d+\.\d+ (.*)$")
_TITLE = re.compile(r"^\[(?!internal\])[^\]]*\] ")


@dataclass
class Step:
    number: int
    title: str = ""
    output: list[str] = field(default_factory=list)
    cached: bool = False
    done: bool = False
    error: str | None = None

    @property
    def is_dockerfile_step(self) -> bool:
        """A ``[i/n] INSTRUCTION`` vertex (not an internal one such as loading the context)."""
        return bool(_TITLE.match(self.title))


def parse(lines: Iterable[str]) -> list[Step]:
    """The vertices in the order they first appear."""
    steps: dict[int, Step] = {}
    for raw in lines:
        match = _VERTEX.match(raw.rstrip())
        if not match:
            continue
        number, text = int(match.group(1)), match.group(2)
        step = steps.setdefault(number, Step(number))
        if not step.title:
            step.title = text
        elif text == "CACHED":
            step.cached = True
        elif text.startswith("DONE"):
            step.done = True
        elif text.startswith("ERROR"):
            step.error = text.removeprefix("ERROR:").removeprefix("ERROR").strip()
        elif text.startswith("sha256:"):
            continue
        else:
            timed = _TIMESTAMPED.match(text)
            step.output.append(timed.group(1) if timed else text)
    return list(steps.values())


def step_progress(line: str) -> str | None:
    """The step title when ``line`` is a Dockerfile step's header (BuildKit may repeat it)."""
    match = _VERTEX.match(line.rstrip())
    if match and _TITLE.match(match.group(2)):
        return match.group(2)
    return None


def failure_report(lines: list[str], tail: int = 25) -> str:
    """What went wrong: the failing step's title, its last output lines and the error."""
    failed = [step for step in parse(lines) if step.error is not None]
    if failed:
        step = failed[-1]
        out = step.output[-tail:]
        body = "\n".join(f"  | {line}" for line in out)
        text = f"failing step: {step.title}"
        if body:
            text += f"\n{body}"
        return f"{text}\n  {step.error}"
    meaningful = [line for line in lines if line.strip() and not line.startswith("#")]
    return "\n".join(meaningful[-tail:]) or "\n".join(lines[-tail:])


def cache_summary(lines: list[str]) -> tuple[int, int]:
    """(Dockerfile steps that build something, of which cached); FROM is not counted."""
    steps = [
        step for step in parse(lines) if step.is_dockerfile_step and "] FROM " not in step.title
    ]
    return len(steps), sum(1 for step in steps if step.cached)
