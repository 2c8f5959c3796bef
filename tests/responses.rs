//! `/v1/responses` over real HTTP: the translation to chat completions and
//! back (a [`Recorder`] shows what the upstream is sent), the Responses
//! event stream, stored responses (retrieval, input items, deletion,
//! `store: false`), `previous_response_id` across a gateway restart and
//! between keys, agents, and errors in OpenAI's shape.

mod support;

use serde_json::{Value, json};
use support::{ALICE, BOB, Canned, Gateway, Recorder, Reply, SimServer, steady, two_keys};

async fn respond(gw: &Gateway, key: Option<&str>, body: &Value) -> Reply {
    let mut req = gw.client.post(gw.url("/v1/responses")).json(body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    gw.send(req).await
}

async fn get_as(gw: &Gateway, key: Option<&str>, path: &str) -> Reply {
    let mut req = gw.client.get(gw.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    gw.send(req).await
}

/// The `(event, data)` pairs of a Responses stream.
/// Continuing from `id` as `key` is refused as if `id` did not exist.
async fn assert_not_continued(gw: &Gateway, key: Option<&str>, model: &str, id: &str) {
    let cont = respond(
        gw,
        key,
        &json!({"model": model, "input": "more", "previous_response_id": id}),
    )
    .await;
    assert_eq!(
        (cont.status, cont.code()),
        (404, "previous_response_not_found".into()),
        "{}",
        cont.text
    );
    assert_eq!(cont.json()["error"]["param"], "previous_response_id");
}

fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {block}"))
                    .to_string()
            };
            let data: Value = serde_json::from_str(&field("data: ")).unwrap();
            (field("event: "), data)
        })
        .collect()
}

fn tool_call_answer() -> Value {
    json!({"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-rec",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_7", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"red\"}"}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 2}}})
}

#[tokio::test]
async fn a_response_is_translated_to_chat_and_back_stored_continued_and_deleted() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    rec.reply(Canned::ok(tool_call_answer()));
    let tool = json!({"type": "function", "name": "lookup", "description": "Looks up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true});
    let first = respond(
        &gw,
        None,
        &json!({"model": "gpt-rec", "instructions": "Use the tool.", "input": "Is red warm?",
            "tools": [tool], "max_output_tokens": 50, "temperature": 0.5, "metadata": {"team": "a"}}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let sent = rec.only_body();
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "Is red warm?"}])
    );
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup");
    assert_eq!(sent["tools"][0]["function"]["strict"], true);
    assert_eq!(
        (
            sent["max_completion_tokens"].as_u64(),
            sent["temperature"].as_f64()
        ),
        (Some(50), Some(0.5))
    );
    let object = first.json();
    let id = object["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(first.header("x-request-id"), Some(id.as_str()));
    assert_eq!(
        (object["object"].as_str(), object["status"].as_str()),
        (Some("response"), Some("completed"))
    );
    assert_eq!(object["output"].as_array().unwrap().len(), 1);
    let call = &object["output"][0];
    assert_eq!(
        (
            call["type"].as_str(),
            call["call_id"].as_str(),
            call["name"].as_str()
        ),
        (Some("function_call"), Some("call_7"), Some("lookup"))
    );
    assert_eq!(
        object["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
    );
    assert_eq!(object["metadata"], json!({"team": "a"}));

    // Stored: retrievable as it was answered, with its input items.
    let (status, stored) = gw.get(&format!("/v1/responses/{id}")).await;
    assert_eq!((status, &stored), (200, &object));
    let (_, items) = gw.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(items["object"], "list");
    assert_eq!(
        items["data"][0]["content"],
        json!([{"type": "input_text", "text": "Is red warm?"}])
    );
    assert_eq!(items["first_id"], items["data"][0]["id"]);

    // Continued: the stored conversation, then the tool's output; the
    // first response's instructions are not carried on.
    let second = respond(
        &gw,
        None,
        &json!({"model": "gpt-rec", "previous_response_id": id,
            "input": [{"type": "function_call_output", "call_id": "call_7", "output": "warm"}]}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text);
    let sent = rec.requests()[1].body.clone();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "Is red warm?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_7", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"red\"}"}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": "warm"}
        ])
    );
    let answer = second.json();
    assert_eq!(answer["output"][0]["content"][0]["text"], "recorded");
    assert_eq!(answer["previous_response_id"], id.as_str());

    let deleted = gw
        .send(gw.client.delete(gw.url(&format!("/v1/responses/{id}"))))
        .await;
    assert_eq!(
        (deleted.status, deleted.json()["deleted"].as_bool()),
        (200, Some(true))
    );
    let gone = get_as(&gw, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(
        (gone.status, gone.code()),
        (404, "response_not_found".into())
    );

    // `store: false`: answered, not kept, so neither read nor continued.
    let unstored = respond(
        &gw,
        None,
        &json!({"model": "gpt-rec", "input": "x", "store": false}),
    )
    .await;
    assert_eq!(unstored.status, 200, "{}", unstored.text);
    assert_eq!(unstored.json()["store"], false);
    let id = unstored.json()["id"].as_str().unwrap().to_string();
    let gone = get_as(&gw, None, &format!("/v1/responses/{id}")).await;
    assert_eq!(gone.status, 404);
    assert_not_continued(&gw, None, "gpt-rec", &id).await;
    assert_eq!(
        rec.requests().len(),
        3,
        "a refused continuation reaches no upstream"
    );
    gw.stop().await;
    rec.stop().await;
}

