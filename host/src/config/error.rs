//! Configuration errors, and the span index that gives them line numbers.
//!
//! The document is parsed twice: once by serde into the schema structs, and
//! once into toml's spanned tree, from which [`SpanIndex`] records where every
//! dotted key was written. Semantic checks then look their key up to report
//! its line, and serde errors (which carry a byte span but no usable key) are
//! mapped back to the innermost key containing that span.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};

/// One problem in a configuration file, located by file, dotted key and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or other origin) the configuration came from.
    pub origin: String,
    /// Dotted path of the offending key, e.g. `pipeline.router`; empty when
    /// the document as a whole is at fault (a syntax error).
    pub key: String,
    /// 1-based line of the key, when known.
    pub line: Option<usize>,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where each dotted key of a document was written.
#[derive(Clone, Default)]
pub(crate) struct SpanIndex {
    /// Byte offset at which each line starts.
    line_starts: Vec<usize>,
    /// `(dotted path, key span, value span)`; array elements are `path[i]`.
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

// The index is bookkeeping, not configuration: keep `{:?}` of a config short.
impl fmt::Debug for SpanIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanIndex({} keys)", self.entries.len())
    }
}

impl SpanIndex {
    /// Indexes `text`, or returns toml's syntax error.
    pub(crate) fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let root = DeTable::parse(text)?;
        let mut index = SpanIndex {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            entries: Vec::new(),
        };
        index.walk_table("", root.get_ref());
        Ok(index)
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.entries.push((path.clone(), key.span(), value.span()));
            self.walk_value(&path, value.get_ref());
        }
    }

    fn walk_value(&mut self, path: &str, value: &DeValue<'_>) {
        match value {
            DeValue::Table(table) => self.walk_table(path, table),
            DeValue::Array(array) => {
                for (i, item) in array.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.entries
                        .push((item_path.clone(), item.span(), item.span()));
                    self.walk_value(&item_path, item.get_ref());
                }
            }
            _ => {}
        }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// The line of `key`, or of its nearest written ancestor (a missing
    /// field is reported at the table that lacks it).
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some((_, span, _)) = self.entries.iter().find(|(path, ..)| path == key) {
                return Some(self.line_at(span.start));
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// The innermost key whose key or value contains `span`.
    pub(crate) fn key_at(&self, span: &Range<usize>) -> Option<&str> {
        let contains = |outer: &Range<usize>| outer.start <= span.start && span.end <= outer.end;
        self.entries
            .iter()
            .flat_map(|(path, key, value)| [(path, key), (path, value)])
            .filter(|(_, range)| contains(range))
            .min_by_key(|(_, range)| range.end - range.start)
            .map(|(path, _)| path.as_str())
    }
}

/// Collects errors for one document, giving each the line of its key.
pub(crate) struct Errors<'a> {
    origin: &'a str,
    spans: &'a SpanIndex,
    /// Everything found so far, in document order of discovery.
    pub(crate) list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(origin: &'a str, spans: &'a SpanIndex) -> Self {
        Self {
            origin,
            spans,
            list: Vec::new(),
        }
    }

    /// Records an error at `key`.
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.list.push(ConfigError {
            origin: self.origin.to_string(),
            line: self.spans.line(&key),
            key,
            message: message.into(),
        });
    }
}

/// Turns a toml (syntax or serde) error into a [`ConfigError`]: the message
/// without toml's source excerpt, the key found from the span.
pub(crate) fn from_toml(
    origin: &str,
    spans: Option<&SpanIndex>,
    text: &str,
    e: &toml::de::Error,
) -> ConfigError {
    let span = e.span();
    let key = match (spans, &span) {
        (Some(spans), Some(span)) => spans.key_at(span).unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let line = span.map(|s| {
        let upto = s.start.min(text.len());
        text.as_bytes()[..upto]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    ConfigError {
        origin: origin.to_string(),
        key,
        line,
        message: e.message().trim().to_string(),
    }
}
