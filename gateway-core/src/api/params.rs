//! Parsing of query parameters into typed values, with errors that say what was expected.

use std::time::Duration;

use super::ApiError;

/// The latest time (and, negated, the earliest) a parameter may name: the end of the year 9999
/// in milliseconds since the epoch. Arithmetic on times within it cannot overflow.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// A point in time: milliseconds since the epoch, RFC 3339 (`2026-11-25T12:00:00Z`), `now`, or a
/// duration before now (`-24h`, `-30m`); within ±[`MAX_TIME_MS`].
pub fn parse_time(name: &str, value: &str, now_ms: i64) -> Result<i64, ApiError> {
    let value = value.trim();
    let time = if value == "now" {
        Some(now_ms)
    } else if let Some(ago) = value.strip_prefix('-').and_then(|ago| humantime::parse_duration(ago).ok()) {
        // A duration too long for the range is out of range, not "not a time".
        Some(i64::try_from(ago.as_millis()).ok().and_then(|ago| now_ms.checked_sub(ago)).unwrap_or(i64::MIN))
    } else if let Ok(ms) = value.parse::<i64>() {
        Some(ms)
    } else {
        humantime::parse_rfc3339_weak(value)
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|since_epoch| i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    };
    match time {
        Some(time) if (-MAX_TIME_MS..=MAX_TIME_MS).contains(&time) => Ok(time),
        Some(_) => Err(ApiError::bad_request(
            "invalid_time",
            format!("`{name}={value}` is out of range: times must lie within {MAX_TIME_MS} ms (the year 9999) of the epoch"),
        )),
        None => Err(ApiError::bad_request(
            "invalid_time",
            format!("`{name}={value}` is not a time; use milliseconds since the epoch, RFC 3339 (2026-11-25T12:00:00Z), `now`, or `-24h`"),
        )),
    }
}

/// A duration: milliseconds (`60000`) or a humantime duration (`5m`, `1h`).
pub fn parse_duration_ms(name: &str, value: &str) -> Result<i64, ApiError> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_duration(value).ok().and_then(|d: Duration| i64::try_from(d.as_millis()).ok()).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_duration",
            format!("`{name}={value}` is not a duration; use milliseconds or e.g. `5m`, `1h`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_table() {
        let now = 1_800_000_000_000;
        let cases = [
            ("now", Some(now)),
            ("-1h", Some(now - 3_600_000)),
            ("-30m", Some(now - 1_800_000)),
            ("1700000000000", Some(1_700_000_000_000)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000)),
            ("yesterday", None),
            ("-forever", None),
            ("", None),
            // The range: ± the end of the year 9999, however the time is written.
            ("253402300799999", Some(MAX_TIME_MS)),
            ("-253402300799999", Some(-MAX_TIME_MS)),
            ("9999-12-31T23:59:59.999Z", Some(MAX_TIME_MS)),
            ("253402300800000", None),
            ("-253402300800000", None),
            ("9223372036854775807", None),
            ("-9223372036854775808", None),
            ("99999999999999999999", None),
            ("-292000000y", None),
            ("-600000000000y", None),
            ("-8000y", Some(now - 8000 * 31_557_600_000)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_time("from", input, now).ok(), expected, "{input}");
        }
    }

    #[test]
    fn duration_table() {
        assert_eq!(parse_duration_ms("bucket", "60000").ok(), Some(60_000));
        assert_eq!(parse_duration_ms("bucket", "5m").ok(), Some(300_000));
        assert_eq!(parse_duration_ms("bucket", "1h 30m").ok(), Some(5_400_000));
        assert!(parse_duration_ms("bucket", "soon").is_err());
        assert!(parse_duration_ms("bucket", "600000000000y").is_err(), "too long for milliseconds in an i64");
    }
}
