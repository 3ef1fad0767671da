//! The fan-out's last step, one per thread: hands each room's new messages
//! to the clients on this thread.
//!
//! Waking a task that lives on another thread is a system call (the other
//! runtime's event loop must be woken); waking one on the same thread is a
//! push onto a local queue. The hub takes messages on one thread, while
//! actix-web serves connections on one thread per core: if the hub woke
//! every client's task itself, each delivery would pay a cross-thread wake.
//! Instead it wakes each thread's relay once per message (or once for
//! several, when the relay is still busy), and the relay wakes that
//! thread's clients.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::room::Room;
use super::rooms::Rooms;

/// One thread's relay for one hub.
#[derive(Debug)]
pub(super) struct Relay {
    /// Rooms with messages this relay has not handed out yet; each room at
    /// most once (see `Group::mark_pending`), so this follows the rooms with
    /// clients here, not the message rate.
    pending: Mutex<Vec<Arc<Room>>>,
    wake: Notify,
    hub: Weak<Rooms>,
    stop: CancellationToken,
    /// Cleared when the relay's task ends: with the hub, or with the
    /// runtime it was spawned on (a thread may outlive its runtime, and its
    /// next runtime needs a relay of its own).
    running: AtomicBool,
}

/// Clears [`Relay::running`] however the relay's task ends, dropped with
/// its runtime included.
struct Running(Arc<Relay>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

thread_local! {
    /// The relays started on this thread, one per hub (tests run several
    /// services in one process).
    static RELAYS: RefCell<Vec<Arc<Relay>>> = const { RefCell::new(Vec::new()) };
}

impl Relay {
    /// This thread's relay for `hub`, started on first use. Clients call
    /// this on the thread their connection is served on; on a runtime that
    /// moves tasks between threads it is still correct, only not local.
    pub(super) fn current(hub: &Arc<Rooms>) -> Arc<Relay> {
        RELAYS.with_borrow_mut(|relays| {
            relays.retain(|relay| relay.running.load(Ordering::Acquire));
            if let Some(relay) = relays
                .iter()
                .find(|relay| std::ptr::eq(relay.hub.as_ptr(), Arc::as_ptr(hub)))
            {
                return Arc::clone(relay);
            }
            let relay = Arc::new(Relay {
                pending: Mutex::new(Vec::new()),
                wake: Notify::new(),
                hub: Arc::downgrade(hub),
                stop: hub.stop.clone(),
                running: AtomicBool::new(true),
            });
            // An actix-web worker runs its connections on a runtime of its
            // own thread, so this spawns beside them.
            // The guard exists before the task first runs: a task dropped
            // unpolled (its runtime shutting down) still marks the relay
            // stopped.
            tokio::spawn(run(Running(Arc::clone(&relay))));
            relays.push(Arc::clone(&relay));
            relay
        })
    }

    /// Asks the relay to serve `room` (called under the room's lock, once
    /// per room until served).
    pub(super) fn enqueue(&self, room: Arc<Room>) {
        self.pending().push(room);
        self.wake.notify_one();
    }

    fn pending(&self) -> MutexGuard<'_, Vec<Arc<Room>>> {
        // Pushes and swaps only: a panic cannot leave it half-done.
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

async fn run(running: Running) {
    let relay = &running.0;
    let mut serving = Vec::new();
    loop {
        tokio::select! {
            biased;
            () = relay.stop.cancelled() => return,
            () = relay.wake.notified() => {}
        }
        let Some(hub) = relay.hub.upgrade() else {
            return;
        };
        std::mem::swap(&mut *relay.pending(), &mut serving);
        for room in serving.drain(..) {
            room.hand_out(relay, &hub.policy);
        }
    }
}
