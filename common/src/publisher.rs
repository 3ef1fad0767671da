//! Publishing: the one path every way of publishing takes (a POST, the
//! seed's alias, a WebSocket frame), whatever the transport.
//!
//! It checks that the caller may publish in the room (and as whom), applies
//! the client's publish rate (one budget over every transport), validates
//! the body, has the hub store and publish the message through
//! the broker (once per idempotency key), and counts it. Transports only say
//! what arrived and from whom; they never build a message themselves.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::auth::Caller;
use crate::broker::Published;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::limits::PublishLimiter;
use crate::message::{Draft, IdempotencyKey, PublishBody, RoomName, Via};

/// Publishes messages accepted by this service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    hub: Hub,
    /// The service that accepts what this publisher publishes.
    via: Via,
    max_message_chars: usize,
    /// `None` when publishing is not rate limited.
    limiter: Option<Arc<PublishLimiter>>,
    /// Messages accepted by this instance.
    published: IntCounter,
}

/// What was asked to be published.
#[derive(Debug, Clone)]
pub struct Publish {
    pub room: RoomName,
    pub body: PublishBody,
    pub key: Option<IdempotencyKey>,
}

impl Publisher {
    pub fn new(
        hub: Hub,
        via: Via,
        max_message_chars: usize,
        limiter: Option<Arc<PublishLimiter>>,
        published: IntCounter,
    ) -> Self {
        Publisher {
            hub,
            via,
            max_message_chars,
            limiter,
            published,
        }
    }

    /// Publishes for `caller`: once this returns `Ok`, the message is in
    /// history and on its way to every instance (or, for an idempotency key
    /// used before, it was already). A token's user publishes as its name,
    /// whatever the body says; a refused publish costs no budget.
    ///
    /// A key used before gets the first message whatever the body, even
    /// one that is invalid or over the rate now: a client retrying after a
    /// lost answer must learn that its message was stored.
    pub async fn publish(&self, caller: &Caller, publish: Publish) -> Result<Published, ApiError> {
        let Publish {
            room,
            mut body,
            key,
        } = publish;
        if let Some(author) = caller.may_publish(&room)? {
            body.author = Some(author.as_str().to_owned());
        }
        let refused = match &self.limiter {
            Some(limiter) if caller.is_rate_limited() => limiter
                .check(caller.client())
                .err()
                .map(|retry_after| ApiError::RateLimited { retry_after }),
            _ => None,
        };
        let draft = match refused {
            Some(refused) => Err(refused),
            None => Draft::new(room.clone(), body, self.via, self.max_message_chars)
                .map_err(ApiError::from),
        };
        let draft = match (draft, &key) {
            (Ok(draft), _) => draft,
            (Err(refused), None) => return Err(refused),
            (Err(refused), Some(key)) => {
                return match self.hub.replay(&room, key).await? {
                    Some(message) => Ok(Published {
                        message,
                        replayed: true,
                    }),
                    None => Err(refused),
                };
            }
        };
        let published = self.hub.publish(&draft, key.as_ref()).await?;
        if !published.replayed {
            self.published.inc();
        }
        Ok(published)
    }

    /// Forgets the rate-limit state of clients back to a full bucket.
    pub fn forget_idle_clients(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.forget_idle();
        }
    }
}
