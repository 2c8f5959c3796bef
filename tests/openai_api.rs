//! OpenAI API fidelity over real HTTP: what a client sends reaches an
//! OpenAI-kind upstream unchanged (a [`Recorder`] shows the bytes), what
//! the upstream answers comes back, validators see and rewrite only text,
//! an upstream's refusal of a request is the client's answer, and streams
//! follow OpenAI's usage rules whether they are live or replayed.

mod support;

use serde_json::{Value, json};
use support::{Canned, Gateway, Recorder, SimServer, quickstart, series, sse_text, steady};

/// A config with the recorder as upstream `rec` for model `gpt-rec`, and
/// `pii-redact` as the validator of `stage` (`input` or `output`), acting
/// there (its `stages` setting defaults to `output` only).
fn with_redaction(rec: &Recorder, stage: &str) -> String {
    rec.config(
        "gpt-rec",
        &format!(
            "[plugins.pii]\nsource = \"builtin:pii-redact\"\n[plugins.pii.settings]\nstages = \"{stage}\"\n\n[pipeline]\n{stage}_validators = [\"pii\"]\n"
        ),
    )
}

fn answer(choices: Value, usage: Value) -> Value {
    json!({"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-rec",
        "system_fingerprint": "fp_rec", "service_tier": "default",
        "choices": choices, "usage": usage})
}

fn usage(prompt: u32, cached: u32, completion: u32, reasoning: u32) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning}})
}

#[tokio::test]
async fn a_request_reaches_the_upstream_as_sent_and_its_answer_comes_back_whole() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    let upstream = answer(
        json!([
            {"index": 0, "message": {"role": "assistant", "content": "one", "refusal": null, "annotations": []},
             "logprobs": {"content": [{"token": "one", "logprob": -0.1, "bytes": [111, 110, 101], "top_logprobs": []}], "refusal": null},
             "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "I cannot."},
             "logprobs": null, "finish_reason": "stop"}
        ]),
        usage(10, 0, 5, 2),
    );
    rec.reply(Canned::ok(upstream.clone()));
    let body = json!({
        "model": "gpt-rec",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
        ],
        "n": 2, "logprobs": true, "seed": 3, "stop": ["\n"], "user": "u-1",
        "max_completion_tokens": 20,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "function": {"name": "f", "strict": true, "parameters": {"type": "object"}}}],
        "a_field_from_next_year": [1, {"x": null}]
    });
    let reply = gw.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(rec.only_body(), body, "forwarded byte for byte (as JSON)");
    let mut got = reply.json();
    assert!(got["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let mut want = upstream;
    for field in ["id", "created"] {
        got.as_object_mut().unwrap().remove(field);
        want.as_object_mut().unwrap().remove(field);
    }
    assert_eq!(got, want);
    gw.stop().await;
}

#[tokio::test]
async fn an_explicit_null_is_read_as_not_given_both_ways() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    // An OpenAI-compatible server that writes `"tool_calls": null` (and
    // `"usage": null` on a chunk) answers a valid completion, not a
    // malformed body.
    rec.reply(Canned::ok(answer(
        json!([{"index": 0, "message": {"role": "assistant", "content": "fine", "tool_calls": null,
            "function_call": null}, "finish_reason": "stop"}]),
        usage(3, 0, 1, 0),
    )));
    // A client that sends `"stream": null` and `"tools": null`, and puts a
    // pydantic dump of the last answer back in the history.
    let dumped = json!({"role": "assistant", "content": "earlier", "refusal": null, "tool_calls": null,
        "function_call": null, "audio": null, "annotations": null});
    let body = json!({"model": "gpt-rec", "stream": null, "tools": null,
        "messages": [{"role": "user", "content": "hi"}, dumped, {"role": "user", "content": "and?"}]});
    let reply = gw.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let got = reply.json();
    assert_eq!(got["choices"][0]["message"]["content"], "fine");
    assert_eq!(got["choices"][0]["message"]["function_call"], Value::Null);
    // The nulls the gateway reads go out as absent; the others as sent.
    let sent = rec.only_body();
    assert!(
        sent.get("stream").is_none() && sent.get("tools").is_none(),
        "{sent}"
    );
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": "earlier", "refusal": null,
            "function_call": null, "audio": null, "annotations": null})
    );
    rec.reply(Canned::Sse {
        chunks: vec![
            json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec", "usage": null,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok", "tool_calls": null}, "finish_reason": null}]}),
            json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec", "usage": null,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ],
    });
    let streamed = gw
        .chat(&json!({"model": "gpt-rec", "stream": true, "messages": [dumped]}))
        .await;
    assert_eq!(streamed.status, 200, "{}", streamed.text);
    assert_eq!(sse_text(&streamed.text).1, "ok");
    gw.stop().await;
}

