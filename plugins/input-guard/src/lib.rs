//! `input-guard`: a validator that screens client input before any agent or
//! model sees it.
//!
//! Per message it normalises Unicode (NFKC, so look-alike characters such as
//! full-width letters cannot dodge the pattern list), looks for blocked
//! patterns, strips HTML tags and decodes basic entities; then it bounds the
//! total length. In `reject` mode a finding refuses the request; in `rewrite`
//! mode the offending text is removed or truncated instead.
#![warn(missing_docs)]

use agentrouter_sdk::validator::{Message, Stage, Validator, Verdict, config};
use unicode_normalization::UnicodeNormalization;

/// Patterns blocked when the operator sets no `blocked_patterns`.
pub const DEFAULT_BLOCKED_PATTERNS: &str = "<script,drop table,../..,union select";

/// Length limit used when the operator sets no `max_chars`.
pub const DEFAULT_MAX_CHARS: usize = 32_000;

/// What to do about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse the request.
    Reject,
    /// Remove or truncate the offending text and let the request pass.
    Rewrite,
}

/// A blocked pattern as configured and in the lowercase form it is matched in.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As the operator wrote it, for messages.
    pub display: String,
    /// Lowercased, for case-insensitive matching.
    pub lower: String,
}

/// The guard's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limit on the total characters of all message contents.
    pub max_chars: usize,
    /// Substrings that may not appear (case-insensitive).
    pub blocked_patterns: Vec<Pattern>,
    /// Remove HTML tags and decode basic entities.
    pub strip_html: bool,
    /// Apply Unicode NFKC normalisation first.
    pub normalize: bool,
    /// Reject or rewrite.
    pub mode: Mode,
}

impl Settings {
    /// Settings from a comma-separated pattern list and the other values.
    pub fn new(
        max_chars: usize,
        patterns: &str,
        strip_html: bool,
        normalize: bool,
        mode: Mode,
    ) -> Self {
        let blocked_patterns = patterns
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| Pattern {
                display: p.to_string(),
                lower: p.to_lowercase(),
            })
            .collect();
        Self {
            max_chars,
            blocked_patterns,
            strip_html,
            normalize,
            mode,
        }
    }

    /// Reads the settings from the host.
    ///
    /// An explicitly empty `blocked_patterns` disables pattern checks; an
    /// unknown `mode` falls back to `reject`, the safe choice.
    pub fn load() -> Self {
        let patterns =
            config::get("blocked_patterns").unwrap_or_else(|| DEFAULT_BLOCKED_PATTERNS.to_string());
        let mode = if config::get_or("mode", "reject")
            .trim()
            .eq_ignore_ascii_case("rewrite")
        {
            Mode::Rewrite
        } else {
            Mode::Reject
        };
        Self::new(
            config::parse_or("max_chars", DEFAULT_MAX_CHARS),
            &patterns,
            config::flag("strip_html", true),
            config::flag("normalize", true),
            mode,
        )
    }
}

/// Byte length of the prefix of `text` that matches `pattern_lower`
/// case-insensitively, if any.
///
/// Matching lowercases `text` character by character, so the length returned
/// is in `text`'s own bytes even where lowercasing changes the byte count.
fn match_len_at(text: &str, pattern_lower: &str) -> Option<usize> {
    let mut pattern = pattern_lower.chars().peekable();
    pattern.peek()?;
    for (index, c) in text.char_indices() {
        for lower in c.to_lowercase() {
            if pattern.next() != Some(lower) {
                return None;
            }
        }
        if pattern.peek().is_none() {
            return Some(index + c.len_utf8());
        }
    }
    None
}

