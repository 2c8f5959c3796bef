//! Wall-clock time, in the forms the host records and shows.
//!
//! Durations and deadlines use `Instant` (monotonic); this module is for the
//! moments that leave the process — ids' `created` fields, expiries stored in
//! sled, budget days, alert timestamps, readiness bodies. A clock before
//! 1970 reads as 0 rather than failing a request.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current UTC time as RFC 3339.
pub fn now_rfc3339() -> String {
    rfc3339(unix_s())
}

/// Unix seconds as an RFC 3339 UTC time (civil-from-days, no calendar crate).
///
/// ```
/// assert_eq!(agentrouter::clock::rfc3339(0), "1970-01-01T00:00:00Z");
/// ```
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn reads_the_clock_consistently() {
        let (ms, s) = (unix_ms(), unix_s());
        assert!(ms / 1000 <= s + 1 && s <= ms / 1000 + 1);
    }
}
