//! The endpoints beside chat completions, over real HTTP: `/v1/embeddings`
//! (through the simulator's HTTP server, so the `openai` upstream's
//! embeddings client is exercised too) and the `/v1/models` view of which
//! model serves which endpoint.

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::{Gateway, Reply, SimServer, steady};

const EMBED: &str = "sim-embed";

/// A gateway whose upstream `sim` serves `EMBED` embeddings from `up`, and
/// chat model `chat-only` from the same server; `extra` appended.
fn embeddings_config(up: &SimServer, extra: &str) -> String {
    up.config(&format!(
        "{}\n{extra}",
        up.upstream("chat", "chat-only", "")
    ))
    .replace(
        "input_cost_per_1k = 1.0\n",
        "input_cost_per_1k = 1.0\nserves = [\"embeddings\"]\n",
    )
}

async fn embed(gw: &Gateway, body: &Value) -> Reply {
    gw.send(gw.client.post(gw.url("/v1/embeddings")).json(body))
        .await
}

fn vectors(reply: &Reply) -> Vec<Vec<f64>> {
    let body = reply.json();
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {}", reply.text))
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(
                (d["object"].as_str(), d["index"].as_u64()),
                (Some("embedding"), Some(i as u64))
            );
            match &d["embedding"] {
                Value::String(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect(),
                v => serde_json::from_value(v.clone()).unwrap(),
            }
        })
        .collect()
}

#[tokio::test]
async fn embeddings_are_deterministic_batched_encoded_and_cached_on_repeat() {
    let up = SimServer::start(steady(0), &[EMBED, "chat-only"]).await;
    let gw = Gateway::start(&embeddings_config(&up, "")).await;

    let first = embed(&gw, &json!({"model": EMBED, "input": "hello"})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-agentrouter-cache"), Some("miss"));
    let body = first.json();
    assert_eq!(
        (body["object"].as_str(), body["model"].as_str()),
        (Some("list"), Some(EMBED))
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 2, "total_tokens": 2})
    );
    // USD 1 per 1k input tokens: 2 tokens.
    assert_eq!(first.header("x-agentrouter-cost-usd"), Some("0.00200000"));
    let hello = vectors(&first).remove(0);
    assert_eq!(hello.len(), 64, "the simulator's default dimensions");
    let norm: f64 = hello.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
    assert_eq!(up.requests(), 1);

    // The same request again is a hit that costs nothing and calls no one.
    let again = embed(&gw, &json!({"model": EMBED, "input": "hello"})).await;
    assert_eq!(again.header("x-agentrouter-cache"), Some("hit"));
    assert_eq!(again.header("x-agentrouter-cost-usd"), Some("0.00000000"));
    assert_eq!(vectors(&again), vec![hello.clone()]);
    assert_eq!(up.requests(), 1);

    // A batch, in base64 (what the official SDKs ask for): one vector per
    // input in order, the same text the same vector as alone.
    let batch = embed(
        &gw,
        &json!({"model": EMBED, "input": ["hello", "world", "hello"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.text);
    assert!(batch.json()["data"][0]["embedding"].is_string());
    let got = vectors(&batch);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], got[2]);
    assert_ne!(got[0], got[1]);
    let close = got[0].iter().zip(&hello).all(|(a, b)| (a - b).abs() < 1e-6);
    assert!(close, "base64 and float give the same vector");
    assert_eq!(batch.header("x-agentrouter-cache"), Some("miss"));
    assert_eq!(up.requests(), 2, "a batch is one upstream call");

    // Fewer dimensions, and token-id inputs.
    let small = embed(
        &gw,
        &json!({"model": EMBED, "input": [[1, 2, 3], [4]], "dimensions": 8}),
    )
    .await;
    assert_eq!(small.status, 200, "{}", small.text);
    assert!(vectors(&small).iter().all(|v| v.len() == 8));
    assert_eq!(small.json()["usage"]["prompt_tokens"], 4);

    // The ledger charged every miss to the series by key and model.
    let metrics = gw.metrics().await;
    let tokens = support::value(
        &metrics,
        &format!(
            "agentrouter_tokens_total{{key=\"anonymous\",model=\"{EMBED}\",direction=\"input\"}}"
        ),
    );
    assert_eq!(tokens, 2.0 + 6.0 + 4.0);
    gw.stop().await;
    up.stop().await;
}

