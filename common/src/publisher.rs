//! Publishing: the one path every way of publishing takes (a POST, the
//! seed's alias, a WebSocket frame), whatever the transport.
//!
//! It validates the body, has the hub store and publish the message through
//! the broker, and counts it. Transports only say what arrived; they never
//! build a message themselves.

use prometheus::IntCounter;

use crate::error::ApiError;
use crate::hub::Hub;
use crate::message::{Draft, Message, PublishBody, RoomName, Via};

/// Publishes messages accepted by this service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    hub: Hub,
    /// The service that accepts what this publisher publishes.
    via: Via,
    max_message_chars: usize,
    /// Messages accepted by this instance.
    published: IntCounter,
}

impl Publisher {
    pub fn new(hub: Hub, via: Via, max_message_chars: usize, published: IntCounter) -> Self {
        Publisher {
            hub,
            via,
            max_message_chars,
            published,
        }
    }

    /// Validates `body` and publishes it in `room`: once this returns `Ok`,
    /// the message is in history and on its way to every instance.
    pub async fn publish(&self, room: RoomName, body: PublishBody) -> Result<Message, ApiError> {
        let draft = Draft::new(room, body, self.via, self.max_message_chars)?;
        let message = self.hub.publish(&draft).await?;
        self.published.inc();
        Ok(message)
    }
}
