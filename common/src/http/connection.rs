//! Watching and cutting a client's connection from outside its request.
//!
//! A client that stops reading leaves its response stuck: the server stops
//! polling the response body once the socket's buffers are full, so the
//! stream cannot notice anything, and neither actix-web nor TCP gives up on
//! a peer that still acknowledges with a zero window. The hub notices (the
//! client's queue stays full and nothing it is owed moves) through a
//! [`Disconnector`], which then shuts the socket down; actix-web sees the
//! error and drops the connection and everything it holds.

use std::any::Any;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;

use crate::hub::ClientSocket;

/// The raw descriptor of a connection's socket, stored per connection.
#[derive(Debug, Clone, Copy)]
struct SocketFd(RawFd);

/// `HttpServer::on_connect` hook: remembers each connection's socket, and
/// has the kernel drop the connection when data it sent stays
/// unacknowledged for `unacknowledged_limit` (`TCP_USER_TIMEOUT`). Without
/// that, a client that vanished without a word (no FIN, no RST) holds its
/// stream for the quarter of an hour TCP keeps retransmitting; with it, the
/// next keep-alive or ping that goes unanswered ends it.
pub fn remember_socket(
    connection: &dyn Any,
    data: &mut Extensions,
    unacknowledged_limit: Duration,
) {
    if let Some(stream) = connection.downcast_ref::<TcpStream>() {
        data.insert(SocketFd(stream.as_raw_fd()));
        if let Err(err) =
            socket2::SockRef::from(stream).set_tcp_user_timeout(Some(unacknowledged_limit))
        {
            log::debug!("cannot set TCP_USER_TIMEOUT: {err}");
        }
    }
}

/// Can watch and shut down one client's connection, for as long as it is
/// held.
#[derive(Debug)]
pub struct Disconnector(OwnedFd);

impl Disconnector {
    /// For the connection carrying `request`. It holds a duplicate of the
    /// socket's descriptor, so keep it no longer than the request lives.
    pub fn for_request(request: &HttpRequest) -> Option<Self> {
        let SocketFd(fd) = *request.conn_data::<SocketFd>()?;
        // SAFETY: this runs while the request is being handled, and the
        // HTTP/1 dispatcher handling it owns the connection's `TcpStream`
        // until the request is done, so `fd` is open and is this
        // connection's socket for the duration of this call.
        #[allow(unsafe_code)]
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        socket.try_clone_to_owned().ok().map(Disconnector)
    }

    /// Shuts the connection down both ways. The peer sees the connection
    /// end; the server's own reads and writes fail, which ends the request.
    pub fn disconnect(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(Shutdown::Both);
    }
}

impl ClientSocket for Disconnector {
    /// The socket's send queue (`TIOCOUTQ`): bytes written but not yet
    /// acknowledged by the client. It shrinks as the client reads.
    fn unsent_bytes(&self) -> Option<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: `self.0` is an open socket descriptor we own; TIOCOUTQ
        // writes one `c_int` through the pointer, which points at one.
        #[allow(unsafe_code)]
        let result = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        (result == 0).then(|| u64::try_from(queued).unwrap_or(0))
    }

    fn cut(&self) {
        self.disconnect();
    }
}
