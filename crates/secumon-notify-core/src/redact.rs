//! Keeps secrets out of anything SecuMon stores or logs: receiver answers, error messages.

/// Shown in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of every secret replaced by `[redacted]` (longest first, so a
/// token inside a URL cannot survive the URL's replacement half-done).
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| s.len() >= 4).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// The first `max_chars` characters of `text` (never splitting a character), with `…` when cut.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((byte, _)) => format!("{}…", &text[..byte]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_secret_longest_first() {
        let secrets = vec!["abcd".to_string(), "https://h/abcd/efgh".to_string()];
        assert_eq!(redact("POST https://h/abcd/efgh failed; key abcd", &secrets), "POST [redacted] failed; key [redacted]");
    }

    #[test]
    fn short_strings_are_not_treated_as_secrets() {
        assert_eq!(redact("a b c", &["a".to_string()]), "a b c");
    }

    #[test]
    fn cut_respects_characters() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("hé", 2), "hé");
    }
}
