//! Outbound HTTP: the client settings shared by everything the host calls
//! over the network — upstream providers, alert webhooks, trace export.
//!
//! It lives below the modules that use it, so none of them has to reach
//! into another (the upstream client, telemetry) for a connection pool.

use std::time::Duration;

/// An HTTP client with the host's connection settings.
///
/// Its pool reuses connections to a provider across requests and
/// upstreams (keep one client per purpose). The connect timeout is short
/// because a provider that cannot accept a connection in seconds is down,
/// whatever the request's own deadline; per-request deadlines are set on
/// each call.
///
/// # Panics
/// If the TLS backend cannot initialise, which is a broken build rather than
/// a runtime condition.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .tcp_keepalive(Duration::from_secs(30))
        .tcp_nodelay(true)
        .user_agent(concat!("agentrouter/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the rustls TLS backend initialises")
}
