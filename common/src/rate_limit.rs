//! Publish rate limits: per client address over HTTP, per connection over
//! WebSocket. Both are token buckets (GCRA, from `governor`): `burst`
//! messages at once, then `per_sec` a second.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota};

/// A rate: `burst` at once, then `per_sec` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// `None` when `per_sec` is 0 (no limit).
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        Some(Rate {
            per_sec: NonZeroU32::new(per_sec)?,
            burst: NonZeroU32::new(burst.max(1))?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_sec).allow_burst(self.burst)
    }
}

fn wait_time(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// One bucket per client address. Its memory follows the number of recent
/// clients: call [`Self::forget_idle`] now and then.
#[derive(Debug)]
pub struct AddressLimiter(DefaultKeyedRateLimiter<IpAddr>);

impl AddressLimiter {
    pub fn new(rate: Rate) -> Self {
        AddressLimiter(DefaultKeyedRateLimiter::keyed(rate.quota()))
    }

    /// `Err(wait)` when the address must wait before publishing again.
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        self.0
            .check_key(&address)
            .map_err(|not_until| wait_time(&not_until))
    }

    /// Drops the buckets of addresses that are back to a full burst.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// One bucket for one connection.
#[derive(Debug)]
pub struct ConnectionLimiter(DefaultDirectRateLimiter);

impl ConnectionLimiter {
    pub fn new(rate: Rate) -> Self {
        ConnectionLimiter(DefaultDirectRateLimiter::direct(rate.quota()))
    }

    /// `Err(wait)` when the connection must wait before publishing again.
    pub fn check(&self) -> Result<(), Duration> {
        self.0.check().map_err(|not_until| wait_time(&not_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_per_second_means_no_limit() {
        assert_eq!(Rate::new(0, 10), None);
    }

    #[test]
    fn a_burst_passes_then_the_next_waits() {
        let limiter = ConnectionLimiter::new(Rate::new(1, 3).expect("a rate"));
        assert!((0..3).all(|_| limiter.check().is_ok()));
        let wait = limiter.check().expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn addresses_have_separate_buckets() {
        let limiter = AddressLimiter::new(Rate::new(1, 1).expect("a rate"));
        let (a, b) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_err());
        assert!(limiter.check(b).is_ok());
    }
}
