"""The measurements of one target: a preflight request, a warm-up, then
c=1 and c=64 under wrk with the server's CPU read around each, peak memory,
and — for streams — time to first token; or, for the idle cell, memory per
held connection.

Each target that has a process of its own is started fresh for its cells,
so its CPU, peak RSS and log are its own.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import idle, machine, stream
from .load import Request, failures, run_wrk
from .procs import Service
from .targets import Run, Target

CHAT = "/v1/chat/completions"


@dataclass
class Plan:
    """How long and how hard each cell runs (from the command line)."""

    duration_s: int
    warmup_s: int
    stream_s: float
    threads: int
    high_c: int
    idle_conns: int
    background_s: float = 1.0


class CellError(RuntimeError):
    """A target answered wrongly; the message names the target and shows
    what it answered."""


def preflight(target: Target, svc: Service, auth: str | None) -> str:
    """Send the target one request and check it is a success of the right
    shape (a chat completion, or a stream ending in [DONE]); return the
    answer. Misconfiguration then fails here, with the body in the
    message, instead of as a table of fast 401s."""
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    url = f"http://127.0.0.1:{svc.port}{CHAT}"
    try:
        req = urllib.request.Request(url, data=target.body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        raise CellError(f"{target.name}: {url} answered {e.code}: "
                        f"{e.read()[:500].decode('utf-8', 'replace')}") from e
    except (urllib.error.URLError, OSError) as e:
        raise CellError(f"{target.name}: {url} failed: {e}") from e
    if target.stream:
        ok = "data: [DONE]" in text
    else:
        try:
            ok = bool(json.loads(text)["choices"][0]["message"])
        except (ValueError, KeyError, IndexError, TypeError):
            ok = False
    if not ok:
        raise CellError(f"{target.name}: {url} answered 200 but not a completion: {text[:500]}")
    return text


METRIC = re.compile(r'^(agentrouter_[a-z_]+)\{([^}]*)\} ([0-9.eE+-]+)$')


def scrape(svc: Service) -> dict[str, float]:
    """The gateway's own counters for chat completions, from /metrics:
    requests answered 200 and the sum and count of its self-reported
    `gateway_overhead_seconds`. Read between cells, never during one, so
    the scrape's cost is not charged to requests."""
    url = f"http://127.0.0.1:{svc.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {"ok": 0.0, "overhead_sum": 0.0, "overhead_count": 0.0}
    for line in text.splitlines():
        m = METRIC.match(line)
        if not m or f'route="{CHAT}"' not in m.group(2):
            continue
        name, value = m.group(1), float(m.group(3))
        if name == "agentrouter_http_requests_total" and 'status="200"' in m.group(2):
            out["ok"] += value
        elif name == "agentrouter_gateway_overhead_seconds_sum":
            out["overhead_sum"] += value
        elif name == "agentrouter_gateway_overhead_seconds_count":
            out["overhead_count"] += value
    return out


def _self_report(before: dict, after: dict, served: int) -> dict:
    """What the gateway says about one cell: requests it answered 200 (to
    compare with wrk's count) and its mean self-measured overhead."""
    n = after["overhead_count"] - before["overhead_count"]
    return {
        "gateway_ok": int(after["ok"] - before["ok"]),
        "wrk_requests": served,
        "overhead_mean_us": (after["overhead_sum"] - before["overhead_sum"]) / n * 1e6 if n else None,
    }


def _cell(run: Run, target: Target, svc: Service, request: Request, plan: Plan,
          connections: int, body_file: Path) -> dict:
    """One wrk run with CPU accounting around it."""
    server = machine.process_tree(svc.pid)
    helpers = [pid for h in target.helpers(run) for pid in machine.process_tree(h.pid)]
    window = machine.Window(server, helpers)
    before = scrape(svc) if target.gateway else None
    window.begin()
    result = run_wrk(run.wrk, request, body_file, connections=connections,
                     threads=plan.threads, duration_s=plan.duration_s)
    result["accounting"] = window.end()
    result["cpu_us_per_request"] = (
        result["accounting"]["server_cpu_s"] / result["requests"] * 1e6 if result["requests"] else None)
    result["failures"] = failures(result)
    if before is not None:
        result["self_reported"] = _self_report(before, scrape(svc), result["requests"])
    return result


def _background_cpu(svc: Service, seconds: float) -> float:
    """CPU the server burns with no traffic at all, in ms per second
    (timer and ticker threads). At c=1 a request takes only a fraction
    of the wall time, so this background cost is a visible share of
    "CPU per request" there; reporting it lets a reader tell the two
    apart. The wait is the measurement interval itself."""
    tree = machine.process_tree(svc.pid)
    before, t0 = machine.thread_cpu_seconds(tree), time.monotonic()
    time.sleep(seconds)
    return (machine.thread_cpu_seconds(tree) - before) / (time.monotonic() - t0) * 1e3


def measure(run: Run, target: Target, plan: Plan, outdir: Path) -> dict:
    """Every cell of `target`: preflight, warm-up, c=1, c=high, peak RSS,
    stream timings. Stops the target's process when it owns one."""
    svc = target.start(run)
    try:
        auth = target.auth(run)
        sample = preflight(target, svc, auth)
        background = _background_cpu(svc, plan.background_s)
        request = Request(f"http://127.0.0.1:{svc.port}{CHAT}", target.body, auth)
        body_file = run.tmp / f"{target.name}.body.json"
        if plan.warmup_s:
            run_wrk(run.wrk, request, body_file, connections=plan.high_c,
                    threads=plan.threads, duration_s=plan.warmup_s)
        c1 = _cell(run, target, svc, request, plan, 1, body_file)
        high = _cell(run, target, svc, request, plan, plan.high_c, body_file)
        tree = machine.process_tree(svc.pid)
        result = {
            "name": target.name,
            "label": target.label,
            "pid_tree": len(tree),
            "c1": c1,
            "high": high,
            "background_cpu_ms_per_s": background,
            "peak_rss_kib": machine.tree_kib(tree, "VmHWM"),
            "rss_end_kib": machine.tree_kib(tree, "VmRSS"),
            "sample_answer": sample[:400],
        }
        if target.stream:
            result["stream"] = stream.measure("127.0.0.1", svc.port, CHAT, target.body, auth,
                                              plan.stream_s)
        return result
    finally:
        if target.owned:
            _keep_log_tail(svc, outdir)
            run.sup.stop(svc)


def measure_idle(run: Run, target: Target, plan: Plan, outdir: Path) -> dict:
    """Memory per idle keep-alive connection on a fresh `target` process."""
    svc = target.start(run)
    try:
        auth = target.auth(run)
        preflight(target, svc, auth)
        result = idle.measure("127.0.0.1", svc.port, CHAT, target.body, auth, svc.pid,
                              plan.idle_conns)
        result["name"] = target.name
        result["label"] = target.label
        result["load1"] = machine.loadavg()[0]
        return result
    finally:
        _keep_log_tail(svc, outdir, suffix=".idle")
        run.sup.stop(svc)


def _keep_log_tail(svc: Service, outdir: Path, suffix: str = "", lines: int = 20) -> None:
    """Copy the last lines of a service's log into the output directory
    (the full logs are tens of MB of request lines and stay in the temp
    dir, which is removed)."""
    (outdir / "logs").mkdir(parents=True, exist_ok=True)
    (outdir / "logs" / f"{svc.name}{suffix}.log").write_text(svc.tail(lines) + "\n")
