// __NAME__: an AgentRouter recovery strategy.
//
// Retries rate limits after the upstream's hint, falls back on timeouts,
// retries server errors while attempts remain, and gives up otherwise.

import { get } from "agentrouter:plugin/settings@0.2.0";

export function recover(ctx) {
  const delayMs = Number.parseInt(get("delay_ms") ?? "200", 10);
  const failure = ctx.failure;
  switch (failure.tag) {
    case "rate-limited":
      return { tag: "retry", val: failure.val ?? delayMs };
    case "timeout":
      return ctx.alternatives.length > 0
        ? { tag: "fallback", val: ctx.alternatives[0] }
        : { tag: "fail", val: false };
    case "upstream-status":
      if (failure.val >= 500 && ctx.attempt < ctx.maxAttempts) {
        return { tag: "retry", val: delayMs };
      }
      return { tag: "fail", val: false };
    default:
      return { tag: "fail", val: false };
  }
}
