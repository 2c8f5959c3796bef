// __NAME__: an AgentRouter agent.
//
// Answers a task with one completion, framed by the `instructions` setting.

import { complete } from "agentrouter:plugin/llm@0.2.0";
import { log } from "agentrouter:plugin/log@0.2.0";
import { get } from "agentrouter:plugin/settings@0.2.0";

function setting(key, fallback) {
  const value = get(key);
  return value === undefined || value === null ? fallback : value;
}

// Returning a value is `ok`; a failed completion throws, and the thrown
// failure becomes this task's failure.
export function handle(task) {
  const system = { role: "system", content: setting("instructions", "Answer briefly."), toolCalls: [] };
  const answer = complete({
    model: setting("model", ""),
    messages: [system, ...task.input],
    tools: [],
    metadata: task.metadata,
  });
  log("info", "answered", [["model", answer.model]]);
  return { output: answer.message, usage: answer.usage };
}
