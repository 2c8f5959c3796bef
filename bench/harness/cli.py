"""`bench/run`: options, setup, the order of the run, and cleanup.

The run is sequential on purpose: one target is loaded at a time, so on a
2-core machine the only processes competing with the server under test are
wrk and its upstream — and whatever else the machine runs, which every
cell reports as "other load".
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import batch, cells, install, machine, report, targets
from .procs import Supervisor

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; `--help` documents every option."""
    names = [t.name for t in targets.TARGETS]
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Load harness of AgentRouter: measures direct, nginx proxy_pass, (LiteLLM,) "
                    "the gateway bare, with features on, an agent, streams, idle "
                    "connections and interactive latency during a batch against one nginx "
                    "static mock; writes results.md and "
                    "results.json. See bench/README.md.")
    p.add_argument("--quick", action="store_true",
                   help="short cells (2 s, 1 s warm-up): a smoke test, not a measurement")
    # wrk takes whole seconds only.
    p.add_argument("--duration", type=int, default=None, metavar="S",
                   help="whole seconds per cell (default 10; --quick: 2)")
    p.add_argument("--warmup", type=int, default=None, metavar="S",
                   help="whole seconds of c=HIGH load before each target's cells "
                        "(default 2; --quick: 1; 0 skips it)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default target/bench/<UTC time>)")
    p.add_argument("--binary", default=None, metavar="PATH",
                   help="agentrouter binary to measure (default: cargo build --release here)")
    p.add_argument("--targets", default=None, metavar="A,B",
                   help=f"only these targets ({', '.join(names)}); 'idle' adds the idle cells, "
                        "'batch' the interactive-during-a-batch cells")
    p.add_argument("--with-litellm", action="store_true",
                   help="also measure LiteLLM's proxy (installs it from PyPI into a venv once)")
    p.add_argument("--litellm-venv", type=Path, default=None, metavar="DIR",
                   help=f"virtualenv for LiteLLM (default {install.default_litellm_venv()})")
    p.add_argument("--concurrency", type=int, default=64, metavar="N",
                   help="connections of the high-concurrency cell (default 64)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="wrk threads for the high-concurrency cell (default 2)")
    p.add_argument("--idle-conns", type=int, default=1000, metavar="N",
                   help="idle keep-alive connections to hold (default 1000)")
    p.add_argument("--batch-requests", type=int, default=None, metavar="N",
                   help="requests in the batch of the batch cells (default 2000 per second "
                        "of --duration); the batch must outlast its cell")
    p.add_argument("--wait-quiet", type=float, default=None, metavar="CORES",
                   help="before each target, wait until the machine's busy CPU stays below "
                        "CORES for 3 s (for shared machines; default: do not wait)")
    p.add_argument("--wait-max", type=float, default=300, metavar="S",
                   help="longest wait per target for --wait-quiet (default 300); then "
                        "measure anyway and say so")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir (configs, full logs) and print its path")
    args = p.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    # ~1,300 batch requests/s ran on 2 shared cores: 2,000 per second of
    # cell leaves a margin so that the batch outlasts the cell.
    args.batch_requests = args.batch_requests or 2000 * args.duration
    if args.duration < 1 or args.warmup < 0 or args.batch_requests < 1:
        p.error("--duration and --batch-requests must be at least 1 and --warmup at least 0")
    if args.targets:
        wanted = [n.strip() for n in args.targets.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names + ["idle", "batch"]]
        if unknown:
            p.error(f"--targets: unknown {', '.join(unknown)}; known: {', '.join(names)}, "
                    "idle, batch")
        args.with_litellm = args.with_litellm or "litellm" in wanted
    return args


def selected(args: argparse.Namespace) -> tuple[list[targets.Target], list[targets.Target],
                                                list[targets.Target]]:
    """The load targets, the idle-cell targets and the batch targets this
    run measures."""
    if args.targets:
        wanted = [n.strip() for n in args.targets.split(",") if n.strip()]
        load = [targets.by_name(n) for n in wanted if n not in ("idle", "batch")]
        idle = [targets.by_name(n) for n in targets.IDLE] if "idle" in wanted else []
        batches = [targets.BATCH] if "batch" in wanted else []
    else:
        load = list(targets.TARGETS)
        idle = [targets.by_name(n) for n in targets.IDLE]
        batches = [targets.BATCH]
    if not args.with_litellm:
        load = [t for t in load if t.name != "litellm"]
    return load, idle, batches


def commit_of(repo: Path) -> str:
    """The repository's commit, with `-dirty` when it has local changes:
    the numbers belong to a version of the code."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "host",
                                "plugins", "wit", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _wait_quiet(args: argparse.Namespace) -> dict | None:
    """Honour --wait-quiet before a target; say how it went."""
    if args.wait_quiet is None:
        return None
    waited, quiet = machine.wait_quiet(args.wait_quiet, args.wait_max)
    if not quiet:
        print(f"   the machine stayed busier than {args.wait_quiet:g} cores for "
              f"{waited:.0f} s; measuring anyway", flush=True)
    elif waited > 5:
        print(f"   waited {waited:.0f} s for a quiet machine", flush=True)
    return {"waited_s": round(waited, 1), "quiet": quiet, "max_busy_cores": args.wait_quiet}


def _on_sigterm(signum, frame):  # noqa: ARG001
    """SIGTERM ends the run like Ctrl-C: through the cleanup in `main`."""
    raise KeyboardInterrupt


def _one(title: str, name: str, measure, args: argparse.Namespace, results: dict) -> dict | None:
    """Wait for a quiet machine if asked, then `measure()` one target: its
    result (with the wait recorded), or None when it failed (recorded in
    `results` under `name`)."""
    print(f"== {title}", flush=True)
    quiet = _wait_quiet(args)
    try:
        r = measure()
    except (RuntimeError, OSError) as e:
        results["errors"].append(f"{name}: {e}")
        print(f"bench: {name} failed: {e}", file=sys.stderr, flush=True)
        return None
    r["quiet_wait"] = quiet
    return r


def _measure_all(run: targets.Run, plan: cells.Plan, args: argparse.Namespace,
                 load_targets: list[targets.Target], idle_targets: list[targets.Target],
                 batch_targets: list[targets.Target], results: dict, outdir: Path) -> int:
    """Start the shared upstreams, then measure every target in turn into
    `results`; return 1 if any target failed, else 0.

    A target that fails (did not start, answered wrongly, saw error
    statuses) is recorded and the run goes on: the other rows are still
    worth having, and the exit code says that one is missing.
    """
    code = 0
    needs = {n for t in load_targets + idle_targets + batch_targets for n in t.needs}
    if "mock" in needs or idle_targets:
        print("== starting the nginx mock upstream", flush=True)
        run.mock = targets.start_mock(run)
    if "sim" in needs:
        print("== starting agentrouter sim (streaming upstream)", flush=True)
        run.sim = targets.start_sim(run)
    for t in load_targets:
        r = _one(f"{t.name}: {t.label}", t.name, lambda t=t: cells.measure(run, t, plan, outdir),
                 args, results)
        if r is None:
            code = 1
            continue
        results["targets"][t.name] = r
        bad = r["c1"]["failures"] + r["high"]["failures"]
        if any("status" in f or "connect" in f for f in bad):
            results["errors"].append(f"{t.name}: {'; '.join(bad)}")
            code = 1
        print(f"   c=1 p50 {r['c1']['p50_us']:.0f} µs, c={plan.high_c} "
              f"{r['high']['rps']:,.0f} req/s, CPU {r['high']['cpu_us_per_request'] or 0:.0f} µs/req"
              + (f", {'; '.join(bad)}" if bad else ""), flush=True)
    for t in idle_targets:
        r = _one(f"idle: {args.idle_conns} keep-alive connections to {t.name}", f"idle {t.name}",
                 lambda t=t: cells.measure_idle(run, t, plan, outdir), args, results)
        if r is None:
            code = 1
            continue
        results["idle"][t.name] = r
        print(f"   {r['per_connection_kib']:.1f} KiB per connection", flush=True)
    for t in batch_targets:
        r = _one(f"batch: {t.label}, {args.batch_requests} requests", "batch",
                 lambda t=t: batch.measure(run, t, plan, outdir, args.batch_requests), args, results)
        if r is None:
            code = 1
            continue
        results["batch"][t.name] = r
        if r["failures"]:
            results["errors"].append(f"batch: {'; '.join(r['failures'])}")
            code = 1
        rps = r["batch_rps_during"]
        print(f"   c=1 p50 idle {r['idle']['p50_us']:.0f} µs, during {r['during']['p50_us']:.0f} µs "
              f"({r['ratio']['p50'] or 0:.2f}×), batch {rps or 0:,.0f} req/s"
              + (f", {'; '.join(r['failures'])}" if r["failures"] else ""), flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the bench; return 0 when every cell measured what it claims, 1
    when one failed (an error status, a server that did not start), 130
    on Ctrl-C. Budget lines never affect the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop the run even when a parent shell started it with
    # SIGINT ignored (as non-interactive shells do for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    load_targets, idle_targets, batch_targets = selected(args)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    outdir = (args.out or REPO / "target" / "bench" / stamp).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    load_start = machine.loadavg()

    try:
        tools = install.ensure_tools()
        binary, build_s = install.ensure_binary(REPO, args.binary)
        litellm = None
        if args.with_litellm:
            litellm = install.ensure_litellm(args.litellm_venv or install.default_litellm_venv())
    except install.SetupError as e:
        print(f"bench: setup failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted during setup", file=sys.stderr)
        return 130

    tmp = Path(tempfile.mkdtemp(prefix="agentrouter-bench-"))
    sup = Supervisor(tmp)
    run = targets.Run(tmp=tmp, binary=binary, nginx=tools["nginx"], wrk=tools["wrk"], sup=sup,
                      startup_timeout_s=180, litellm=litellm)
    plan = cells.Plan(duration_s=args.duration, warmup_s=args.warmup, stream_s=args.duration,
                      threads=args.threads, high_c=args.concurrency, idle_conns=args.idle_conns,
                      background_s=1.0 if args.quick else 2.0)
    results: dict = {
        "machine": machine.describe(),
        "run": {"load_start": load_start, "binary": str(binary), "commit": commit_of(REPO),
                "binary_given": bool(args.binary),
                "build_s": round(build_s, 1), "duration_s": args.duration,
                "warmup_s": args.warmup, "threads": args.threads, "high_c": args.concurrency,
                "quick": args.quick, "wait_quiet": args.wait_quiet,
                "batch_requests": args.batch_requests,
                "versions": install.versions(tools, litellm)},
        "baselines": {t.name: t.baseline for t in load_targets},
        "targets": {}, "idle": {}, "batch": {}, "errors": [],
    }
    try:
        code = _measure_all(run, plan, args, load_targets, idle_targets, batch_targets, results,
                            outdir)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping servers", file=sys.stderr)
        code = 130
    except (RuntimeError, OSError) as e:  # the mock or the simulator did not start
        results["errors"].append(str(e))
        print(f"bench: {e}", file=sys.stderr)
        code = 1
    finally:
        sup.stop_all()
        if args.keep_tmp:
            print(f"bench: temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    results["run"]["load_end"] = machine.loadavg()
    results["run"]["elapsed_s"] = round(time.monotonic() - started, 1)
    js, md = report.write(results, outdir)
    print()
    print(md.read_text())
    print(f"bench: wrote {md} and {js} in {results['run']['elapsed_s']:.0f} s")
    for e in results["errors"]:
        print(f"bench: error: {e}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
