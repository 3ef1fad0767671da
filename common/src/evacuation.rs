//! Sending clients elsewhere when this instance loses its broker.
//!
//! An instance cut off from Redis (a partition: other instances may hear it
//! fine) cannot serve its clients: nothing new reaches it. Its `/readyz`
//! turns 503 at once, so load balancers stop sending new clients. The
//! clients it holds are told to reconnect once the loss has lasted
//! `BROKER_LOSS_GRACE_SECS` (a blip is not worth a reconnect storm): event
//! streams end, WebSockets close with 1013, held polls are answered. They
//! come back through the load balancer, to a healthy instance, with their
//! cursor, and miss nothing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Hands out the token connections watch to learn they must go elsewhere.
#[derive(Debug)]
pub struct Evacuation {
    /// Cancelled when clients must leave; a fresh one once the broker is
    /// back. A std mutex: a clone or a swap, never held across an await.
    current: Mutex<CancellationToken>,
}

impl Evacuation {
    /// Starts watching `connectivity` (the broker's); the task ends with
    /// `stop`.
    pub fn start(
        mut connectivity: watch::Receiver<bool>,
        grace: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let evacuation = Arc::new(Evacuation {
            current: Mutex::new(CancellationToken::new()),
        });
        let watched = Arc::clone(&evacuation);
        tokio::spawn(async move {
            let watching = async {
                loop {
                    let lost = connectivity.wait_for(|up| !*up).await.is_ok();
                    if !lost {
                        return;
                    }
                    let back = tokio::time::timeout(grace, connectivity.wait_for(|up| *up))
                        .await
                        .map(|back| back.is_ok());
                    match back {
                        Ok(true) => continue,
                        Ok(false) => return,
                        Err(_) => {
                            log::warn!(
                                "the broker has been unreachable for {grace:?}: telling every client \
                                 to reconnect (elsewhere)"
                            );
                            watched.token().cancel();
                        }
                    }
                    let back = connectivity.wait_for(|up| *up).await.is_ok();
                    if !back {
                        return;
                    }
                    log::info!("the broker is reachable again: taking clients");
                    *watched.lock() = CancellationToken::new();
                }
            };
            tokio::select! {
                () = watching => {}
                () = stop.cancelled() => {}
            }
        });
        evacuation
    }

    fn lock(&self) -> MutexGuard<'_, CancellationToken> {
        // A swap or a clone: a panic cannot leave it half changed.
        self.current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Cancelled when the clients of this instance must reconnect elsewhere
    /// (already, if the broker is lost now).
    pub fn token(&self) -> CancellationToken {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn clients_leave_only_after_the_loss_outlasts_the_grace() {
        let (connectivity, watched) = watch::channel(true);
        let stop = CancellationToken::new();
        let evacuation = Evacuation::start(watched, Duration::from_secs(10), stop.clone());
        let first = evacuation.token();

        // A blip shorter than the grace: nobody leaves.
        connectivity.send_replace(false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        connectivity.send_replace(true);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!first.is_cancelled());

        // A real loss: they leave once it lasted the grace.
        connectivity.send_replace(false);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!first.is_cancelled());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(first.is_cancelled());
        assert!(evacuation.token().is_cancelled(), "newcomers leave too");

        // Back: new clients stay.
        connectivity.send_replace(true);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!evacuation.token().is_cancelled());
        stop.cancel();
    }
}
