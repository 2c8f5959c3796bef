//! Server-sent events, as OpenAI-compatible providers stream them.

/// Largest single SSE line; guards against a peer that never sends `\n`.
const MAX_SSE_LINE: usize = 4 << 20;

/// A peer sent a line longer than the parser holds.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("event-stream line over {MAX_SSE_LINE} bytes")]
pub(super) struct LineTooLong;

/// Splits a server-sent-event byte stream into the `data` of each event.
///
/// Bytes may arrive cut anywhere (mid-line, mid-UTF-8 character); only whole
/// lines are decoded. `event`, `id`, `retry` fields and comments are ignored.
#[derive(Debug, Default)]
pub(super) struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the data of every event they completed.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, LineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut events);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_SSE_LINE {
            return Err(LineTooLong);
        }
        Ok(events)
    }

    /// The data of a last event not followed by a blank line.
    pub(super) fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8_lossy(&rest).into_owned();
            self.line(line.trim_end_matches('\r'), &mut events);
        }
        events.extend(self.data.take());
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_arbitrary_splits() {
        let text = "data: {\"a\":\"h\u{e9}llo\"}\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let bytes = text.as_bytes();
        let whole = SseParser::default().push(bytes).unwrap();
        assert_eq!(whole, vec!["{\"a\":\"h\u{e9}llo\"}", "one\ntwo", "[DONE]"]);
        // Every split point, including inside the two-byte `é`.
        for cut in 0..bytes.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&bytes[..cut]).unwrap();
            got.extend(p.push(&bytes[cut..]).unwrap());
            got.extend(p.finish());
            assert_eq!(got, whole, "split at {cut}");
        }
    }

    #[test]
    fn sse_last_event_without_blank_line_is_kept() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: tail").unwrap().is_empty());
        assert_eq!(p.finish(), vec!["tail"]);
    }

    #[test]
    fn sse_refuses_endless_lines() {
        let mut p = SseParser::default();
        let big = vec![b'x'; MAX_SSE_LINE + 1];
        assert!(p.push(&big).is_err());
    }
}

/// Bad input never panics: any bytes, cut anywhere, give the same events
/// as when fed whole (`PROPTEST_CASES` sets the run's length; see
/// docs/security.md).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like an event stream: fields, comments, blank lines,
    /// CR/LF mixes and raw bytes (invalid UTF-8 included).
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: x".to_vec()),
            Just(b": comment".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"[DONE]".to_vec()),
            Just("h\u{e9}llo".as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ];
        prop::collection::vec(piece, 0..64).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn any_stream_parses_the_same_however_it_is_cut(bytes in stream(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut whole = SseParser::default();
            let mut expected = whole.push(&bytes).unwrap();
            expected.extend(whole.finish());
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut parser = SseParser::default();
            let mut got = Vec::new();
            let mut start = 0;
            for point in points.into_iter().chain([bytes.len()]) {
                got.extend(parser.push(&bytes[start..point]).unwrap());
                start = point;
            }
            got.extend(parser.finish());
            prop_assert_eq!(got, expected);
        }
    }
}
