"""What the benchmark scripts share: a free loopback port, waiting for an HTTP service to
answer, and stopping the processes a benchmark started."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> bytes:
    """The body of ``url`` once it answers (raises the last error after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bytes(resp.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def stop(
    procs: Sequence[subprocess.Popen[Any]],
    how: Callable[[subprocess.Popen[Any]], int] = lambda proc: signal.SIGTERM,
    grace: float = 20.0,
) -> None:
    """Signal every process (``how`` picks the signal: nginx quits on SIGQUIT), wait up
    to ``grace`` seconds for each, then kill what is left."""
    for proc in procs:
        proc.send_signal(how(proc))
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
