//! How long to wait before a retry: the recovery plugin's ask, jittered and
//! capped by the host, never shorter than the upstream's own hint.

use std::time::Duration;

/// The wait before a retry, or `None` when it cannot happen in time.
///
/// - `asked`: what the recovery plugin asked for; it is the ceiling of a
///   *full jitter* draw (`uniform(0, min(asked, max_delay))`), so that many
///   clients failing together do not retry together.
/// - `hint`: the upstream's `Retry-After` (or 429 hint), a floor: nothing is
///   sent to the upstream before it expires, whatever the plugin asked.
///   The hint is not capped by `max_delay`: the upstream said when.
/// - `remaining`: what is left of the request's deadline; a wait that
///   would not leave time for the attempt is pointless, so it is refused.
/// - `unit`: a uniform draw in `[0, 1)`.
pub fn retry_delay(
    asked: Duration,
    hint: Option<Duration>,
    max_delay: Duration,
    remaining: Duration,
    unit: f64,
) -> Option<Duration> {
    let ceiling = asked.min(max_delay);
    let jittered = ceiling.mul_f64(unit.clamp(0.0, 1.0));
    let delay = hint.map_or(jittered, |floor| jittered.max(floor));
    (delay < remaining).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn full_jitter_spans_zero_to_the_capped_ask() {
        let max = MS(1000);
        let far = MS(60_000);
        assert_eq!(retry_delay(MS(400), None, max, far, 0.0), Some(MS(0)));
        assert_eq!(retry_delay(MS(400), None, max, far, 0.5), Some(MS(200)));
        // The plugin asked for 10 s; the host caps it at max_delay.
        assert_eq!(
            retry_delay(MS(10_000), None, max, far, 0.999_999)
                .unwrap()
                .as_millis(),
            999
        );
    }

    #[test]
    fn the_upstream_hint_is_a_floor_and_is_not_capped() {
        let max = MS(1000);
        let far = MS(60_000);
        // A plugin asking for an immediate retry still waits for the hint.
        assert_eq!(
            retry_delay(MS(0), Some(MS(1500)), max, far, 0.3),
            Some(MS(1500))
        );
        // A longer jittered ask wins over a short hint.
        assert_eq!(
            retry_delay(MS(800), Some(MS(100)), max, far, 0.5),
            Some(MS(400))
        );
    }

    #[test]
    fn no_retry_when_the_wait_outlasts_the_deadline() {
        assert_eq!(
            retry_delay(MS(0), Some(MS(2000)), MS(1000), MS(1999), 0.5),
            None
        );
        assert_eq!(retry_delay(MS(100), None, MS(1000), MS(0), 0.0), None);
    }
}
