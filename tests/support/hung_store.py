"""A TCP endpoint in front of the S3 server that can hang: it accepts connections and never answers.

Why a socket server: a store that accepts connections and then says nothing is the failure that
timeouts on connecting do not catch; nothing at the HTTP level can fake it as faithfully. While
``hung`` it holds every connection open in silence; ``forward()`` makes later connections reach
the real S3 server byte for byte, as a store that has recovered.
"""

from __future__ import annotations

import socket
import threading


class HungStore:
    """127.0.0.1:<port> that hangs, or forwards to ``upstream`` (``host:port``) once told to."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.hung = True
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def forward(self) -> None:
        """Connections from now on reach the S3 server (the held ones stay silent)."""
        self.hung = False

    def stop(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            self.accepted += 1
            if self.hung:
                self._held.append(conn)  # never read, never answered
                continue
            upstream = socket.create_connection(self.upstream)
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
