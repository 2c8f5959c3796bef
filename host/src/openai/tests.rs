use super::*;
use crate::domain::{self as d, TokenBound};
use serde_json::{Value, json};

#[test]
fn parses_lenient_openai_requests() {
    let body = r#"{"model":"m","messages":[
        {"role":"developer","content":"be brief"},
        {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]},
        {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}
    ],"logprobs":true,"max_completion_tokens":9,"metadata":{"tier":"gold"}}"#;
    let req: ChatRequest = serde_json::from_str(body).unwrap();
    let domain = req.to_domain().unwrap();
    assert_eq!(domain.messages[0].role, d::Role::System);
    assert_eq!(domain.messages[1].content, "hi there");
    assert_eq!(domain.messages[2].tool_calls[0].name, "f");
    assert_eq!(domain.max_tokens, Some(9));
    assert_eq!(domain.token_bound, TokenBound::MaxCompletionTokens);
    assert_eq!(domain.metadata["tier"], "gold");
}

#[test]
fn names_the_bad_message() {
    let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"robot","content":"b"}]}"#).unwrap();
    assert_eq!(
        req.to_domain().unwrap_err().to_string(),
        "messages[1].role: unknown role `robot`"
    );
    let req: ChatRequest = serde_json::from_str(
        r#"{"model":"m","messages":[{"role":"user","content":[{"text":"no type"}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        req.to_domain().unwrap_err().to_string(),
        "messages[0].content: part 0 has no `type`"
    );
}

/// What the upstream is sent for a client's body (as a non-streamed call).
fn forwarded(body: &Value) -> Value {
    let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
    let domain = req.to_domain().unwrap();
    // Through text, as the upstream receives it (an `f32` is written as
    // its shortest decimal there).
    let text = serde_json::to_string(&ChatRequest::from_domain(&domain, false)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn forwards_every_field_as_sent() {
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "name": "ann", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-1"}}
            ]},
            {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ],
        "max_completion_tokens": 9,
        "max_tokens": 7,
        "temperature": 0.7,
        "top_p": 0.5, "n": 2, "stop": ["x"], "seed": 1, "logprobs": true, "top_logprobs": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "strict": true, "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "f", "strict": true, "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "user": "u-1",
        "metadata": {"tier": "gold"},
        "some_future_field": {"nested": [1, 2]}
    });
    assert_eq!(forwarded(&body), body);
}

#[test]
fn streamed_calls_ask_for_usage_and_keep_other_stream_options() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "stream": true, "stream_options": {"include_obfuscation": false}});
    let req: ChatRequest = serde_json::from_value(body).unwrap();
    assert!(!req.include_usage());
    let domain = req.to_domain().unwrap();
    let streamed = serde_json::to_value(ChatRequest::from_domain(&domain, true)).unwrap();
    assert_eq!(
        streamed["stream_options"],
        json!({"include_usage": true, "include_obfuscation": false})
    );
    let whole = serde_json::to_value(ChatRequest::from_domain(&domain, false)).unwrap();
    assert!(whole.get("stream_options").is_none() && whole.get("stream").is_none());
}

#[test]
fn rewritten_text_takes_the_first_text_part() {
    let parts = vec![
        json!({"type": "text", "text": "mail jane@example.com", "cache": 1}),
        json!({"type": "image_url", "image_url": {"url": "u"}}),
        json!({"type": "text", "text": " now"}),
    ];
    assert_eq!(render_parts(&parts, "mail jane@example.com now"), parts);
    assert_eq!(
        render_parts(&parts, "mail [email] now"),
        vec![
            json!({"type": "text", "text": "mail [email] now", "cache": 1}),
            json!({"type": "image_url", "image_url": {"url": "u"}}),
        ]
    );
    assert_eq!(
        render_parts(&parts[1..2], "added"),
        vec![
            json!({"type": "text", "text": "added"}),
            json!({"type": "image_url", "image_url": {"url": "u"}}),
        ]
    );
}

#[test]
fn answers_keep_every_choice_and_field() {
    let body = json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 7, "model": "m-2025",
        "system_fingerprint": "fp_1", "service_tier": "default",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "one", "refusal": null, "annotations": []},
             "logprobs": {"content": [{"token": "one", "logprob": -0.1, "bytes": [111, 110, 101], "top_logprobs": []}], "refusal": null},
             "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "no"},
             "logprobs": null, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3}}
    });
    let parsed: ChatResponse = serde_json::from_value(body.clone()).unwrap();
    let completion = parsed.into_completion().unwrap();
    assert_eq!(completion.message.content, "one");
    assert_eq!(completion.usage.cached_prompt_tokens, 8);
    assert_eq!(completion.usage.reasoning_tokens, 3);
    assert_eq!(completion.details.choices.len(), 1);
    let back = serde_json::to_value(ChatResponse::from_completion(
        "chatcmpl-up".into(),
        7,
        &completion,
    ))
    .unwrap();
    assert_eq!(back, body);
}

fn chunk(choices: Value, usage: Value) -> ChatChunk {
    serde_json::from_value(
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
        "model": "real-model", "system_fingerprint": "fp", "choices": choices, "usage": usage}),
    )
    .unwrap()
}

#[test]
fn assembly_rebuilds_choices_tool_calls_refusals_and_logprobs() {
    let mut a = Assembly::new("m");
    for c in [
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                "logprobs": {"content": [{"token": "Hi", "logprob": 0}], "refusal": null}}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "a", "type": "function",
                "function": {"name": "search", "arguments": "{\"q\""}}]}},
                {"index": 1, "delta": {"refusal": "I can"}}]),
            Value::Null,
        ),
        chunk(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                "finish_reason": "tool_calls"},
                {"index": 1, "delta": {"refusal": "not."}, "finish_reason": "stop"}]),
            Value::Null,
        ),
        chunk(
            json!([]),
            json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}),
        ),
    ] {
        a.push(&c).unwrap();
    }
    let done = a.finish().unwrap();
    let c = done.completion;
    assert!(done.usage_reported);
    assert_eq!(
        (c.model.as_str(), c.message.content.as_str()),
        ("real-model", "Hi")
    );
    assert_eq!(c.message.tool_calls[0].arguments, "{\"q\":1}");
    assert_eq!(c.finish_reason, "tool_calls");
    assert_eq!(c.details.choice["logprobs"]["content"][0]["token"], "Hi");
    assert_eq!(
        c.details.choices[0].message.wire.extra["refusal"],
        "I cannot."
    );
    assert_eq!(c.details.response["system_fingerprint"], "fp");
    assert_eq!(c.usage, d::Usage::new(4, 2));

    let mut unfinished = Assembly::new("m");
    unfinished
        .push(&chunk(
            json!([{"index": 0, "delta": {"content": "x"}}]),
            Value::Null,
        ))
        .unwrap();
    assert!(unfinished.finish().is_err());
}
