"""A TCP proxy whose connections can be cut, to make a database 'restart' under a running daemon."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `outage()` refuses new connections and, given a way to end the
    server side of the open ones (for PostgreSQL: pg_terminate_backend), ends those too, as a restart does."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def drop_all(self) -> None:
        """Cut every open connection, as a server restart does."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def upstream_ports(self) -> list[int]:
        """Local ports of the proxy's open connections to the target (the server sees them as client ports)."""
        with self._lock:
            ports = []
            for s in self._open:
                try:
                    if s.getpeername()[1] == self.target[1]:
                        ports.append(s.getsockname()[1])
                except OSError:
                    continue
            return ports

    def outage(self, refuse: bool, end_server_side: Callable[[list[int]], None] | None = None) -> None:
        """Start (True) or end (False) an outage: while it lasts, new connections are refused; at its start the
        open ones are ended by the server (`end_server_side`) or, without it, cut at the proxy."""
        if not refuse:
            self._refusing.clear()
            return
        self._refusing.set()
        if end_server_side is None:
            self.drop_all()
        else:
            end_server_side(self.upstream_ports())

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self.drop_all()