/// `text` without any case-insensitive occurrence of `pattern_lower`.
pub fn remove_ci(text: &str, pattern_lower: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match match_len_at(rest, pattern_lower) {
            Some(len) => rest = &rest[len..],
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Applies the pattern list to one message's text: the rejection reason in
/// `reject` mode, or the text with every pattern removed in `rewrite` mode.
fn apply_patterns(text: String, index: usize, settings: &Settings) -> Result<String, String> {
    match settings.mode {
        Mode::Reject => {
            let lower = text.to_lowercase();
            match settings
                .blocked_patterns
                .iter()
                .find(|p| lower.contains(&p.lower))
            {
                Some(p) => Err(format!(
                    "input-guard: blocked pattern `{}` in message {index}",
                    p.display
                )),
                None => Ok(text),
            }
        }
        Mode::Rewrite => {
            // Removing one occurrence can join its neighbours into a new one
            // ("drop drop tabletable"), so repeat until nothing changes.
            // Each pass only shrinks the text, so this terminates.
            let mut text = text;
            loop {
                let before = text.len();
                for p in &settings.blocked_patterns {
                    text = remove_ci(&text, &p.lower);
                }
                if text.len() == before {
                    return Ok(text);
                }
            }
        }
    }
}

/// `text` without HTML tags: `<` followed by a letter, `/` or `!`, up to the
/// next `>`. Any other `<` (as in `a < b`) is kept.
pub fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let tag_like = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        if tag_like && let Some(close) = after.find('>') {
            rest = &after[close + 1..];
            continue;
        }
        out.push('<');
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Entities decoded after tag stripping.
const ENTITIES: [(&str, char); 5] = [
    ("&lt;", '<'),
    ("&gt;", '>'),
    ("&amp;", '&'),
    ("&quot;", '"'),
    ("&#39;", '\''),
];

/// `text` with the basic HTML entities decoded, in one left-to-right pass so
/// that `&amp;lt;` becomes `&lt;`, not `<`.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        match ENTITIES.iter().find(|(entity, _)| tail.starts_with(entity)) {
            Some((entity, c)) => {
                out.push(*c);
                rest = &tail[entity.len()..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Processes one message's content (normalise, patterns, HTML).
fn clean(content: &str, index: usize, settings: &Settings) -> Result<String, String> {
    let text = if settings.normalize {
        content.nfkc().collect()
    } else {
        content.to_string()
    };
    let mut text = apply_patterns(text, index, settings)?;
    if settings.strip_html {
        text = decode_entities(&strip_tags(&text));
        // Stripping can reassemble a pattern ("drop <b></b>table") or decode
        // one ("&lt;script"), so check the result as well.
        text = apply_patterns(text, index, settings)?;
    }
    Ok(text)
}

/// Truncates the last messages so the total content fits `max_chars`.
fn truncate_to_fit(messages: &mut [Message], total: usize, max_chars: usize) {
    let mut excess = total.saturating_sub(max_chars);
    for message in messages.iter_mut().rev() {
        if excess == 0 {
            break;
        }
        let chars = message.content.chars().count();
        let keep = chars.saturating_sub(excess);
        if let Some((byte, _)) = message.content.char_indices().nth(keep) {
            message.content.truncate(byte);
        }
        excess -= chars - keep;
    }
}

/// The guard's decision on input messages.
pub fn check(mut messages: Vec<Message>, settings: &Settings) -> Verdict {
    let mut changed = false;
    for (index, message) in messages.iter_mut().enumerate() {
        match clean(&message.content, index, settings) {
            Ok(text) => {
                if text != message.content {
                    message.content = text;
                    changed = true;
                }
            }
            Err(reason) => return Verdict::Reject(reason),
        }
    }

    let total: usize = messages.iter().map(|m| m.content.chars().count()).sum();
    if total > settings.max_chars {
        match settings.mode {
            Mode::Reject => {
                return Verdict::Reject(format!(
                    "input-guard: input is {total} characters, limit is {}",
                    settings.max_chars
                ));
            }
            Mode::Rewrite => {
                truncate_to_fit(&mut messages, total, settings.max_chars);
                changed = true;
            }
        }
    }

    if changed {
        Verdict::Rewrite(messages)
    } else {
        Verdict::Allow
    }
}

/// The exported validator.
pub struct InputGuard;

impl Validator for InputGuard {
    fn validate(stage: Stage, messages: Vec<Message>) -> Verdict {
        match stage {
            Stage::Input => check(messages, &Settings::load()),
            // Output belongs to other validators (e.g. pii-redact).
            Stage::Output => Verdict::Allow,
        }
    }
}

agentrouter_sdk::export_validator!(InputGuard);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode) -> Settings {
        Settings::new(
            DEFAULT_MAX_CHARS,
            DEFAULT_BLOCKED_PATTERNS,
            true,
            true,
            mode,
        )
    }

    fn users(texts: &[&str]) -> Vec<Message> {
        texts.iter().map(|t| Message::user(*t)).collect()
    }

    fn rewritten(verdict: Verdict) -> Vec<String> {
        match verdict {
            Verdict::Rewrite(messages) => messages.into_iter().map(|m| m.content).collect(),
            other => panic!("expected rewrite, got {other:?}"),
        }
    }

    fn rejected(verdict: Verdict) -> String {
        match verdict {
            Verdict::Reject(reason) => reason,
            other => panic!("expected reject, got {other:?}"),
        }
    }

    #[test]
    fn clean_input_is_allowed() {
        let verdict = check(
            users(&["What is 2 < 3?", "plain text"]),
            &settings(Mode::Reject),
        );
        assert!(matches!(verdict, Verdict::Allow), "{verdict:?}");
    }

    #[test]
    fn blocked_pattern_is_rejected_with_its_index() {
        let verdict = check(
            users(&["hi", "please DROP TABLE users"]),
            &settings(Mode::Reject),
        );
        assert_eq!(
            rejected(verdict),
            "input-guard: blocked pattern `drop table` in message 1"
        );
    }

    #[test]
    fn full_width_text_is_normalised_before_matching() {
        let verdict = check(
            users(&["ＤＲＯＰ ＴＡＢＬＥ users"]),
            &settings(Mode::Reject),
        );
        assert_eq!(
            rejected(verdict),
            "input-guard: blocked pattern `drop table` in message 0"
        );

        let mut no_nfkc = settings(Mode::Reject);
        no_nfkc.normalize = false;
        let verdict = check(users(&["ＤＲＯＰ ＴＡＢＬＥ users"]), &no_nfkc);
        assert!(matches!(verdict, Verdict::Allow), "{verdict:?}");
    }

    #[test]
    fn rewrite_mode_removes_every_occurrence() {
        let verdict = check(
            users(&["a Union Select b union select c"]),
            &settings(Mode::Rewrite),
        );
        assert_eq!(rewritten(verdict), ["a  b  c"]);
        let verdict = check(
            users(&["x drop drop tabletable y"]),
            &settings(Mode::Rewrite),
        );
        assert_eq!(rewritten(verdict), ["x  y"]);
    }

    #[test]
    fn case_insensitive_removal_handles_length_changing_case() {
        // 'İ' lowercases to two chars; matching must still slice correctly.
        assert_eq!(remove_ci("İx DROP TABLE İ", "drop table"), "İx  İ");
        assert_eq!(remove_ci("abc", "i̇"), "abc");
    }

    #[test]
    fn html_is_stripped_and_entities_decoded() {
        let verdict = check(
            users(&[
                "<p>Hello <b>world</b></p><!-- c --> a < b &amp; c &lt;d&gt; &quot;q&quot; &#39;s&#39;",
            ]),
            &settings(Mode::Reject),
        );
        assert_eq!(rewritten(verdict), ["Hello world a < b & c <d> \"q\" 's'"]);
        assert_eq!(strip_tags("a <b"), "a <b");
        assert_eq!(strip_tags("1 <2 and 3> 0"), "1 <2 and 3> 0");
        assert_eq!(decode_entities("&amp;lt;"), "&lt;");
    }

    #[test]
    fn patterns_reassembled_by_stripping_are_caught() {
        let verdict = check(users(&["drop <i></i>table"]), &settings(Mode::Reject));
        assert_eq!(
            rejected(verdict),
            "input-guard: blocked pattern `drop table` in message 0"
        );
        let verdict = check(users(&["&lt;script&gt;x"]), &settings(Mode::Reject));
        assert_eq!(
            rejected(verdict),
            "input-guard: blocked pattern `<script` in message 0"
        );
    }

    #[test]
    fn script_tags_are_blocked_in_reject_mode() {
        let verdict = check(
            users(&["<SCRIPT>alert(1)</script>"]),
            &settings(Mode::Reject),
        );
        assert_eq!(
            rejected(verdict),
            "input-guard: blocked pattern `<script` in message 0"
        );
    }

    #[test]
    fn over_long_input_is_rejected() {
        let mut s = settings(Mode::Reject);
        s.max_chars = 10;
        let verdict = check(users(&["hello", "wörld!"]), &s);
        assert_eq!(
            rejected(verdict),
            "input-guard: input is 11 characters, limit is 10"
        );
    }

    #[test]
    fn over_long_input_is_truncated_from_the_end_in_rewrite_mode() {
        let mut s = settings(Mode::Rewrite);
        s.max_chars = 7;
        let verdict = check(users(&["hello", "wörld", "abc"]), &s);
        assert_eq!(rewritten(verdict), ["hello", "wö", ""]);
    }

    #[test]
    fn normalisation_alone_counts_as_a_rewrite() {
        let verdict = check(users(&["ﬁne"]), &settings(Mode::Reject));
        assert_eq!(rewritten(verdict), ["fine"]);
    }

    #[test]
    fn empty_pattern_list_disables_matching() {
        let s = Settings::new(100, " , ", false, false, Mode::Reject);
        assert!(s.blocked_patterns.is_empty());
        assert!(matches!(check(users(&["drop table"]), &s), Verdict::Allow));
    }
}
