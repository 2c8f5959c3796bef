"""Memory per idle keep-alive connection.

A gateway in front of many clients holds mostly idle connections; what each
costs decides how many one replica can hold. The cell opens N connections
one after another, sends one real request on each (so every connection has
been through a full request and its buffers are what traffic leaves
behind), keeps them all open, and reads the server's resident memory
before and after. The server's open file descriptors are counted too, as
proof that it still holds them when memory is read.
"""

from __future__ import annotations

import resource
import select
import time

from . import machine
from .wire import Conn, WireError, request_bytes


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft open-file limit so it can hold `needed`
    sockets; fail naming the limit when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"holding {needed} connections needs {needed} open files; the hard limit is {hard} "
            "(raise it with `ulimit -Hn`)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def measure(host: str, port: int, path: str, body: bytes, auth: str | None,
            server_pid: int, count: int, warm_requests: int = 200) -> dict:
    """Open `count` connections to the server at `port`, each after one
    request, and report resident memory before and after (KiB), per
    connection (KiB), the server's extra file descriptors, and how many
    connections the server had already closed when memory was read.

    The first `warm_requests` go over one connection before the "before"
    reading, so lazily initialised state is not charged to connections.
    """
    raise_fd_limit(count + 256)
    request = request_bytes(host, port, path, body, auth)
    warm = Conn(host, port)
    for _ in range(warm_requests):
        status, _ = warm.exchange(request)
        if status != 200:
            raise WireError(f"warm-up request answered {status}")
    # The warm-up connection stays open (and out of the count), so that
    # closing it cannot race with the "before" reading.
    tree = machine.process_tree(server_pid)
    rss_before = machine.tree_kib(tree, "VmRSS")
    fds_before = sum(machine.open_fds(pid) for pid in tree)
    conns: list[Conn] = []
    started = time.monotonic()
    try:
        for i in range(count):
            conn = Conn(host, port)
            conns.append(conn)
            status, _ = conn.exchange(request)
            if status != 200:
                raise WireError(f"request on idle connection {i} answered {status}")
        opened_s = time.monotonic() - started
        rss_after = machine.tree_kib(tree, "VmRSS")
        fds_after = sum(machine.open_fds(pid) for pid in tree)
        # A connection the server closed is readable (EOF) on our side.
        closed = len(_poll_readable(conns))
    finally:
        for conn in conns:
            conn.close()
        warm.close()
    return {
        "connections": count,
        "open_s": opened_s,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "per_connection_kib": (rss_after - rss_before) / count,
        "server_fds_added": fds_after - fds_before,
        "closed_by_server": closed,
    }


def _poll_readable(conns: list[Conn]) -> list:
    """Sockets that are readable, via poll(2): select(2) cannot watch
    descriptors numbered above 1024, which a thousand sockets exceed."""
    poller = select.poll()
    by_fd = {c.sock.fileno(): c.sock for c in conns}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLHUP)
    return [by_fd[fd] for fd, _ in poller.poll(0)]
