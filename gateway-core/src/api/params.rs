//! Parsing of query parameters into typed values, with errors that say what was expected.

use std::time::Duration;

use super::ApiError;

/// A point in time: milliseconds since the epoch, RFC 3339 (`2026-11-25T12:00:00Z`), `now`, or a
/// duration before now (`-24h`, `-30m`).
pub fn parse_time(name: &str, value: &str, now_ms: i64) -> Result<i64, ApiError> {
    let value = value.trim();
    if value == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = value.strip_prefix('-') {
        if let Ok(duration) = humantime::parse_duration(ago) {
            return Ok(now_ms - duration.as_millis() as i64);
        }
    }
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(value) {
        if let Ok(since_epoch) = time.duration_since(std::time::UNIX_EPOCH) {
            return Ok(since_epoch.as_millis() as i64);
        }
    }
    Err(ApiError::bad_request(
        "invalid_time",
        format!("`{name}={value}` is not a time; use milliseconds since the epoch, RFC 3339 (2026-11-25T12:00:00Z), `now`, or `-24h`"),
    ))
}

/// A duration: milliseconds (`60000`) or a humantime duration (`5m`, `1h`).
pub fn parse_duration_ms(name: &str, value: &str) -> Result<i64, ApiError> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    humantime::parse_duration(value).map(|d: Duration| d.as_millis() as i64).map_err(|_| {
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
    }
}
