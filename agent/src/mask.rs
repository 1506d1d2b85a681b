//! Hides passwords in libpq connection strings before anything is logged.
//! Handles both `key=value` strings (quoted or not) and `postgresql://` URIs
//! (`user:secret@` and `?password=`).
//!
//! Why a scanner of its own rather than libpq's `PQconninfoParse`: that returns each option's
//! decoded value, not where it stands in the string, while the masked string must keep the rest
//! as the user wrote it (and a malformed string, which `PQconninfoParse` refuses, is exactly
//! the one an error message may echo).

const MASK: &str = "***";

fn is_uri(s: &str) -> bool {
    let t = s.trim_start();
    t.starts_with("postgresql://") || t.starts_with("postgres://")
}

/// The connection string with every password replaced by `***`.
pub fn mask_conninfo(conninfo: &str) -> String {
    if is_uri(conninfo) {
        mask_uri(conninfo).0
    } else {
        mask_keyword_value(conninfo).0
    }
}

/// Replaces any password found in `conninfo` inside `message` (libpq may echo parts of a
/// malformed connection string in its error text).
pub fn scrub(message: &str, conninfo: &str) -> String {
    let secrets = if is_uri(conninfo) {
        mask_uri(conninfo).1
    } else {
        mask_keyword_value(conninfo).1
    };
    let mut out = message.to_string();
    for secret in secrets {
        // Very short secrets would mangle ordinary words; they are also not worth hiding.
        if secret.len() >= 4 {
            out = out.replace(&secret, MASK);
        }
    }
    out
}

fn ws(b: u8) -> bool {
    b.is_ascii_whitespace()
}

/// Returns the masked string and the raw and unescaped password values seen.
fn mask_keyword_value(s: &str) -> (String, Vec<String>) {
    let b = s.as_bytes();
    let len = b.len();
    let mut out = String::with_capacity(len);
    let mut secrets = Vec::new();
    let mut i = 0;
    while i < len {
        while i < len && ws(b[i]) {
            out.push(b[i] as char);
            i += 1;
        }
        if i >= len {
            break;
        }
        let key_start = i;
        while i < len && b[i] != b'=' && !ws(b[i]) {
            i += 1;
        }
        let key = s.get(key_start..i).unwrap_or("");
        out.push_str(key);
        while i < len && ws(b[i]) {
            out.push(b[i] as char);
            i += 1;
        }
        if i < len && b[i] == b'=' {
            out.push('=');
            i += 1;
        } else {
            continue; // malformed; libpq will say so
        }
        while i < len && ws(b[i]) {
            out.push(b[i] as char);
            i += 1;
        }
        let value_start = i;
        if i < len && b[i] == b'\'' {
            i += 1;
            while i < len {
                match b[i] {
                    b'\\' => i += 2,
                    b'\'' => {
                        i += 1;
                        break;
                    }
                    _ => i += 1,
                }
            }
        } else {
            while i < len && !ws(b[i]) {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        i = i.min(len);
        let raw = s.get(value_start..i).unwrap_or("");
        if key == "password" {
            out.push_str(MASK);
            secrets.push(raw.to_string());
            let unquoted = raw
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .unwrap_or(raw);
            secrets.push(unquoted.replace("\\'", "'").replace("\\\\", "\\"));
        } else {
            out.push_str(raw);
        }
    }
    (out, secrets)
}

fn mask_uri(s: &str) -> (String, Vec<String>) {
    let mut secrets = Vec::new();
    let Some(scheme_end) = s.find("://").map(|p| p + 3) else {
        return (s.to_string(), secrets);
    };
    let (head, rest) = s.split_at(scheme_end);
    let mut out = head.to_string();
    // libpq: the user part ends at the first '@' unless a '/' comes first.
    let user_end = rest
        .find(['@', '/', '?'])
        .filter(|&p| rest.as_bytes()[p] == b'@');
    let after_user = match user_end {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                    secrets.push(password.to_string());
                    secrets.push(percent_decode(password));
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_user.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let mut first = true;
            for pair in query.split('&') {
                if !first {
                    out.push('&');
                }
                first = false;
                match pair.split_once('=') {
                    Some(("password", v)) => {
                        out.push_str("password=");
                        out.push_str(MASK);
                        secrets.push(v.to_string());
                        secrets.push(percent_decode(v));
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(after_user),
    }
    (out, secrets)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keyword_value_passwords() {
        assert_eq!(
            mask_conninfo("host=db.example.com password=s3cret dbname=secumon"),
            "host=db.example.com password=*** dbname=secumon"
        );
        assert_eq!(
            mask_conninfo("host=h password = 'a \\'quoted\\' secret' user=agent"),
            "host=h password = *** user=agent"
        );
        assert_eq!(
            mask_conninfo("password='a b c' sslmode=verify-full"),
            "password=*** sslmode=verify-full"
        );
        assert_eq!(
            mask_conninfo("host=/run/postgresql"),
            "host=/run/postgresql"
        );
        assert_eq!(mask_conninfo(""), "");
    }

    #[test]
    fn masks_uri_passwords() {
        assert_eq!(
            mask_conninfo("postgresql://agent:p%40ss@db:5432/secumon?sslmode=require"),
            "postgresql://agent:***@db:5432/secumon?sslmode=require"
        );
        assert_eq!(
            mask_conninfo("postgres://db/secumon?user=a&password=hunter22&sslmode=verify-full"),
            "postgres://db/secumon?user=a&password=***&sslmode=verify-full"
        );
        assert_eq!(
            mask_conninfo("postgresql://agent@db/secumon"),
            "postgresql://agent@db/secumon"
        );
        assert_eq!(
            mask_conninfo("postgresql:///secumon"),
            "postgresql:///secumon"
        );
    }

    #[test]
    fn scrub_removes_echoed_secrets() {
        let conninfo = "host=h password=topsecret";
        assert_eq!(
            scrub("bad option near \"topsecret\"", conninfo),
            "bad option near \"***\""
        );
        let uri = "postgresql://u:p%40ssword@h/db";
        assert_eq!(scrub("x p@ssword y p%40ssword", uri), "x *** y ***");
    }
}
