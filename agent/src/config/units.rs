//! Durations (`"10s"`, `"1m30s"`) and sizes (`"64MiB"`) as the configuration writes them.
//!
//! Why not `humantime` and `bytesize`: the shipped configuration and its tests accept forms
//! those crates read otherwise or not at all: fractions (`"2.5s"`), a bare number of seconds
//! (`"10"`), `K`/`M`/`G` as powers of 1024 beside `KB`/`MB`/`GB` as powers of 1000. Switching
//! would change what existing configuration files mean.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Parses `"10s"`, `"500ms"`, `"1m"`, `"1h"`, `"1m30s"`, `"2.5s"` or a bare number of
/// seconds (`"10"`).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid interval {s:?}: expected e.g. \"10s\", \"500ms\", \"1m\" or a number of seconds")
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return seconds_to_duration(secs).ok_or_else(bad);
    }
    let mut total = 0f64; // in seconds
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = after.trim_start();
    }
    seconds_to_duration(total).ok_or_else(bad)
}

fn seconds_to_duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && (0.0..1e9).contains(&secs) {
        Some(Duration::from_micros((secs * 1e6).round() as u64))
    } else {
        None
    }
}

/// `10s`, `500ms`, `1m30s`: how intervals are shown in logs and errors.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 || ms == 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, 0) => format!("{h}h"),
        _ => format!("{s}s"),
    }
}

/// Parses a byte count: `67108864`, `"64MiB"`, `"100 MB"`, `"512K"`
/// (K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected a number of bytes or e.g. \"64MiB\"");
    let t = s.trim();
    let num_len = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(num_len);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// `interval` accepts an integer/float number of seconds or a string like `"10s"`.
pub(super) struct IntervalSetting(pub(super) Duration);

impl<'de> Deserialize<'de> for IntervalSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntervalSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"10s\", \"500ms\", \"1m\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v < 0 {
                    return Err(E::custom(format!("invalid interval {v}: must be positive")));
                }
                Ok(IntervalSetting(Duration::from_secs(v as u64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(IntervalSetting(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                seconds_to_duration(v).map(IntervalSetting).ok_or_else(|| {
                    E::custom(format!(
                        "invalid interval {v}: must be a positive number of seconds"
                    ))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_interval(v).map(IntervalSetting).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `spool_max_bytes` accepts an integer number of bytes or a string like `"64MiB"`.
pub(super) struct SizeSetting(pub(super) u64);

impl<'de> Deserialize<'de> for SizeSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size like \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(SizeSetting)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(SizeSetting(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(SizeSetting).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
