//! Validation of what agents reach outside the host: `[mcp.<server>]` and
//! each slot's `capabilities.http` and `capabilities.tools` (secret
//! references resolved, keys checked, errors naming file:line:key).

use super::Config;
use super::error::Errors;
use super::secret::{self, EnvLookup};
use crate::runtime::World;
use std::collections::BTreeMap;
use std::path::Path;

/// Resolves the secret references among `headers` (`<prefix>.<name>`).
fn resolve_headers(
    headers: &mut BTreeMap<String, crate::secret::Secret>,
    prefix: &str,
    base_dir: &Path,
    env: EnvLookup<'_>,
    errors: &mut Errors<'_>,
) {
    for (name, value) in headers.iter_mut() {
        match secret::resolve(value.expose(), base_dir, env) {
            Ok(Some(resolved)) => *value = resolved,
            Ok(None) => {}
            Err(reason) => errors.push(format!("{prefix}.{name}"), reason.to_string()),
        }
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(format!("{prefix}.{name}"), "is not a valid header name");
        }
    }
}

/// `[mcp.<server>]` and the http and tools grants of every slot.
pub(super) fn outbound(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let base_dir = config.base_dir.clone();
    for (name, server) in &mut config.reloadable.mcp {
        if !(server.url.starts_with("http://") || server.url.starts_with("https://")) {
            errors.push(
                format!("mcp.{name}.url"),
                "must be an http:// or https:// URL",
            );
        }
        if name.contains('.') {
            errors.push(format!("mcp.{name}"), "a server name cannot contain `.`");
        }
        if !crate::runtime::mcp::PROTOCOL_VERSIONS.contains(&server.protocol_version.as_str()) {
            errors.push(
                format!("mcp.{name}.protocol_version"),
                format!(
                    "must be one of {}",
                    crate::runtime::mcp::PROTOCOL_VERSIONS.join(", ")
                ),
            );
        }
        resolve_headers(
            &mut server.headers,
            &format!("mcp.{name}.headers"),
            &base_dir,
            env,
            errors,
        );
    }
    let servers: Vec<String> = config.reloadable.mcp.keys().cloned().collect();
    for (slot, p) in &mut config.reloadable.plugins {
        let world = p.world;
        let caps = &mut p.capabilities;
        if (caps.http.is_some() || caps.tools.is_some()) && world.is_some_and(|w| w != World::Agent)
        {
            errors.push(
                format!("plugins.{slot}.capabilities"),
                "http and tools are granted to agents only",
            );
        }
        if let Some(http) = &mut caps.http {
            for (i, rule) in http.allow.iter_mut().enumerate() {
                let prefix = format!("plugins.{slot}.capabilities.http.allow[{i}]");
                if rule.host.trim().is_empty() || rule.host.contains(['/', ' ']) {
                    errors.push(format!("{prefix}.host"), "must be a host name or address");
                }
                for m in &rule.methods {
                    if reqwest::Method::from_bytes(m.as_bytes()).is_err() {
                        errors.push(
                            format!("{prefix}.methods"),
                            format!("`{m}` is not an HTTP method"),
                        );
                    }
                }
                resolve_headers(
                    &mut rule.inject_headers,
                    &format!("{prefix}.inject_headers"),
                    &base_dir,
                    env,
                    errors,
                );
            }
            for (field, zero) in [
                ("max_requests_per_call", http.max_requests_per_call == 0),
                ("max_response_bytes", http.max_response_bytes == 0),
                ("total_timeout_ms", http.total_timeout_ms == 0),
            ] {
                if zero {
                    errors.push(
                        format!("plugins.{slot}.capabilities.http.{field}"),
                        "must be positive",
                    );
                }
            }
        }
        if let Some(tools) = &caps.tools {
            for (i, name) in tools.allow.iter().enumerate() {
                let key = format!("plugins.{slot}.capabilities.tools.allow[{i}]");
                match name.split_once('.') {
                    Some((server, tool)) if !tool.is_empty() => {
                        if !servers.iter().any(|s| s == server) {
                            errors.push(key, format!("`{name}` names no [mcp.{server}] server"));
                        }
                    }
                    _ => errors.push(key, format!("`{name}` must be `<server>.<tool>`")),
                }
            }
            for (field, zero) in [
                ("call_timeout_ms", tools.call_timeout_ms == 0),
                ("max_calls_per_call", tools.max_calls_per_call == 0),
                ("max_result_bytes", tools.max_result_bytes == 0),
            ] {
                if zero {
                    errors.push(
                        format!("plugins.{slot}.capabilities.tools.{field}"),
                        "must be positive",
                    );
                }
            }
        }
    }
}
