//! The `http` import: outbound requests an agent asks the host to make,
//! within its slot's grant (`[plugins.<slot>.capabilities.http]`).
//!
//! Deny by default: a slot without a grant gets `denied` for every request.
//! With one, each request (and each redirect, which the host follows itself)
//! must match an `allow` rule by scheme, host, port, method and path prefix;
//! the host's addresses must be public unless the rule says
//! `allow_private`; the call's request count, total time and the response
//! size are bounded. A rule's `inject_headers` are added by the host (their
//! values are config secrets the plugin never sees) and a plugin's own
//! header of the same name is dropped. Every refusal is
//! `failure.denied(<config key>: <why>)`, so the operator reads which rule
//! to change.
//!
//! Addresses are checked twice: before the request, for a typed refusal,
//! and in the client's DNS resolver, so a name that resolves differently
//! the second time (DNS rebinding) still cannot reach a private address.

use crate::domain::Failure;
use crate::secret::Secret;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{OutboundBytesLabels, OutboundLabels, OutboundOutcomeLabels};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[plugins.<slot>.capabilities.http]`: what a slot may fetch.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrant {
    /// The rules; a request must match one.
    #[serde(default)]
    pub allow: Vec<HttpRule>,
    /// Requests (redirects included) one plugin call may make.
    #[serde(default = "default_max_requests")]
    pub max_requests_per_call: u32,
    /// Largest response body, bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Time all of one call's requests may take together, milliseconds.
    #[serde(default = "default_total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Redirects followed per request (each re-checked against the rules).
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
}

fn default_max_requests() -> u32 {
    16
}
fn default_max_response_bytes() -> u64 {
    1024 * 1024
}
fn default_total_timeout_ms() -> u64 {
    10_000
}
fn default_max_redirects() -> u32 {
    5
}

/// `[[plugins.<slot>.capabilities.http.allow]]`: one allowed destination.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRule {
    /// Host name or IP address, exactly (case-insensitive); `*.example.com`
    /// matches its subdomains, not `example.com` itself.
    pub host: String,
    /// Allowed ports; empty allows only the scheme's default port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Allowed methods; empty allows `GET` and `HEAD` only.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allowed path prefixes; empty allows every path.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Whether the host may resolve to a private, loopback or link-local
    /// address (an internal service); refused otherwise.
    #[serde(default)]
    pub allow_private: bool,
    /// Whether plain `http://` is allowed (`https://` always is).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Headers the host adds to every request to this host, e.g. an API
    /// key as `authorization = "${env:SEARCH_AUTH}"`; the plugin never sees
    /// the values.
    #[serde(default)]
    pub inject_headers: BTreeMap<String, Secret>,
}

impl HttpRule {
    fn matches_host(&self, host: &str) -> bool {
        let rule = self.host.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        match rule.strip_prefix("*.") {
            Some(parent) => host.len() > parent.len() + 1 && host.ends_with(&format!(".{parent}")),
            None => rule.trim_matches(['[', ']']) == host.trim_matches(['[', ']']),
        }
    }
}

/// Whether an address is one a public API cannot have.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                // 100.64.0.0/10, carrier-grade NAT.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// One slot's grant with its client, shared by every call of the plugin.
pub(crate) struct HttpPolicy {
    plugin: String,
    grant: Arc<HttpGrant>,
    client: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
}

