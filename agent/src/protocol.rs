//! What the agent sends: the two statements of the ingest protocol (docs/ingest-protocol.md)
//! and their parameters as text, encoded without libpq (which `db` wraps).

use crate::report::{AgentInfo, Report};

pub const REGISTER_SQL: &str =
    "SELECT secumon.register_agent($1::text, $2::text, $3::text, $4::text, $5::jsonb)";
pub const INGEST_SQL: &str =
    "SELECT secumon.ingest($1::text, $2::timestamptz, $3::text[], $4::float8[], $5::jsonb, $6::jsonb, $7::jsonb)";

/// The five text parameters of `secumon.register_agent` for `info`.
pub fn register_params(info: &AgentInfo) -> Vec<Option<String>> {
    let labels = serde_json::to_string(&info.labels).unwrap_or_else(|_| "{}".into());
    vec![
        Some(info.agent_id.clone()),
        Some(info.hostname.clone()),
        Some(info.os.clone()),
        Some(info.agent_version.clone()),
        Some(labels),
    ]
}

/// The seven text parameters of `secumon.ingest` for `report`.
pub fn ingest_params(report: &Report) -> Vec<Option<String>> {
    let json_or_null = |empty: bool, json: std::result::Result<String, serde_json::Error>| {
        if empty {
            None
        } else {
            json.ok()
        }
    };
    vec![
        Some(report.agent_id.clone()),
        Some(report.time.to_rfc3339()),
        Some(text_array_literal(report.series.keys().map(String::as_str))),
        Some(float_array_literal(report.series.values().copied())),
        json_or_null(
            report.disks.is_empty(),
            serde_json::to_string(&report.disks),
        ),
        json_or_null(
            report.network.is_empty(),
            serde_json::to_string(&report.network),
        ),
        json_or_null(
            report.processes.is_empty(),
            serde_json::to_string(&report.processes),
        ),
    ]
}

/// A PostgreSQL array literal of strings: `{"a","b\"c"}`.
pub fn text_array_literal<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A PostgreSQL float8 array literal; unknown or non-finite values become NULL.
pub fn float_array_literal(values: impl Iterator<Item = Option<f64>>) -> String {
    let mut out = String::from("{");
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v.filter(|x| x.is_finite()) {
            // Rust prints the shortest representation that round-trips, never exponents.
            Some(x) => out.push_str(&x.to_string()),
            None => out.push_str("NULL"),
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn array_literals_quote_and_null() {
        assert_eq!(
            text_array_literal(["cpu.usage_percent", "a\"b\\c"].into_iter()),
            r#"{"cpu.usage_percent","a\"b\\c"}"#
        );
        assert_eq!(text_array_literal(std::iter::empty()), "{}");
        assert_eq!(
            float_array_literal(
                [
                    Some(1.5),
                    None,
                    Some(16_700_000_000.0),
                    Some(f64::NAN),
                    Some(0.1)
                ]
                .into_iter()
            ),
            "{1.5,NULL,16700000000,NULL,0.1}"
        );
    }

    #[test]
    fn ingest_params_follow_the_protocol() {
        let mut r = Report::new("web-1", Timestamp::from_unix_micros(1_764_096_480_123_456));
        r.set("cpu", "usage_percent", Some(3.25));
        r.set("memory", "total_bytes", None);
        let p = ingest_params(&r);
        assert_eq!(p.len(), 7);
        assert_eq!(p[0].as_deref(), Some("web-1"));
        assert_eq!(p[1].as_deref(), Some("2025-11-25T18:48:00.123456Z"));
        assert_eq!(
            p[2].as_deref(),
            Some(r#"{"cpu.usage_percent","memory.total_bytes"}"#)
        );
        assert_eq!(p[3].as_deref(), Some("{3.25,NULL}"));
        assert_eq!(
            (p[4].as_deref(), p[5].as_deref(), p[6].as_deref()),
            (None, None, None)
        );
    }
}
