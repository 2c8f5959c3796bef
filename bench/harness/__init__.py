"""AgentRouter's load harness: one command that measures the gateway against
a static nginx mock, nginx's own proxy hop and (optionally) LiteLLM.

`bench/run` is the entry point; bench/README.md describes every cell. The
modules split the work by concern:

- `cli`       options and the order of the run
- `install`   tools a fresh machine lacks (apt-get), the release binary, LiteLLM
- `procs`     child processes: own process groups, readiness polls, cleanup
- `targets`   what each target is: its configs, its request, its processes
- `machine`   /proc readers: CPU time, RSS, load, the machine's description
- `cells`     the measurements of one target (preflight, warm-up, c=1, c=64, RSS)
- `load`      wrk runs and their JSON summary
- `wire`      a minimal HTTP/1.1 client for streams and idle connections
- `stream`    time to first token and chunk rate of a streamed completion
- `idle`      memory per idle keep-alive connection
- `batch`     interactive c=1 latency idle and during a batch (issue 16)
- `report`    ratios, the budget, markdown and JSON
"""
