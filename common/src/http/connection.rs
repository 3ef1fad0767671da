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
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
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
///
/// It keeps the socket's descriptor number and the connection's two
/// addresses, not a duplicate of the descriptor: a duplicate would double
/// the descriptors every streaming connection holds, and halve the
/// connections an instance can serve within its open-files limit. A
/// descriptor number outlives its connection, though, and may be reused
/// for the next one, so every use first checks that the descriptor is
/// still a socket with the same local and peer addresses (a TCP
/// connection is unique by them while it lives). The hub also only uses it
/// on the connection's own thread, while the client's subscription lives,
/// which the connection's end drops in the same step as the socket.
#[derive(Debug)]
pub struct Disconnector {
    fd: RawFd,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Disconnector {
    /// For the connection carrying `request`.
    pub fn for_request(request: &HttpRequest) -> Option<Self> {
        let SocketFd(fd) = *request.conn_data::<SocketFd>()?;
        // SAFETY: this runs while the request is being handled, and the
        // HTTP/1 dispatcher handling it owns the connection's `TcpStream`
        // until the request is done, so `fd` is open and is this
        // connection's socket for the duration of this call.
        #[allow(unsafe_code)]
        let socket = unsafe { BorrowedFd::borrow_raw(fd) };
        Self::of(socket)
    }

    /// For the connection on `socket`, open now.
    fn of(socket: BorrowedFd<'_>) -> Option<Self> {
        let (local, peer) = addresses(socket)?;
        Some(Disconnector {
            fd: socket.as_raw_fd(),
            local,
            peer,
        })
    }

    /// Shuts the connection down both ways. The peer sees the connection
    /// end; the server's own reads and writes fail, which ends the request.
    /// Does nothing if the connection is gone.
    pub fn disconnect(&self) {
        if let Some(socket) = self.socket() {
            let _ = socket2::SockRef::from(&socket).shutdown(Shutdown::Both);
        }
    }

    /// The connection's socket, if the descriptor still is it.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: the descriptor may have been closed (then the calls below
        // fail with EBADF and nothing is done) or reused; it is only used
        // once its addresses show it is still this connection's socket.
        #[allow(unsafe_code)]
        let socket = unsafe { BorrowedFd::borrow_raw(self.fd) };
        (addresses(socket)? == (self.local, self.peer)).then_some(socket)
    }
}

/// A TCP socket's local and peer addresses; `None` for anything else.
fn addresses(socket: BorrowedFd<'_>) -> Option<(SocketAddr, SocketAddr)> {
    let socket = socket2::SockRef::from(&socket);
    let local = socket.local_addr().ok()?.as_socket()?;
    let peer = socket.peer_addr().ok()?.as_socket()?;
    Some((local, peer))
}

impl ClientSocket for Disconnector {
    /// The socket's send queue (`TIOCOUTQ`): bytes written but not yet
    /// acknowledged by the client. It shrinks as the client reads.
    fn unsent_bytes(&self) -> Option<u64> {
        let socket = self.socket()?;
        let mut queued: libc::c_int = 0;
        // SAFETY: `socket` is an open socket descriptor (checked above);
        // TIOCOUTQ writes one `c_int` through the pointer, which points at
        // one.
        #[allow(unsafe_code)]
        let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        (result == 0).then(|| u64::try_from(queued).unwrap_or(0))
    }

    fn cut(&self) {
        self.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    fn connection(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        (client, server)
    }

    #[test]
    fn watches_and_cuts_its_own_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client, server) = connection(&listener);
        let socket = Disconnector::of(server.as_fd()).expect("a TCP socket");
        assert_eq!(socket.unsent_bytes(), Some(0));
        socket.cut();
        let mut buffer = [0; 1];
        assert_eq!(
            client.read(&mut buffer).expect("read"),
            0,
            "the peer sees the end"
        );
    }

    #[test]
    fn leaves_alone_the_connection_that_reuses_its_descriptor() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (_old_client, mut server) = connection(&listener);
        let socket = Disconnector::of(server.as_fd()).expect("a TCP socket");
        // The old connection closes and the next one's socket gets its
        // number, as the kernel may give it: dup2 does both at once.
        let (mut client, next) = connection(&listener);
        // SAFETY: both descriptors are open sockets; `server` goes on
        // owning its number, now a copy of `next`'s socket.
        #[allow(unsafe_code)]
        let reused = unsafe { libc::dup2(next.as_raw_fd(), server.as_raw_fd()) };
        assert_eq!(reused, server.as_raw_fd(), "dup2");
        drop(next);

        assert_eq!(socket.unsent_bytes(), None, "not this connection's socket");
        socket.cut();
        server
            .write_all(b"x")
            .expect("the new connection is untouched");
        let mut buffer = [0; 1];
        client.read_exact(&mut buffer).expect("read");
        assert_eq!(&buffer, b"x");
    }
}
