"""A minimal HTTP/1.1 client over one keep-alive socket.

wrk measures whole responses; two cells need more than that. A streamed
completion needs the arrival time of each piece of the body (time to first
token), and the idle-connection cell needs a thousand sockets that each
served one request and then stay open. Both need to know exactly where a
response ends on a kept-alive connection, so this reads `Content-Length`
and chunked bodies itself rather than going through http.client, which
hides when bytes arrived.
"""

from __future__ import annotations

import socket
import time
from typing import Callable


class WireError(RuntimeError):
    """The server closed the connection or answered something unparsable."""


def request_bytes(host: str, port: int, path: str, body: bytes,
                  auth: str | None = None) -> bytes:
    """A POST of a JSON `body` to `path`, keep-alive, as raw bytes."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            "Connection: keep-alive"]
    if auth:
        head.append(f"Authorization: Bearer {auth}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Conn:
    """One keep-alive connection; `exchange` sends a request and reads its
    response, handing body pieces to a callback with their arrival time."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.t_recv = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _fill(self) -> None:
        """Read what the socket has into the buffer, stamping its arrival."""
        data = self.sock.recv(65536)
        self.t_recv = time.perf_counter_ns()
        if not data:
            raise WireError("the server closed the connection mid-response")
        self.buf += data

    def _line(self) -> bytes:
        """The next CRLF-terminated line, without the CRLF."""
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int, sink: Callable[[bytes, int], None]) -> None:
        """Pass exactly `n` body bytes to `sink`, as they arrive."""
        while n > 0:
            if not self.buf:
                self._fill()
            piece, self.buf = self.buf[:n], self.buf[n:]
            n -= len(piece)
            sink(piece, self.t_recv)

    def exchange(self, request: bytes,
                 sink: Callable[[bytes, int], None] | None = None) -> tuple[int, int]:
        """Send `request`, read the whole response; return (status, the
        perf_counter_ns at which the request was sent).

        `sink(piece, arrival_ns)` receives the body; without one the body
        is discarded. Raises `WireError` on a closed connection or a
        response this client does not understand.
        """
        sink = sink or (lambda _piece, _t: None)
        t_sent = time.perf_counter_ns()
        self.sock.sendall(request)
        status_line = self._line().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise WireError(f"not an HTTP/1.x status line: {status_line!r}")
        status = int(parts[1])
        headers = {}
        while (line := self._line()):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers, then the empty line
                        pass
                    break
                self._take(size, sink)
                self._line()  # the CRLF after the chunk's data
        elif "content-length" in headers:
            self._take(int(headers["content-length"]), sink)
        else:
            raise WireError(f"response without a length on a keep-alive connection: {headers}")
        return status, t_sent
