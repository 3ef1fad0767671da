//! Noticing a connection that went silent: the peer vanished without a
//! word (its network gone), so no error will ever come.
//!
//! Servers of this API send something at least every `HEARTBEAT_SECS` (an
//! SSE comment, a WebSocket ping), so silence longer than the idle timeout
//! means a dead connection. One timer per connection fires every period;
//! if nothing was heard since it last fired, the connection is dead. So
//! silence is noticed between one and two periods after it began, and a
//! busy connection pays nothing per read (no timer set up for each one, as
//! wrapping each read in a timeout would).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub(crate) struct Idle {
    period: Duration,
    timer: Pin<Box<Sleep>>,
    heard: bool,
}

impl Idle {
    pub(crate) fn new(period: Duration) -> Self {
        Idle {
            period,
            timer: Box::pin(tokio::time::sleep(period)),
            heard: false,
        }
    }

    pub(crate) fn period(&self) -> Duration {
        self.period
    }

    /// Waits for `read` (the next thing from the peer); `None` when the
    /// connection has been silent for a whole period.
    pub(crate) async fn watch<F: Future>(&mut self, read: F) -> Option<F::Output> {
        tokio::pin!(read);
        loop {
            tokio::select! {
                biased;
                output = &mut read => {
                    self.heard = true;
                    return Some(output);
                }
                () = &mut self.timer => {
                    if !std::mem::take(&mut self.heard) {
                        return None;
                    }
                    let next = Instant::now() + self.period;
                    self.timer.as_mut().reset(next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_speaks_is_heard() {
        let mut idle = Idle::new(Duration::from_secs(10));
        for _ in 0..5 {
            let read = tokio::time::sleep(Duration::from_secs(6));
            assert_eq!(idle.watch(read).await, Some(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_for_a_whole_period_is_noticed_within_two() {
        let mut idle = Idle::new(Duration::from_secs(10));
        let started = Instant::now();
        assert_eq!(idle.watch(std::future::pending::<()>()).await, None);
        assert!(started.elapsed() <= Duration::from_secs(20));

        let mut idle = Idle::new(Duration::from_secs(10));
        assert_eq!(
            idle.watch(tokio::time::sleep(Duration::from_secs(9))).await,
            Some(())
        );
        let silent_since = Instant::now();
        assert_eq!(idle.watch(std::future::pending::<()>()).await, None);
        let silence = silent_since.elapsed();
        assert!(silence >= Duration::from_secs(10) && silence <= Duration::from_secs(20));
    }
}
