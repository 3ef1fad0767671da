//! The three ways to receive a room's messages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a [`Subscription`](crate::Subscription) receives: each service of
/// the chat serves one of these (the gateway serves all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /rooms/{room}/poll`, held until a message arrives (longpoll-svc).
    #[serde(rename = "longpoll")]
    LongPoll,
    /// `GET /rooms/{room}/events`, a Server-Sent Events stream (sse-svc).
    Sse,
    /// `GET /rooms/{room}/ws`, a WebSocket (ws-svc).
    Ws,
}

impl Transport {
    /// Every transport, in the order above.
    pub const ALL: [Transport; 3] = [Transport::LongPoll, Transport::Sse, Transport::Ws];

    /// The transport's name: `"longpoll"`, `"sse"` or `"ws"` (what
    /// [`FromStr`] reads, and the `via` of messages published through it).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::LongPoll => "longpoll",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not `"longpoll"`, `"sse"` or `"ws"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: expected \"longpoll\", \"sse\" or \"ws\"")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|transport| transport.as_str() == name)
            .ok_or_else(|| UnknownTransport(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_reads_back_from_its_name() {
        for transport in Transport::ALL {
            assert_eq!(transport.as_str().parse(), Ok(transport));
            assert_eq!(transport.to_string(), transport.as_str());
        }
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_name() {
        assert_eq!(
            "carrier-pigeon".parse::<Transport>(),
            Err(UnknownTransport("carrier-pigeon".into()))
        );
    }

    #[test]
    fn transports_serialize_as_their_names() {
        assert_eq!(
            serde_json::to_string(&Transport::LongPoll).ok().as_deref(),
            Some("\"longpoll\"")
        );
    }
}
