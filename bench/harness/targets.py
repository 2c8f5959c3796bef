"""The targets of a run: what each one is, how it is started, what it is
sent, and which processes are charged for serving it.

Every HTTP target answers the same request from the same upstream, an nginx
that returns a static chat completion (`return 200 '...'`): it costs ~40 µs
and is never the bottleneck, so differences between targets are theirs.
The agent and stream targets use the gateway's own simulator instead (in
process for the agent; `agentrouter sim` over HTTP for streams), because
nginx cannot play a model that calls tools or streams.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .procs import Service, Supervisor, free_port, wait_http

MODEL = "bench-model"

# The mock's answer: a complete, valid chat completion, so a gateway parses
# and re-serialises exactly what it would from a real provider.
MOCK_ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello from the benchmark mock."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}, separators=(",", ":"))

CHAT_BODY = json.dumps({
    "model": MODEL, "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
}).encode()

AGENT_BODY = json.dumps({
    "model": "agent:manager",
    "messages": [{"role": "user", "content": "Plan a short trip to Lisbon."}],
}).encode()

# The simulator echoes the prompt in four-word chunks: 64 words make a
# stream of ~17 text chunks, a finish chunk and [DONE].
STREAM_WORDS = " ".join(f"word{i}" for i in range(64))
STREAM_BODY = json.dumps({
    "model": MODEL, "stream": True, "messages": [{"role": "user", "content": STREAM_WORDS}],
}).encode()

# nginx settings shared by the mock and the proxy. Connections are kept
# alive for the whole run (nginx closes one after 1000 requests by default,
# which would add reconnects to nginx's figures only), and nginx does not
# log: it is the floor, not a feature-for-feature peer.
NGINX_COMMON = """
daemon off;
master_process on;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
"""
NGINX_HTTP = """
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""


@dataclass
class Run:
    """What every target of one run shares: paths, tools, the supervisor,
    the upstreams started once, and the keys."""

    tmp: Path
    binary: Path
    nginx: str
    wrk: str
    sup: Supervisor
    startup_timeout_s: float
    litellm: Path | None = None
    key: str = field(default_factory=lambda: "bench-" + secrets.token_hex(16))
    master_key: str = field(default_factory=lambda: "sk-bench-" + secrets.token_hex(16))
    mock: Service | None = None
    sim: Service | None = None

    def url(self, port: int, path: str = "") -> str:
        """A loopback URL on `port`."""
        return f"http://127.0.0.1:{port}{path}"


def _nginx(run: Run, name: str, workers: str, http: str) -> Service:
    """Start an nginx of its own (prefix, pid file, logs in the run's temp
    dir) serving the `http` block, in which `PORT` stands for the port
    chosen for it, and wait until it answers."""
    port = free_port()
    d = run.tmp / name
    d.mkdir(parents=True, exist_ok=True)
    conf = (f"worker_processes {workers};\nerror_log {d}/error.log warn;\n"
            + NGINX_COMMON.format(dir=d)
            + "http {\n" + NGINX_HTTP.format(dir=d) + http.replace("PORT", str(port)) + "}\n")
    (d / "nginx.conf").write_text(conf)
    svc = run.sup.start(name, [run.nginx, "-p", str(d), "-c", str(d / "nginx.conf"),
                               "-e", str(d / "error.log")], port=port)
    wait_http(svc, run.url(port, "/"), run.startup_timeout_s)
    return svc


def start_mock(run: Run) -> Service:
    """The static upstream: nginx with `return 200 '<chat completion>'`,
    one worker per core (`auto`), so that the mock is never what limits
    a target in front of it."""
    answer = MOCK_ANSWER.replace("\\", "\\\\").replace("'", "\\'")
    http = ("    server {\n        listen 127.0.0.1:PORT;\n"
            "        location / {\n            default_type application/json;\n"
            f"            return 200 '{answer}';\n"
            "        }\n    }\n")
    return _nginx(run, "mock", "auto", http)


def start_nginx_proxy(run: Run) -> Service:
    """nginx `proxy_pass` in front of the mock: 1 worker, a keep-alive
    upstream pool — the cost of one well-built HTTP hop."""
    assert run.mock and run.mock.port
    http = ("    upstream mock {\n"
            f"        server 127.0.0.1:{run.mock.port};\n"
            "        keepalive 128;\n        keepalive_requests 1000000;\n"
            "        keepalive_timeout 300s;\n    }\n"
            "    server {\n        listen 127.0.0.1:PORT;\n"
            "        location / {\n            proxy_pass http://mock;\n"
            "            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n        }\n    }\n")
    return _nginx(run, "nginx-proxy", "1", http)


def start_sim(run: Run) -> Service:
    """`agentrouter sim` with no latency: the streaming upstream. Its
    server writes each SSE event as its own body frame, back to back."""
    port = free_port()
    svc = run.sup.start("sim", [str(run.binary), "sim", "--listen", f"127.0.0.1:{port}",
                                "--models", MODEL, "--latency-ms", "0", "--jitter-ms", "0"],
                        env={"RUST_LOG": "info"}, port=port)
    wait_http(svc, run.url(port, "/health"), run.startup_timeout_s)
    return svc


