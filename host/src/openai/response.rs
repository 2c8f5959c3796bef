//! Whole chat completions: every choice and every field the upstream sent
//! comes back to the client. The domain view reads the first choice and the
//! usage counts; the rest is kept in [`d::Details`].

use super::WireMessage;
use crate::domain::{self as d, Completion, Details, Failure, Usage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Response body of a non-streamed completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Completion id (the gateway answers with its own).
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default = "completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The choices, in order.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// Every other field, as sent (`system_fingerprint`, `service_tier`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".into()
}

/// One choice of a completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Choice {
    /// Its position.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    pub message: WireMessage,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field, as sent (`logprobs`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Usage on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
    /// Every other field, as sent (`prompt_tokens_details`,
    /// `completion_tokens_details`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total(),
            extra: Map::new(),
        }
    }
}

impl WireUsage {
    /// The usage of an answer: its counts, with the details it came with.
    pub fn of(c: &Completion) -> Self {
        WireUsage {
            extra: c.details.usage.clone(),
            ..c.usage.into()
        }
    }

    /// The domain counts: the cached prompt tokens and the reasoning tokens
    /// are read from their details.
    pub fn to_domain(&self) -> Usage {
        let detail = |outer: &str, inner: &str| {
            self.extra
                .get(outer)
                .and_then(|d| d.get(inner))
                .and_then(Value::as_u64)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_prompt_tokens: detail("prompt_tokens_details", "cached_tokens")
                .min(self.prompt_tokens),
            reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens")
                .min(self.completion_tokens),
        }
    }
}

impl ChatResponse {
    /// The response body for a completion: every choice, with what each
    /// came with.
    pub fn from_completion(id: String, created: u64, c: &Completion) -> Self {
        let first = Choice {
            index: 0,
            message: (&c.message).into(),
            finish_reason: Some(c.finish_reason.clone()),
            extra: c.details.choice.clone(),
        };
        let more = c
            .details
            .choices
            .iter()
            .enumerate()
            .map(|(i, choice)| Choice {
                index: i as u32 + 1,
                message: (&choice.message).into(),
                finish_reason: Some(choice.finish_reason.clone()),
                extra: choice.extra.clone(),
            });
        ChatResponse {
            id,
            object: completion_object(),
            created,
            model: c.model.clone(),
            choices: std::iter::once(first).chain(more).collect(),
            usage: Some(WireUsage::of(c)),
            extra: c.details.response.clone(),
        }
    }

    /// The completion in this body; a body without a usable choice is an
    /// invalid response.
    pub fn into_completion(self) -> Result<Completion, Failure> {
        let mut choices = self.choices;
        // Choices are answered in index order; a server that lists them
        // otherwise still has its first choice read as the first.
        choices.sort_by_key(|c| c.index);
        let mut choices = choices.into_iter().enumerate().map(|(i, c)| {
            let message = c
                .message
                .to_domain(i)
                .map_err(|e| Failure::InvalidResponse(format!("choice {i}: {e}")))?;
            Ok::<_, Failure>(d::Choice {
                message,
                finish_reason: c.finish_reason.unwrap_or_else(|| "stop".into()),
                extra: c.extra,
            })
        });
        let first = choices
            .next()
            .ok_or_else(|| Failure::InvalidResponse("no choices".into()))??;
        let more = choices.collect::<Result<Vec<_>, _>>()?;
        let usage = self.usage.unwrap_or_default();
        Ok(Completion {
            message: first.message,
            model: self.model,
            finish_reason: first.finish_reason,
            usage: usage.to_domain(),
            cached: false,
            details: Box::new(Details {
                response: self.extra,
                choice: first.extra,
                choices: more,
                usage: usage.extra,
            }),
        })
    }
}
