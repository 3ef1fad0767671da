//! Raw sockets for clients that misbehave on purpose: ones that never read,
//! read slowly, or never finish their request.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

/// Connects to 127.0.0.1:`port` with a receive buffer of `recv_buffer`
/// bytes (so the server's writes back up quickly when the client does not
/// read), sends `request`, and reads nothing.
pub fn slow_socket(port: u16, request: &str, recv_buffer: usize) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .set_recv_buffer_size(recv_buffer)
        .expect("receive buffer size");
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    socket.connect(&address.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.write_all(request.as_bytes()).expect("request sent");
    stream
}

/// A WebSocket upgrade request for `path`.
pub fn websocket_upgrade(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads from `socket` until it is closed or `within` passes; returns the
/// bytes read and whether the peer closed the connection.
pub fn drain(socket: &mut TcpStream, within: std::time::Duration) -> (usize, bool) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
            .expect("timeout");
        match socket.read(&mut buffer) {
            Ok(0) => return (total, true),
            Ok(read) => total += read,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (total, false);
            }
            Err(_) => return (total, true),
        }
    }
    (total, false)
}

/// Sends `bytes` on a fresh connection to 127.0.0.1:`port` and returns the
/// status code of the answer, or 0 if the server closed the connection
/// without one. Panics if nothing happens within `within` (a hung server).
pub async fn exchange(port: u16, bytes: &[u8], within: std::time::Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        // The server may answer (and close) before taking everything.
        let _ = stream.write_all(bytes).await;
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => head.extend_from_slice(&buffer[..read]),
            }
        }
        let text = String::from_utf8_lossy(&head);
        text.strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(within, talk)
        .await
        .expect("the server answered or closed in time")
}
