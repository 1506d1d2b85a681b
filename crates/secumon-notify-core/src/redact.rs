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

/// Other forms in which a receiver may echo `secret`: escaped as in a JSON string (also with
/// `\/`, as PHP's json_encode writes), and percent-encoded as in a URL. Only forms that
/// differ from `secret` are returned.
pub fn encodings(secret: &str) -> Vec<String> {
    let mut forms = Vec::new();
    if let Ok(json) = serde_json::to_string(secret) {
        let json = json[1..json.len() - 1].to_string();
        let slashes = json.replace('/', "\\/");
        forms.push(json);
        forms.push(slashes);
    }
    let mut percent = String::with_capacity(secret.len());
    for byte in secret.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            percent.push(byte as char);
        } else {
            percent.push_str(&format!("%{byte:02X}"));
        }
    }
    forms.push(percent);
    forms.retain(|form| form != secret);
    forms.dedup();
    forms
}

/// Standard or URL-safe base64, padded or not, as UTF-8 text; None if it is not that.
pub fn base64_decode(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
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
    fn encodings_cover_json_and_urls() {
        assert_eq!(encodings("a/b\"c d"), vec!["a/b\\\"c d", "a\\/b\\\"c d", "a%2Fb%22c%20d"]);
        assert!(encodings("plain-token_123").is_empty());
    }

    #[test]
    fn base64_decodes_padded_and_url_safe_text() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some("user:pass"));
        assert_eq!(base64_decode("dXNlcjpwYXNzMQ==").as_deref(), Some("user:pass1"));
        assert_eq!(base64_decode("not base64!"), None);
    }

    #[test]
    fn cut_respects_characters() {
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("hé", 2), "hé");
    }
}
