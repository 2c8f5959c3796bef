//! A small MCP client: JSON-RPC 2.0 over Streamable HTTP, the three
//! methods the `tools` import needs (`initialize`, `tools/list`,
//! `tools/call`).
//!
//! Why not `rmcp`: the host needs four messages of the protocol, and
//! rmcp's streamable-HTTP client brings its own transport stack and
//! feature set to build on this 2-core CI; this client reuses the host's
//! reqwest stack and is tested against the official Python SDK's server.
//!
//! Two protocol revisions, chosen per server (`protocol_version`):
//! - `2025-11-25`: an `initialize` handshake first; a session id the server
//!   hands out (`Mcp-Session-Id`) is sent back, and a server that answers
//!   404 to it (session expired) is initialised again once;
//! - `2026-07-28`, the stateless one: every request stands alone, its
//!   protocol version and client capabilities in `params._meta`, its method
//!   (and a tool call's name) also in the `Mcp-Method` / `Mcp-Name`
//!   headers; no handshake, no session.
//!
//! Each POST carries `Accept: application/json, text/event-stream`; a
//! server may answer with one JSON message or an SSE stream, in which the
//! response with the request's id is taken.

use crate::secret::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// The handshake revision, the default.
pub const PROTOCOL_VERSION: &str = "2025-11-25";
/// The stateless revision.
pub const STATELESS_PROTOCOL_VERSION: &str = "2026-07-28";
/// The revisions a server may be configured with.
pub const PROTOCOL_VERSIONS: [&str; 2] = [PROTOCOL_VERSION, STATELESS_PROTOCOL_VERSION];

fn default_protocol_version() -> String {
    PROTOCOL_VERSION.to_string()
}

/// `[mcp.<server>]`: an MCP server over Streamable HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The server's MCP endpoint, e.g. `https://tools.internal/mcp`.
    pub url: String,
    /// Headers sent with every request (credentials: `${env:…}`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// `2025-11-25` (handshake and session) or `2026-07-28` (stateless).
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
}

/// Why an MCP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// The HTTP exchange failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered outside the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered with a JSON-RPC error.
    #[error("error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// A tool a server offers.
#[derive(Clone, Debug)]
pub struct McpTool {
    /// Its name on the server.
    pub name: String,
    /// Its description.
    pub description: String,
    /// JSON schema of its arguments, as JSON text.
    pub input_schema: String,
}

/// A tool's result.
#[derive(Clone, Debug)]
pub struct McpResult {
    /// Its text content parts, joined by newlines (structured content as
    /// JSON when there is no text).
    pub text: String,
    /// The server's `isError`.
    pub is_error: bool,
}

/// A client of one MCP server, shared by every call of the plugins it
/// serves.
pub struct McpClient {
    name: String,
    config: McpServerConfig,
    http: reqwest::Client,
    next_id: AtomicU64,
    /// The session id, once initialised (`Some("")` for a server that gives
    /// none).
    session: Mutex<Option<String>>,
}

impl McpClient {
    /// A client of server `name` (the `[mcp.<name>]` key).
    pub fn new(name: &str, config: McpServerConfig, http: reqwest::Client) -> Self {
        Self {
            name: name.to_string(),
            config,
            http,
            next_id: AtomicU64::new(1),
            session: Mutex::new(None),
        }
    }

