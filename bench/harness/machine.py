"""What the harness reads from /proc: process CPU time and memory, the
machine's CPU usage and load, and a description of the machine.

Everything here is Linux-only by design: the numbers the budget speaks of
(CPU µs per request, peak RSS) are the kernel's own accounting of the server
process, read the same way for nginx, LiteLLM and the gateway, so that no
target is measured by a different method than another.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name.

    The command name sits in parentheses and may itself contain spaces and
    parentheses, so the line is split after its *last* `)`; index 0 of the
    result is field 3 of proc(5) (the state).
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        line = f.read().decode("utf-8", "replace")
    return line[line.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and every live descendant of it.

    nginx serves from worker processes under its master, and LiteLLM's
    uvicorn may fork; CPU and memory are summed over the whole tree so every
    target is charged for all the processes that serve it. The tree is
    found by scanning the parent pid of every process, which needs no
    kernel option (unlike /proc/PID/task/*/children).
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def all_process_ticks() -> dict[int, tuple[str, int]]:
    """Every process's name and utime+stime in ticks: the basis for naming
    what else ran on the machine during a cell."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            fields = _stat_fields(int(entry))
            out[int(entry)] = (comm, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            continue
    return out


def top_others(before: dict[int, tuple[str, int]], exclude: set[int],
               wall_s: float, top: int = 3) -> list[dict]:
    """The `top` process names that used the most CPU since `before`,
    outside `exclude`, in cores (processes of one name summed: six rustc
    are one line). Processes that started and ended in between are
    invisible, so this names the contention rather than measuring it."""
    used: dict[str, int] = {}
    for pid, (comm, ticks) in all_process_ticks().items():
        if pid in exclude:
            continue
        delta = ticks - before.get(pid, (comm, 0))[1]
        if delta > 0:
            used[comm] = used.get(comm, 0) + delta
    ranked = sorted(used.items(), key=lambda kv: -kv[1])[:top]
    return [{"name": n, "cores": round(t / CLK_TCK / max(wall_s, 1e-9), 2)} for n, t in ranked]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of `pids`, in seconds.

    /proc/PID/stat's utime and stime (fields 14 and 15) cover every thread
    of the process, which is what a multi-threaded tokio server needs. Their
    resolution is one clock tick (10 ms at USER_HZ=100): over a run of
    thousands of requests that is far below the noise.
    """
    ticks = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue  # a worker that exited is no longer ours to charge
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def thread_cpu_seconds(pids: list[int]) -> float:
    """CPU time of the live threads of `pids`, in seconds, at nanosecond
    resolution (/proc/PID/task/*/schedstat, first field).

    Precise enough to see a server's background CPU over a second, which
    clock ticks are not; but a thread that has exited is missing from the
    sum, so per-request figures over a whole cell use `cpu_seconds`.
    """
    ns = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread exited while we looked
    return ns / 1e9


def status_kib(pid: int, field: str) -> int:
    """One `kB` field of /proc/PID/status (`VmHWM`, `VmRSS`), in KiB.

    Raises a `RuntimeError` naming the process and field when it cannot be
    read, since a missing memory figure must not silently become zero.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError as e:
        raise RuntimeError(f"cannot read /proc/{pid}/status: {e}") from e
    raise RuntimeError(f"/proc/{pid}/status has no {field} line")


def tree_kib(pids: list[int], field: str) -> int:
    """`field` summed over `pids` (processes that exited are skipped).

    For a tree (nginx master and worker) the sum of the peaks is an upper
    bound of the tree's peak, since the peaks need not coincide; for the
    gateway, a single process, it is exact.
    """
    total = 0
    for pid in pids:
        try:
            total += status_kib(pid, field)
        except RuntimeError:
            if os.path.exists(f"/proc/{pid}"):
                raise
    return total


def open_fds(pid: int) -> int:
    """How many file descriptors `pid` holds: proof that idle connections
    are really held by the server, not closed behind the client's back."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine from /proc/stat, in
    ticks; busy excludes idle and iowait. The difference between two
    readings, minus what the bench's own processes used, is the CPU taken
    by everything else on the machine during a cell: the contention that
    the load average only hints at."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def children_cpu_seconds() -> float:
    """CPU time of this process's waited-for children (wrk, mostly)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu_seconds() -> float:
    """CPU time of the harness itself."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_busy_cores: float, max_wait_s: float, settle_s: int = 3) -> tuple[float, bool]:
    """Wait until the machine has been quieter than `max_busy_cores` busy
    cores for `settle_s` consecutive seconds, or `max_wait_s` passed.

    On a machine shared with builds, a cell measured next to a running
    rustc mostly measures the scheduler. Called between targets, when the
    bench's own processes are idle, so all busy CPU is someone else's.
    Returns (seconds waited, whether the machine did get quiet). The one
    second between readings is the measurement interval of the CPU usage.
    """
    start = time.monotonic()
    cores = os.cpu_count() or 1
    quiet = 0
    busy0, total0 = machine_jiffies()
    while True:
        time.sleep(1)
        busy, total = machine_jiffies()
        used = (busy - busy0) / max(total - total0, 1) * cores
        busy0, total0 = busy, total
        quiet = quiet + 1 if used <= max_busy_cores else 0
        waited = time.monotonic() - start
        if quiet >= settle_s:
            return waited, True
        if waited >= max_wait_s:
            return waited, False


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


@dataclass
class Window:
    """CPU accounting over one measured interval (a wrk run).

    `begin` and `end` bracket the interval; `report` says how much CPU the
    server tree used, how much the rest of the bench used (mock upstream,
    wrk, the harness), and how much the machine used on top of that.
    """

    server: list[int]
    helpers: list[int]
    t0: float = 0.0
    server0: float = 0.0
    helpers0: float = 0.0
    own0: float = 0.0
    busy0: int = 0
    total0: int = 0
    load0: float = 0.0
    procs0: dict | None = None

    def begin(self) -> None:
        """Take the first reading, as close to the start of the load as
        possible."""
        self.load0 = loadavg()[0]
        self.procs0 = all_process_ticks()
        self.busy0, self.total0 = machine_jiffies()
        self.server0 = cpu_seconds(self.server)
        self.helpers0 = cpu_seconds(self.helpers)
        self.own0 = children_cpu_seconds() + self_cpu_seconds()
        self.t0 = time.monotonic()

    def end(self) -> dict:
        """Take the second reading and return the interval's accounting."""
        wall = time.monotonic() - self.t0
        server = cpu_seconds(self.server) - self.server0
        helpers = cpu_seconds(self.helpers) - self.helpers0
        own = children_cpu_seconds() + self_cpu_seconds() - self.own0
        busy, total = machine_jiffies()
        ours = set(self.server) | set(self.helpers) | {os.getpid()}
        others = top_others(self.procs0 or {}, ours, wall)
        cores = os.cpu_count() or 1
        # /proc/stat sums all CPUs: total ticks = wall × cores × CLK_TCK.
        machine_busy_cores = (busy - self.busy0) / max(total - self.total0, 1) * cores
        ours_cores = (server + helpers + own) / max(wall, 1e-9)
        return {
            "wall_s": wall,
            "server_cpu_s": server,
            "helpers_cpu_s": helpers,
            "bench_cpu_s": own,
            "machine_busy_cores": machine_busy_cores,
            "other_cores": max(machine_busy_cores - ours_cores, 0.0),
            "other_top": others,
            "load1_start": self.load0,
            "load1_end": loadavg()[0],
        }


def describe() -> dict:
    """The machine a run measured: CPU model, cores, kernel, memory, time."""
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "hostname": platform.node(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
