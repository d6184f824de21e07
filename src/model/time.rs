//! Timestamps: unix seconds in memory, RFC 3339 (or a plain integer) in files and on the wire.

use serde::{Deserialize, Deserializer};

/// Seconds since the unix epoch, UTC.
pub type Timestamp = i64;

/// The latest time accepted anywhere: 9999-12-31T23:59:59Z. Later (or negative) times are
/// refused rather than kept as "forever" values that no formatter can print.
pub const MAX_TIMESTAMP: Timestamp = 253_402_300_799;

/// Checks that `t` lies between the unix epoch and [`MAX_TIMESTAMP`].
pub fn check_timestamp(t: Timestamp) -> Result<Timestamp, String> {
    if (0..=MAX_TIMESTAMP).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "timestamp {t} is out of range (1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z)"
        ))
    }
}

/// Parses RFC 3339 (`2026-11-29T10:00:00Z`) or a plain integer of unix seconds, between the
/// unix epoch and [`MAX_TIMESTAMP`].
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return check_timestamp(n);
    }
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!("invalid timestamp '{s}': {e} (expected RFC 3339, e.g. 2026-01-31T08:00:00Z)")
        })
        .and_then(|t| check_timestamp(t.unix_timestamp()))
}

/// Formats unix seconds as RFC 3339 UTC.
pub fn format_timestamp(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Serde helper: accepts a string (RFC 3339 or digits) or an integer.
pub fn de_opt_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(n)) => check_timestamp(n)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Some(Raw::Text(s)) => parse_timestamp(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse_timestamp("2026-01-31T08:00:00Z").unwrap();
        assert_eq!(t, 1_769_846_400);
        assert_eq!(format_timestamp(t), "2026-01-31T08:00:00Z");
        assert_eq!(parse_timestamp("12").unwrap(), 12);
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("-1").is_err());
        assert!(parse_timestamp("253402300800").is_err());
        assert_eq!(parse_timestamp("253402300799").unwrap(), MAX_TIMESTAMP);
        assert!(parse_timestamp("1969-12-31T23:59:59Z").is_err());
    }
}
