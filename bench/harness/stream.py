"""Time to first token and chunk rate of streamed completions, one stream at
a time on one keep-alive connection.

Each stream is timed from the moment its request is written: the first SSE
event (`data: ...`, which carries the first text) gives the time to first
token; `data: [DONE]` ends it. Chunks are counted as SSE events, not as
reads, because TCP may deliver several events in one segment (the
simulator writes each event separately with no pause, so they often
coalesce) and a gateway may re-frame them.

The client is Python, so its own cost (tens of µs per stream) is inside
every figure; it is the same client for the direct and the gateway cells,
so the difference between them is the gateway's.
"""

from __future__ import annotations

import math
import statistics
import time

from .wire import Conn, WireError, request_bytes


def _percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[rank]


class _Events:
    """Splits a streamed body into SSE events and stamps each one."""

    def __init__(self) -> None:
        self.pending = b""
        self.times: list[int] = []
        self.done_at: int | None = None

    def feed(self, piece: bytes, arrival_ns: int) -> None:
        """Take a piece of body; record every event it completes."""
        self.pending += piece
        while b"\n\n" in self.pending:
            event, self.pending = self.pending.split(b"\n\n", 1)
            if not event.startswith(b"data:"):
                continue  # comments or keep-alives carry no tokens
            if event.strip() == b"data: [DONE]":
                self.done_at = arrival_ns
            else:
                self.times.append(arrival_ns)


def measure(host: str, port: int, path: str, body: bytes, auth: str | None,
            duration_s: float) -> dict:
    """Stream completions back to back for `duration_s`; return TTFT
    percentiles (µs), stream duration, chunks per stream and chunks per
    second (chunks of one stream over its duration, median over streams).

    Raises `WireError` when a stream fails (non-200, no `[DONE]`, no
    chunks): a stream that broke must not count as a fast one.
    """
    conn = Conn(host, port)
    request = request_bytes(host, port, path, body, auth)
    ttft, total, chunks, rates = [], [], [], []
    deadline = time.monotonic() + duration_s
    try:
        while time.monotonic() < deadline:
            events = _Events()
            status, sent = conn.exchange(request, events.feed)
            if status != 200:
                raise WireError(f"stream answered {status}")
            if not events.times or events.done_at is None:
                raise WireError(
                    f"stream ended without {'chunks' if not events.times else '[DONE]'}")
            ttft.append((events.times[0] - sent) / 1e3)
            span = (events.done_at - sent) / 1e3
            total.append(span)
            chunks.append(len(events.times))
            rates.append(len(events.times) / (span / 1e6))
    finally:
        conn.close()
    return {
        "streams": len(ttft),
        "ttft_p50_us": _percentile(ttft, 50),
        "ttft_p90_us": _percentile(ttft, 90),
        "ttft_p99_us": _percentile(ttft, 99),
        "stream_p50_us": _percentile(total, 50),
        "chunks_per_stream": statistics.median(chunks),
        "chunks_per_s": statistics.median(rates),
    }
