"""The one choke point for running external programs.

argv is always a list (never a shell string). Secrets are passed through ``env`` or ``stdin``,
never argv, so the argv that is logged and put into errors is safe to show.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from appliance.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True)
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def which(tool: str, package: str | None = None) -> str:
    """Absolute path of ``tool`` or ToolMissing naming the Debian package to install."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissing(tool, package or tool)
    return found


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    hint: str | None = None,
) -> Result:
    """Run argv to completion and capture its output."""
    args = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ToolMissing(args[0]) from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        raise CommandFailed(args, -1, f"timed out after {timeout}s\n{out}", hint) from None
    result = Result(args, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, proc.stderr or proc.stdout, hint)
    return result


def run_to_file(
    argv: Sequence[str],
    output: Path,
    *,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    hint: str | None = None,
) -> None:
    """Run argv with its standard output written to ``output`` (binary, never in memory);
    CommandFailed with its standard error when it fails (``output`` is then removed)."""
    args = [str(a) for a in argv]
    log.debug("run: %s > %s", shlex.join(args), output)
    try:
        with output.open("wb") as out:
            proc = subprocess.run(
                args, input=stdin, stdout=out, stderr=subprocess.PIPE, cwd=cwd, check=False
            )
    except FileNotFoundError:
        output.unlink(missing_ok=True)
        raise ToolMissing(args[0]) from None
    if proc.returncode != 0:
        output.unlink(missing_ok=True)
        raise CommandFailed(args, proc.returncode, proc.stderr.decode(errors="replace"), hint)


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    hint: str | None = None,
) -> int:
    """Run argv, passing each output line (stdout and stderr merged) to ``on_line``.

    Returns the exit code; raises CommandFailed on non-zero when ``check``. The child is
    waited for even when ``on_line`` raises or the caller is interrupted.
    """
    args = [str(a) for a in argv]
    log.debug("stream: %s", shlex.join(args))
    tail: list[str] = []
    try:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except FileNotFoundError:
        raise ToolMissing(args[0]) from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-19:], line]
            on_line(line)
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if check and code != 0:
        raise CommandFailed(args, code, "\n".join(tail), hint)
    return code


def feed(argv: Sequence[str], source: IO[bytes], *, hint: str | None = None) -> Result:
    """Run argv with ``source`` streamed to its standard input (never held in memory).

    Output goes to a scratch file while the input is written (no pipe can fill up and stall
    the child); CommandFailed with that output when argv exits non-zero.
    """
    args = [str(a) for a in argv]
    log.debug("feed: %s < stream", shlex.join(args))
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=output, stderr=output)
        except FileNotFoundError:
            raise ToolMissing(args[0]) from None
        assert proc.stdin is not None
        try:
            shutil.copyfileobj(source, proc.stdin, CHUNK)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child stopped reading: its exit code and output say why
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        output.seek(0)
        text = output.read().decode(errors="replace")
    if code != 0:
        raise CommandFailed(args, code, text, hint)
    return Result(args, code, text, "")
