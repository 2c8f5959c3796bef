"""Closed-loop load with wrk: `c` connections each sending the next request
as soon as the previous answer arrived, for a fixed time.

wrk is the load generator because it is cheap per request (C, epoll) — on a
2-core box the client competes with the server for CPU, and a heavier
client would hide the server's cost. Its per-request latencies are kept in
an HDR-style histogram; bench/wrk/post.lua prints the percentiles as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent.parent / "wrk" / "post.lua"
MARK = "BENCH_JSON "


class LoadError(RuntimeError):
    """wrk failed or printed no summary; the message has its output."""


@dataclass
class Request:
    """What a target is sent: a URL, a JSON body and an optional key."""

    url: str
    body: bytes
    auth: str | None = None


def run_wrk(wrk: str, request: Request, body_file: Path, *, connections: int,
            threads: int, duration_s: int, timeout_s: int = 10) -> dict:
    """Run wrk against `request` and return its summary (see post.lua) plus
    `rps`, requests per second over wrk's own measured duration.

    `timeout_s` is wrk's per-request timeout: generous, because LiteLLM at
    c=64 answers in seconds and a timed-out request is not counted as
    served. Raises `LoadError` when wrk fails.
    """
    body_file.write_bytes(request.body)
    threads = max(1, min(threads, connections))
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s",
            f"--timeout={timeout_s}s", "-s", str(LUA), request.url]
    env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_AUTH": request.auth or ""}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=duration_s + timeout_s + 30)
    except subprocess.TimeoutExpired as e:
        raise LoadError(f"wrk against {request.url} did not finish: {e}") from e
    line = next((l for l in done.stdout.splitlines() if l.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise LoadError(
            f"wrk against {request.url} (c={connections}) failed with code {done.returncode}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(line[len(MARK):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["connections"] = connections
    result["threads"] = threads
    return result


def failures(result: dict) -> list[str]:
    """Error counts of a wrk result that mean the cell did not measure what
    it claims: error statuses and connection failures. Read errors and
    timeouts are reported too; they mean an overloaded server, not a
    misconfigured one, but numbers with them are suspect."""
    return [f"{n} {kind} errors" for kind, n in result["errors"].items() if n]
