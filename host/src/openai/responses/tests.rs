//! Unit tests of the translation both ways.

use super::*;
use crate::domain::{Completion, Message, ToolCall, Usage};

fn request(body: Value) -> ResponsesRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn items_become_chat_messages() {
    let req = request(json!({"model": "m", "instructions": "be brief", "input": [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]}
    ], "tools": [{"type": "function", "name": "f", "description": null, "parameters": {"type": "object"}, "strict": true}],
       "tool_choice": {"type": "function", "name": "f"}, "max_output_tokens": 9, "store": false,
       "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}, "strict": true}},
       "truncation": "auto", "seed": 4}));
    let items = req.input_items().unwrap();
    let body = req
        .chat_body(vec![json!({"role": "user", "content": "before"})], &items)
        .unwrap();
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "before"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "checking", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]}
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(body["max_completion_tokens"], 9);
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(body["seed"], 4, "unknown fields are forwarded");
    assert!(body.get("truncation").is_none() && body.get("store").is_none());
}

#[test]
fn what_cannot_be_translated_is_refused_naming_the_field() {
    let bad = |body: Value| {
        let req = request(body);
        let items = req.input_items()?;
        req.chat_body(Vec::new(), &items).map(drop)
    };
    let e = bad(json!({"model": "m", "input": ""})).unwrap_err();
    assert_eq!(e.param, "input");
    let e =
        bad(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).unwrap_err();
    assert_eq!(e.param, "tools[0].type");
    let e =
        bad(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})).unwrap_err();
    assert_eq!(e.param, "input[0].type");
    let e = bad(json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}))
        .unwrap_err();
    assert_eq!(e.param, "input[0].call_id");
}

#[test]
fn an_answer_becomes_output_items_and_a_cut_one_is_incomplete() {
    let mut message = Message::assistant("");
    message.tool_calls = vec![ToolCall {
        id: "call_0".into(),
        name: "f".into(),
        arguments: "{}".into(),
    }];
    let completion = Completion {
        message,
        model: "m".into(),
        finish_reason: "tool_calls".into(),
        usage: Usage::new(3, 2),
        cached: false,
        details: Default::default(),
    };
    let object = ResponseObject::new(
        "resp_abc".into(),
        7,
        &request(json!({"model": "m", "input": "x"})),
    );
    let done = object.finished(&completion);
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["output"],
        json!([{"type": "function_call", "id": "fc_abc_0", "call_id": "call_0",
        "name": "f", "arguments": "{}", "status": "completed"}])
    );
    assert_eq!(done["usage"]["total_tokens"], 5);
    // The output items translate back into the chat history.
    let history = chat_messages(done["output"].as_array().unwrap(), "output").unwrap();
    assert_eq!(history[0]["tool_calls"][0]["id"], "call_0");
    let cut = Completion {
        message: Message::assistant("ab"),
        finish_reason: "length".into(),
        ..completion
    };
    let done = object.finished(&cut);
    assert_eq!(
        (
            done["status"].as_str(),
            done["incomplete_details"]["reason"].as_str()
        ),
        (Some("incomplete"), Some("max_output_tokens"))
    );
    assert_eq!(done["output"][0]["id"], "msg_abc");
}
