//! `pii-redact`: a validator that masks personal data in messages.
//!
//! It replaces payment card numbers (Luhn-checked), e-mail addresses and
//! phone numbers with fixed markers. The scanners are hand-written: a regex
//! engine would multiply the component's size, and the heuristics that keep
//! years, dates, versions and IP addresses intact are easier to state as code.
#![warn(missing_docs)]

use agentrouter_sdk::validator::{Message, Stage, Validator, Verdict, config};

/// Replaces a card number.
pub const CARD: &str = "[REDACTED_CARD]";
/// Replaces an e-mail address.
pub const EMAIL: &str = "[REDACTED_EMAIL]";
/// Replaces a phone number.
pub const PHONE: &str = "[REDACTED_PHONE]";

/// Which stages the plugin acts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stages {
    /// Redact client input.
    pub input: bool,
    /// Redact answers.
    pub output: bool,
}

/// Parses the `stages` setting; unknown names are ignored.
pub fn parse_stages(setting: &str) -> Stages {
    let mut stages = Stages {
        input: false,
        output: false,
    };
    for item in setting.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        match item.as_str() {
            "input" => stages.input = true,
            "output" => stages.output = true,
            _ => {}
        }
    }
    stages
}

/// The character before byte offset `at`, if any.
fn char_before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

