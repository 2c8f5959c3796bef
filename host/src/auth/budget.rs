//! Spend per key per UTC day, in the store, from the real cost of answers.
//!
//! Each completed request adds its cost under `auth\0spend\0<key>\0<day>`
//! (an atomic read-modify-write in sled), so spend survives restarts. The
//! check happens before a request and the charge after it, so requests in
//! flight when the budget runs out may overshoot it by their own cost.

use super::AuthError;
use crate::store::Store;

const PREFIX: &[u8] = b"auth\0spend\0";
const DAY_S: u64 = 86_400;

/// Daily spend tracking.
#[derive(Clone)]
pub struct Spend {
    store: Store,
}

/// Days since the Unix epoch, UTC.
pub fn utc_day(unix_s: u64) -> u64 {
    unix_s / DAY_S
}

/// Seconds until the next UTC midnight.
pub fn seconds_to_midnight(unix_s: u64) -> u64 {
    DAY_S - unix_s % DAY_S
}

impl Spend {
    /// Spend tracking in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn db_key(name: &str, day: u64) -> Vec<u8> {
        [PREFIX, name.as_bytes(), b"\0", &day.to_be_bytes()].concat()
    }

    fn decode(raw: Option<&[u8]>) -> f64 {
        raw.and_then(|r| <[u8; 8]>::try_from(r).ok())
            .map(f64::from_be_bytes)
            .unwrap_or(0.0)
    }

    /// USD spent by `name` on `day`.
    pub fn spent(&self, name: &str, day: u64) -> Result<f64, AuthError> {
        let raw = self
            .store
            .db()
            .get(Self::db_key(name, day))
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(Self::decode(raw.as_deref()))
    }

    /// Adds `usd` to what `name` spent on `day`; returns the new total.
    pub fn add(&self, name: &str, day: u64, usd: f64) -> Result<f64, AuthError> {
        let total = self
            .store
            .db()
            .update_and_fetch(Self::db_key(name, day), |old| {
                Some((Self::decode(old) + usd).to_be_bytes().to_vec())
            })
            .map_err(|e| AuthError::Store(e.to_string()))?;
        Ok(Self::decode(total.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spend_adds_up_per_key_and_day() {
        let s = Spend::new(Store::temporary().unwrap());
        s.add("a", 10, 0.25).unwrap();
        assert_eq!(s.add("a", 10, 0.5).unwrap(), 0.75);
        assert_eq!(s.spent("a", 11).unwrap(), 0.0);
        assert_eq!(s.spent("b", 10).unwrap(), 0.0);
        assert_eq!(seconds_to_midnight(86_400 * 3 + 1), 86_399);
    }
}
