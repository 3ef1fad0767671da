//! The publish rate limit: one token bucket per client (GCRA, from
//! `governor`), shared by every way of publishing, so a client cannot get
//! around it by switching from HTTP to WebSocket.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::client::ClientId;

/// Clients the limiter tracks before it forgets those back to a full
/// bucket, without waiting for the periodic cleanup: the limiter's memory
/// is bounded whatever the number of clients.
const MAX_TRACKED_CLIENTS: usize = 100_000;

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

/// One bucket per client. Its memory follows the number of recent
/// clients: [`Self::forget_idle`] runs now and then, and at once when the
/// number of tracked clients passes [`MAX_TRACKED_CLIENTS`].
#[derive(Debug)]
pub struct PublishLimiter(DefaultKeyedRateLimiter<ClientId>);

impl PublishLimiter {
    pub fn new(rate: Rate) -> Self {
        PublishLimiter(DefaultKeyedRateLimiter::keyed(rate.quota()))
    }

    /// `Err(wait)` when the client must wait before publishing again.
    pub fn check(&self, client: &ClientId) -> Result<(), Duration> {
        if self.0.len() > MAX_TRACKED_CLIENTS {
            self.forget_idle();
        }
        self.0
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops the buckets of clients that are back to a full burst.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(address: &str) -> ClientId {
        ClientId::from_address(address.parse().expect("an address"))
    }

    #[test]
    fn zero_per_second_means_no_limit() {
        assert_eq!(Rate::new(0, 10), None);
    }

    #[test]
    fn a_burst_passes_then_the_next_waits() {
        let limiter = PublishLimiter::new(Rate::new(1, 3).expect("a rate"));
        let alice = client("10.0.0.1");
        assert!((0..3).all(|_| limiter.check(&alice).is_ok()));
        let wait = limiter.check(&alice).expect_err("over the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn clients_have_separate_buckets() {
        let limiter = PublishLimiter::new(Rate::new(1, 1).expect("a rate"));
        let (a, b) = (client("10.0.0.1"), client("10.0.0.2"));
        assert!(limiter.check(&a).is_ok());
        assert!(limiter.check(&a).is_err());
        assert!(limiter.check(&b).is_ok());
    }

    #[test]
    fn clients_back_to_a_full_bucket_are_forgotten() {
        let limiter = PublishLimiter::new(Rate::new(1000, 1).expect("a rate"));
        for n in 0..50u8 {
            let _ = limiter.check(&client(&format!("10.0.1.{n}")));
        }
        std::thread::sleep(Duration::from_millis(5));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }
}
