//! Streamed completions: `chat.completion.chunk` payloads, and the
//! [`Assembly`] that folds a stream's chunks back into one whole answer
//! (for the cache, the ledger and the span), keeping every choice, tool
//! call fragment, refusal and logprob.

use super::WireUsage;
use crate::domain::{self as d, Completion, Details, Message, Role, ToolCall};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One server-sent event of a streamed completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Completion id (the same for every chunk).
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// Choice deltas (none on a usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, on the last chunk when the request asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// Every other field, as sent (`system_fingerprint`, `service_tier`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The delta of one choice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice it adds to.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field, as sent (`logprobs`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Incremental message content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Role, on a choice's first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments, as sent (indexed; arguments arrive in pieces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// Every other field, as sent (`refusal`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChunkChoice {
    /// Whether it adds nothing once its role is set aside (the opening
    /// `{"role": "assistant", "content": ""}` of most servers).
    pub fn is_empty(&self) -> bool {
        let d = &self.delta;
        d.content.as_deref().is_none_or(str::is_empty)
            && d.tool_calls.as_ref().is_none_or(Vec::is_empty)
            && d.extra.values().all(Value::is_null)
            && self.finish_reason.is_none()
            && self.extra.values().all(Value::is_null)
    }
}

/// A tool-call fragment of a streamed delta.
#[derive(Deserialize)]
struct ToolCallDelta {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

/// One choice as its chunks have built it so far.
#[derive(Debug, Default)]
struct ChoiceSoFar {
    content: String,
    refusal: Option<String>,
    tool_calls: BTreeMap<usize, ToolCall>,
    logprobs: Option<(Vec<Value>, Vec<Value>)>,
    finish_reason: Option<String>,
    message_extra: Map<String, Value>,
    choice_extra: Map<String, Value>,
}

/// Appends `value` to `into[key]` when both are arrays; otherwise a
/// non-null value replaces what was there.
fn merge(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match (into.get_mut(key), value) {
        (_, Value::Null) => {}
        (Some(Value::Array(have)), Value::Array(more)) => have.extend(more.iter().cloned()),
        _ => {
            into.insert(key.to_string(), value.clone());
        }
    }
}

/// A whole answer put back together from its chunks.
#[derive(Debug)]
pub struct Assembled {
    /// The answer; its usage is what the stream reported (zero otherwise).
    pub completion: Completion,
    /// Whether the stream reported usage.
    pub usage_reported: bool,
    /// Characters of the answer (text, refusals and tool-call arguments),
    /// to estimate usage from when none was reported.
    pub answer_chars: usize,
}

/// Folds the chunks of one stream into a whole answer.
#[derive(Debug, Default)]
pub struct Assembly {
    model: String,
    choices: BTreeMap<u32, ChoiceSoFar>,
    response: Map<String, Value>,
    usage: Option<WireUsage>,
}

impl Assembly {
    /// An assembly for an answer from `model` (until a chunk names another).
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Adds one chunk; a tool-call fragment that is not one is an error.
    pub fn push(&mut self, chunk: &ChatChunk) -> Result<(), String> {
        if !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        for (key, value) in &chunk.extra {
            // Per-chunk padding, not part of the answer.
            if key != "obfuscation" {
                merge(&mut self.response, key, value);
            }
        }
        for choice in &chunk.choices {
            let so_far = self.choices.entry(choice.index).or_default();
            let delta = &choice.delta;
            if let Some(text) = &delta.content {
                so_far.content.push_str(text);
            }
            for (key, value) in &delta.extra {
                match (key.as_str(), value) {
                    ("refusal", Value::String(text)) => {
                        so_far.refusal.get_or_insert_default().push_str(text)
                    }
                    _ => merge(&mut so_far.message_extra, key, value),
                }
            }
            for (pos, raw) in delta.tool_calls.iter().flatten().enumerate() {
                let fragment: ToolCallDelta = serde_json::from_value(raw.clone())
                    .map_err(|e| format!("bad tool-call delta: {e}"))?;
                let call = so_far
                    .tool_calls
                    .entry(fragment.index.unwrap_or(pos))
                    .or_insert_with(|| ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                if let Some(id) = fragment.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(f) = fragment.function {
                    // Names come whole in the first fragment; arguments in pieces.
                    if let Some(name) = f.name.filter(|_| call.name.is_empty()) {
                        call.name = name;
                    }
                    call.arguments
                        .push_str(f.arguments.as_deref().unwrap_or(""));
                }
            }
            for (key, value) in &choice.extra {
                match (key.as_str(), value) {
                    ("logprobs", Value::Object(lp)) => {
                        let (content, refusal) = so_far.logprobs.get_or_insert_default();
                        for (list, key) in [(content, "content"), (refusal, "refusal")] {
                            if let Some(Value::Array(more)) = lp.get(key) {
                                list.extend(more.iter().cloned());
                            }
                        }
                    }
                    _ => merge(&mut so_far.choice_extra, key, value),
                }
            }
            if let Some(reason) = &choice.finish_reason {
                so_far.finish_reason = Some(reason.clone());
            }
        }
        Ok(())
    }

    /// The whole answer. Every choice must have finished and every tool
    /// call be named; a call without an id gets `call_<index>`.
    pub fn finish(self) -> Result<Assembled, String> {
        if self.choices.is_empty() {
            return Err("stream ended before a finish reason".into());
        }
        let mut answer_chars = 0;
        let mut choices = Vec::with_capacity(self.choices.len());
        for (index, so_far) in self.choices {
            let Some(finish_reason) = so_far.finish_reason else {
                return Err(format!(
                    "stream ended before a finish reason (choice {index})"
                ));
            };
            let mut message = Message::new(Role::Assistant, so_far.content);
            answer_chars += message.content.chars().count();
            for (i, mut call) in so_far.tool_calls {
                if call.name.is_empty() {
                    return Err(format!("tool call {i} has no name"));
                }
                if call.id.is_empty() {
                    call.id = format!("call_{i}");
                }
                answer_chars += call.arguments.chars().count();
                message.tool_calls.push(call);
            }
            message.wire.extra = so_far.message_extra;
            if let Some(refusal) = so_far.refusal {
                answer_chars += refusal.chars().count();
                message
                    .wire
                    .extra
                    .insert("refusal".into(), Value::String(refusal));
            }
            let mut extra = so_far.choice_extra;
            if let Some((content, refusal)) = so_far.logprobs {
                let list = |l: Vec<Value>| {
                    if l.is_empty() {
                        Value::Null
                    } else {
                        Value::Array(l)
                    }
                };
                extra.insert(
                    "logprobs".into(),
                    serde_json::json!({"content": list(content), "refusal": list(refusal)}),
                );
            }
            choices.push(d::Choice {
                message,
                finish_reason,
                extra,
            });
        }
        let first = choices.remove(0);
        let usage = self.usage.clone().unwrap_or_default();
        Ok(Assembled {
            completion: Completion {
                message: first.message,
                model: self.model,
                finish_reason: first.finish_reason,
                usage: usage.to_domain(),
                cached: false,
                details: Box::new(Details {
                    response: self.response,
                    choice: first.extra,
                    choices,
                    usage: usage.extra,
                }),
            },
            usage_reported: self.usage.is_some(),
            answer_chars,
        })
    }
}
