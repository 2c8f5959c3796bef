//! Plugins see messages as text; clients send more (content parts, a
//! `developer` role, fields the host does not read). When a plugin hands
//! messages back — a validator's rewrite, a recovery's refinement — each
//! keeps the wire detail of the message it stands for, so an image next to
//! redacted text still reaches the upstream.

use crate::domain::Message;

/// The `rewritten` messages, each keeping the wire detail of the `original`
/// message it stands for. Messages are paired from the front, then from
/// the back, while their roles agree: a rewrite that edits text, or adds or
/// drops messages at either end or in the middle, keeps the detail of every
/// message it left in place; a message paired with none is plain text. The
/// new text is written into the parts by `openai::render_parts`.
pub(super) fn carry_over(original: &[Message], mut rewritten: Vec<Message>) -> Vec<Message> {
    let (n, m) = (original.len(), rewritten.len());
    let mut paired: Vec<Option<usize>> = vec![None; m];
    let mut front = 0;
    while front < n.min(m) && original[front].role == rewritten[front].role {
        paired[front] = Some(front);
        front += 1;
    }
    let mut back = 0;
    while back < (n - front).min(m - front)
        && original[n - 1 - back].role == rewritten[m - 1 - back].role
    {
        paired[m - 1 - back] = Some(n - 1 - back);
        back += 1;
    }
    for (message, pair) in rewritten.iter_mut().zip(paired) {
        if let Some(i) = pair
            && message.wire.is_empty()
        {
            message.wire = original[i].wire.clone();
        }
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use serde_json::json;

    fn rich(role: Role, text: &str) -> Message {
        let mut m = Message::new(role, text);
        m.wire.parts = vec![
            json!({"type": "text", "text": text}),
            json!({"type": "image_url", "image_url": {"url": "u"}}),
        ];
        m
    }

    #[test]
    fn rewrites_keep_the_detail_of_the_messages_they_stand_for() {
        let original = vec![
            Message::system("sys"),
            rich(Role::User, "one"),
            rich(Role::User, "two"),
        ];
        let edited = carry_over(
            &original,
            vec![
                Message::system("sys"),
                Message::user("ONE"),
                Message::user("TWO"),
            ],
        );
        assert_eq!(edited[1].wire, original[1].wire);
        assert_eq!(edited[2].wire, original[2].wire);

        // A message added in front and one dropped in the middle.
        let reshaped = carry_over(
            &original,
            vec![
                Message::system("guard"),
                Message::system("sys"),
                Message::user("TWO"),
            ],
        );
        assert!(reshaped[0].wire.is_empty() && reshaped[1].wire.is_empty());
        assert_eq!(reshaped[2].wire, original[2].wire);
    }
}
