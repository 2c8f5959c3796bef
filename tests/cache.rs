//! The response cache end to end: real HTTP, a real sled store in a temp
//! directory, and a simulated upstream behind HTTP that counts the requests
//! it receives — every assertion is on counts, never on timings.

mod support;

use futures::future::join_all;
use serde_json::{Value, json};
use support::{Gateway, SimServer, chat, content, sse_text, steady};

/// A one-message request for model `m` at `temperature` (0 makes it
/// deterministic, hence cacheable).
fn ask(content: &str, temperature: f64) -> Value {
    let mut body = chat("m", content);
    body["temperature"] = json!(temperature);
    body
}

#[tokio::test]
async fn an_l2_hit_survives_a_restart_without_calling_the_upstream() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = up.config("");
    let request = ask("What survives a restart?", 0.0);

    let gw = Gateway::start_in(dir.path(), &config).await;
    let first = gw.chat(&request).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-agentrouter-cache"), Some("miss"));
    assert_eq!(up.requests(), 1);
    // One request, one lookup per level (the leader's re-check is not counted).
    let metrics = gw.metrics().await;
    for series in [
        r#"agentrouter_cache_lookups_total{level="l1",result="miss"} 1"#,
        r#"agentrouter_cache_lookups_total{level="l2",result="miss"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    gw.stop().await;

    let gw = Gateway::start_in(dir.path(), &config).await;
    let again = gw.chat(&request).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.header("x-agentrouter-cache"), Some("hit"));
    assert_eq!(again.header("x-agentrouter-cache-level"), Some("l2"));
    assert_eq!(up.requests(), 1, "the upstream was not called again");
    assert_eq!(content(&again.json()), content(&first.json()));
    // Usage is reported as it was; the cached answer costs nothing.
    assert_eq!(again.json()["usage"], first.json()["usage"]);
    assert_eq!(again.header("x-agentrouter-cost-usd"), Some("0.00000000"));
    assert_ne!(first.header("x-agentrouter-cost-usd"), Some("0.00000000"));
    // Promoted to L1 by the L2 hit.
    let third = gw.chat(&request).await;
    assert_eq!(third.header("x-agentrouter-cache-level"), Some("l1"));
    let metrics = gw.metrics().await;
    for series in [
        r#"agentrouter_cache_lookups_total{level="l1",result="miss"} 1"#,
        r#"agentrouter_cache_lookups_total{level="l2",result="hit"} 1"#,
        r#"agentrouter_cache_lookups_total{level="l1",result="hit"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_identical_misses_make_one_upstream_call() {
    // A slow upstream keeps the first call in flight while the others arrive.
    let up = SimServer::start(steady(300), &["m"]).await;
    let gw = Gateway::start(&up.config("")).await;
    let request = ask("Everyone asks this at once", 0.0);
    let replies = join_all((0..20).map(|_| gw.chat(&request))).await;
    assert_eq!(up.requests(), 1);
    assert!(replies.iter().all(|r| r.status == 200));
    let texts: Vec<String> = replies
        .iter()
        .map(|r| content(&r.json()).to_string())
        .collect();
    assert!(texts.iter().all(|t| *t == texts[0]), "{texts:?}");
    let misses = replies
        .iter()
        .filter(|r| r.header("x-agentrouter-cache") == Some("miss"))
        .count();
    assert_eq!(
        misses, 1,
        "one request called the upstream, 19 were served its answer"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_entry_expires_after_its_ttl() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("[cache]\nttl_s = 1\n")).await;
    let request = ask("short-lived", 0.0);
    assert_eq!(
        gw.chat(&request).await.header("x-agentrouter-cache"),
        Some("miss")
    );
    assert_eq!(
        gw.chat(&request).await.header("x-agentrouter-cache"),
        Some("hit")
    );
    assert_eq!(up.requests(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert_eq!(
        gw.chat(&request).await.header("x-agentrouter-cache"),
        Some("miss")
    );
    assert_eq!(up.requests(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn a_cached_answer_is_replayed_as_a_stream_and_a_streamed_answer_is_cached() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("")).await;

    // Whole first, then streamed from the cache.
    let mut request = ask("replay me as a stream of several words please", 0.0);
    let whole = gw.chat(&request).await;
    assert_eq!(whole.header("x-agentrouter-cache"), Some("miss"));
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let streamed = gw.chat(&request).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-agentrouter-cache"), Some("hit"));
    assert!(
        streamed
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (chunks, text) = sse_text(&streamed.text);
    assert_eq!(text, content(&whole.json()));
    assert!(chunks.len() > 2, "{chunks:?}");
    let [.., finish, last] = &chunks[..] else {
        panic!("{chunks:?}")
    };
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], whole.json()["usage"]);
    assert_eq!(up.requests(), 1);

    // Streamed live first (a miss), then served whole from the cache.
    let mut request = ask("stream me first, then answer from the cache", 0.0);
    request["stream"] = json!(true);
    let live = gw.chat(&request).await;
    assert_eq!(live.header("x-agentrouter-cache"), Some("miss"));
    let (_, live_text) = sse_text(&live.text);
    request["stream"] = json!(false);
    let cached = gw.chat(&request).await;
    assert_eq!(cached.header("x-agentrouter-cache"), Some("hit"));
    assert_eq!(content(&cached.json()), live_text);
    assert_eq!(up.requests(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn only_deterministic_or_opted_in_requests_are_cached() {
    let up = SimServer::start(steady(0), &["m"]).await;
    let gw = Gateway::start(&up.config("")).await;
    let warm = ask("creative", 0.9);
    assert_eq!(
        gw.chat(&warm).await.header("x-agentrouter-cache"),
        Some("bypass")
    );
    assert_eq!(
        gw.chat(&warm).await.header("x-agentrouter-cache"),
        Some("bypass")
    );
    assert_eq!(up.requests(), 2);
    let mut opted = warm.clone();
    opted["metadata"] = json!({"cache": "true"});
    assert_eq!(
        gw.chat(&opted).await.header("x-agentrouter-cache"),
        Some("miss")
    );
    // `user` and `metadata` are not part of the key.
    opted["user"] = json!("someone-else");
    assert_eq!(
        gw.chat(&opted).await.header("x-agentrouter-cache"),
        Some("hit")
    );
    assert_eq!(up.requests(), 3);
    gw.stop().await;
}
