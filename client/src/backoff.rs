//! How long to wait before trying again.
//!
//! Exponential backoff with jitter: after the `n`th failure in a row the
//! wait is drawn from `[d/2, d]` with `d = min(initial * 2^n, max)`. The
//! doubling keeps a failing server from being hammered; the jitter keeps
//! thousands of clients that lost the same instance at the same moment from
//! coming back at the same moment too ("equal jitter": never less than half
//! the step, so a client does not retry at once by chance).

use std::time::Duration;

/// Backoff settings: the first step and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Default for Backoff {
    /// A first wait of 50-100 ms (short enough that a client moving to
    /// another instance after a restart barely notices), up to 5 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The first step and the cap (raised to `initial` if below it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
        }
    }

    /// The first step: the first wait is between half of it and all of it.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap: no wait is longer (a server's `Retry-After` included).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The step after `failures` failures in a row, before jitter.
    fn step(&self, failures: u32) -> Duration {
        // 2^16 * any sane initial step is far past any sane cap.
        let factor = 1_u32 << failures.min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The failures in a row of one retrying thing (a publish, a subscription)
/// and the waits they earn: for loops of your own that should back off
/// like the client does.
#[derive(Debug)]
pub struct Retry {
    settings: Backoff,
    failures: u32,
    rng: fastrand::Rng,
}

impl Retry {
    pub fn new(settings: Backoff) -> Self {
        Self::with_rng(settings, fastrand::Rng::new())
    }

    fn with_rng(settings: Backoff, rng: fastrand::Rng) -> Self {
        Retry {
            settings,
            failures: 0,
            rng,
        }
    }

    /// The wait before the next attempt, and counts a failure. A server's
    /// `Retry-After` lengthens the wait, up to the cap.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let step = self.settings.step(self.failures);
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        let jitter = half.mul_f64(self.rng.f64());
        let delay = half + jitter;
        delay.max(retry_after.unwrap_or_default().min(self.settings.max))
    }

    /// Things went well: the next failure starts from the first step again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Retry {
        Retry::with_rng(
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            fastrand::Rng::with_seed(1),
        )
    }

    #[test]
    fn each_wait_lies_between_half_the_step_and_the_step() {
        let mut retry = retry();
        for failures in 0..12 {
            let step = Duration::from_millis(100)
                .saturating_mul(1 << failures)
                .min(Duration::from_secs(5));
            let delay = retry.next_delay(None);
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} after {failures} failures, step {step:?}"
            );
        }
    }

    #[test]
    fn the_first_wait_is_short() {
        let delay = retry().next_delay(None);
        assert!(delay >= Duration::from_millis(50) && delay <= Duration::from_millis(100));
    }

    #[test]
    fn waits_never_pass_the_cap_however_many_failures() {
        let mut retry = retry();
        for _ in 0..100 {
            assert!(retry.next_delay(None) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn waits_are_jittered() {
        let mut retry = retry();
        let waits: Vec<_> = (0..8)
            .map(|_| {
                retry.reset();
                retry.next_delay(None)
            })
            .collect();
        assert!(waits.windows(2).any(|pair| pair[0] != pair[1]), "{waits:?}");
    }

    #[test]
    fn a_reset_starts_from_the_first_step_again() {
        let mut retry = retry();
        for _ in 0..10 {
            retry.next_delay(None);
        }
        retry.reset();
        assert!(retry.next_delay(None) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_lengthens_a_wait_up_to_the_cap() {
        let mut retry = retry();
        assert_eq!(
            retry.next_delay(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry.next_delay(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_cap_below_the_first_step_is_raised_to_it() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.max(), Duration::from_secs(1));
    }
}
