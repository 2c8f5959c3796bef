"""Interactive latency while a batch runs (issue 16: "interactive p50
latency during a batch stays within 2x of idle").

One fresh gateway in front of `agentrouter sim` (no latency). First wrk
sends interactive chat completions at c=1 for the cell's duration with
nothing else running: the idle figures. Then a batch of N chat requests
is uploaded (`POST /v1/files`) and created (`POST /v1/batches`), and the
same wrk cell runs again at once: the figures during the batch. The
gateway's `agentrouter_batch_requests_total` read before and after the
cell gives the batch's rate; the batch must still be `in_progress` when
the cell ends (one that finished early would make the cell partly idle:
the cell then counts as failed, with the advice to raise the batch size).
Then the batch must complete with every request completed, none failed.

CPU per request during the batch is the server's CPU over the cell
divided by every request it served in it, interactive and batch.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import machine
from .cells import CHAT, Plan, _cell, _keep_log_tail, preflight
from .load import Request, run_wrk
from .targets import CHAT_BODY, Run, Target

# How often the batch is read while waiting for it to finish.
POLL_S = 0.25
# Longest wait for the batch to finish after the "during" cell.
FINISH_TIMEOUT_S = 300
BOUNDARY = "benchBatchBoundary7f3a"


class BatchError(RuntimeError):
    """The batch could not be created or did not complete as it should;
    the message names the step and shows the gateway's answer."""


def jsonl(n: int) -> bytes:
    """The batch input: `n` chat requests, each the interactive request's
    body with a distinct prompt (so no two lines are the same request)."""
    base = json.loads(CHAT_BODY)
    out = []
    for i in range(n):
        body = {**base, "messages": [{"role": "user", "content": f"Batch question {i}."}]}
        out.append(json.dumps({"custom_id": f"bench-{i}", "method": "POST", "url": CHAT,
                               "body": body}, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def _call(url: str, data: bytes | None = None, headers: dict | None = None,
          method: str | None = None) -> dict:
    """One JSON request; a non-2xx answer raises `BatchError` with its body."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise BatchError(f"{method or ('POST' if data else 'GET')} {url} answered {e.code}: "
                         f"{e.read()[:500].decode('utf-8', 'replace')}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise BatchError(f"{url} failed: {e}") from e


def upload(base: str, data: bytes) -> str:
    """Upload `data` as a batch file (multipart, as the SDKs send it);
    the file id."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"bench.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").encode()
    body += data + f"\r\n--{BOUNDARY}--\r\n".encode()
    answer = _call(f"{base}/v1/files", body,
                   {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    return answer["id"]


def create(base: str, file_id: str) -> dict:
    """Create a chat batch of file `file_id`; the batch object."""
    body = json.dumps({"input_file_id": file_id, "endpoint": CHAT,
                       "completion_window": "24h"}).encode()
    return _call(f"{base}/v1/batches", body, {"Content-Type": "application/json"})


def _done(batch: dict) -> int:
    counts = batch.get("request_counts") or {}
    return int(counts.get("completed", 0)) + int(counts.get("failed", 0))


BATCH_METRIC = "agentrouter_batch_requests_total{"


def batch_requests_run(base: str) -> int:
    """Batch requests the gateway has run, completed or failed, from
    /metrics: cheap to read, unlike the batch object, whose
    `request_counts` are counted from every recorded result."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(BATCH_METRIC)))


def _percentile_ratio(during: dict, idle: dict) -> dict:
    return {q: (during[f"{q}_us"] / idle[f"{q}_us"] if idle[f"{q}_us"] else None)
            for q in ("p50", "p90", "p99")}


def measure(run: Run, target: Target, plan: Plan, outdir: Path, requests: int) -> dict:
    """The idle cell, then the same cell during a batch of `requests`
    chat requests, on one fresh gateway; see the module docs."""
    svc = target.start(run)
    base = f"http://127.0.0.1:{svc.port}"
    try:
        preflight(target, svc, None)
        request = Request(base + CHAT, target.body, None)
        body_file = run.tmp / f"{target.name}.body.json"
        if plan.warmup_s:
            run_wrk(run.wrk, request, body_file, connections=plan.high_c,
                    threads=plan.threads, duration_s=plan.warmup_s)
        idle = _cell(run, target, svc, request, plan, 1, body_file)

        data = jsonl(requests)
        t_upload = time.monotonic()
        file_id = upload(base, data)
        upload_s = time.monotonic() - t_upload
        batch = create(base, file_id)
        batch_id = batch["id"]
        t_created = time.monotonic()
        run0 = batch_requests_run(base)
        during = _cell(run, target, svc, request, plan, 1, body_file)
        run1 = batch_requests_run(base)
        at_end = _call(f"{base}/v1/batches/{batch_id}")

        failures = list(idle["failures"]) + list(during["failures"])
        # A batch that finished before the cell did would make the cell
        # partly idle: it must still be running when the cell ends.
        ran_whole_cell = at_end.get("status") == "in_progress"
        if not ran_whole_cell:
            failures.append(f"the batch was {at_end.get('status')} before the "
                            f"{during['accounting']['wall_s']:.1f} s cell ended: raise "
                            f"--batch-requests (it ran {_done(at_end)} of {requests})")
        batch_in_cell = run1 - run0
        batch_rps = batch_in_cell / during["accounting"]["wall_s"]

        # The batch must finish, with every request completed.
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while True:
            final = _call(f"{base}/v1/batches/{batch_id}")
            if final.get("status") not in ("in_progress", "finalizing", "validating"):
                break
            if time.monotonic() > deadline:
                raise BatchError(f"batch {batch_id} not finished {FINISH_TIMEOUT_S} s after the "
                                 f"cell: {json.dumps(final)[:500]}")
            time.sleep(POLL_S)  # the interval of a poll, not a guess
        t_finished = time.monotonic()
        counts = final.get("request_counts") or {}
        if final.get("status") != "completed" or counts.get("completed") != requests \
                or counts.get("failed"):
            failures.append(f"batch ended {final.get('status')} with {counts} "
                            f"(expected completed, {requests} completed, 0 failed)")
        served = during["requests"] + (batch_in_cell or 0)
        during["cpu_us_per_request_all"] = (
            during["accounting"]["server_cpu_s"] / served * 1e6 if served else None)
        tree = machine.process_tree(svc.pid)
        return {
            "name": target.name,
            "label": target.label,
            "batch_requests": requests,
            "upload_bytes": len(data),
            "upload_s": upload_s,
            "idle": idle,
            "during": during,
            "ratio": _percentile_ratio(during, idle),
            "batch_rps_during": batch_rps,
            "batch_requests_in_cell": batch_in_cell,
            "batch_total_s": t_finished - t_created,
            "batch_final": {"status": final.get("status"), "request_counts": counts},
            "ran_whole_cell": ran_whole_cell,
            "batch_requests_at_cell_end": _done(at_end),
            "peak_rss_kib": machine.tree_kib(tree, "VmHWM"),
            "failures": failures,
        }
    finally:
        _keep_log_tail(svc, outdir, suffix=".batch")
        run.sup.stop(svc)
