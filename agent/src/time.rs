//! UTC timestamps rendered as RFC 3339 without pulling in a date crate.
//! The collection time is the idempotency key of `secumon.ingest`, so a report must render
//! the same string every time it is replayed: we keep whole microseconds (PostgreSQL's
//! timestamptz precision) and always print all six digits.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_micros: i64,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Timestamp {
            unix_micros: micros,
        }
    }

    pub fn from_unix_micros(unix_micros: i64) -> Timestamp {
        Timestamp { unix_micros }
    }

    pub fn unix_micros(self) -> i64 {
        self.unix_micros
    }

    /// `2025-11-25T18:48:00.123456Z`
    pub fn to_rfc3339(self) -> String {
        let (date, secs_of_day, micros) = self.split();
        format!("{}T{}.{:06}Z", date, hms(secs_of_day), micros)
    }

    /// `2025-11-25T18:48:00.123Z`, for log lines.
    pub fn to_rfc3339_millis(self) -> String {
        let (date, secs_of_day, micros) = self.split();
        format!("{}T{}.{:03}Z", date, hms(secs_of_day), micros / 1000)
    }

    fn split(self) -> (String, i64, i64) {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        (
            format!("{:04}-{:02}-{:02}", y, m, d),
            secs.rem_euclid(86_400),
            micros,
        )
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (also accepts a space or `t`
    /// as separator and `z`). Fractions beyond microseconds are truncated.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        let bad = || format!("invalid RFC 3339 timestamp {s:?}");
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(bad());
        }
        let num = |from: usize, len: usize| -> Result<i64, String> {
            let part = s.get(from..from + len).ok_or_else(bad)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<i64>().map_err(|_| bad())
        };
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
        let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(bad());
        }
        let mut i = 19;
        let mut micros = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            for _ in (i - start)..6 {
                micros *= 10;
            }
        }
        let offset_secs = match b.get(i) {
            Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let off = oh * 3600 + om * 60;
                if sign == b'+' {
                    off
                } else {
                    -off
                }
            }
            _ => return Err(bad()),
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
        Ok(Timestamp {
            unix_micros: secs * 1_000_000 + micros,
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

fn hms(secs_of_day: i64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil calendar algorithms (public domain), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_instants() {
        assert_eq!(
            Timestamp::from_unix_micros(0).to_rfc3339(),
            "1970-01-01T00:00:00.000000Z"
        );
        // 2024-02-29T23:59:59.123456Z (leap day)
        let t = Timestamp::from_unix_micros(1_709_251_199_123_456);
        assert_eq!(t.to_rfc3339(), "2024-02-29T23:59:59.123456Z");
        assert_eq!(t.to_rfc3339_millis(), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn parse_round_trips_and_honours_offsets() {
        let t = Timestamp::from_unix_micros(1_764_096_480_000_042);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        let a = Timestamp::parse_rfc3339("2025-11-25T20:48:00+02:00").unwrap();
        let b = Timestamp::parse_rfc3339("2025-11-25T18:48:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Timestamp::parse_rfc3339("2025-11-25T18:48:00.5Z")
                .unwrap()
                .unix_micros()
                - b.unix_micros(),
            500_000
        );
    }

    #[test]
    fn parse_rejects_garbage() {
        for s in [
            "",
            "2025-13-01T00:00:00Z",
            "2025-02-30T00:00:00Z",
            "2025-11-25T18:48:00",
            "2025-11-25T18:48:00.Z",
            "yesterday",
        ] {
            assert!(Timestamp::parse_rfc3339(s).is_err(), "{s}");
        }
    }
}
