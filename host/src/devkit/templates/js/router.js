// __NAME__: an AgentRouter router.
//
// Drops upstreams whose circuit is open and tries the fastest first.

export function route(_req, candidates) {
  return candidates
    .filter((c) => c.circuit !== "open")
    .sort((a, b) => a.ewmaLatencyMs - b.ewmaLatencyMs)
    .map((c) => c.name);
}
