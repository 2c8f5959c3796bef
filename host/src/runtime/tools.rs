//! The `tools` import: MCP tools an agent may list and call, served by the
//! MCP servers declared in `[mcp.<server>]` and granted per slot in
//! `[plugins.<slot>.capabilities.tools]`.
//!
//! Deny by default: without a grant `list` is empty and `call` is denied.
//! A grant's `allow` names tools as `<server>.<tool>`; the host lists only
//! those (with the server's description and schema) and refuses any other
//! name before contacting a server. Each call has a timeout, a result size
//! cap and counts against the call budget of the plugin call. The MCP
//! client is the small JSON-RPC-over-HTTP one in `mcp.rs`.

use super::PluginError;
use super::mcp::{McpClient, McpError, McpServerConfig};
use crate::domain::Failure;
use crate::telemetry::Metrics;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[plugins.<slot>.capabilities.tools]`: the MCP tools a slot may use.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsGrant {
    /// Tools as `<server>.<tool>`, the server a `[mcp.<server>]` section.
    pub allow: Vec<String>,
    /// Deadline of one tool call, milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Largest tool result (its text), bytes.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: u64,
    /// Tool calls one plugin call may make.
    #[serde(default = "default_max_calls")]
    pub max_calls_per_call: u32,
}

fn default_call_timeout_ms() -> u64 {
    10_000
}
fn default_max_result_bytes() -> u64 {
    256 * 1024
}
fn default_max_calls() -> u32 {
    16
}

/// A tool as the plugin (and the model) sees it.
#[derive(Clone, Debug)]
pub(crate) struct ToolInfo {
    pub name: String,
    pub description: String,
    pub parameters: String,
}

/// What a tool answered.
pub(crate) struct ToolOutput {
    pub text: String,
    pub is_error: bool,
}

/// One slot's tool grant with the clients of the servers it uses.
pub(crate) struct ToolsPolicy {
    plugin: String,
    grant: ToolsGrant,
    servers: BTreeMap<String, Arc<McpClient>>,
    metrics: Option<Arc<Metrics>>,
}

/// What one plugin call has used of its tool grant.
#[derive(Debug, Default)]
pub(crate) struct ToolsUsage {
    calls: u32,
}

impl std::fmt::Debug for ToolsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolsPolicy")
            .field("plugin", &self.plugin)
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ToolsPolicy {
    /// The policy of `plugin`'s grant with a client per server it names;
    /// a name that is not `<server>.<tool>` of a declared server is a
    /// config error naming the key (config validation catches it first).
    pub(crate) fn from_grant(
        plugin: &str,
        grant: ToolsGrant,
        servers: &BTreeMap<String, McpServerConfig>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, PluginError> {
        let mut clients = BTreeMap::new();
        for name in &grant.allow {
            let invalid = |reason: String| PluginError::InvalidConfig {
                plugin: plugin.to_string(),
                key: "capabilities.tools.allow",
                value: name.clone(),
                reason,
            };
            let Some((server, _)) = name.split_once('.') else {
                return Err(invalid("must be `<server>.<tool>`".into()));
            };
            let Some(config) = servers.get(server) else {
                return Err(invalid(format!("names no [mcp.{server}] server")));
            };
            clients.entry(server.to_string()).or_insert_with(|| {
                Arc::new(McpClient::new(
                    server,
                    config.clone(),
                    crate::net::http_client(),
                ))
            });
        }
        Ok(Self::new(plugin, grant, clients, metrics))
    }

    /// `servers` holds a client for every server the grant names.
    pub(crate) fn new(
        plugin: &str,
        grant: ToolsGrant,
        servers: BTreeMap<String, Arc<McpClient>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            plugin: plugin.to_string(),
            grant,
            servers,
            metrics,
        }
    }

    fn denied(&self, field: &str, why: impl std::fmt::Display) -> Failure {
        Failure::Denied(format!(
            "plugins.{}.capabilities.tools.{field}: {why}",
            self.plugin
        ))
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.grant.call_timeout_ms)
    }

    /// The allowed tools, described by their servers (a tool a server no
    /// longer offers is left out).
    pub(crate) async fn list(&self) -> Result<Vec<ToolInfo>, Failure> {
        let mut out = Vec::new();
        for (server, client) in &self.servers {
            let offered = client
                .list_tools(self.timeout())
                .await
                .map_err(|e| mcp_failure(server, e))?;
            for tool in offered {
                let name = format!("{server}.{}", tool.name);
                if self.grant.allow.contains(&name) {
                    out.push(ToolInfo {
                        name,
                        description: tool.description,
                        parameters: tool.input_schema,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Calls `name` (`<server>.<tool>`) with `arguments` (JSON text).
    pub(crate) async fn call(
        &self,
        usage: &mut ToolsUsage,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutput, Failure> {
        let started = Instant::now();
        let span = tracing::info_span!("plugin.tool", plugin = %self.plugin, tool = %name);
        let result =
            tracing::Instrument::instrument(self.call_inner(usage, name, arguments), span).await;
        let outcome = match &result {
            Ok(out) if out.is_error => "tool_error",
            Ok(_) => "ok",
            Err(Failure::Denied(_)) => "denied",
            Err(Failure::Timeout) => "timeout",
            Err(_) => "error",
        };
        let received = result.as_ref().map_or(0, |o| o.text.len() as u64);
        match &result {
            Ok(_) => {
                tracing::info!(plugin = %self.plugin, outbound = "tool", tool = %name, outcome,
                bytes = received, "plugin tool call")
            }
            Err(f) => {
                tracing::warn!(plugin = %self.plugin, outbound = "tool", tool = %name, outcome,
                failure = %f, "plugin tool call failed")
            }
        }
        if let Some(m) = &self.metrics {
            super::http::observe(
                m,
                &self.plugin,
                "tool",
                outcome,
                arguments.len() as u64,
                received,
                started.elapsed(),
            );
        }
        result
    }

    async fn call_inner(
        &self,
        usage: &mut ToolsUsage,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutput, Failure> {
        if !self.grant.allow.iter().any(|a| a == name) {
            return Err(self.denied("allow", format!("tool `{name}` is not allowed")));
        }
        if usage.calls >= self.grant.max_calls_per_call {
            return Err(self.denied(
                "max_calls_per_call",
                format!("{} tool calls in this call already", usage.calls),
            ));
        }
        let Some((server, tool)) = name.split_once('.') else {
            return Err(self.denied("allow", format!("`{name}` is not `<server>.<tool>`")));
        };
        let client = self
            .servers
            .get(server)
            .ok_or_else(|| self.denied("allow", format!("no MCP server `{server}`")))?;
        let arguments: serde_json::Value = if arguments.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(arguments)
                .map_err(|e| Failure::Internal(format!("tool arguments are not JSON: {e}")))?
        };
        usage.calls += 1;
        let result = client
            .call_tool(tool, arguments, self.timeout())
            .await
            .map_err(|e| mcp_failure(server, e))?;
        if result.text.len() as u64 > self.grant.max_result_bytes {
            return Err(self.denied(
                "max_result_bytes",
                format!(
                    "the result of `{name}` is {} bytes, over {}",
                    result.text.len(),
                    self.grant.max_result_bytes
                ),
            ));
        }
        Ok(ToolOutput {
            text: result.text,
            is_error: result.is_error,
        })
    }
}

fn mcp_failure(server: &str, e: McpError) -> Failure {
    match e {
        McpError::Timeout => Failure::Timeout,
        other => Failure::Internal(format!("MCP server `{server}`: {other}")),
    }
}
