// __NAME__: an AgentRouter validator.
//
// Rejects input longer than the `max_chars` setting (default 10000).

import { get } from "agentrouter:plugin/settings@0.2.0";

export function validate(stage, messages) {
  const limit = Number.parseInt(get("max_chars") ?? "10000", 10);
  const total = messages.reduce((n, m) => n + m.content.length, 0);
  if (stage === "input" && total > limit) {
    return { tag: "reject", val: `__NAME__: input has ${total} characters, limit is ${limit}` };
  }
  return { tag: "allow" };
}
