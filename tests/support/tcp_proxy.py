"""A TCP proxy on 127.0.0.1 for tests that need a connection to misbehave between a client and a real server.

``freeze()`` stops forwarding on every connection open at that moment, in both directions, and keeps them open:
a half-open connection (a NAT entry or a load balancer that dropped it) as the client sees it. Connections opened
later are forwarded as usual. ``hold()`` stops forwarding the server's bytes on every connection, old and new,
until ``release()``: a server that is slow to answer. TLS passes through untouched (the server's certificate names
127.0.0.1).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType


class TcpProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[:2]
        self._stop = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self.accepted = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://{self.address[0]}:{self.address[1]}"

    def freeze(self) -> int:
        """Stop forwarding on every connection open now (both ways, sockets kept open); returns how many."""
        with self._lock:
            for connection in self._connections:
                connection.frozen.set()
            return len(self._connections)

    def hold(self) -> None:
        """Forward nothing from the server until ``release``."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._stop.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for connection in self._connections:
                connection.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            connection = _Connection(client, server)
            with self._lock:
                self._connections.append(connection)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(connection, client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(connection, server, client, True), daemon=True).start()

    def _pump(self, connection: _Connection, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while not self._stop.is_set() and not connection.closed.is_set():
                if connection.frozen.is_set() or (from_server and not self._released.is_set()):
                    self._stop.wait(0.05)
                    continue
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if connection.frozen.is_set():
                    continue  # frozen while reading: this chunk is lost, as on a dead path
                sink.sendall(data)
        except OSError:
            pass
        if not connection.frozen.is_set():
            connection.close()


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.frozen = threading.Event()
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.close()