#[tokio::test]
async fn input_validators_rewrite_the_text_parts_and_leave_the_others() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&with_redaction(&rec, "input")).await;
    let image = json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}});
    let reply = gw
        .chat(
            &json!({"model": "gpt-rec", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "mail jane@example.com about "},
            image.clone(),
            {"type": "text", "text": "this cat"}]}]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // The validator saw the text parts joined; its rewrite takes the first
    // text part's place, and the image stays where it was.
    assert_eq!(
        rec.only_body()["messages"][0]["content"],
        json!([{"type": "text", "text": "mail [REDACTED_EMAIL] about this cat"}, image])
    );
    gw.stop().await;
}

#[tokio::test]
async fn output_validators_see_every_choice_and_a_rewritten_one_loses_its_logprobs() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&with_redaction(&rec, "output")).await;
    let logprobs =
        |token: &str| json!({"content": [{"token": token, "logprob": -0.5}], "refusal": null});
    rec.reply(Canned::ok(answer(
        json!([
            {"index": 0, "message": {"role": "assistant", "content": "ann@example.com"},
             "logprobs": logprobs("ann@example.com"), "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "nothing to hide"},
             "logprobs": logprobs("nothing to hide"), "finish_reason": "stop"}
        ]),
        usage(4, 0, 4, 0),
    )));
    let reply = gw
        .chat(&json!({"model": "gpt-rec", "n": 2, "logprobs": true,
            "messages": [{"role": "user", "content": "emails?"}]}))
        .await;
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], "[REDACTED_EMAIL]");
    assert!(body["choices"][0].get("logprobs").is_none(), "{body}");
    assert_eq!(body["choices"][1]["message"]["content"], "nothing to hide");
    assert_eq!(body["choices"][1]["logprobs"], logprobs("nothing to hide"));

    // Streamed, the same answer is validated whole and replayed: every
    // choice, token by token where the logprobs still spell the text.
    rec.reply(Canned::ok(answer(
        json!([
            {"index": 0, "message": {"role": "assistant", "content": "ann@example.com"},
             "logprobs": logprobs("ann@example.com"), "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "nothing to hide"},
             "logprobs": logprobs("nothing to hide"), "finish_reason": "stop"}
        ]),
        usage(4, 0, 4, 0),
    )));
    let streamed = gw
        .chat(
            &json!({"model": "gpt-rec", "n": 2, "logprobs": true, "stream": true,
            "messages": [{"role": "user", "content": "emails, streamed?"}]}),
        )
        .await;
    let (chunks, _) = sse_text(&streamed.text);
    let choice = |index: u64| -> Vec<&Value> {
        chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap())
            .filter(|c| c["index"] == index)
            .collect()
    };
    let first: String = choice(0)
        .iter()
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect();
    assert_eq!(first, "[REDACTED_EMAIL]");
    let second = choice(1);
    assert_eq!(second[0]["delta"]["content"], "nothing to hide");
    assert_eq!(second[0]["delta"]["role"], "assistant");
    assert_eq!(
        second[0]["logprobs"]["content"][0]["token"],
        "nothing to hide"
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "not asked for"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_upstream_400_is_the_clients_answer_sent_once_and_held_against_no_one() {
    let rec = Recorder::start().await;
    // A breaker that opens on one failure, a retrying recovery plugin, a
    // second upstream to fall back to, and an alert webhook that must stay
    // silent: none of them may act on a client error.
    let second = Recorder::start().await;
    let toml = rec.config(
        "gpt-rec",
        &format!(
            "[upstreams.rec.breaker]\nfailure_threshold = 1\n\n\
             [upstreams.rec2]\nkind = \"openai\"\nmodel = \"gpt-rec\"\nbase_url = \"{}\"\n\n\
             [plugins.standard-recovery]\nsource = \"builtin:standard-recovery\"\n\n\
             [pipeline]\nrecovery = \"standard-recovery\"\n\n\
             [resilience]\nalert_webhook = \"http://127.0.0.1:9/never\"\n",
            second.base_url
        ),
    );
    let gw = Gateway::start(&toml).await;
    let refusal = json!({"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model.",
        "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"}});
    for stream in [false, true] {
        rec.reply(Canned::Json {
            status: 400,
            body: refusal.clone(),
        });
        let reply = gw
            .chat(
                &json!({"model": "gpt-rec", "max_tokens": 5, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.json(), refusal, "the upstream's own body");
        // With no router, upstreams are tried in their configured order.
        assert_eq!(reply.header("x-agentrouter-upstream"), Some("rec"));
        assert_eq!(
            rec.requests().len() + second.requests().len(),
            if stream { 2 } else { 1 },
            "sent once: no retry, no fallback"
        );
    }
    // Both upstreams are still healthy: the next request is answered.
    let ok = gw
        .chat(&json!({"model": "gpt-rec", "messages": [{"role": "user", "content": "fine now"}]}))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        (rec.requests().len(), second.requests().len()),
        (3, 0),
        "rec answered: its breaker (threshold 1) did not open"
    );
    let metrics = gw.metrics().await;
    assert!(!metrics.contains("agentrouter_alerts_total{"), "{metrics}");
    assert_eq!(
        series(
            &metrics,
            r#"agentrouter_upstream_attempts_total{upstream="rec",outcome="client-error"}"#
        ) + series(
            &metrics,
            r#"agentrouter_upstream_attempts_total{upstream="rec2",outcome="client-error"}"#
        ),
        2.0,
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn other_4xx_come_back_as_sent_and_a_foreign_error_body_is_wrapped() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    let not_found = json!({"error": {"message": "The model `gpt-x` does not exist.",
        "type": "invalid_request_error", "param": null, "code": "model_not_found"}});
    // A FastAPI-style body (vLLM and others): not OpenAI's shape.
    let fastapi = json!({"detail": [{"loc": ["body", "n"], "msg": "must be 1"}]});
    for (status, body) in [(404, not_found.clone()), (422, fastapi.clone())] {
        rec.reply(Canned::Json { status, body });
        let reply = gw.chat(&support::chat("gpt-rec", "hi")).await;
        assert_eq!(reply.status, status, "{}", reply.text);
        assert_eq!(reply.header("x-agentrouter-upstream"), Some("rec"));
        if status == 404 {
            assert_eq!(reply.json(), not_found);
        } else {
            let error = &reply.json()["error"];
            assert_eq!(error["type"], "invalid_request_error");
            let quoted: Value = serde_json::from_str(error["message"].as_str().unwrap()).unwrap();
            assert_eq!(quoted, fastapi, "its text, so every SDK can read it");
        }
    }
    assert_eq!(rec.requests().len(), 2, "each sent once");
    gw.stop().await;
}

#[tokio::test]
async fn an_error_event_in_a_live_stream_reaches_the_client_with_its_message() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    rec.reply(Canned::Sse {
        chunks: vec![
            json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hal"}, "finish_reason": null}]}),
            json!({"error": {"message": "The server had an error while processing your request.",
                "type": "server_error", "param": null, "code": null}}),
        ],
    });
    let reply = gw
        .chat(&json!({"model": "gpt-rec", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(reply.status, 200, "the stream had begun: {}", reply.text);
    let events: Vec<Value> = reply
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["choices"][0]["delta"]["content"], "Hal");
    let last = &events[events.len() - 1]["error"];
    assert_eq!(last["code"], "stream_interrupted", "{events:?}");
    let message = last["message"].as_str().unwrap();
    assert!(
        message.contains("The server had an error while processing your request.")
            && message.contains("`rec`"),
        "{message}"
    );
    assert!(!reply.text.contains("[DONE]"));
    gw.stop().await;
}

#[tokio::test]
async fn a_scripted_400_from_the_simulator_comes_back_as_a_400() {
    // In process (kind `simulated`) and over HTTP (the simulator's server).
    let up = SimServer::start(
        agentrouter::upstream::SimSettings {
            script: vec!["400".into()],
            ..steady(0)
        },
        &["m"],
    )
    .await;
    let in_process = quickstart(
        "[upstreams.scripted]\nkind = \"simulated\"\nmodel = \"scripted\"\n[upstreams.scripted.simulator]\nscript = [\"400\"]\n",
    );
    for (toml, model, upstream) in [
        (in_process, "scripted", "scripted"),
        (up.config(""), "m", "sim"),
    ] {
        let gw = Gateway::start(&toml).await;
        let reply = gw.chat(&support::chat(model, "hi")).await;
        assert_eq!(reply.status, 400, "{}", reply.text);
        assert_eq!(reply.code(), "simulated_client_error");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert_eq!(reply.header("x-agentrouter-upstream"), Some(upstream));
        let again = gw.chat(&support::chat(model, "hi again")).await;
        assert_eq!(again.status, 200, "the script is over: {}", again.text);
        gw.stop().await;
    }
}

/// The last two chunks of a stream of `body` (`include_usage` as given).
async fn stream_end(gw: &Gateway, mut body: Value, include_usage: bool) -> (Vec<Value>, Value) {
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let reply = gw.chat(&body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let (chunks, _) = sse_text(&reply.text);
    let last = chunks.last().cloned().unwrap();
    (chunks, last)
}

#[tokio::test]
async fn every_stream_has_a_usage_chunk_exactly_when_the_client_asks() {
    // The quickstart replays answers: the output validator's, an agent's,
    // and (with `temperature: 0`) a cache hit's.
    let gw = Gateway::start(&quickstart("")).await;
    let cases = [
        (
            "validated",
            support::chat("usf-mini", "stream me, validated"),
        ),
        ("agent", support::chat("agent:writer", "stream me, agent")),
        ("cached", {
            let mut c = support::chat("usf-mini", "stream me from the cache");
            c["temperature"] = json!(0);
            c
        }),
    ];
    for (what, body) in cases {
        for include_usage in [false, true, false] {
            let (chunks, last) = stream_end(&gw, body.clone(), include_usage).await;
            let with_usage: Vec<&Value> =
                chunks.iter().filter(|c| c.get("usage").is_some()).collect();
            if include_usage {
                assert_eq!(with_usage, vec![&last], "{what}: {chunks:?}");
                assert_eq!(last["choices"], json!([]), "{what}");
                assert!(
                    last["usage"]["total_tokens"].as_u64().unwrap() > 0,
                    "{what}"
                );
            } else {
                assert!(with_usage.is_empty(), "{what}: {chunks:?}");
                assert!(last["choices"][0]["finish_reason"].is_string(), "{what}");
            }
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_live_stream_passes_tool_call_fragments_refusals_and_logprobs_through() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    let chunk = |choices: Value| {
        json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec",
            "system_fingerprint": "fp", "choices": choices})
    };
    let fragments = [
        json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "finish_reason": null}]),
        json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\""}}]}, "finish_reason": null}]),
        json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
            "finish_reason": null}]),
        json!([{"index": 1, "delta": {"refusal": "no"}, "logprobs": {"content": null, "refusal": [{"token": "no", "logprob": 0}]},
            "finish_reason": "stop"}]),
        json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
    ];
    let mut chunks: Vec<Value> = fragments.iter().cloned().map(chunk).collect();
    chunks.push(
        json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec",
        "choices": [], "usage": usage(5, 0, 3, 0)}),
    );
    rec.reply(Canned::Sse { chunks });
    let (got, last) = stream_end(
        &gw,
        json!({"model": "gpt-rec", "n": 2, "messages": [{"role": "user", "content": "hi"}]}),
        true,
    )
    .await;
    // The empty opening chunk is dropped; the rest pass as sent, each
    // choice's first chunk carrying the role.
    assert_eq!(got.len(), 5, "{got:?}");
    for (sent, (i, out)) in fragments[1..].iter().zip(got.iter().enumerate()) {
        let mut expected = sent.clone();
        if i == 0 || i == 2 {
            expected[0]["delta"]["role"] = json!("assistant");
        }
        assert_eq!(out["choices"], expected, "chunk {i}");
        assert_eq!(out["system_fingerprint"], "fp");
    }
    assert_eq!(last["usage"], usage(5, 0, 3, 0));
    assert_eq!(
        rec.only_body()["stream_options"],
        json!({"include_usage": true})
    );
    gw.stop().await;
}

