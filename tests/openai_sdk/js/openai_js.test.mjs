// The official OpenAI JS SDK against the gateway, with the recording
// upstream behind it (tests/support/recorder.rs): parameters arrive
// unchanged, every choice and field comes back, streams carry usage exactly
// when asked, an upstream 400 is the SDK's BadRequestError sent once, and
// models can be retrieved. Run by tests/openai_sdk.rs with `node --test`;
// the SDK is installed in AGENTROUTER_OPENAI_JS (see package.json).

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { beforeEach, test } from "node:test";

const require = createRequire(process.env.AGENTROUTER_OPENAI_JS + "/package.json");
const openai = require("openai");
const OpenAI = openai.OpenAI ?? openai.default;
const GATEWAY = process.env.AGENTROUTER_GATEWAY;
const RECORDER = process.env.AGENTROUTER_RECORDER;
const MODEL = "gpt-rec";

async function control(path, body) {
  const init = body === undefined ? {} : { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } };
  const text = await (await fetch(RECORDER + path, init)).text();
  return text ? JSON.parse(text) : null;
}
const reply = (...canned) => control("/control/replies", canned);
const received = async () => (await control("/control/requests")).map((r) => r.body);

const USAGE = {
  prompt_tokens: 20, completion_tokens: 8, total_tokens: 28,
  prompt_tokens_details: { cached_tokens: 16 }, completion_tokens_details: { reasoning_tokens: 3 },
};
const choice = (index, content, extra = {}) => ({
  index, message: { role: "assistant", content, refusal: null, annotations: [] }, logprobs: null, finish_reason: "stop", ...extra,
});
const completion = (choices) => ({
  id: "chatcmpl-up", object: "chat.completion", created: 1, model: MODEL, choices, usage: USAGE,
  system_fingerprint: "fp_js", service_tier: "default",
});
const chunk = (choices, extra = {}) => ({ id: "up", object: "chat.completion.chunk", created: 1, model: MODEL, choices, ...extra });

// The SDK's own retries stay on (2), so a 5xx would show as 3 requests.
const client = new OpenAI({ baseURL: GATEWAY + "/v1", apiKey: "unused-without-auth" });

beforeEach(() => control("/control/reset", {}));

test("parameters reach the upstream unchanged and every choice comes back", async () => {
  const lp = (token, logprob) => ({ content: [{ token, logprob, bytes: [...Buffer.from(token)], top_logprobs: [] }], refusal: null });
  const upstream = completion([choice(0, '{"ok":true}', { logprobs: lp("Yes", -0.1) }), choice(1, '{"ok":false}', { logprobs: lp("No", -2) })]);
  await reply({ kind: "json", status: 200, body: upstream });
  const params = {
    model: MODEL,
    messages: [
      { role: "developer", content: "Answer in JSON." },
      { role: "user", content: [{ type: "text", text: "ok?" }, { type: "image_url", image_url: { url: "data:image/png;base64,AAAA" } }] },
    ],
    n: 2, seed: 7, stop: ["\n\n"], logprobs: true, top_logprobs: 1, max_completion_tokens: 32, user: "u-js",
    response_format: { type: "json_schema", json_schema: { name: "ok", strict: true, schema: { type: "object", properties: { ok: { type: "boolean" } }, required: ["ok"], additionalProperties: false } } },
    a_field_from_next_year: { nested: [1, 2] },
  };
  const response = await client.chat.completions.create(params);
  assert.deepEqual(await received(), [params]);
  assert.deepEqual(response.choices.map((c) => c.message.content), ['{"ok":true}', '{"ok":false}']);
  assert.deepEqual(response.choices.map((c) => c.logprobs.content[0].logprob), [-0.1, -2]);
  assert.equal(response.system_fingerprint, "fp_js");
  assert.equal(response.service_tier, "default");
  assert.deepEqual(response.usage, USAGE);
});

function streamed() {
  return {
    kind: "sse",
    chunks: [
      chunk([{ index: 0, delta: { role: "assistant", content: "Hel" }, finish_reason: null }]),
      chunk([{ index: 0, delta: { tool_calls: [{ index: 0, id: "call_a", type: "function", function: { name: "lookup", arguments: '{"col' } }] }, finish_reason: null }]),
      chunk([{ index: 0, delta: { content: "lo", tool_calls: [{ index: 0, function: { arguments: 'our":"red"}' } }] }, finish_reason: null }]),
      chunk([{ index: 0, delta: {}, finish_reason: "tool_calls" }]),
      chunk([], { usage: USAGE }),
    ],
  };
}

for (const includeUsage of [false, true]) {
  test(`a stream ${includeUsage ? "with" : "without"} include_usage`, async () => {
    await reply(streamed());
    const options = includeUsage ? { stream_options: { include_usage: true } } : {};
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], stream: true, ...options });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? "")).join("");
    const args = chunks.flatMap((c) => c.choices.flatMap((ch) => (ch.delta.tool_calls ?? []).map((t) => t.function?.arguments ?? ""))).join("");
    assert.equal(text, "Hello");
    assert.equal(args, '{"colour":"red"}');
    const withUsage = chunks.filter((c) => c.usage);
    if (includeUsage) {
      assert.deepEqual(withUsage, [chunks.at(-1)]);
      assert.deepEqual(chunks.at(-1).choices, []);
      assert.deepEqual(chunks.at(-1).usage, USAGE);
    } else {
      assert.deepEqual(withUsage, []);
    }
  });
}

test("an upstream 400 is a BadRequestError with its message, sent once", async () => {
  const error = { message: "Unsupported parameter: 'max_tokens'.", type: "invalid_request_error", param: "max_tokens", code: "unsupported_parameter" };
  await reply({ kind: "json", status: 400, body: { error } });
  await assert.rejects(
    client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 5 }),
    (e) => {
      assert.ok(e instanceof openai.BadRequestError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.code, "unsupported_parameter");
      assert.equal(e.param, "max_tokens");
      assert.ok(e.message.includes(error.message), e.message);
      assert.equal(e.headers.get("x-agentrouter-upstream"), "rec");
      return true;
    },
  );
  assert.equal((await received()).length, 1, "neither the SDK nor the gateway may send it again");
});

test("models can be retrieved, and an unknown one is a NotFoundError", async () => {
  const model = await client.models.retrieve(MODEL);
  assert.deepEqual([model.id, model.object], [MODEL, "model"]);
  await assert.rejects(client.models.retrieve("no-such-model"), (e) => e instanceof openai.NotFoundError && e.code === "model_not_found");
});
