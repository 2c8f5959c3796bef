//! __NAME__: an AgentRouter validator.
//!
//! Rejects input longer than the `max_chars` setting (default 10000).

use agentrouter_sdk::validator::{Message, Stage, Validator, Verdict, config};

struct Plugin;

impl Validator for Plugin {
    fn validate(stage: Stage, messages: Vec<Message>) -> Verdict {
        let limit: usize = config::parse_or("max_chars", 10_000);
        let total: usize = messages.iter().map(|m| m.content.chars().count()).sum();
        match stage {
            Stage::Input if total > limit => Verdict::Reject(format!(
                "__NAME__: input has {total} characters, limit is {limit}"
            )),
            _ => Verdict::Allow,
        }
    }
}

agentrouter_sdk::export_validator!(Plugin);
