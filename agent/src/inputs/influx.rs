//! Influx line protocol, as Telegraf-style scripts print it:
//!
//! ```text
//! queue,host=mx1,queue=mail depth=42i,age_seconds=1.5 1700000000000000000
//! ```
//!
//! Each numeric field becomes one custom series named `<measurement>_<field>`
//! (`custom.queue_depth{host="mx1",queue="mail"}`), with the tags as labels (tags win
//! over the input's labels, as sample labels do in [`super::prom`]). Floats, integers
//! (`42i`) and unsigned integers (`42u`) are numbers; string and boolean fields cannot be
//! a series and are skipped and counted, as is every field whose name is not a valid
//! series name, every non-finite value and every line that does not parse (each skipped
//! field or line counts one in `invalid_lines`). Timestamps are read and ignored.

use super::{merge_labels, numbered_lines, series_key, Parsed, Sample};
use std::collections::BTreeMap;

/// Parses `text`; `input_labels` are added to every sample.
pub fn parse(text: &[u8], input_labels: &BTreeMap<String, String>) -> Parsed {
    let mut out = Parsed::default();
    for (number, line) in numbered_lines(text) {
        let Ok(line) = line else {
            out.skip(number, || "not UTF-8".into());
            continue;
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(why) = parse_line(line, input_labels, number, &mut out) {
            out.skip(number, || why);
        }
    }
    out
}

fn parse_line(
    line: &str,
    input_labels: &BTreeMap<String, String>,
    number: usize,
    out: &mut Parsed,
) -> Result<(), String> {
    let sections = split_unescaped(line, ' ', true)?;
    let sections: Vec<&str> = sections.into_iter().filter(|s| !s.is_empty()).collect();
    let (series, fields) = match sections.as_slice() {
        [series, fields] => (*series, *fields),
        [series, fields, timestamp] => {
            if timestamp.parse::<i64>().is_err() {
                return Err(format!("invalid timestamp {timestamp:?}"));
            }
            (*series, *fields)
        }
        [_] => return Err("no fields".into()),
        _ => return Err("unexpected text after the timestamp".into()),
    };
    let mut parts = split_unescaped(series, ',', false)?.into_iter();
    let measurement = unescape(parts.next().unwrap_or_default());
    if measurement.is_empty() {
        return Err("no measurement".into());
    }
    let mut tags = Vec::new();
    for tag in parts {
        let kv = split_unescaped(tag, '=', false)?;
        let [k, v] = kv.as_slice() else {
            return Err(format!("{measurement}: invalid tag {tag:?}"));
        };
        tags.push((unescape(k), unescape(v)));
    }
    let labels = merge_labels(input_labels, &tags);
    for field in split_unescaped(fields, ',', true)? {
        let Some((k, v)) = split_once_unescaped(field, '=') else {
            out.skip(number, || format!("{measurement}: invalid field {field:?}"));
            continue;
        };
        let name = format!("{measurement}_{}", unescape(k));
        let value = match field_value(v) {
            Ok(v) => v,
            Err(why) => {
                out.skip(number, || format!("{name}: {why}"));
                continue;
            }
        };
        match series_key("custom", &name, labels.iter().map(|(k, v)| (*k, *v))) {
            Ok(key) => out.samples.push(Sample { key, value }),
            Err(e) => out.skip(number, || e.0),
        }
    }
    Ok(())
}

/// A numeric field value; strings and booleans are refused.
fn field_value(v: &str) -> Result<f64, String> {
    if v.starts_with('"') {
        return Err("string fields cannot be a series".into());
    }
    if matches!(
        v,
        "t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False" | "FALSE"
    ) {
        return Err("boolean fields cannot be a series".into());
    }
    let number = if let Some(int) = v.strip_suffix('i') {
        int.parse::<i64>().ok().map(|n| n as f64)
    } else if let Some(uint) = v.strip_suffix('u') {
        uint.parse::<u64>().ok().map(|n| n as f64)
    } else if v.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.')) {
        v.parse::<f64>().ok()
    } else {
        None
    };
    match number {
        Some(n) if n.is_finite() => Ok(n),
        Some(_) => Err(format!("{v} is not a finite number")),
        None => Err(format!("invalid value {v:?}")),
    }
}

/// Splits at `sep` where it is neither escaped with `\` nor, with `quotes`, inside a
/// double-quoted string. An unterminated string is an error.
fn split_unescaped(s: &str, sep: char, quotes: bool) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_string = false;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' if quotes => in_string = !in_string,
            c if c == sep && !in_string => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_string {
        return Err("unterminated string".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn split_once_unescaped(s: &str, sep: char) -> Option<(&str, &str)> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c == sep => return Some((&s[..i], &s[i + c.len_utf8()..])),
            _ => {}
        }
    }
    None
}

/// `\,`, `\=` and `\ ` stand for the character; any other backslash is itself.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&next) = chars.peek() {
                if matches!(next, ',' | '=' | ' ') {
                    out.push(next);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_become_series_named_measurement_field() {
        let input = [("env".to_string(), "prod".to_string())]
            .into_iter()
            .collect();
        let p = parse(
            b"queue,host=mx1,queue=mail depth=42i,age_seconds=1.5,big=7u 1700000000000000000\n\
              # a comment\n\
              load value=-0.25\n",
            &input,
        );
        assert_eq!(p.invalid, 0, "{:?}", p.first_error);
        assert_eq!(
            p.keys(),
            vec![
                (
                    r#"custom.queue_depth{env="prod",host="mx1",queue="mail"}"#,
                    42.0
                ),
                (
                    r#"custom.queue_age_seconds{env="prod",host="mx1",queue="mail"}"#,
                    1.5
                ),
                (
                    r#"custom.queue_big{env="prod",host="mx1",queue="mail"}"#,
                    7.0
                ),
                (r#"custom.load_value{env="prod"}"#, -0.25),
            ]
        );
    }

    #[test]
    fn escapes_in_tags_and_quoted_strings_are_understood() {
        let p = parse(
            br#"disk,path=/var\ lib,note=a\,b used=1,comment="x, y=z",ok=true free=2"#,
            &BTreeMap::new(),
        );
        // The third section is "free=2": not a timestamp, so the line is invalid.
        assert_eq!(p.invalid, 1);
        let p = parse(
            br#"disk,path=/var\ lib,note=a\,b used=1,comment="x, y=z",ok=true"#,
            &BTreeMap::new(),
        );
        assert_eq!(
            p.keys(),
            vec![(r#"custom.disk_used{note="a,b",path="/var lib"}"#, 1.0)]
        );
        assert_eq!(p.invalid, 2, "the string and the boolean are counted");
    }

    #[test]
    fn bad_lines_are_skipped_and_counted() {
        let text = b"nofields\ncpu,host usage=1\ncpu usage=abc\ncpu usage=1 notatime\n\
            cpu usage=NaN\n9cpu usage=1\ncpu,__x=1 usage=1\ncpu s=\"open\nok v=1\n\xff v=1\n";
        let p = parse(text, &BTreeMap::new());
        assert_eq!(p.keys(), vec![("custom.ok_v", 1.0)]);
        assert_eq!(p.invalid, 9, "{:?}", p.first_error);
    }

    #[test]
    fn random_input_never_panics() {
        let alphabet = b"ab,= \\\"\n1.5i-uTf#\xc3\xa9\xff";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            let len = (x % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x >> 8) as usize % alphabet.len()]
                })
                .collect();
            let p = parse(&bytes, &BTreeMap::new());
            assert!(p.samples.iter().all(|s| s.value.is_finite()));
        }
    }
}
