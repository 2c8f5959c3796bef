"""Child processes of a bench run: each in its own process group, polled for
readiness instead of slept for, and always stopped — on success, on error
and on Ctrl-C.

A server that fails to start is reported by name with the tail of its own
log, because "connection refused on port 41234" alone never says why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class StartError(RuntimeError):
    """A server did not come up; the message names it, its port and why."""


def free_port() -> int:
    """An unused loopback TCP port, chosen by the kernel.

    The port is released before the server binds it, so another process
    could take it in between; the server then fails to start, and the
    readiness poll reports that with the server's name and port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """A started child process, with the log file it writes to."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The pid of the process the harness started (nginx's master)."""
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        """The last `lines` lines of the service's log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log}: {e})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return self.proc.poll()


class Supervisor:
    """Starts services and guarantees they are stopped.

    Every child runs in a new session, so a terminal's Ctrl-C reaches only
    the harness (which then stops the children in order) and a whole tree
    — nginx's workers, LiteLLM's forks — is signalled through its process
    group.
    """

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.services: list[Service] = []

    def start(self, name: str, argv: list[str], env: dict | None = None,
              cwd: Path | None = None, port: int | None = None) -> Service:
        """Start `argv` as service `name`, its output going to `<name>.log`.

        Raises `StartError` when the program cannot be executed at all.
        """
        log = self.logdir / f"{name}.log"
        out = open(log, "wb")
        try:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
            )
        except OSError as e:
            raise StartError(f"{name}: cannot run {argv[0]}: {e}") from e
        finally:
            out.close()
        service = Service(name, proc, log, port)
        self.services.append(service)
        return service

    def stop(self, service: Service, grace_s: float = 10.0) -> None:
        """Stop `service` and its process group: SIGTERM, then SIGKILL after
        `grace_s`. Stopping an already stopped service is a no-op."""
        if service in self.services:
            self.services.remove(service)
        if service.proc.poll() is not None:
            return
        try:
            os.killpg(service.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            service.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait()
        # Workers of a group whose leader exited on SIGTERM (nginx's do
        # exit with it, but a forked helper might not).
        try:
            os.killpg(service.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self) -> None:
        """Stop every service still running, newest first (a gateway before
        the mock it talks to)."""
        for service in reversed(list(self.services)):
            self.stop(service)


def wait_http(service: Service, url: str, timeout_s: float, *, expect: int = 200,
              headers: dict | None = None, body: bytes | None = None) -> bytes:
    """Poll `url` until it answers `expect`; return the body.

    Fails fast when the process exits (it will never answer) and with the
    last status or connection error when `timeout_s` passes; both messages
    name the service, the URL and include the service's log tail.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    delay = 0.02
    while True:
        code = service.exited()
        if code is not None:
            raise StartError(
                f"{service.name} exited with code {code} before {url} answered; "
                f"its log ({service.log}) ends with:\n{service.tail()}")
        try:
            req = urllib.request.Request(url, data=body, headers=headers or {})
            with urllib.request.urlopen(req, timeout=5) as resp:
                data = resp.read()
                if resp.status == expect:
                    return data
                last = f"status {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}: {e.read()[:300]!r}"
            if e.code == expect:
                return b""
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if time.monotonic() > deadline:
            raise StartError(
                f"{service.name} did not answer {url} with {expect} within {timeout_s:.0f} s "
                f"(last: {last}); its log ({service.log}) ends with:\n{service.tail()}")
        time.sleep(delay)  # a poll interval, not a guess at readiness
        delay = min(delay * 1.5, 0.25)
