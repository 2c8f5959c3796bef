//! The host's rules for a conversation: how many messages, how long each.
//!
//! They bound what a request makes the host (and every plugin after it)
//! hold and process, so they apply to whatever enters the pipeline — the
//! client's messages at the edge, and later anything a plugin hands back.

use crate::domain::{Message, Role, Stage};

/// Bounds on a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageRules {
    /// Most messages (`server.max_messages`).
    pub max_messages: usize,
    /// Longest message content in characters (`server.max_message_chars`).
    pub max_message_chars: usize,
}

impl Default for MessageRules {
    /// The defaults of `server.max_messages` and `server.max_message_chars`.
    fn default() -> Self {
        Self {
            max_messages: 1024,
            max_message_chars: 262_144,
        }
    }
}

/// Which bound a conversation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageLimit {
    /// No messages at all.
    Empty,
    /// An answer whose last message is not the assistant's.
    Role,
    /// More messages than `server.max_messages`.
    TooMany,
    /// A message longer than `server.max_message_chars`.
    TooLong,
}

impl MessageLimit {
    /// The error code clients see.
    pub fn code(self) -> &'static str {
        match self {
            MessageLimit::Empty => "invalid_request",
            MessageLimit::Role => "invalid_request",
            MessageLimit::TooMany => "too_many_messages",
            MessageLimit::TooLong => "message_too_long",
        }
    }
}

/// A broken rule, with a message naming the field and the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleViolation {
    /// The bound broken.
    pub limit: MessageLimit,
    /// What is wrong, naming the field and the config key.
    pub message: String,
}

impl MessageRules {
    /// Checks `messages`; `field` names the list in the message (e.g.
    /// `messages`, `input`).
    pub fn check(&self, field: &str, messages: &[Message]) -> Result<(), RuleViolation> {
        if messages.is_empty() {
            return Err(RuleViolation {
                limit: MessageLimit::Empty,
                message: format!("`{field}` must contain at least one message"),
            });
        }
        if messages.len() > self.max_messages {
            return Err(RuleViolation {
                limit: MessageLimit::TooMany,
                message: format!(
                    "`{field}` has {} messages; the limit is {} (server.max_messages)",
                    messages.len(),
                    self.max_messages
                ),
            });
        }
        for (i, m) in messages.iter().enumerate() {
            // Bytes bound characters from above: count only when it matters.
            if m.content.len() > self.max_message_chars {
                let chars = m.content.chars().count();
                if chars > self.max_message_chars {
                    return Err(RuleViolation {
                        limit: MessageLimit::TooLong,
                        message: format!(
                            "`{field}[{i}].content` has {chars} characters; the limit is {} (server.max_message_chars)",
                            self.max_message_chars
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

impl MessageRules {
    /// The rules for what a validator hands back at `stage`: the client's
    /// rules for input; for output also that the answer — the last message —
    /// is the assistant's.
    pub fn check_stage(&self, stage: Stage, messages: &[Message]) -> Result<(), RuleViolation> {
        match stage {
            Stage::Input => self.check("messages", messages),
            Stage::Output => {
                self.check("answer", messages)?;
                match messages.last() {
                    Some(last) if last.role != Role::Assistant => Err(RuleViolation {
                        limit: MessageLimit::Role,
                        message: format!(
                            "the answer's last message has role `{:?}`; an answer is the assistant's",
                            last.role
                        )
                        .to_lowercase(),
                    }),
                    _ => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_setting() {
        let rules = MessageRules {
            max_messages: 2,
            max_message_chars: 3,
        };
        assert!(rules.check("messages", &[Message::user("abc")]).is_ok());
        let many = vec![Message::user("a"); 3];
        let err = rules.check("input", &many).unwrap_err();
        assert_eq!(err.limit, MessageLimit::TooMany);
        assert!(err.message.contains("server.max_messages"), "{err}");
        // Four characters in more than four bytes: counted as characters.
        let err = rules.check("messages", &[Message::user("ééé"), Message::user("éééé")]);
        let err = err.unwrap_err();
        assert_eq!(err.limit, MessageLimit::TooLong);
        assert!(
            err.message
                .contains("`messages[1].content` has 4 characters"),
            "{err}"
        );
        assert_eq!(
            rules.check("m", &[]).unwrap_err().limit,
            MessageLimit::Empty
        );
        let err = rules
            .check_stage(Stage::Output, &[Message::system("x")])
            .unwrap_err();
        assert_eq!(err.limit, MessageLimit::Role);
        assert!(
            rules
                .check_stage(Stage::Output, &[Message::assistant("x")])
                .is_ok()
        );
    }
}
