//! Services as real processes: the binaries `cargo build` made, started
//! with their environment, stopped by PID (SIGTERM or SIGKILL), never by name.
//!
//! The binaries must be built first (`cargo build --workspace`, which
//! `scripts/test.sh` does); a missing one fails the test saying so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_client::Transport;

use crate::redis::free_port;
use crate::{RedisServer, eventually};

/// The binary that serves `transport`.
pub fn binary(transport: Transport) -> &'static str {
    match transport {
        Transport::LongPoll => "longpoll-svc",
        Transport::Sse => "sse-svc",
        Transport::Ws => "ws-svc",
    }
}

/// A running service process. Killed (SIGKILL) when dropped, so a failing
/// test leaves no orphan behind.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    pub port: u16,
    pub base: String,
    child: Option<Child>,
    vars: HashMap<String, String>,
    /// Where its log (stderr) goes, if the test reads it.
    log: Option<PathBuf>,
}

/// The directory holding the workspace's binaries: next to the test binary
/// (`target/<profile>/deps/..`).
fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

impl ServiceProcess {
    /// Starts `binary` (e.g. `"sse-svc"`) on a free port with `vars` and
    /// waits until `/readyz` answers `200`.
    pub async fn start(binary: &str, redis: Option<&RedisServer>, vars: &[(&str, String)]) -> Self {
        Self::start_with(binary, redis, vars, None).await
    }

    /// As [`Self::start`], with its log (stderr) written to a file that
    /// [`Self::log`] reads.
    pub async fn start_logged(
        binary: &str,
        redis: Option<&RedisServer>,
        vars: &[(&str, String)],
    ) -> Self {
        let log = std::env::temp_dir().join(format!(
            "chat-tests-{binary}-{}-{}.log",
            std::process::id(),
            free_port()
        ));
        Self::start_with(binary, redis, vars, Some(log)).await
    }

    async fn start_with(
        binary: &str,
        redis: Option<&RedisServer>,
        vars: &[(&str, String)],
        log: Option<PathBuf>,
    ) -> Self {
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        for (name, value) in crate::TEST_DEFAULTS {
            env.entry(name.into()).or_insert_with(|| value.into());
        }
        env.entry("RUST_LOG".into())
            .or_insert_with(|| "warn".into());
        if let Some(redis) = redis {
            env.entry("REDIS_URL".into()).or_insert_with(|| redis.url());
        }
        let mut process = ServiceProcess {
            name: binary.to_owned(),
            port: 0,
            base: String::new(),
            child: None,
            vars: env,
            log,
        };
        process.launch().await;
        process
    }

    /// Everything it logged so far (started with [`Self::start_logged`]).
    pub fn log(&self) -> String {
        let path = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Whether it was started and has not been killed or terminated.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, for signals and `/proc`.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the process is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn launch(&mut self) {
        let path = binary_dir().join(&self.name);
        assert!(
            path.exists(),
            "{} is not built: run `cargo build --workspace` (scripts/test.sh does) first",
            path.display()
        );
        for _ in 0..5 {
            let port = free_port();
            let stderr = match &self.log {
                Some(log) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map(Stdio::from)
                    .expect("log file opens"),
                None => Stdio::inherit(),
            };
            let child = die_with_parent(&mut Command::new(&path))
                .envs(&self.vars)
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {}: {err}", path.display()));
            self.child = Some(child);
            self.port = port;
            self.base = format!("http://127.0.0.1:{port}");
            if self.wait_ready(Duration::from_secs(10)).await {
                return;
            }
            self.kill();
        }
        panic!("{} did not become ready on any of 5 ports", self.name);
    }

    async fn wait_ready(&mut self, within: Duration) -> bool {
        let client = crate::app::http_client();
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if let Ok(response) = client.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The value of one series in its `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        crate::app::metric(&crate::app::http_client(), &self.base, name).await
    }

    /// Resident memory in bytes, from `/proc/<pid>/status`.
    pub fn resident_bytes(&self) -> u64 {
        resident_bytes_of(self.pid())
    }

    /// Samples resident memory every 50 ms until the sampler is stopped.
    pub fn sample_memory(&self) -> MemorySampler {
        let pid = self.pid();
        let peak = Arc::new(AtomicU64::new(resident_bytes_of(pid)));
        let task = tokio::spawn({
            let peak = Arc::clone(&peak);
            async move {
                loop {
                    peak.fetch_max(resident_bytes_of(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        MemorySampler { peak, task }
    }

    /// Sends SIGTERM (by PID) without waiting.
    pub fn signal_terminate(&self) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit on its own; panics if it is still
    /// running after `within`, or exits with a failure.
    pub async fn wait_exit(&mut self, within: Duration) {
        let mut child = self.child.take().expect("running");
        let exited = eventually(within, &format!("{} to exit", self.name), || {
            let exited = child.try_wait().ok().flatten();
            async move { exited }
        })
        .await;
        assert!(exited.success(), "{} exited with {exited}", self.name);
    }

    /// SIGTERM, then waits for the exit; returns how long it took.
    pub async fn terminate(&mut self, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        self.signal_terminate();
        self.wait_exit(within).await;
        started.elapsed()
    }

    /// SIGKILL: the process dies at once, without saying goodbye.
    pub fn kill(&mut self) {
        kill_now(&mut self.child);
    }

    /// Starts the same binary again, on a new port, with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

/// Resident memory of a process in bytes (0 once it is gone).
pub fn resident_bytes_of(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    kib * 1024
}

/// The highest resident memory seen while it ran.
#[derive(Debug)]
pub struct MemorySampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl MemorySampler {
    /// Stops sampling; the peak in bytes.
    pub fn peak(self) -> u64 {
        self.task.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Makes the kernel SIGKILL the child if this test process dies without
/// running destructors (e.g. killed by the runner on a timeout), so no
/// service or Redis outlives its test. The signal follows the spawning
/// thread: spawn from the test's async code (a runtime worker, alive for the
/// whole test), not from a short-lived blocking thread.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; prctl is
    // async-signal-safe and changes only the child's own settings.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// SIGKILLs a child process, if there is one, and reaps it.
pub(crate) fn kill_now(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}
