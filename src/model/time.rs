//! Timestamps: unix seconds in memory, RFC 3339 (or a plain integer) in files and on the wire.

use serde::{Deserialize, Deserializer};

/// Seconds since the unix epoch, UTC.
pub type Timestamp = i64;

/// Parses RFC 3339 (`2026-11-29T10:00:00Z`) or a plain integer of unix seconds.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    if let Ok(n) = s.trim().parse::<i64>() {
        return Ok(n);
    }
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("invalid timestamp '{s}': {e} (expected RFC 3339, e.g. 2026-01-31T08:00:00Z)")
        })
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
        Some(Raw::Int(n)) => Ok(Some(n)),
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
    }
}