def start_litellm(run: Run) -> Service:
    """LiteLLM's proxy (one worker, a master key) in front of the mock.

    LITELLM_LOCAL_MODEL_COST_MAP keeps it from fetching its price list from
    the internet at start; telemetry is off. No database: a master key
    alone authenticates.
    """
    assert run.litellm and run.mock and run.mock.port
    port = free_port()
    d = run.tmp / "litellm"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {run.url(run.mock.port, '/v1')}\n"
        "      api_key: bench-not-a-secret\n"
        "general_settings:\n"
        f"  master_key: {run.master_key}\n")
    svc = run.sup.start(
        "litellm",
        [str(run.litellm), "--config", str(d / "config.yaml"), "--host", "127.0.0.1",
         "--port", str(port), "--num_workers", "1", "--telemetry", "False"],
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}, cwd=d, port=port)
    wait_http(svc, run.url(port, "/health/liveliness"), max(run.startup_timeout_s, 180))
    return svc


# --- gateway configs --------------------------------------------------------

def _upstream_openai(base_url: str) -> str:
    """An `openai` upstream at `base_url`, with prices so that cost
    accounting and the daily budget have real work to do."""
    return (f'[upstreams.up]\nkind = "openai"\nmodel = "{MODEL}"\nbase_url = "{base_url}"\n'
            "input_cost_per_1k = 0.00015\noutput_cost_per_1k = 0.0006\n")


def _upstream_sim_zero() -> str:
    """The built-in simulator with no latency: agents' LLM calls cost only
    the gateway's own work."""
    return (f'[upstreams.up]\nkind = "simulated"\nmodel = "{MODEL}"\n'
            "input_cost_per_1k = 0.00015\noutput_cost_per_1k = 0.0006\n"
            "[upstreams.up.simulator]\nlatency_ms = 0\njitter_ms = 0\n")


# The production hardening of examples/production.toml's [server] table.
HARDENING = """max_body_bytes = 1048576
max_messages = 256
max_message_chars = 131072
max_headers = 64
max_header_bytes = 16384
header_read_timeout_ms = 5000
body_read_timeout_ms = 15000
request_timeout_ms = 60000
"""

FEATURES = """
[auth]
enabled = true

# Limits and a budget high enough never to refuse a bench request, so that
# every request pays for checking them.
[[auth.keys]]
name = "bench"
secret = "{key}"
models = ["{model}"]
requests_per_s = 1000000.0
burst = 1000000
tokens_per_min = 1000000000000
daily_budget_usd = 1000000000.0

[plugins.input-guard]
source = "builtin:input-guard"

[plugins.pii-redact]
source = "builtin:pii-redact"

[plugins.cost-router]
source = "builtin:cost-router"

[plugins.standard-recovery]
source = "builtin:standard-recovery"

[pipeline]
input_validators = ["input-guard"]
output_validators = ["pii-redact"]
router = "cost-router"
recovery = "standard-recovery"
"""

AGENTS = """
[plugins.manager]
source = "builtin:manager"
[plugins.manager.settings]
workers = "researcher,writer"
model = "{model}"

[plugins.researcher]
source = "builtin:worker"
[plugins.researcher.settings]
role = "researcher"
model = "{model}"

[plugins.writer]
source = "builtin:worker"
[plugins.writer.settings]
role = "writer"
model = "{model}"
"""


def gateway_config(run: Run, name: str, port: int, upstream: str, features: bool,
                   agents: bool, server: str = "", reuse: bool = False) -> Path:
    """Write the config of gateway target `name` and return its path.

    Every gateway has its own store (sled admits one process) but shares
    one plugin compile cache, so only the first start compiles plugins.
    The response cache is off: the bench request is never cacheable under
    the default policy anyway, and a hit would skip the upstream and
    measure something else. `server` is added to the `[server]` table.
    `reuse` gives every features plugin `isolation = "reuse"`.
    """
    d = run.tmp / name
    d.mkdir(parents=True, exist_ok=True)
    text = (f'[server]\nlisten = "127.0.0.1:{port}"\n' + (HARDENING if features else "") + server
            + f'\n[store]\npath = "{d / "data"}"\n'
            + f'\n[runtime]\ncache_dir = "{run.tmp / "plugin-cache"}"\n'
            + "\n[cache]\nenabled = false\n\n" + upstream)
    if features:
        feats = FEATURES.format(key=run.key, model=MODEL)
        if reuse:
            feats = re.sub(r'^(source = "builtin:[a-z-]+")$', r'\1\nisolation = "reuse"', feats,
                           flags=re.M)
        text += feats
    if agents:
        text += AGENTS.format(model=MODEL)
    path = d / "config.toml"
    path.write_text(text)
    return path