// The grant holds secrets (`Secret` hides them) and a client: show the
// plugin and the hosts only.
impl std::fmt::Debug for HttpPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("plugin", &self.plugin)
            .field(
                "hosts",
                &self.grant.allow.iter().map(|r| &r.host).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What one plugin call has used of its grant.
#[derive(Debug, Default)]
pub(crate) struct HttpUsage {
    requests: u32,
    started: Option<Instant>,
}

/// The client's resolver: public addresses only, unless the host's rule
/// allows private ones.
struct GrantResolver {
    grant: Arc<HttpGrant>,
}

impl reqwest::dns::Resolve for GrantResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let grant = self.grant.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let private_ok = grant
                .allow
                .iter()
                .any(|r| r.allow_private && r.matches_host(&host));
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| private_ok || !is_private(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no address the grant allows").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

impl HttpPolicy {
    /// The policy of `plugin`'s grant, with a client of its own (its
    /// resolver knows the grant; redirects are the host's to follow).
    pub(crate) fn new(
        plugin: &str,
        grant: HttpGrant,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, reqwest::Error> {
        let grant = Arc::new(grant);
        // No fallback to a default client: it would follow redirects and
        // resolve private addresses unchecked.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GrantResolver {
                grant: grant.clone(),
            }))
            .user_agent(concat!("agentrouter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            plugin: plugin.to_string(),
            grant,
            client,
            metrics,
        })
    }

    fn key(&self, field: &str) -> String {
        format!("plugins.{}.capabilities.http.{field}", self.plugin)
    }

    fn denied(&self, field: &str, why: impl std::fmt::Display) -> Failure {
        Failure::Denied(format!("{}: {why}", self.key(field)))
    }

    /// The rule allowing `method url`, or the refusal naming the rule.
    async fn check(&self, method: &str, url: &reqwest::Url) -> Result<&HttpRule, Failure> {
        let host = url
            .host_str()
            .ok_or_else(|| self.denied("allow", format!("`{url}` has no host")))?;
        // Several rules may name one host (GET here, POST there): the
        // first that allows the request wins; else the first one's refusal.
        let mut refusal = None;
        for (index, rule) in self.grant.allow.iter().enumerate() {
            if !rule.matches_host(host) {
                continue;
            }
            match self.check_rule(index, rule, method, url, host).await {
                Ok(()) => return Ok(rule),
                Err(f) => {
                    refusal.get_or_insert(f);
                }
            }
        }
        Err(refusal
            .unwrap_or_else(|| self.denied("allow", format!("host `{host}` is not allowed"))))
    }

    /// Whether rule `index` allows `method url` (its host already matched).
    async fn check_rule(
        &self,
        index: usize,
        rule: &HttpRule,
        method: &str,
        url: &reqwest::Url,
        host: &str,
    ) -> Result<(), Failure> {
        let at = |field: &str| format!("allow[{index}].{field}");
        match url.scheme() {
            "https" => {}
            "http" if rule.allow_plain_http => {}
            "http" => return Err(self.denied(&at("allow_plain_http"), "plain http is not allowed")),
            other => {
                return Err(self.denied(&at("host"), format!("scheme `{other}` is not http(s)")));
            }
        }
        let port = url.port_or_known_default().unwrap_or(0);
        let port_ok = if rule.ports.is_empty() {
            url.port().is_none()
        } else {
            rule.ports.contains(&port)
        };
        if !port_ok {
            return Err(self.denied(&at("ports"), format!("port {port} is not allowed")));
        }
        let method_ok = if rule.methods.is_empty() {
            matches!(method, "GET" | "HEAD")
        } else {
            rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        };
        if !method_ok {
            return Err(self.denied(&at("methods"), format!("method {method} is not allowed")));
        }
        if !rule.path_prefixes.is_empty()
            && !rule.path_prefixes.iter().any(|p| url.path().starts_with(p))
        {
            return Err(self.denied(
                &at("path_prefixes"),
                format!("path `{}` is not allowed", url.path()),
            ));
        }
        if !rule.allow_private {
            let ips: Vec<IpAddr> = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| Failure::Internal(format!("cannot resolve `{host}`: {e}")))?
                    .map(|a| a.ip())
                    .collect(),
            };
            if let Some(ip) = ips.into_iter().find(|ip| is_private(*ip)) {
                return Err(self.denied(
                    &at("allow_private"),
                    format!("`{host}` is the private address {ip}"),
                ));
            }
        }
        Ok(())
    }

    /// Performs `req` for one call whose use so far is `usage`.
    pub(crate) async fn fetch(
        &self,
        usage: &mut HttpUsage,
        req: HttpRequest,
    ) -> Result<HttpResponse, Failure> {
        let started = Instant::now();
        let method = req.method.to_ascii_uppercase();
        let url_text = req.url.clone();
        let sent = req.body.as_ref().map_or(0, |b| b.len() as u64);
        let span = tracing::info_span!("plugin.http", plugin = %self.plugin, http.method = %method,
            url.host = tracing::field::Empty, http.status = tracing::field::Empty);
        if let Some(host) = reqwest::Url::parse(&url_text)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            span.record("url.host", host.as_str());
        }
        let result = tracing::Instrument::instrument(self.send(usage, req), span.clone()).await;
        let outcome = match &result {
            Ok(resp) => {
                span.record("http.status", resp.status);
                "ok"
            }
            Err(Failure::Denied(_)) => "denied",
            Err(Failure::Timeout) => "timeout",
            Err(_) => "error",
        };
        let received = result.as_ref().map_or(0, |r| r.body.len() as u64);
        match &result {
            Ok(resp) => tracing::info!(plugin = %self.plugin, outbound = "http", method = %method,
                url = %redact(&url_text), status = resp.status, bytes = received, "plugin http request"),
            Err(f) => tracing::warn!(plugin = %self.plugin, outbound = "http", method = %method,
                url = %redact(&url_text), outcome, failure = %f, "plugin http request failed"),
        }
        self.observe(outcome, sent, received, started.elapsed());
        result
    }

    fn observe(&self, outcome: &str, sent: u64, received: u64, took: Duration) {
        let Some(m) = &self.metrics else { return };
        observe(m, &self.plugin, "http", outcome, sent, received, took);
    }

    async fn send(&self, usage: &mut HttpUsage, req: HttpRequest) -> Result<HttpResponse, Failure> {
        let total = Duration::from_millis(self.grant.total_timeout_ms);
        let started = *usage.started.get_or_insert_with(Instant::now);
        let mut method = req.method.to_ascii_uppercase();
        let mut url = reqwest::Url::parse(&req.url)
            .map_err(|e| Failure::Internal(format!("invalid URL `{}`: {e}", redact(&req.url))))?;
        let mut body = req.body;
        let mut redirects = 0;
        loop {
            if usage.requests >= self.grant.max_requests_per_call {
                return Err(self.denied(
                    "max_requests_per_call",
                    format!("{} requests in this call already", usage.requests),
                ));
            }
            let Some(left) = total
                .checked_sub(started.elapsed())
                .filter(|d| !d.is_zero())
            else {
                return Err(
                    self.denied("total_timeout_ms", "the call's time for requests is spent")
                );
            };
            let rule = self.check(&method, &url).await?;
            usage.requests += 1;
            let timeout = req
                .timeout_ms
                .map_or(left, |ms| left.min(Duration::from_millis(ms.into())));
            let http_method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| Failure::Internal(format!("invalid method `{method}`")))?;
            let mut builder = self
                .client
                .request(http_method, url.clone())
                .timeout(timeout);
            for (name, value) in &req.headers {
                let lower = name.to_ascii_lowercase();
                let injected = rule
                    .inject_headers
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case(name));
                if injected
                    || matches!(
                        lower.as_str(),
                        "host" | "content-length" | "connection" | "transfer-encoding"
                    )
                {
                    continue;
                }
                builder = builder.header(name, value);
            }
            for (name, value) in &rule.inject_headers {
                let mut value =
                    reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                        self.denied(
                            "allow.inject_headers",
                            format!("`{name}` is not a valid header value"),
                        )
                    })?;
                value.set_sensitive(true);
                builder = builder.header(name, value);
            }
            if let Some(b) = &body {
                builder = builder.body(b.clone());
            }
            let mut resp = builder.send().await.map_err(transport)?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(location) = resp.headers().get(reqwest::header::LOCATION)
            {
                if redirects >= self.grant.max_redirects {
                    return Err(
                        self.denied("max_redirects", format!("more than {redirects} redirects"))
                    );
                }
                redirects += 1;
                let location = location.to_str().unwrap_or_default();
                url = url.join(location).map_err(|e| {
                    Failure::Internal(format!("invalid redirect `{location}`: {e}"))
                })?;
                if !matches!(status.as_u16(), 307 | 308) {
                    method = "GET".into();
                    body = None;
                }
                continue;
            }
            let cap = self.grant.max_response_bytes;
            let too_large = || {
                self.denied(
                    "max_response_bytes",
                    format!("the response is larger than {cap} bytes"),
                )
            };
            if resp.content_length().is_some_and(|n| n > cap) {
                return Err(too_large());
            }
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                if (out.len() + chunk.len()) as u64 > cap {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            return Ok(HttpResponse {
                status: status.as_u16(),
                headers,
                body: out,
            });
        }
    }
}

