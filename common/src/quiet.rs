//! [`Quiet`]: a future that is polled again only once it has woken its task.
//!
//! `tokio::select!` polls every branch each time its task wakes. A streaming
//! session's task wakes for every message, and some of its branches almost
//! never fire: shutdown and evacuation, each a cancellation token shared by
//! every connection, and the caller's token expiry. Polling a cancellation
//! token locks two mutexes that all connections share (the token's own and
//! its `Notify`'s waiters), so every delivery on every thread contended for
//! them. Wrapped in one [`Quiet`], such branches cost a few uncontended
//! atomic operations per wake-up that was not theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future of `T` polled only when it asked to be (and on the first poll).
/// Once ready it stays ready with the same value, so it may sit in a
/// `select!` that runs again.
///
/// The inner future is polled with a waker of this wrapper's own, which
/// notes that it woke and then wakes whichever task polls the wrapper now.
/// Cancel-safe whenever the inner future is.
pub struct Quiet<T> {
    inner: Pin<Box<dyn Future<Output = T> + Send>>,
    alarm: Arc<Alarm>,
    /// `alarm` as a waker, made once.
    waker: Waker,
    output: Option<T>,
}

/// What the inner future wakes: remembers that it did, then wakes the task.
#[derive(Default)]
struct Alarm {
    rang: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.rang.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<T: Clone> Quiet<T> {
    pub fn new(inner: impl Future<Output = T> + Send + 'static) -> Self {
        // Rung from the start, so the first poll reaches the inner future.
        let alarm = Arc::new(Alarm {
            rang: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Quiet {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&alarm)),
            alarm,
            output: None,
        }
    }
}

// Nothing in a `Quiet` is pinned in place: the inner future is on the heap.
impl<T> Unpin for Quiet<T> {}

impl<T: Clone> Future for Quiet<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(output) = &this.output {
            return Poll::Ready(output.clone());
        }
        // Register first, every time (a ring takes the waker out): a ring
        // after the check below then wakes this task, which polls again
        // and sees it.
        this.alarm.task.register(cx.waker());
        if !this.alarm.rang.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let polled = this
            .inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker));
        if let Poll::Ready(output) = &polled {
            this.output = Some(output.clone());
        }
        polled
    }
}

impl<T> std::fmt::Debug for Quiet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quiet")
            .field("rang", &self.alarm.rang.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Counts its polls; ready once `ready` is set and it has been woken.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("not poisoned") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        // The same waker every time, as a task's would be.
        let waker = Waker::noop();
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn the_inner_future_is_polled_only_when_it_woke() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None));
        let mut quiet = Quiet::new(Counted {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&waker),
        });
        for _ in 0..5 {
            assert!(poll_once(&mut quiet).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "only the first poll got through"
        );

        ready.store(true, Ordering::SeqCst);
        assert!(poll_once(&mut quiet).is_pending(), "not woken yet");
        let inner_waker = waker
            .lock()
            .expect("not poisoned")
            .take()
            .expect("registered");
        inner_waker.wake();
        assert!(poll_once(&mut quiet).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        assert!(poll_once(&mut quiet).is_ready(), "still ready");
    }

    /// A task's waker that counts its wake-ups.
    #[derive(Default)]
    struct Task(AtomicUsize);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_task_is_woken_by_a_ring_after_a_spurious_one() {
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None));
        let mut quiet = Quiet::new(Counted {
            polls: Arc::new(AtomicUsize::new(0)),
            ready: Arc::clone(&ready),
            waker: Arc::clone(&inner_waker),
        });
        let task = Arc::new(Task::default());
        let waker = Waker::from(Arc::clone(&task));
        let mut poll = || Pin::new(&mut quiet).poll(&mut Context::from_waker(&waker));
        let ring = || {
            let woken = inner_waker.lock().expect("not poisoned").take();
            woken.expect("the inner future registered").wake();
        };

        assert!(poll().is_pending());
        ring(); // spurious: not ready yet
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(poll().is_pending());
        assert!(poll().is_pending(), "polled again by the same task");

        ready.store(true, Ordering::SeqCst);
        ring();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            2,
            "the real ring woke the task"
        );
        assert!(poll().is_ready());
    }

    #[tokio::test]
    async fn a_cancellation_reaches_a_task_waiting_beside_busier_branches() {
        let token = CancellationToken::new();
        let mut cancelled = Quiet::new(token.clone().cancelled_owned());
        let (busy, mut deliveries) = tokio::sync::mpsc::channel::<u32>(8);
        let waiter = tokio::spawn(async move {
            let mut delivered = 0;
            loop {
                tokio::select! {
                    biased;
                    () = &mut cancelled => return delivered,
                    Some(_) = deliveries.recv() => delivered += 1,
                }
            }
        });
        for n in 0..100 {
            busy.send(n).await.expect("the waiter is alive");
            tokio::task::yield_now().await;
        }
        token.cancel();
        let delivered = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the cancellation was seen")
            .expect("the waiter did not panic");
        assert!(delivered > 0, "the busier branch was served meanwhile");
    }
}