def start_gateway(run: Run, name: str, upstream: str, features: bool = False,
                  agents: bool = False, server: str = "", reuse: bool = False) -> Service:
    """Start `agentrouter serve` as target `name`, JSON request log at INFO
    on its stderr (into the run's temp dir), and wait for /health/ready."""
    port = free_port()
    config = gateway_config(run, name, port, upstream, features, agents, server, reuse)
    svc = run.sup.start(name, [str(run.binary), "serve", "--config", str(config),
                               "--log-format", "json"],
                        env={"RUST_LOG": "info"}, port=port)
    wait_http(svc, run.url(port, "/health/ready"), run.startup_timeout_s)
    return svc


# --- the targets ------------------------------------------------------------

@dataclass
class Target:
    """One row of the results.

    `start` returns the service to load (a new one the cell stops after
    itself, or a shared one: `owned` says which); `helpers` are the
    services upstream of it, whose CPU is reported separately;
    `baseline` is the target its latency is compared to.
    """

    name: str
    label: str
    start: Callable[[Run], Service]
    body: bytes = CHAT_BODY
    auth: Callable[[Run], str | None] = lambda run: None
    helpers: Callable[[Run], list[Service]] = lambda run: [run.mock] if run.mock else []
    owned: bool = True
    gateway: bool = False
    stream: bool = False
    baseline: str = "direct"
    needs: tuple[str, ...] = ("mock",)


def _mock_url(run: Run) -> str:
    assert run.mock and run.mock.port
    return run.url(run.mock.port, "/v1")


def _sim_url(run: Run) -> str:
    assert run.sim and run.sim.port
    return run.url(run.sim.port, "/v1")


TARGETS = [
    Target("direct", "direct to the mock", lambda run: run.mock, owned=False,
           helpers=lambda run: [], baseline=""),
    Target("nginx", "nginx `proxy_pass` (1 worker, keepalive)", start_nginx_proxy),
    Target("litellm", "LiteLLM proxy (1 worker, master key)", start_litellm,
           auth=lambda run: run.master_key),
    Target("bare", "agentrouter bare (openai upstream, no plugins, no auth)",
           lambda run: start_gateway(run, "bare", _upstream_openai(_mock_url(run))), gateway=True),
    Target("features", "agentrouter features on",
           lambda run: start_gateway(run, "features", _upstream_openai(_mock_url(run)), True),
           auth=lambda run: run.key, gateway=True),
    Target("features-reuse", "agentrouter features on, plugins with `isolation = \"reuse\"`",
           lambda run: start_gateway(run, "features-reuse", _upstream_openai(_mock_url(run)), True,
                                     reuse=True),
           auth=lambda run: run.key, gateway=True),
    Target("agent", "agentrouter `agent:manager` + 2 workers, features on, 0 ms simulator",
           lambda run: start_gateway(run, "agent", _upstream_sim_zero(), True, True),
           body=AGENT_BODY, auth=lambda run: run.key, helpers=lambda run: [], gateway=True,
           baseline="", needs=()),
    Target("stream-direct", "stream: direct to `agentrouter sim`", lambda run: run.sim,
           body=STREAM_BODY, owned=False, helpers=lambda run: [], stream=True, baseline="",
           needs=("sim",)),
    Target("stream-bare", "stream: agentrouter bare → sim",
           lambda run: start_gateway(run, "stream-bare", _upstream_openai(_sim_url(run))),
           body=STREAM_BODY, helpers=lambda run: [run.sim], gateway=True, stream=True,
           baseline="stream-direct", needs=("sim",)),
    Target("stream-features", "stream: agentrouter features on → sim",
           lambda run: start_gateway(run, "stream-features", _upstream_openai(_sim_url(run)), True),
           body=STREAM_BODY, auth=lambda run: run.key, helpers=lambda run: [run.sim],
           gateway=True, stream=True, baseline="stream-direct", needs=("sim",)),
]

# Idle keep-alive connections: which targets, started fresh for the cell.
IDLE = ["nginx", "bare", "features"]

# Interactive latency during a batch (bench/harness/batch.py): the bare
# gateway in front of the zero-latency simulator, as the stream targets.
# Not a row of the main table: its cells are idle vs during a batch. The
# batch file of a 10 s cell is ~3 MB, more than the default 1 MiB body
# (binaries since `batches.max_file_bytes` take 100 MiB uploads anyway;
# the key is not set here so that older binaries can be measured too).
BATCH = Target("batch", "interactive c=1 during a batch: agentrouter bare → sim",
               lambda run: start_gateway(run, "batch", _upstream_openai(_sim_url(run)),
                                         server="max_body_bytes = 67108864\n"),
               helpers=lambda run: [run.sim], gateway=True, baseline="", needs=("sim",))


def by_name(name: str) -> Target:
    """The target called `name`; `KeyError` lists the valid names."""
    for t in TARGETS:
        if t.name == name:
            return t
    raise KeyError(f"unknown target {name!r}; targets: {', '.join(t.name for t in TARGETS)}")
