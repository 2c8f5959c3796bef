-- wrk script of the AgentRouter bench: POSTs one JSON body on every request
-- and prints the run's summary as one JSON line for bench/harness/load.py.
--
--   BENCH_BODY  path of the request body (required)
--   BENCH_AUTH  bearer token for the Authorization header (optional)
--
-- Latencies are wrk's own (microseconds, per request, from the first byte
-- written to the last byte read). errors.status counts responses >= 400:
-- the harness treats any as a failed cell, since a fast 401 or 429 would
-- otherwise pass for a fast gateway.

local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path or "", "rb"), "BENCH_BODY: cannot open " .. tostring(path))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"min_us":%.0f,"max_us":%.0f,"mean_us":%.1f,' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.min, latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
