//! What JSON log lines keep of the spans around them: the trace id, no more.
//!
//! tracing-subscriber's JSON layer formats every field of every span as JSON
//! when the span is created and again on every `Span::record`, so that a log
//! line inside the span can print them. The gateway records many fields on
//! its spans (GenAI attributes, plugin fuel, status codes) for trace export,
//! and re-serialising them was ~15 % of the CPU of a request that logs only
//! one line — itself outside any span. Log lines inside a request only need
//! the request's trace id to be tied to it and to its trace; everything else
//! a span knows is in the trace. [`TraceIdOnly`] keeps exactly that.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

/// The span field JSON log lines carry.
const TRACE_ID: &str = "trace_id";

/// Formats a span's fields for JSON log lines as `{"trace_id":"…"}` (or
/// `{}` before the id is recorded), ignoring every other field cheaply.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceIdOnly;

/// Picks the trace id out of a span's fields.
#[derive(Default)]
struct TraceId(Option<String>);

impl Visit for TraceId {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACE_ID {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == TRACE_ID {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

fn write_fields(writer: &mut impl fmt::Write, trace_id: Option<&str>) -> fmt::Result {
    match trace_id {
        // A trace id is 32 hex digits, so it needs no JSON escaping; anything
        // else is escaped by serde_json to keep the line valid JSON.
        Some(id) if id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            write!(writer, "{{\"{TRACE_ID}\":\"{id}\"}}")
        }
        Some(id) => {
            let quoted = serde_json::to_string(id).map_err(|_| fmt::Error)?;
            write!(writer, "{{\"{TRACE_ID}\":{quoted}}}")
        }
        None => writer.write_str("{}"),
    }
}

impl<'writer> FormatFields<'writer> for TraceIdOnly {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut id = TraceId::default();
        fields.record(&mut id);
        write_fields(&mut writer, id.0.as_deref())
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut id = TraceId::default();
        fields.record(&mut id);
        // Recording any other field leaves the formatted fields as they are.
        let Some(id) = id.0 else { return Ok(()) };
        current.fields.clear();
        write_fields(&mut current.fields, Some(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json_for_any_trace_id() {
        let mut out = String::new();
        write_fields(&mut out, Some("4bf92f3577b34da6a3ce929d0e0e4736")).unwrap();
        assert_eq!(out, r#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#);
        out.clear();
        write_fields(&mut out, Some("a\"b")).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["trace_id"], "a\"b");
        out.clear();
        write_fields(&mut out, None).unwrap();
        assert_eq!(out, "{}");
    }
}