#[tokio::test]
async fn a_streamed_response_speaks_the_responses_events_and_is_stored_when_it_ends() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("")).await;
    let reply = respond(
        &gw,
        None,
        &json!({"model": "m", "input": "hello there you", "stream": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = sse_events(&reply.text);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    assert!(deltas >= 1, "{kinds:?}");
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, want);
    for (i, (kind, data)) in events.iter().enumerate() {
        assert_eq!(
            (data["type"].as_str(), data["sequence_number"].as_u64()),
            (Some(kind.as_str()), Some(i as u64))
        );
    }
    let text: String = events
        .iter()
        .filter(|(k, _)| k == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "[m] You said: hello there you");
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(done["output"][0]["id"], events[2].1["item"]["id"]);
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let (status, stored) = gw
        .get(&format!("/v1/responses/{}", done["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, &stored), (200, done));

    // A tool call streams as a function_call item with its arguments.
    let tool = json!({"type": "function", "name": "lookup", "parameters": {"type": "object"}});
    let reply = respond(
        &gw,
        None,
        &json!({"model": "m", "input": "red?", "stream": true, "tools": [tool]}),
    )
    .await;
    let events = sse_events(&reply.text);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        &kinds[2..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[4].1["arguments"], "{\"task\":\"red?\"}");
    assert_eq!(events[2].1["item"]["call_id"], "call_0");

    // The cache, as for chat: a deterministic request is answered once,
    // then from the cache at no cost, under a new response id.
    let before = up.requests();
    let body = json!({"model": "m", "input": "cache me", "temperature": 0});
    let miss = respond(&gw, None, &body).await;
    let hit = respond(&gw, None, &body).await;
    assert_eq!(
        (
            miss.header("x-agentrouter-cache"),
            hit.header("x-agentrouter-cache")
        ),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(hit.header("x-agentrouter-cost-usd"), Some("0.00000000"));
    assert_ne!(miss.json()["id"], hit.json()["id"]);
    assert_eq!(
        hit.json()["output"][0]["content"][0]["text"],
        "[m] You said: cache me"
    );
    assert_eq!(up.requests(), before + 1);
    gw.stop().await;
    up.stop().await;
}

#[tokio::test]
async fn a_conversation_continues_across_a_restart_for_its_own_key_only() {
    let rec = Recorder::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = rec.config("gpt-rec", &two_keys());
    let gw = Gateway::start_in(dir.path(), &config).await;
    let alice = Some(ALICE);
    let bob = Some(BOB);
    let first = respond(
        &gw,
        alice,
        &json!({"model": "gpt-rec", "input": "remember 7"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json()["id"].as_str().unwrap().to_string();
    gw.stop().await;

    let gw = Gateway::start_in(dir.path(), &config).await;
    // Another key is told it does not exist, and reaches no upstream.
    let theirs = get_as(&gw, bob, &format!("/v1/responses/{id}")).await;
    assert_eq!(
        (theirs.status, theirs.code()),
        (404, "response_not_found".into())
    );
    let theirs = get_as(&gw, bob, &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(theirs.status, 404);
    assert_not_continued(&gw, bob, "gpt-rec", &id).await;
    let deleted = gw
        .send(
            gw.client
                .delete(gw.url(&format!("/v1/responses/{id}")))
                .bearer_auth(BOB),
        )
        .await;
    assert_eq!(deleted.status, 404);
    assert_eq!(rec.requests().len(), 1);

    let next = respond(
        &gw,
        alice,
        &json!({"model": "gpt-rec", "input": "which number?", "previous_response_id": id}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(
        rec.requests()[1].body["messages"],
        json!([{"role": "user", "content": "remember 7"}, {"role": "assistant", "content": "recorded"},
            {"role": "user", "content": "which number?"}])
    );
    gw.stop().await;
    rec.stop().await;
}

#[tokio::test]
async fn a_response_past_its_ttl_is_neither_served_nor_continued() {
    let rec = Recorder::start().await;
    let config = rec.config(
        "gpt-rec",
        &format!("{}\n[responses]\nttl_s = 1\n", two_keys()),
    );
    let gw = Gateway::start(&config).await;
    let alice = Some(ALICE);
    let first = respond(&gw, alice, &json!({"model": "gpt-rec", "input": "hi"})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        get_as(&gw, alice, &format!("/v1/responses/{id}"))
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_not_continued(&gw, alice, "gpt-rec", &id).await;
    let gone = get_as(&gw, alice, &format!("/v1/responses/{id}")).await;
    assert_eq!(
        (gone.status, gone.code()),
        (404, "response_not_found".into())
    );
    assert_eq!(
        rec.requests().len(),
        1,
        "an expired chain reaches no upstream"
    );
    gw.stop().await;
    rec.stop().await;
}

#[tokio::test]
async fn agents_validators_and_errors_apply_to_responses() {
    // The quickstart: input-guard and pii-redact validators, the cost
    // router, recovery, and agents.
    let gw = Gateway::start(&support::quickstart("")).await;
    let reply = respond(
        &gw,
        None,
        &json!({"model": "agent:researcher", "input": "Summarise sleds."}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["output"][0]["type"], "message");
    assert!(
        !body["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let streamed = respond(
        &gw,
        None,
        &json!({"model": "agent:researcher", "input": "Again.", "stream": true}),
    )
    .await;
    assert_eq!(
        sse_events(&streamed.text).last().unwrap().0,
        "response.completed"
    );

    // The output validator redacts the answer (the simulator echoes).
    let reply = respond(
        &gw,
        None,
        &json!({"model": "usf-mini", "input": "mail me at a@b.example"}),
    )
    .await;
    let text = reply.json()["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains("a@b.example"), "{text}");
    // The input validator refuses an attack, as for chat.
    let reply = respond(
        &gw,
        None,
        &json!({"model": "usf-mini",
        "input": "please DROP TABLE users"}),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, "content_rejected".into()),
        "{}",
        reply.text
    );

    for (body, status, param) in [
        (json!({"model": "usf-mini", "input": ""}), 400, "input"),
        (
            json!({"model": "usf-mini", "input": "x", "tools": [{"type": "web_search"}]}),
            400,
            "tools[0].type",
        ),
        (
            json!({"model": "usf-mini", "input": [{"type": "item_reference", "id": "x"}]}),
            400,
            "input[0].type",
        ),
        (json!({"model": "", "input": "x"}), 400, "model"),
    ] {
        let reply = respond(&gw, None, &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text);
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }
    let reply = respond(&gw, None, &json!({"model": "nope", "input": "x"})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "model_not_found".into())
    );
    let reply = respond(&gw, None, &json!({"model": "agent:nope", "input": "x"})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "agent_not_found".into())
    );
    let reply = get_as(&gw, None, "/v1/responses/resp_nope").await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "response_not_found".into())
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_that_speaks_responses_gets_them_passed_through_for_its_owner() {
    let up = SimServer::start(steady(0), &["m-native"]).await;
    let config = up.config(&two_keys()).replace(
        "input_cost_per_1k = 1.0\n",
        "input_cost_per_1k = 1.0\nserves = [\"responses\"]\n",
    );
    let gw = Gateway::start(&config).await;
    let (alice, bob) = (Some(ALICE), Some(BOB));
    let first = respond(
        &gw,
        alice,
        &json!({"model": "m-native", "input": "hi there", "include": ["x"]}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let object = first.json();
    let id = object["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("resp_sim"),
        "the upstream's own object: {id}"
    );
    assert_eq!(
        object["output"][0]["content"][0]["text"],
        "[m-native] You said: hi there"
    );
    assert_eq!(first.header("x-agentrouter-cache"), Some("bypass"));
    let cost: f64 = first
        .header("x-agentrouter-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0, "charged from the object's usage");
    assert_eq!(up.requests(), 1);

    // Recorded as alice's: hers to read and continue, nobody else's.
    let mine = get_as(&gw, alice, &format!("/v1/responses/{id}")).await;
    assert_eq!((mine.status, mine.json()), (200, object));
    let theirs = get_as(&gw, bob, &format!("/v1/responses/{id}")).await;
    assert_eq!(theirs.status, 404);
    assert_not_continued(&gw, bob, "m-native", &id).await;
    assert_eq!(up.requests(), 1, "refused before the upstream");
    let next = respond(
        &gw,
        alice,
        &json!({"model": "m-native", "input": "more", "previous_response_id": id}),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text);

    // Streamed: the upstream's events as it sent them, recorded at the end.
    let streamed = respond(
        &gw,
        alice,
        &json!({"model": "m-native", "input": "go", "stream": true}),
    )
    .await;
    let events = sse_events(&streamed.text);
    assert_eq!(events.first().unwrap().0, "response.created");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "response.completed");
    let id = done["response"]["id"].as_str().unwrap();
    assert!(id.starts_with("resp_sim"), "{id}");
    let stored = get_as(&gw, alice, &format!("/v1/responses/{id}")).await;
    assert_eq!(stored.json(), done["response"]);

    let listed = get_as(&gw, alice, "/v1/models").await;
    assert_eq!(listed.json()["data"][0]["endpoints"], json!(["responses"]));
    // No chat upstream serves the model.
    let chat = gw.chat_as(ALICE, &support::chat("m-native", "x")).await;
    assert_eq!(
        (chat.status, chat.code()),
        (404, "model_not_found".into()),
        "{}",
        chat.text
    );

    up.set_settings(agentrouter::upstream::SimSettings {
        script: vec!["400".into()],
        ..steady(0)
    });
    let before = up.requests();
    let refused = respond(&gw, alice, &json!({"model": "m-native", "input": "x"})).await;
    assert_eq!(
        (refused.status, refused.code()),
        (400, "simulated_client_error".into()),
        "{}",
        refused.text
    );
    assert_eq!(up.requests(), before + 1, "sent once");
    gw.stop().await;
    up.stop().await;
}
