//! What a batch is made of: `multipart/form-data` uploads (parsed here: one
//! body bounded by `batches.max_file_bytes`, read whole, so a parser of its
//! own is simpler than a streaming one; parts are slices of that body, not
//! copies) and the JSONL input file, validated line by line.

use bytes::Bytes;
use serde_json::Value;

/// The endpoints a batch may run.
pub const ENDPOINTS: [&str; 2] = ["/v1/chat/completions", "/v1/embeddings"];

/// One part of a multipart body.
#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    /// Its form field name.
    pub name: String,
    /// The file name, for a file part.
    pub filename: Option<String>,
    /// Its content: a slice of the body, which it shares.
    pub data: Bytes,
}

/// Why a multipart body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    /// The content type is not `multipart/form-data` with a boundary.
    #[error("the body must be multipart/form-data with a boundary, not `{0}`")]
    NotMultipart(String),
    /// The body does not follow the multipart framing.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of parameter `name` in a header's `; name=value` list.
fn param(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts of `whole`, sent with `content_type`.
pub fn multipart(content_type: &str, whole: &Bytes) -> Result<Vec<Part>, MultipartError> {
    let body: &[u8] = whole;
    let not = || MultipartError::NotMultipart(content_type.to_string());
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(not());
    }
    let boundary = param(content_type, "boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(not)?;
    let delimiter = [b"--", boundary.as_bytes()].concat();
    let next = [b"\r\n", &delimiter[..]].concat();
    let start = find(body, &delimiter).ok_or(MultipartError::Malformed("no boundary"))?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(MultipartError::Malformed("a boundary must end its line"))?;
        let head_end =
            find(rest, b"\r\n\r\n").ok_or(MultipartError::Malformed("a part has no headers"))?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_string();
        rest = &rest[head_end + 4..];
        let end = find(rest, &next).ok_or(MultipartError::Malformed("a part is not closed"))?;
        let from = body.len() - rest.len();
        let data = whole.slice(from..from + end);
        rest = &rest[end + next.len()..];
        let disposition = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| value.trim().to_string())
            })
            .ok_or(MultipartError::Malformed(
                "a part has no Content-Disposition",
            ))?;
        let name =
            param(&disposition, "name").ok_or(MultipartError::Malformed("a part has no name"))?;
        parts.push(Part {
            name,
            filename: param(&disposition, "filename"),
            data,
        });
    }
}

/// One request of a batch input file.
#[derive(Clone, Debug)]
pub struct BatchLine {
    /// The client's id of the request, unique in the file.
    pub custom_id: String,
    /// The endpoint it is sent to.
    pub url: String,
    /// The request body.
    pub body: Value,
}

/// Why an input file was refused: the line (from 1) and what is wrong.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The requests of a JSONL batch input file, each line checked: a JSON
/// object with a unique `custom_id`, `method` `POST`, a `url` the gateway
/// batches and a `body` object. Blank lines are skipped.
pub fn jsonl(data: &[u8]) -> Result<Vec<BatchLine>, LineError> {
    let mut lines = Vec::new();
    each_line(data, |line| lines.push(line))?;
    Ok(lines)
}

/// Checks a JSONL batch input file as [`jsonl`] does, keeping none of its
/// requests (an upload is checked without holding its parsed lines);
/// how many requests it holds.
pub fn check(data: &[u8]) -> Result<usize, LineError> {
    let mut n = 0;
    each_line(data, |_| n += 1)?;
    Ok(n)
}

fn each_line(data: &[u8], mut take: impl FnMut(BatchLine)) -> Result<(), LineError> {
    let text = std::str::from_utf8(data).map_err(|e| LineError {
        line: data[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1,
        reason: "not UTF-8".into(),
    })?;
    let mut any = false;
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |reason: String| LineError { line, reason };
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| fail(format!("invalid JSON: {e}")))?;
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        let custom_id = field("custom_id")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| fail("`custom_id` must be a non-empty string".into()))?;
        if !seen.insert(custom_id.to_string()) {
            return Err(fail(format!("`custom_id` `{custom_id}` is used twice")));
        }
        if field("method") != Some("POST") {
            return Err(fail("`method` must be `POST`".into()));
        }
        let url = field("url").unwrap_or_default();
        if !ENDPOINTS.contains(&url) {
            return Err(fail(format!(
                "`url` must be one of {}, not `{url}`",
                ENDPOINTS.join(", ")
            )));
        }
        let body = value
            .get("body")
            .filter(|b| b.is_object())
            .ok_or_else(|| fail("`body` must be an object".into()))?;
        if body.get("model").and_then(Value::as_str).is_none() {
            return Err(fail("`body.model` must be a string".into()));
        }
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(fail("`body.stream` cannot be true in a batch".into()));
        }
        any = true;
        take(BatchLine {
            custom_id: custom_id.to_string(),
            url: url.to_string(),
            body: body.clone(),
        });
    }
    if !any {
        return Err(LineError {
            line: 1,
            reason: "the file holds no requests".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_body_gives_its_parts() {
        let body = Bytes::from_static(b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\ncontent-disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\r\n{\"b\":2}\n\r\n--XyZ--\r\n");
        let parts = multipart("multipart/form-data; boundary=\"XyZ\"", &body).unwrap();
        assert_eq!(
            parts,
            vec![
                Part {
                    name: "purpose".into(),
                    filename: None,
                    data: Bytes::from_static(b"batch")
                },
                Part {
                    name: "file".into(),
                    filename: Some("in.jsonl".into()),
                    data: Bytes::from_static(b"{\"a\":1}\r\n{\"b\":2}\n")
                },
            ]
        );
    }

    #[test]
    fn a_malformed_multipart_body_is_refused() {
        let ct = "multipart/form-data; boundary=B";
        assert!(matches!(
            multipart("application/json", &Bytes::new()),
            Err(MultipartError::NotMultipart(_))
        ));
        assert!(matches!(
            multipart("multipart/form-data", &Bytes::new()),
            Err(MultipartError::NotMultipart(_))
        ));
        for body in [
            &b"no boundary at all"[..],
            b"--B\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nnever closed",
            b"--B\r\nX: y\r\n\r\ndata\r\n--B--",
            b"--Bjunk",
        ] {
            assert!(
                matches!(
                    multipart(ct, &Bytes::copy_from_slice(body)),
                    Err(MultipartError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_input_file_is_checked_line_by_line() {
        let good = r#"{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}"#;
        assert_eq!(jsonl(format!("{good}\n\n").as_bytes()).unwrap().len(), 1);
        assert_eq!(check(format!("{good}\n\n").as_bytes()), Ok(1));
        for (text, line, says) in [
            (format!("{good}\nnot json"), 2, "invalid JSON"),
            (format!("{good}\n{good}"), 2, "used twice"),
            (good.replace("POST", "GET"), 1, "`method`"),
            (
                good.replace("/v1/chat/completions", "/v1/responses"),
                1,
                "`url`",
            ),
            (good.replace(r#"{"model": "m"}"#, "[]"), 1, "`body`"),
            (
                good.replace(r#""model": "m""#, r#""stream": true, "model": "m""#),
                1,
                "stream",
            ),
            (good.replace(r#""custom_id": "a", "#, ""), 1, "custom_id"),
            (String::new(), 1, "no requests"),
        ] {
            let e = jsonl(text.as_bytes()).unwrap_err();
            assert_eq!(check(text.as_bytes()), Err(e.clone()));
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.reason.contains(says), "{text}: {e}");
        }
    }
}