/// The character at byte offset `at`, if any.
fn char_at(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

/// True for characters that make up words and identifiers.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// True when the text before `at` continues a word, directly (`ab12`) or
/// through a joiner (`ab-12`, `v.12`, `a/12`), so digits at `at` belong to a
/// longer token.
fn joined_before(text: &str, at: usize) -> bool {
    match char_before(text, at) {
        Some(c) if is_word(c) => true,
        Some(c @ ('-' | '.' | '/')) => char_before(text, at - c.len_utf8()).is_some_and(is_word),
        _ => false,
    }
}

/// True when the text from `at` continues a word, directly or through `-` or
/// `/` (a trailing `.` usually ends a sentence, so it does not count).
fn joined_after(text: &str, at: usize) -> bool {
    match char_at(text, at) {
        Some(c) if is_word(c) => true,
        Some(c @ ('-' | '/')) => char_at(text, at + c.len_utf8()).is_some_and(is_word),
        _ => false,
    }
}

/// True when `digits` (values 0–9) pass the Luhn checksum.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &d)| {
            let d = u32::from(d);
            if position % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Replaces card numbers: 13–19 digits, optionally separated by single
/// spaces or dashes, standing alone and passing the Luhn check.
pub fn redact_cards(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // A leading `+` marks an international phone number, whose digits
        // pass the Luhn check one time in ten.
        if !bytes[i].is_ascii_digit() || joined_before(text, i) || char_before(text, i) == Some('+')
        {
            i += 1;
            continue;
        }
        // The maximal run of digits joined by single separators.
        let mut digits = Vec::new();
        let mut j = i;
        let mut end = i;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits.push(bytes[j] - b'0');
                j += 1;
                end = j;
            } else if matches!(bytes[j], b' ' | b'-')
                && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
            {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn_valid(&digits) && !joined_after(text, end) {
            out.push_str(&text[copied..i]);
            out.push_str(CARD);
            copied = end;
        }
        // Skip the whole run: a suffix of a rejected run is not a card either.
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Characters of an e-mail address's local part.
fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

/// Characters of an e-mail address's domain.
fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-'
}

/// True for a domain of at least two non-empty labels with an alphabetic
/// top-level label of two or more letters.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let tld = labels.last().copied().unwrap_or("");
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Replaces e-mail addresses (`local@domain.tld`).
pub fn redact_emails(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > copied && is_local(bytes[start - 1]) {
            start -= 1;
        }
        while start < i && bytes[start] == b'.' {
            start += 1;
        }
        let mut end = i + 1;
        while end < bytes.len() && is_domain(bytes[end]) {
            end += 1;
        }
        // A sentence may end right after the address.
        while end > i + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start < i && valid_domain(&text[i + 1..end]) {
            out.push_str(&text[copied..start]);
            out.push_str(EMAIL);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// A digit sequence that might be a phone number.
struct PhoneSpan {
    /// Byte offset just past the span.
    end: usize,
    /// Byte ranges of the digit groups.
    groups: Vec<(usize, usize)>,
    /// The separator used between plain groups, if any.
    separator: Option<u8>,
    /// True when the span starts with `+`.
    plus: bool,
    /// True when the span holds a parenthesised group.
    parens: bool,
}

/// Reads a phone-like span at `start`: an optional `+`, then digit groups
/// (at most one in parentheses) joined by one space, dash or dot.
///
/// Plain separators must all be the same character; a change ends the span,
/// which keeps `2024-01-15 10:30` from reading as one long number. Separators
/// next to parentheses or right after a `+` country code are exempt, as in
/// `+1 (415) 555-0100`.
fn scan_phone(bytes: &[u8], start: usize) -> Option<PhoneSpan> {
    let mut span = PhoneSpan {
        end: start,
        groups: Vec::new(),
        separator: None,
        plus: false,
        parens: false,
    };
    let mut i = start;
    if bytes[i] == b'+' {
        span.plus = true;
        i += 1;
    }
    loop {
        let mut j = i;
        let open = bytes.get(j) == Some(&b'(');
        if open {
            if span.parens {
                break;
            }
            j += 1;
        }
        let digits_start = j;
        while bytes.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == digits_start {
            break;
        }
        let digits_end = j;
        if open {
            if bytes.get(j) != Some(&b')') {
                break;
            }
            j += 1;
            span.parens = true;
        }
        span.groups.push((digits_start, digits_end));
        span.end = j;

        // A separator run: an optional plain separator, then an optional `(`.
        let mut k = j;
        let separator = match bytes.get(k) {
            Some(&s @ (b' ' | b'-' | b'.')) => {
                k += 1;
                Some(s)
            }
            _ => None,
        };
        let next_open = bytes.get(k) == Some(&b'(');
        let next_digit = if next_open {
            bytes.get(k + 1)
        } else {
            bytes.get(k)
        };
        if !next_digit.is_some_and(u8::is_ascii_digit) {
            break;
        }
        match separator {
            None if !open && !next_open => break,
            None => {}
            Some(s) => {
                let exempt = open || next_open || (span.plus && span.groups.len() == 1);
                if !exempt {
                    match span.separator {
                        None => span.separator = Some(s),
                        Some(previous) if previous != s => break,
                        Some(_) => {}
                    }
                }
            }
        }
        i = k;
    }
    if span.groups.is_empty() {
        None
    } else {
        Some(span)
    }
}

/// True when a span is a phone number rather than a year, date, version or
/// IP address.
fn is_phone(text: &str, span: &PhoneSpan) -> bool {
    let lengths: Vec<usize> = span.groups.iter().map(|(s, e)| e - s).collect();
    let digits: usize = lengths.iter().sum();
    if !(7..=15).contains(&digits) || joined_after(text, span.end) {
        return false;
    }
    let plain = !span.plus && !span.parens;
    if span.separator == Some(b'.') {
        // Versions (1.2.3, 10.0.19041.1) have short trailing groups; IPv4
        // addresses have four groups of at most three digits.
        if lengths.iter().skip(1).any(|&len| len < 2) {
            return false;
        }
        if plain && lengths.len() == 4 && lengths.iter().all(|&len| len <= 3) {
            return false;
        }
    }
    // Dates: 2024-01-15, 15.01.2024, 01/15/2024 is not a span at all.
    if plain && (lengths == [4, 2, 2] || lengths == [2, 2, 4]) {
        return false;
    }
    // A list of years: 1999 2000 2001.
    let years = span.groups.iter().all(|&(s, e)| {
        e - s == 4
            && text[s..e]
                .parse::<u32>()
                .is_ok_and(|y| (1900..=2099).contains(&y))
    });
    !(plain && years)
}

/// Replaces phone numbers: an optional `+`, 7–15 digits separated by spaces,
/// dashes, dots or parentheses, not part of a longer token.
pub fn redact_phones(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let next = bytes.get(i + 1);
        let can_start = match bytes[i] {
            b'0'..=b'9' => true,
            b'+' => next.is_some_and(|&b| b.is_ascii_digit() || b == b'('),
            b'(' => next.is_some_and(u8::is_ascii_digit),
            _ => false,
        };
        if !can_start || joined_before(text, i) {
            i += 1;
            continue;
        }
        match scan_phone(bytes, i) {
            Some(span) if is_phone(text, &span) => {
                out.push_str(&text[copied..i]);
                out.push_str(PHONE);
                copied = span.end;
                i = span.end;
            }
            // Skip past what was read so its tail is not rescanned as a
            // shorter number (the last groups of an IP address, say).
            Some(span) => i = span.end.max(i + 1),
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Redacts one text: e-mail addresses first (their local parts may hold
/// digits), then cards (longer than any phone number), then phones.
pub fn redact(text: &str) -> String {
    redact_phones(&redact_cards(&redact_emails(text)))
}

/// Redacts every message; `Rewrite` if anything changed, else `Allow`.
pub fn check(mut messages: Vec<Message>) -> Verdict {
    let mut changed = false;
    for message in &mut messages {
        let redacted = redact(&message.content);
        if redacted != message.content {
            message.content = redacted;
            changed = true;
        }
    }
    if changed {
        Verdict::Rewrite(messages)
    } else {
        Verdict::Allow
    }
}

/// The exported validator.
pub struct PiiRedact;

impl Validator for PiiRedact {
    fn validate(stage: Stage, messages: Vec<Message>) -> Verdict {
        let stages = parse_stages(&config::get_or("stages", "output"));
        let active = match stage {
            Stage::Input => stages.input,
            Stage::Output => stages.output,
        };
        if active {
            check(messages)
        } else {
            Verdict::Allow
        }
    }
}

agentrouter_sdk::export_validator!(PiiRedact);

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect()
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid(&digits("4111 1111 1111 1111")));
        assert!(!luhn_valid(&digits("4111 1111 1111 1112")));
        assert!(luhn_valid(&digits("5500-0000-0000-0004")));
        assert!(luhn_valid(&digits("378282246310005")));
    }

    #[test]
    fn cards() {
        assert_eq!(
            redact("card 4111 1111 1111 1111 exp"),
            "card [REDACTED_CARD] exp"
        );
        assert_eq!(redact("4111-1111-1111-1111."), "[REDACTED_CARD].");
        assert_eq!(redact("4111111111111111"), "[REDACTED_CARD]");
        assert_eq!(redact("amex 378282246310005"), "amex [REDACTED_CARD]");
        // Fails Luhn: not a card, and 16 digits are too many for a phone.
        assert_eq!(redact("4111 1111 1111 1112"), "4111 1111 1111 1112");
        assert_eq!(redact("id4111111111111111"), "id4111111111111111");
    }

    #[test]
    fn emails() {
        assert_eq!(
            redact("mail jane.doe+x@example.co.uk now"),
            "mail [REDACTED_EMAIL] now"
        );
        assert_eq!(
            redact("Write to bob@example.com."),
            "Write to [REDACTED_EMAIL]."
        );
        assert_eq!(
            redact("a@b, c@d.e, @x.com, user@host"),
            "a@b, c@d.e, @x.com, user@host"
        );
        assert_eq!(
            redact("x1@a.io,y2@b.io"),
            "[REDACTED_EMAIL],[REDACTED_EMAIL]"
        );
    }

    #[test]
    fn phones() {
        assert_eq!(redact("+1 (415) 555-0100"), "[REDACTED_PHONE]");
        assert_eq!(redact("call 415-555-0100 now"), "call [REDACTED_PHONE] now");
        assert_eq!(redact("(415) 555 0100."), "[REDACTED_PHONE].");
        assert_eq!(redact("(415)555-0100"), "[REDACTED_PHONE]");
        assert_eq!(redact("+44 20 7946 0958"), "[REDACTED_PHONE]");
        assert_eq!(redact("415.555.0100"), "[REDACTED_PHONE]");
        assert_eq!(redact("tel:+4915112345678"), "tel:[REDACTED_PHONE]");
    }

    #[test]
    fn not_phones() {
        for text in [
            "in 2024 version 1.2.3",
            "in 2024 1.2.3",
            "build 10.0.19041.1",
            "host 192.168.100.100",
            "on 2024-01-15 10:30",
            "years 1999 2000 2001",
            "order ABC-4155550100",
            "sku 4155550100x",
            "12345",
            "call 555-01",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn mixed() {
        assert_eq!(
            redact("Card 4111 1111 1111 1111, phone 415-555-0100, mail a@b.io on 2024-01-15."),
            "Card [REDACTED_CARD], phone [REDACTED_PHONE], mail [REDACTED_EMAIL] on 2024-01-15."
        );
        assert_eq!(
            redact("date 2024-01-15 call 415-555-0100"),
            "date 2024-01-15 call [REDACTED_PHONE]"
        );
        assert_eq!(
            redact("ünïcödé 415-555-0100 ü"),
            "ünïcödé [REDACTED_PHONE] ü"
        );
    }

    #[test]
    fn stages() {
        assert_eq!(
            parse_stages("output"),
            Stages {
                input: false,
                output: true
            }
        );
        assert_eq!(
            parse_stages(" Input , output,bogus"),
            Stages {
                input: true,
                output: true
            }
        );
        assert_eq!(
            parse_stages(""),
            Stages {
                input: false,
                output: false
            }
        );
    }

    #[test]
    fn verdicts() {
        assert!(matches!(
            check(vec![Message::user("nothing here")]),
            Verdict::Allow
        ));
        match check(vec![Message::assistant("reach me at 415-555-0100")]) {
            Verdict::Rewrite(m) => assert_eq!(m[0].content, "reach me at [REDACTED_PHONE]"),
            other => panic!("{other:?}"),
        }
    }
}