/// Counts one outbound call in the per-plugin families.
pub(crate) fn observe(
    m: &Metrics,
    plugin: &str,
    kind: &str,
    outcome: &str,
    sent: u64,
    received: u64,
    took: Duration,
) {
    m.outbound_calls
        .get_or_create(&OutboundOutcomeLabels {
            plugin: plugin.to_string(),
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
    for (direction, n) in [("sent", sent), ("received", received)] {
        m.outbound_bytes
            .get_or_create(&OutboundBytesLabels {
                plugin: plugin.to_string(),
                kind: kind.to_string(),
                direction: direction.to_string(),
            })
            .inc_by(n);
    }
    m.outbound_duration
        .get_or_create(&OutboundLabels {
            plugin: plugin.to_string(),
            kind: kind.to_string(),
        })
        .observe(took.as_secs_f64());
}

/// A URL for logs: without its query, which may carry a plugin's tokens.
fn redact(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn transport(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else {
        Failure::Internal(format!("request failed: {}", without_url(&e)))
    }
}

/// A reqwest error's text without the URL (its query may hold tokens).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "transport error".into());
    e.truncate(300);
    e
}

/// A request as the plugin wrote it (the WIT record, in host types).
pub(crate) struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: Option<u32>,
}

/// A response as the plugin receives it.
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn wildcard_rules_match_subdomains_only() {
        let rule: HttpRule = toml::from_str("host = \"*.example.com\"").unwrap();
        assert!(rule.matches_host("api.example.com"));
        assert!(!rule.matches_host("example.com"));
        assert!(!rule.matches_host("evilexample.com"));
    }
}
