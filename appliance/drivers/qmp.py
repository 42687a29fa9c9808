"""A small client for the QEMU Machine Protocol (QMP) over a unix socket.

One JSON object per line (https://qemu.org/docs/master/interop/qmp-spec.html): the server
greets, the client sends ``qmp_capabilities``, then commands; each command gets a
``return`` or an ``error``, and asynchronous ``event`` messages may arrive in between
(kept, so ``wait_event`` can find an event that came before it was called).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from appliance.errors import KpcError


class QmpError(KpcError):
    """QEMU's monitor is unreachable, or it refused a command."""


class QmpTimeout(QmpError):
    """No event of the kind waited for came in time (the monitor is still there)."""


class Qmp:
    """A connected QMP session. Use as a context manager, or call ``close``."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
            greeting = self._read_message()
            if "QMP" not in greeting:
                raise QmpError(f"{path}: not a QMP socket (greeting {greeting!r:.100})")
            self.execute("qmp_capabilities")
        except OSError as exc:
            self._sock.close()
            raise QmpError(f"cannot talk to QEMU at {path}: {exc}") from None
        except QmpError:
            self._sock.close()
            raise

    @classmethod
    def connect(
        cls,
        path: Path,
        timeout: float = 5.0,
        retry_for: float = 0.0,
        alive: Callable[[], bool] | None = None,
    ) -> Qmp:
        """Connect, retrying for ``retry_for`` seconds while the socket is not there yet, and
        only while ``alive()`` says QEMU still runs (a monitor that went away with its
        process never comes back)."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return cls(path, timeout)
            except QmpError:
                if time.monotonic() >= deadline or (alive is not None and not alive()):
                    raise
                time.sleep(0.05)

    def __enter__(self) -> Qmp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _read_message(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise QmpError(f"QEMU closed its monitor socket {self.path}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise QmpError(f"{self.path}: not JSON from QEMU: {line[:100]!r}") from None
        if not isinstance(message, dict):
            raise QmpError(f"{self.path}: unexpected message from QEMU: {line[:100]!r}")
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command; its ``return`` value, or QmpError with QEMU's description."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
            while True:
                message = self._read_message()
                if "event" in message:
                    self.events.append(message)
                    continue
                break
        except OSError as exc:
            raise QmpError(f"QEMU at {self.path} did not answer {command}: {exc}") from None
        if "error" in message:
            error = message["error"]
            desc = error.get("desc", error) if isinstance(error, dict) else error
            raise QmpError(f"QEMU refused {command}: {desc}")
        return message.get("return")

    def wait_event(
        self,
        name: str,
        timeout: float,
        match: Callable[[dict[str, Any]], bool] = lambda _event: True,
    ) -> dict[str, Any]:
        """The first event called ``name`` (and accepted by ``match``), already received or
        arriving within ``timeout``; QmpTimeout when none comes, QmpError when QEMU closes
        the monitor first (after every message it sent before closing has been read)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if event.get("event") == name and match(event):
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeout(f"QEMU at {self.path} sent no {name} event within {timeout}s")
            self._sock.settimeout(remaining)
            try:
                message = self._read_message()
            except TimeoutError:
                continue
            except OSError as exc:
                raise QmpError(f"QEMU at {self.path} went away: {exc}") from None
            finally:
                self._sock.settimeout(self.timeout)
            if "event" in message:
                self.events.append(message)