    /// The server's tools (first page; cursors are followed up to 16 pages).
    pub async fn list_tools(&self, timeout: Duration) -> Result<Vec<McpTool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..16 {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = self.request("tools/list", params, timeout).await?;
            for t in result["tools"].as_array().into_iter().flatten() {
                let Some(name) = t["name"].as_str() else {
                    continue;
                };
                tools.push(McpTool {
                    name: name.to_string(),
                    description: t["description"].as_str().unwrap_or_default().to_string(),
                    input_schema: t
                        .get("inputSchema")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{\"type\":\"object\"}".into()),
                });
            }
            cursor = result["nextCursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(tools)
    }

    /// Calls `tool` with `arguments`.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<McpResult, McpError> {
        let result = self
            .request(
                "tools/call",
                json!({ "name": tool, "arguments": arguments }),
                timeout,
            )
            .await?;
        let texts: Vec<&str> = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] == "text")
            .filter_map(|c| c["text"].as_str())
            .collect();
        let text = if texts.is_empty() {
            result
                .get("structuredContent")
                .map(Value::to_string)
                .unwrap_or_default()
        } else {
            texts.join("\n")
        };
        Ok(McpResult {
            text,
            is_error: result["isError"].as_bool().unwrap_or(false),
        })
    }

    /// One request, initialising the session first when needed.
    async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, McpError> {
        tokio::time::timeout(timeout, async {
            if self.stateless() {
                return self.exchange(method, params, None).await;
            }
            for attempt in 0..2 {
                let session = self.session(timeout).await?;
                match self.exchange(method, params.clone(), Some(&session)).await {
                    Err(McpError::Transport(e)) if attempt == 0 && e.starts_with("HTTP 404") => {
                        // The session expired on the server: start another.
                        *self.session.lock().await = None;
                    }
                    other => return other,
                }
            }
            Err(McpError::Protocol(
                "the session could not be renewed".into(),
            ))
        })
        .await
        .map_err(|_| McpError::Timeout)?
    }

    fn stateless(&self) -> bool {
        self.config.protocol_version == STATELESS_PROTOCOL_VERSION
    }

    async fn session(&self, _timeout: Duration) -> Result<String, McpError> {
        let mut session = self.session.lock().await;
        if let Some(s) = &*session {
            return Ok(s.clone());
        }
        let (result, id) = self
            .post(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "agentrouter", "version": env!("CARGO_PKG_VERSION") },
                }),
                None,
            )
            .await?;
        if result.get("protocolVersion").is_none() {
            return Err(McpError::Protocol(
                "initialize answered without protocolVersion".into(),
            ));
        }
        let id = id.unwrap_or_default();
        self.notify("notifications/initialized", Some(&id)).await?;
        *session = Some(id.clone());
        tracing::debug!(mcp = %self.name, version = %result["protocolVersion"], "MCP session started");
        Ok(id)
    }

    async fn exchange(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, McpError> {
        self.post(method, params, session).await.map(|(v, _)| v)
    }

    fn builder(&self, session: Option<&str>) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .post(&self.config.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", &self.config.protocol_version);
        if let Some(s) = session.filter(|s| !s.is_empty()) {
            b = b.header("mcp-session-id", s);
        }
        for (k, v) in &self.config.headers {
            b = b.header(k, v.expose());
        }
        b
    }

    async fn notify(&self, method: &str, session: Option<&str>) -> Result<(), McpError> {
        let resp = self
            .builder(session)
            .json(&json!({ "jsonrpc": "2.0", "method": method }))
            .send()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(McpError::Transport(format!(
                "HTTP {} to {method}",
                resp.status().as_u16()
            )));
        }
        Ok(())
    }

    /// POSTs one request; the result and the session id the server gave.
    async fn post(
        &self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<(Value, Option<String>), McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut params = params;
        let mut builder = self.builder(session);
        if self.stateless() {
            // The per-request envelope, in the body and the routing headers.
            if let Some(p) = params.as_object_mut() {
                p.insert(
                    "_meta".into(),
                    json!({
                        "io.modelcontextprotocol/protocolVersion": STATELESS_PROTOCOL_VERSION,
                        "io.modelcontextprotocol/clientCapabilities": {},
                        "io.modelcontextprotocol/clientInfo":
                            { "name": "agentrouter", "version": env!("CARGO_PKG_VERSION") },
                    }),
                );
            }
            builder = builder.header("mcp-method", method);
            if let Some(name) = params.get("name").and_then(Value::as_str) {
                builder = builder.header("mcp-name", header_value(name));
            }
        }
        let resp = builder
            .json(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .send()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(McpError::Transport(format!(
                "HTTP {} to {method}",
                status.as_u16()
            )));
        }
        let session_id = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let body = resp
            .text()
            .await
            .map_err(|e| McpError::Transport(e.to_string()))?;
        let message = if is_sse {
            sse_response(&body, id)?
        } else {
            serde_json::from_str(&body).map_err(|e| McpError::Protocol(e.to_string()))?
        };
        if let Some(err) = message.get("error") {
            return Err(McpError::Rpc {
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        match message.get("result") {
            Some(r) => Ok((r.clone(), session_id)),
            None => Err(McpError::Protocol(format!(
                "{method} answered without a result"
            ))),
        }
    }
}

/// A header value for `text`: itself when it is printable ASCII, else the
/// `=?base64?<utf-8 base64>?=` form the stateless revision defines.
fn header_value(text: &str) -> String {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        text.to_string()
    } else {
        use base64::Engine as _;
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

/// The JSON-RPC response with id `id` in an SSE body.
fn sse_response(body: &str, id: u64) -> Result<Value, McpError> {
    let mut data = String::new();
    let mut events = Vec::new();
    for line in body.lines().chain(std::iter::once("")) {
        if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if line.is_empty() && !data.is_empty() {
            events.push(std::mem::take(&mut data));
        }
    }
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|m| m["id"].as_u64() == Some(id))
        .ok_or_else(|| McpError::Protocol("no response in the event stream".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_found_among_other_events() {
        let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                    event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"ok\":true}}\n\n";
        assert_eq!(sse_response(body, 7).unwrap()["result"]["ok"], true);
        assert!(sse_response(body, 8).is_err());
    }
}
