"""What a run needs before it can measure: nginx and wrk (from Debian, with
apt-get when missing), the gateway's release binary (cargo), and — only
when asked for — LiteLLM's proxy in a virtualenv (from PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Debian installs nginx under /usr/sbin, which a non-root PATH often lacks.
SBIN = ["/usr/sbin", "/sbin"]


class SetupError(RuntimeError):
    """A prerequisite could not be installed or built; the message says
    which and how to get it by hand."""


def which(tool: str) -> str | None:
    """`tool` on PATH or in the sbin directories."""
    return shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(SBIN))


def _run(argv: list[str], what: str, env: dict | None = None) -> None:
    """Run `argv`, streaming its output; raise `SetupError` naming `what`."""
    print(f"  $ {' '.join(argv)}", flush=True)
    try:
        subprocess.run(argv, check=True, env={**os.environ, **(env or {})})
    except (OSError, subprocess.CalledProcessError) as e:
        raise SetupError(f"{what} failed: {e}") from e


def ensure_tools() -> dict[str, str]:
    """Paths of nginx and wrk, installing the Debian packages that are
    missing (`nginx-light`, `wrk`).

    apt-get needs root; without it (and without sudo) the error names the
    command to run by hand instead of failing somewhere later.
    """
    wanted = {"nginx": "nginx-light", "wrk": "wrk"}
    missing = [pkg for tool, pkg in wanted.items() if not which(tool)]
    if missing:
        if not which("apt-get"):
            raise SetupError(f"missing {', '.join(missing)} and no apt-get to install them")
        prefix = [] if os.geteuid() == 0 else (["sudo", "-n"] if which("sudo") else None)
        if prefix is None:
            raise SetupError(
                f"missing {', '.join(missing)}; run: sudo apt-get install -y {' '.join(missing)}")
        print(f"== installing {', '.join(missing)} (apt-get)", flush=True)
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        _run(prefix + ["apt-get", "update", "-q"], "apt-get update", env)
        _run(prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
             f"apt-get install {' '.join(missing)}", env)
    paths = {tool: which(tool) for tool in wanted}
    for tool, path in paths.items():
        if not path:
            raise SetupError(f"{tool} is still missing after apt-get install {wanted[tool]}")
    return paths  # type: ignore[return-value]


def ensure_binary(repo: Path, given: str | None) -> tuple[Path, float]:
    """The agentrouter binary to measure, and the seconds spent building it.

    With `--binary` that file is used as is. Otherwise `cargo build
    --release` runs in the repository: a no-op (under a second) when the
    binary is current, a rebuild when the sources changed — so the harness
    never measures a stale binary by accident.
    """
    if given:
        path = Path(given).resolve()
        if not os.access(path, os.X_OK):
            raise SetupError(f"--binary {given}: not an executable file")
        return path, 0.0
    if not which("cargo"):
        raise SetupError("cargo is not on PATH: install rustup, or pass --binary PATH")
    print("== building the release binary (cargo build --release)", flush=True)
    start = time.monotonic()
    _run(["cargo", "build", "--release", "--bin", "agentrouter",
          "--manifest-path", str(repo / "Cargo.toml")], "cargo build --release")
    built = time.monotonic() - start
    target = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target"))
    path = target / "release" / "agentrouter"
    if not path.exists():
        raise SetupError(f"cargo build --release succeeded but {path} does not exist")
    return path, built


def default_litellm_venv() -> Path:
    """Where the LiteLLM virtualenv lives between runs: outside the
    repository (it is ~500 MB) and reused, since installing takes minutes."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "agentrouter-bench" / "litellm-venv"


def ensure_litellm(venv: Path) -> Path:
    """The `litellm` executable in `venv`, creating the venv and running
    `pip install 'litellm[proxy]'` when it is not there yet (~2 minutes)."""
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"== installing LiteLLM's proxy into {venv} (pip, takes minutes)", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], f"python -m venv {venv}")
    pip = str(venv / "bin" / "pip")
    _run([pip, "install", "-q", "--upgrade", "pip"], "pip install --upgrade pip")
    _run([pip, "install", "-q", "litellm[proxy]"], "pip install 'litellm[proxy]'")
    if not exe.exists():
        raise SetupError(f"pip installed litellm[proxy] but {exe} does not exist")
    return exe


def versions(tools: dict[str, str], litellm: Path | None) -> dict[str, str]:
    """Versions of the tools a run used, for the record: nginx, wrk and
    LiteLLM change what their rows mean."""
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown ({e})"
        text = (done.stdout + done.stderr).strip()
        return text.splitlines()[0] if text else "unknown"

    out = {"nginx": first_line([tools["nginx"], "-v"]).removeprefix("nginx version: "),
           "wrk": " ".join(first_line([tools["wrk"], "-v"]).split()[:2]),
           "python": sys.version.split()[0]}
    if litellm:
        py = litellm.parent / "python"
        out["litellm"] = first_line([str(py), "-c",
                                     "import importlib.metadata as m; print(m.version('litellm'))"])
    return out
