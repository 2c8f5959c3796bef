//! The events of a streamed answer, where they come from and how they are
//! written out.
//!
//! A stream is a run of [`StreamEvent::Chunk`]s — the upstream's choice
//! deltas as it sent them (text, refusals, tool-call fragments, logprobs,
//! any choice of `n`) — closed by one [`StreamEvent::Done`] holding the
//! whole answer put back together, which the ledger, the span and the
//! cache read. A whole answer that is streamed anyway (output validators
//! had to see it first, an agent's answer, a cache hit, the simulator) is
//! replayed into the same events by [`completion_events`], so one writer,
//! [`ChunkWriter`], renders every stream the way OpenAI does: the role on
//! each choice's first chunk, and a last chunk with `choices: []` and the
//! usage only when the client asked for it (`stream_options.include_usage`).

use crate::domain::{Completion, Message};
use crate::openai::{ChatChunk, ChunkChoice, Delta, WireUsage};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Deltas of one chunk, as sent (roles left to the writer).
    Chunk(Chunk),
    /// The answer is complete; always the last event: the whole answer,
    /// with its usage (estimated when the upstream did not say).
    Done(Box<Completion>),
}

/// The choice deltas of one chunk and its other fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    /// Choice deltas, none of them empty.
    pub choices: Vec<ChunkChoice>,
    /// The chunk's fields other than `id`, `object`, `created`, `model`,
    /// `choices` and `usage` (`system_fingerprint`, `service_tier`, ...).
    pub extra: Map<String, Value>,
}

impl StreamEvent {
    /// The text this event adds to the first choice (empty when none).
    pub fn text(&self) -> &str {
        match self {
            StreamEvent::Chunk(c) => c
                .choices
                .iter()
                .find(|c| c.index == 0)
                .and_then(|c| c.delta.content.as_deref())
                .unwrap_or_default(),
            StreamEvent::Done(_) => "",
        }
    }

    /// The whole answer, on the last event.
    pub fn done(&self) -> Option<&Completion> {
        match self {
            StreamEvent::Done(c) => Some(c),
            StreamEvent::Chunk(_) => None,
        }
    }
}

/// Splits text into pieces of about four words, cutting only where a word
/// starts, so the pieces concatenate back to the text exactly.
pub fn word_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if prev_space && !space {
            if words > 0 && words % 4 == 0 {
                chunks.push(text[start..i].to_string());
                start = i;
            }
            words += 1;
        }
        prev_space = space;
    }
    if start < text.len() {
        chunks.push(text[start..].to_string());
    }
    chunks
}

fn delta(index: u32, delta: Delta) -> ChunkChoice {
    ChunkChoice {
        index,
        delta,
        ..ChunkChoice::default()
    }
}

/// The logprob entries of `content` when their tokens spell it exactly: a
/// replay then streams token by token, each with its own entry, as OpenAI
/// does.
fn token_entries<'a>(logprobs: Option<&'a Value>, content: &str) -> Option<&'a Vec<Value>> {
    let entries = logprobs?.get("content")?.as_array()?;
    let spelled: Option<String> = entries
        .iter()
        .map(|e| e.get("token").and_then(Value::as_str))
        .collect();
    (!entries.is_empty() && spelled.as_deref() == Some(content)).then_some(entries)
}

