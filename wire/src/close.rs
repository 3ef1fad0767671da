//! Why a server ends a connection: one vocabulary for every transport.
//!
//! WebSocket sends the code and reason in its close frame (RFC 6455, 7.4);
//! SSE can only end the stream, and long polling answers; both log the
//! reason. [`Goodbye::reconnect`] says whether a well-behaved client should
//! reconnect (with its cursor) or give up; [`reconnects`] tells a client
//! that only has the code.

/// A reason for ending a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goodbye {
    /// The WebSocket close code.
    pub code: u16,
    /// A short reason, at most 123 bytes (the close frame's limit).
    pub reason: &'static str,
    /// Whether the client should reconnect with its cursor.
    pub reconnect: bool,
}

/// The client closed the connection, or the server answers its close.
pub const NORMAL: Goodbye = Goodbye {
    code: 1000,
    reason: "bye",
    reconnect: false,
};
/// The client stopped answering pings; it is presumed gone.
pub const NO_PONG: Goodbye = Goodbye {
    code: 1001,
    reason: "no pong within the ping timeout",
    reconnect: true,
};
/// A frame broke the WebSocket protocol (e.g. a bad continuation).
pub const PROTOCOL_ERROR: Goodbye = Goodbye {
    code: 1002,
    reason: "protocol error",
    reconnect: false,
};
/// A binary frame: this API speaks JSON text only.
pub const BINARY: Goodbye = Goodbye {
    code: 1003,
    reason: "binary frames are not supported; send JSON text",
    reconnect: false,
};
/// A text frame that is not valid UTF-8.
pub const INVALID_UTF8: Goodbye = Goodbye {
    code: 1007,
    reason: "text frame is not valid UTF-8",
    reconnect: false,
};
/// A frame (or reassembled message) over the size limit.
pub const TOO_BIG: Goodbye = Goodbye {
    code: 1009,
    reason: "frame too big",
    reconnect: false,
};
/// The instance is shutting down; another one will take the client.
pub const RESTART: Goodbye = Goodbye {
    code: 1012,
    reason: "service restart; reconnect with after=<last id>",
    reconnect: true,
};
/// The client fell further behind than history reaches: reconnect with the
/// cursor (and be told about the gap).
pub const TRY_AGAIN: Goodbye = Goodbye {
    code: 1013,
    reason: "too far behind; reconnect with after=<last id>",
    reconnect: true,
};
/// Catching the client up needs history, and the broker cannot answer right
/// now: try again in a moment.
pub const CANNOT_CATCH_UP: Goodbye = Goodbye {
    code: 1013,
    reason: "history unavailable right now; reconnect with after=<last id>",
    reconnect: true,
};

/// This instance cannot reach the broker (others may): reconnect, through
/// the load balancer, to another instance, with the cursor.
pub const BROKER_LOST: Goodbye = Goodbye {
    code: 1013,
    reason: "this instance lost the broker; reconnect with after=<last id>",
    reconnect: true,
};

/// The token the connection was opened with expired: reconnect with a fresh
/// token and the cursor.
pub const TOKEN_EXPIRED: Goodbye = Goodbye {
    code: 4001,
    reason: "token expired",
    reconnect: true,
};

/// Whether a client whose WebSocket was closed with `code` should reconnect
/// with its cursor. Codes a server of this API does not send count as
/// network trouble: reconnecting is the safe default.
pub fn reconnects(code: u16) -> bool {
    !matches!(code, 1000 | 1002 | 1003 | 1007 | 1008 | 1009)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_advice_matches_every_goodbye() {
        for goodbye in [
            NORMAL,
            NO_PONG,
            PROTOCOL_ERROR,
            BINARY,
            INVALID_UTF8,
            TOO_BIG,
            RESTART,
            TRY_AGAIN,
            CANNOT_CATCH_UP,
            BROKER_LOST,
            TOKEN_EXPIRED,
        ] {
            assert_eq!(reconnects(goodbye.code), goodbye.reconnect, "{goodbye:?}");
            assert!(goodbye.reason.len() <= 123, "{goodbye:?}");
        }
    }

    #[test]
    fn a_dropped_connection_is_worth_reconnecting() {
        // 1006: closed without a close frame (the network, a crash).
        assert!(reconnects(1006));
    }
}
