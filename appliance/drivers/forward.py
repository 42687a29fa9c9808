"""A loopback TCP port forwarded to another address, for as long as a ``with`` block runs.

The Docker engine talks plain HTTP only to registries on loopback (anything else needs the
engine's ``insecure-registries`` setting): kpc pushes to the deploy host's registry, which
may listen only on the provisioning address, through ``127.0.0.1:<port>`` forwarded there.
A registry stores images by repository path, not by host name, so the nodes pull the same
images from the registry's own address.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

CHUNK = 1 << 16


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _serve(listener: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


@contextlib.contextmanager
def loopback_forward(host: str, port: int) -> Iterator[int]:
    """Forward a free port on 127.0.0.1 to ``host:port``; yields the local port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, (host, port), stop), daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