/// The chunks of one choice: its text (token by token when its logprobs
/// spell it, else in word-sized pieces), its refusal, its tool calls whole,
/// then its finish reason. The message's other fields ride on its first
/// chunk.
fn replay_choice(
    index: u32,
    message: &Message,
    finish_reason: &str,
    extra: &Map<String, Value>,
) -> Vec<ChunkChoice> {
    let mut out = Vec::new();
    let logprobs = extra.get("logprobs").filter(|l| !l.is_null());
    if let Some(entries) = token_entries(logprobs, &message.content) {
        for entry in entries {
            let mut c = delta(
                index,
                Delta {
                    content: entry["token"].as_str().map(str::to_string),
                    ..Delta::default()
                },
            );
            c.extra.insert(
                "logprobs".into(),
                json!({"content": [entry], "refusal": null}),
            );
            out.push(c);
        }
    } else {
        for piece in word_chunks(&message.content) {
            out.push(delta(
                index,
                Delta {
                    content: Some(piece),
                    ..Delta::default()
                },
            ));
        }
        // Logprobs that do not spell the text go whole on its first chunk.
        if let (Some(lp), Some(first)) = (logprobs, out.first_mut()) {
            first.extra.insert("logprobs".into(), lp.clone());
        }
    }
    if let Some(refusal) = message.wire.extra.get("refusal").filter(|r| r.is_string()) {
        let mut d = Delta::default();
        d.extra.insert("refusal".into(), refusal.clone());
        out.push(delta(index, d));
    }
    if !message.tool_calls.is_empty() {
        let calls = message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"index": i, "id": c.id, "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
        out.push(delta(
            index,
            Delta {
                tool_calls: Some(calls),
                ..Delta::default()
            },
        ));
    }
    let others: Map<String, Value> = message
        .wire
        .extra
        .iter()
        .filter(|(k, v)| k.as_str() != "refusal" && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !others.is_empty() {
        match out.first_mut() {
            Some(first) => first.delta.extra.extend(others),
            None => out.push(delta(
                index,
                Delta {
                    extra: others,
                    ..Delta::default()
                },
            )),
        }
    }
    out.push(ChunkChoice {
        index,
        finish_reason: Some(finish_reason.to_string()),
        ..ChunkChoice::default()
    });
    out
}

/// The events of a whole answer replayed as a stream: every choice in
/// turn, then `Done`.
pub fn completion_events(c: Completion) -> Vec<StreamEvent> {
    let mut choices = replay_choice(0, &c.message, &c.finish_reason, &c.details.choice);
    for (i, more) in c.details.choices.iter().enumerate() {
        choices.extend(replay_choice(
            i as u32 + 1,
            &more.message,
            &more.finish_reason,
            &more.extra,
        ));
    }
    let extra = &c.details.response;
    let mut events: Vec<StreamEvent> = choices
        .into_iter()
        .map(|choice| {
            StreamEvent::Chunk(Chunk {
                choices: vec![choice],
                extra: extra.clone(),
            })
        })
        .collect();
    events.push(StreamEvent::Done(Box::new(c)));
    events
}

/// Writes the events of one answer as `chat.completion.chunk` payloads.
#[derive(Debug)]
pub struct ChunkWriter {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Choices whose first chunk (the one with the role) is out.
    started: BTreeSet<u32>,
}

impl ChunkWriter {
    /// A writer for the answer `id` from `model`; `include_usage` as the
    /// client's `stream_options` say.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        include_usage: bool,
    ) -> Self {
        Self {
            id: id.into(),
            created,
            model: model.into(),
            include_usage,
            started: BTreeSet::new(),
        }
    }

    fn chunk(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<WireUsage>,
        extra: Map<String, Value>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            extra,
        }
    }

    /// The payloads of one event: a chunk's deltas (each choice's first
    /// with the assistant role), and at `Done` the usage chunk, if asked
    /// for. `[DONE]` is the caller's to send.
    pub fn write(&mut self, event: &StreamEvent) -> Vec<ChatChunk> {
        match event {
            StreamEvent::Chunk(c) => {
                let choices = c
                    .choices
                    .iter()
                    .cloned()
                    .map(|mut choice| {
                        if self.started.insert(choice.index) {
                            choice.delta.role = Some("assistant".into());
                        }
                        choice
                    })
                    .collect();
                vec![self.chunk(choices, None, c.extra.clone())]
            }
            StreamEvent::Done(c) if self.include_usage => vec![self.chunk(
                Vec::new(),
                Some(WireUsage::of(c)),
                c.details.response.clone(),
            )],
            StreamEvent::Done(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Details, Usage};

    #[test]
    fn word_chunks_cut_at_word_starts_and_rejoin() {
        let text = "one two  three four five six seven eight nine\nten";
        let chunks = word_chunks(text);
        assert_eq!(
            chunks,
            vec!["one two  three four ", "five six seven eight ", "nine\nten"]
        );
        assert_eq!(chunks.concat(), text);
        assert!(word_chunks("").is_empty());
        assert_eq!(word_chunks("  lead"), vec!["  lead"]);
    }

    fn answer() -> Completion {
        let mut details = Details::default();
        details.choice.insert(
            "logprobs".into(),
            json!({"content": [{"token": "Hi", "logprob": 0}, {"token": " there", "logprob": -1}], "refusal": null}),
        );
        details
            .response
            .insert("system_fingerprint".into(), json!("fp"));
        Completion {
            message: Message::assistant("Hi there"),
            model: "m".into(),
            finish_reason: "stop".into(),
            usage: Usage::new(3, 2),
            cached: false,
            details: Box::new(details),
        }
    }

    #[test]
    fn replays_token_by_token_when_logprobs_spell_the_text() {
        let events = completion_events(answer());
        let mut w = ChunkWriter::new("id", 1, "m", false);
        let chunks: Vec<ChatChunk> = events.iter().flat_map(|e| w.write(e)).collect();
        assert_eq!(
            chunks.len(),
            3,
            "two tokens and the finish chunk: {chunks:?}"
        );
        assert_eq!(
            chunks[0].choices[0].delta.role.as_deref(),
            Some("assistant")
        );
        assert_eq!(chunks[1].choices[0].delta.role, None);
        assert_eq!(
            chunks[1].choices[0].extra["logprobs"]["content"][0]["token"],
            " there"
        );
        assert_eq!(chunks[2].extra["system_fingerprint"], "fp");
        assert!(chunks.iter().all(|c| c.usage.is_none()));

        let mut w = ChunkWriter::new("id", 1, "m", true);
        let last = events.iter().flat_map(|e| w.write(e)).last().unwrap();
        assert!(last.choices.is_empty());
        assert_eq!(last.usage.unwrap().total_tokens, 5);
    }
}