#[tokio::test]
async fn models_and_agents_can_be_retrieved_by_id() {
    let gw = Gateway::start(&quickstart("")).await;
    for id in ["usf-mini", "agent:manager"] {
        let (status, body) = gw.get(&format!("/v1/models/{id}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            json!({"id": id, "object": "model", "created": 0, "owned_by": "agentrouter",
                "endpoints": ["chat"]})
        );
    }
    let (status, body) = gw.get("/v1/models/org/no-such-model").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("org/no-such-model")
    );
    gw.stop().await;
}

#[tokio::test]
async fn cached_prompt_tokens_are_charged_at_the_cached_price() {
    let rec = Recorder::start().await;
    let toml = rec.config("gpt-rec", "").replace(
        "input_cost_per_1k = 1.0",
        "input_cost_per_1k = 1.0\ncached_input_cost_per_1k = 0.1",
    );
    let gw = Gateway::start(&toml).await;
    // 1000 prompt tokens, 800 of them cached; 500 completion tokens, 200 of
    // them reasoning (inside the 500): 0.2 + 0.08 + 0.5.
    rec.reply(Canned::ok(answer(
        json!([{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]),
        usage(1000, 800, 500, 200),
    )));
    let reply = gw
        .chat(&json!({"model": "gpt-rec", "messages": [{"role": "user", "content": "price me"}]}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let cost: f64 = reply
        .header("x-agentrouter-cost-usd")
        .unwrap()
        .parse()
        .unwrap();
    assert!((cost - 0.78).abs() < 1e-9, "{cost}");
    assert_eq!(reply.json()["usage"], usage(1000, 800, 500, 200));
    gw.stop().await;
}

#[tokio::test]
async fn a_streamed_spoken_answer_is_cached_whole() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    let delta = |delta: Value, finish: Value| {
        json!({"id": "up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-rec",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    // OpenAI streams audio in pieces: the id first, then data and
    // transcript fragments.
    rec.reply(Canned::Sse {
        chunks: vec![
            delta(json!({"role": "assistant", "audio": {"id": "audio_1", "transcript": "Hel", "expires_at": 9}}), Value::Null),
            delta(json!({"audio": {"data": "UklG"}}), Value::Null),
            delta(json!({"audio": {"transcript": "lo", "data": "Rg=="}}), Value::Null),
            delta(json!({}), json!("stop")),
        ],
    });
    let ask = |stream: bool| {
        json!({"model": "gpt-rec", "temperature": 0, "stream": stream, "modalities": ["text", "audio"],
            "audio": {"voice": "alloy", "format": "wav"}, "messages": [{"role": "user", "content": "say hello"}]})
    };
    let live = gw.chat(&ask(true)).await;
    assert_eq!(live.header("x-agentrouter-cache"), Some("miss"));
    let (chunks, _) = sse_text(&live.text);
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["audio"],
        json!({"data": "UklG"}),
        "passed on as sent"
    );
    let whole =
        json!({"id": "audio_1", "transcript": "Hello", "data": "UklGRg==", "expires_at": 9});
    let hit = gw.chat(&ask(false)).await;
    assert_eq!(
        hit.header("x-agentrouter-cache"),
        Some("hit"),
        "{}",
        hit.text
    );
    assert_eq!(hit.json()["choices"][0]["message"]["audio"], whole);
    let replayed = gw.chat(&ask(true)).await;
    let (chunks, _) = sse_text(&replayed.text);
    let audio: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("audio"))
        .collect();
    assert_eq!(audio, vec![&whole], "a replay sends it whole, once");
    assert_eq!(rec.requests().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn the_cache_key_covers_every_forwarded_field() {
    let rec = Recorder::start().await;
    let gw = Gateway::start(&rec.config("gpt-rec", "")).await;
    let ask = |seed: u64, future: &str| {
        json!({"model": "gpt-rec", "temperature": 0, "seed": seed, "a_field_from_next_year": future,
            "messages": [{"role": "user", "content": "cache me"}]})
    };
    for (body, cache) in [
        (ask(1, "a"), "miss"),
        (ask(1, "a"), "hit"),
        (ask(2, "a"), "miss"),
        (ask(1, "b"), "miss"),
    ] {
        let reply = gw.chat(&body).await;
        assert_eq!(reply.header("x-agentrouter-cache"), Some(cache), "{body}");
    }
    assert_eq!(rec.requests().len(), 3);
    gw.stop().await;
}
