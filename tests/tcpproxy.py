"""A loopback TCP proxy that can cut its connections: a network outage between liuhen and a
real server (PostgreSQL) without stopping the server, which other tests share; in front of
several servers, a load balancer that hands each connection to the next."""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator


class CuttableProxy:
    """Each new connection goes to the next of ``targets`` in turn (a round-robin load
    balancer when there are several)."""

    def __init__(self, *targets: tuple[str, int]) -> None:
        self.targets = itertools.cycle(targets)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                refused = self._cut or self._closed
            if refused:
                client.close()  # the other end is unreachable for now
                continue
            try:
                upstream = socket.create_connection(next(self.targets), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open -= set(socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Every connection through the proxy drops; new ones are closed at once."""
        with self._lock:
            self._cut = True
            live = list(self._open)
        self._drop(*live)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._listener.close()
        self.cut()


@contextlib.contextmanager
def cuttable(*targets: tuple[str, int]) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(*targets)
    try:
        yield proxy
    finally:
        proxy.close()
