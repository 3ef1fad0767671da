//! A real `redis-server` per test, on a free port, killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A Redis server owned by one test. Data lives in memory only, like a
/// cache that loses everything when restarted.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server on a free port.
    ///
    /// # Panics
    /// If `redis-server` is not installed (set `REDIS_SERVER` to its path if
    /// it is not on `PATH`), or does not start.
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer { port, child: None };
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Its process id (for `/proc`), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL): connections drop, data is lost.
    pub fn kill(&mut self) {
        crate::process::kill_now(&mut self.child);
    }

    /// Starts the server again on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn().await,
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Runs one command with `redis-cli`-like simplicity over RESP.
    pub async fn command(&self, args: &[&str]) -> String {
        Self::command_on(self.port, args).await
    }

    /// Runs one command on the Redis at 127.0.0.1:`port`; the raw reply,
    /// empty if nothing answers there.
    pub async fn command_on(port: u16, args: &[&str]) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
            return String::new();
        };
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write to Redis");
        let mut reply = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        while resp_end(&reply, 0).is_none() {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => reply.extend_from_slice(&buffer[..read]),
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }

    async fn spawn(&mut self) -> bool {
        let binary = std::env::var_os("REDIS_SERVER")
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
        let spawned = crate::process::die_with_parent(&mut Command::new(&binary))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server not found ({}): these tests need a real Redis. Install it \
                 (`apt-get install redis-server`) or run scripts/test.sh, which does.",
                binary.display()
            ),
            Err(err) => panic!("cannot start {}: {err}", binary.display()),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.answers_ping().await {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_exited)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        false
    }

    async fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where the RESP value starting at `at` ends, if `reply` holds all of it.
fn resp_end(reply: &[u8], at: usize) -> Option<usize> {
    let line_end = at + reply.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(reply.get(at + 1..line_end)?).ok()?;
    let after_line = line_end + 2;
    match reply.get(at)? {
        b'$' => {
            let length: i64 = header.parse().ok()?;
            if length < 0 {
                return Some(after_line);
            }
            let end = after_line + usize::try_from(length).ok()? + 2;
            (reply.len() >= end).then_some(end)
        }
        b'*' => {
            let count: i64 = header.parse().ok()?;
            let mut end = after_line;
            for _ in 0..count.max(0) {
                end = resp_end(reply, end)?;
            }
            Some(end)
        }
        _ => Some(after_line),
    }
}

/// A port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}
