//! Telegram `sendMessage` text in HTML parse mode: escaped, tags balanced, at most 4096
//! characters after entity parsing (Telegram counts the visible text, in UTF-16 code units).

/// Telegram's limit for `sendMessage` text.
pub const MAX_MESSAGE_LENGTH: usize = 4096;

/// Escapes the three characters Telegram's HTML mode requires (`<`, `>`, `&`) and `"`.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A piece of a message: plain or bold text, unescaped.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Plain(String),
    Bold(String),
}

/// Renders `parts` as HTML, cutting the visible text to `max_len` UTF-16 code units. A cut
/// happens inside a part's text, before escaping, so no entity or tag is ever split, and ends
/// with `…`.
pub fn render(parts: &[Part], max_len: usize) -> String {
    let mut out = String::new();
    let mut budget = max_len;
    for part in parts {
        let (text, bold) = match part {
            Part::Plain(t) => (t.as_str(), false),
            Part::Bold(t) => (t.as_str(), true),
        };
        let len = utf16_len(text);
        let (piece, cut) = if len <= budget {
            (text.to_string(), false)
        } else {
            (take_utf16(text, budget.saturating_sub(1)) + "…", true)
        };
        budget = budget.saturating_sub(utf16_len(&piece));
        if bold {
            out.push_str("<b>");
            out.push_str(&escape_html(&piece));
            out.push_str("</b>");
        } else {
            out.push_str(&escape_html(&piece));
        }
        if cut || budget == 0 {
            break;
        }
    }
    out
}

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

/// The longest prefix of `text` of at most `units` UTF-16 code units.
fn take_utf16(text: &str, units: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        if used + c.len_utf16() > units {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out
}

/// Visible length of a rendered message (entities decoded, tags dropped): what Telegram counts.
pub fn visible_len(html: &str) -> usize {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let decoded = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&");
    utf16_len(&decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_angle_brackets_and_ampersands() {
        assert_eq!(escape_html("a < b && c > \"d\""), "a &lt; b &amp;&amp; c &gt; &quot;d&quot;");
    }

    #[test]
    fn renders_bold_and_plain_parts() {
        let html = render(&[Part::Bold("<x>".into()), Part::Plain(" & y".into())], 100);
        assert_eq!(html, "<b>&lt;x&gt;</b> &amp; y");
    }

    #[test]
    fn long_messages_are_cut_to_4096_visible_characters_without_splitting_entities() {
        let long = "<&>".repeat(3000);
        let html = render(&[Part::Bold("Title".into()), Part::Plain("\n".into()), Part::Plain(long)], MAX_MESSAGE_LENGTH);
        assert_eq!(visible_len(&html), MAX_MESSAGE_LENGTH);
        assert!(html.ends_with('…'));
        // Every '&' starts a complete entity.
        for (i, _) in html.match_indices('&') {
            let rest = &html[i..];
            assert!(rest.starts_with("&lt;") || rest.starts_with("&gt;") || rest.starts_with("&amp;") || rest.starts_with("&quot;"), "split entity at {i}");
        }
        assert_eq!(html.matches("<b>").count(), html.matches("</b>").count());
    }

    #[test]
    fn a_cut_inside_a_bold_part_keeps_tags_balanced() {
        let html = render(&[Part::Bold("x".repeat(5000))], MAX_MESSAGE_LENGTH);
        assert!(html.starts_with("<b>") && html.ends_with("</b>"));
        assert_eq!(visible_len(&html), MAX_MESSAGE_LENGTH);
    }

    #[test]
    fn astral_characters_count_as_two_units() {
        let html = render(&[Part::Plain("😀".repeat(3000))], MAX_MESSAGE_LENGTH);
        assert!(visible_len(&html) <= MAX_MESSAGE_LENGTH);
    }
}
