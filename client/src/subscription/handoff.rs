//! A stream made from one long-lived future that hands its values over one
//! at a time: how a subscription is a `Stream` without moving its state.
//!
//! The obvious way, `stream::unfold`, moves the driver's whole state (its
//! connection, parser and buffers, and the future reading them: kilobytes)
//! out of one future and into the next for every event. Here the driver's
//! loop is one boxed future for the subscription's life. `poll_next` polls
//! it; when it has an event it puts it in a one-value slot and pauses once
//! ([`Sender::send`]), and `poll_next` returns what is in the slot. Nothing
//! moves but the event.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::Stream;

type Slot<T> = Arc<Mutex<Option<T>>>;

/// The stream side.
pub(super) struct Handoff<T> {
    /// `None` once it has finished.
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    slot: Slot<T>,
}

/// The future side: what the loop hands values over with.
pub(super) struct Sender<T> {
    slot: Slot<T>,
}

impl<T: Send + 'static> Handoff<T> {
    /// A stream of what `body` sends, ending when `body` returns.
    pub(super) fn new<F, Fut>(body: F) -> Self
    where
        F: FnOnce(Sender<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let slot = Slot::default();
        let sender = Sender {
            slot: Arc::clone(&slot),
        };
        Handoff {
            run: Some(Box::pin(body(sender))),
            slot,
        }
    }
}

impl<T> Sender<T> {
    /// Hands `value` over; returns when the stream is polled for the next.
    pub(super) async fn send(&self, value: T) {
        *take_lock(&self.slot) = Some(value);
        PauseOnce::default().await;
    }
}

impl<T> Stream for Handoff<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Ready(None);
        };
        let finished = run.as_mut().poll(cx).is_ready();
        if finished {
            self.run = None;
        }
        match take_lock(&self.slot).take() {
            Some(value) => Poll::Ready(Some(value)),
            None if finished => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

/// The slot is only touched between polls of one future, never by two
/// threads at once; a panic cannot leave a half-written `Option`.
fn take_lock<T>(slot: &Mutex<Option<T>>) -> std::sync::MutexGuard<'_, Option<T>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pending once, then ready. It arranges no wake-up, which is right only
/// here: it is awaited just after a value was put in the slot, so the
/// `poll_next` polling it returns that value, and the consumer polls again
/// when it wants the next one.
#[derive(Default)]
struct PauseOnce {
    paused: bool,
}

impl Future for PauseOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.paused, true) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn values_come_out_in_order_and_the_stream_ends_with_the_body() {
        let stream = Handoff::new(|sender| async move {
            for value in 0..5 {
                sender.send(value).await;
            }
        });
        assert_eq!(stream.collect::<Vec<_>>().await, [0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_may_wait_between_values() {
        let mut stream = Handoff::new(|sender| async move {
            sender.send("first").await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            sender.send("second").await;
        });
        assert_eq!(stream.next().await, Some("first"));
        assert_eq!(stream.next().await, Some("second"));
        assert_eq!(stream.next().await, None);
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn the_body_runs_only_while_the_stream_is_polled() {
        let reached = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&reached);
        let mut stream = Handoff::new(move |sender| async move {
            for value in 1..=3 {
                seen.store(value, Ordering::Relaxed);
                sender.send(value).await;
            }
        });
        assert_eq!(stream.next().await, Some(1));
        tokio::task::yield_now().await;
        assert_eq!(reached.load(Ordering::Relaxed), 1);
    }
}