#[tokio::test]
async fn each_endpoint_serves_only_the_models_declared_for_it_and_says_so() {
    let up = SimServer::start(steady(0), &[EMBED, "chat-only"]).await;
    let gw = Gateway::start(&embeddings_config(&up, "")).await;

    let reply = embed(&gw, &json!({"model": "chat-only", "input": "x"})).await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "model_not_found".into()),
        "{}",
        reply.text
    );
    let reply = gw.chat(&support::chat(EMBED, "x")).await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "model_not_found".into()),
        "{}",
        reply.text
    );
    assert_eq!(up.requests(), 0);

    let (status, models) = gw.get("/v1/models").await;
    assert_eq!(status, 200);
    let endpoints: Vec<(String, Value)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["endpoints"].clone(),
            )
        })
        .collect();
    assert_eq!(
        endpoints,
        vec![
            ("chat-only".to_string(), json!(["chat"])),
            (EMBED.to_string(), json!(["embeddings"])),
        ]
    );
    let (_, one) = gw.get(&format!("/v1/models/{EMBED}")).await;
    assert_eq!(one["endpoints"], json!(["embeddings"]));

    // Malformed requests: OpenAI's 400 naming the field.
    for (body, param) in [
        (json!({"model": EMBED, "input": ""}), "input"),
        (json!({"model": EMBED, "input": []}), "input"),
        (json!({"model": EMBED, "input": ["a", 1]}), "input"),
        (
            json!({"model": EMBED, "input": "a", "encoding_format": "int8"}),
            "encoding_format",
        ),
        (json!({"model": "", "input": "a"}), "model"),
    ] {
        let reply = embed(&gw, &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
    }
    assert_eq!(up.requests(), 0);
    gw.stop().await;
    up.stop().await;
}

#[tokio::test]
async fn an_embeddings_upstream_failure_falls_over_and_its_refusal_is_the_clients() {
    // Two upstreams serve the model: the first fails once (500), the
    // second answers; then a scripted 400 is the client's answer, sent once.
    let up = SimServer::start(
        agentrouter::upstream::SimSettings {
            script: vec!["500".into()],
            ..steady(0)
        },
        &[EMBED],
    )
    .await;
    let second = SimServer::start(steady(0), &[EMBED]).await;
    let gw = Gateway::start(&embeddings_config(
        &up,
        &second.upstream("tail", EMBED, "serves = [\"embeddings\"]"),
    ))
    .await;
    let reply = embed(&gw, &json!({"model": EMBED, "input": "a"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!((up.requests(), second.requests()), (1, 1));

    up.set_settings(agentrouter::upstream::SimSettings {
        script: vec!["400".into()],
        ..steady(0)
    });
    let reply = embed(&gw, &json!({"model": EMBED, "input": "b"})).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.code(), "simulated_client_error");
    assert_eq!(
        (up.requests(), second.requests()),
        (2, 1),
        "not tried elsewhere"
    );
    gw.stop().await;
    up.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn keys_budgets_and_limits_apply_to_embeddings() {
    let up = SimServer::start(steady(0), &[EMBED, "chat-only"]).await;
    let keys = r#"
[auth]
enabled = true

[[auth.keys]]
name = "chat-user"
secret = "chat-user-secret-0123456789"
models = ["chat-only"]

[[auth.keys]]
name = "thrifty"
secret = "thrifty-secret-0123456789"
daily_budget_usd = 0.004
"#;
    let gw = Gateway::start(&embeddings_config(&up, keys)).await;
    let as_key = |key: &'static str, input: &'static str| {
        gw.send(
            gw.client
                .post(gw.url("/v1/embeddings"))
                .bearer_auth(key)
                .json(&json!({"model": EMBED, "input": input})),
        )
    };
    let reply = gw
        .send(
            gw.client
                .post(gw.url("/v1/embeddings"))
                .json(&json!({"model": EMBED, "input": "x"})),
        )
        .await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    let reply = as_key("chat-user-secret-0123456789", "x").await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, "model_not_allowed".into()),
        "{}",
        reply.text
    );
    // USD 0.002 an answer: two are admitted (spent 0, then 0.002), the
    // third is not (spent 0.004 of 0.004).
    for input in ["aaaaaaaa", "bbbbbbbb"] {
        let reply = as_key("thrifty-secret-0123456789", input).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let reply = as_key("thrifty-secret-0123456789", "cccccccc").await;
    assert_eq!(
        (reply.status, reply.code()),
        (429, "budget_exceeded".into()),
        "{}",
        reply.text
    );
    assert_eq!(up.requests(), 2);
    gw.stop().await;
    up.stop().await;
}
