//! Conveniences shared by every world.
//!
//! `wit-bindgen` generates the contract's types once per world, so the same
//! helpers are stamped onto each world's types by these macros.

/// Implements constructors and accessors on a world's generated types and
/// defines its `logging` and `config` helper modules.
macro_rules! world_helpers {
    ($bindings:path) => {
        use $bindings as __b;

        impl __b::agentrouter::plugin::types::Message {
            /// A message with the given role and text, and nothing else.
            pub fn new(
                role: __b::agentrouter::plugin::types::Role,
                content: impl Into<String>,
            ) -> Self {
                Self {
                    role,
                    content: content.into(),
                    name: None,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                }
            }

            /// A `system` message.
            pub fn system(content: impl Into<String>) -> Self {
                Self::new(__b::agentrouter::plugin::types::Role::System, content)
            }

            /// A `user` message.
            pub fn user(content: impl Into<String>) -> Self {
                Self::new(__b::agentrouter::plugin::types::Role::User, content)
            }

            /// An `assistant` message.
            pub fn assistant(content: impl Into<String>) -> Self {
                Self::new(__b::agentrouter::plugin::types::Role::Assistant, content)
            }

            /// A `tool` message answering the tool call `call_id`.
            pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
                let mut message = Self::new(__b::agentrouter::plugin::types::Role::Tool, content);
                message.tool_call_id = Some(call_id.into());
                message
            }
        }

        impl __b::agentrouter::plugin::types::Usage {
            /// No tokens.
            pub const ZERO: Self = Self {
                prompt_tokens: 0,
                completion_tokens: 0,
            };

            /// Sum of two usages, saturating instead of overflowing.
            pub fn plus(self, other: Self) -> Self {
                Self {
                    prompt_tokens: self.prompt_tokens.saturating_add(other.prompt_tokens),
                    completion_tokens: self
                        .completion_tokens
                        .saturating_add(other.completion_tokens),
                }
            }

            /// Prompt plus completion tokens.
            pub fn total(&self) -> u32 {
                self.prompt_tokens.saturating_add(self.completion_tokens)
            }
        }

        /// Logging into the host's tracing; events carry the plugin's name and version.
        pub mod logging {
            use super::__b::agentrouter::plugin::log::{Level, log};

            /// Log at `debug` level.
            pub fn debug(message: &str) {
                log(Level::Debug, message, &[]);
            }

            /// Log at `info` level.
            pub fn info(message: &str) {
                log(Level::Info, message, &[]);
            }

            /// Log at `warn` level.
            pub fn warn(message: &str) {
                log(Level::Warn, message, &[]);
            }

            /// Log at `error` level.
            pub fn error(message: &str) {
                log(Level::Error, message, &[]);
            }

            /// Log with structured fields.
            pub fn with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
                let fields: Vec<(String, String)> = fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                log(level, message, &fields);
            }
        }

        /// Typed access to the operator's settings for this plugin.
        pub mod config {
            use super::__b::agentrouter::plugin::settings;

            /// The raw setting, if the operator set it.
            pub fn get(key: &str) -> Option<String> {
                settings::get(key)
            }

            /// The setting, or `default` when unset.
            pub fn get_or(key: &str, default: &str) -> String {
                settings::get(key).unwrap_or_else(|| default.to_string())
            }

            /// The setting parsed as `T`, or `default` when unset or unparsable.
            pub fn parse_or<T: core::str::FromStr>(key: &str, default: T) -> T {
                settings::get(key)
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(default)
            }

            /// A comma-separated setting as a list of trimmed, non-empty items.
            pub fn list(key: &str) -> Vec<String> {
                settings::get(key)
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            }

            /// A boolean setting (`true`/`false`, `1`/`0`, `yes`/`no`), or `default`.
            pub fn flag(key: &str, default: bool) -> bool {
                match settings::get(key).as_deref().map(str::trim) {
                    Some("true" | "1" | "yes" | "on") => true,
                    Some("false" | "0" | "no" | "off") => false,
                    _ => default,
                }
            }
        }
    };
}
