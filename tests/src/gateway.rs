//! The gateway (Debian's nginx) in front of a [`Cluster`], started the way
//! `scripts/run.sh` starts it, from the same configuration files that
//! docker-compose mounts: what is tested here is what is deployed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_client::Transport;

use crate::cluster::Cluster;
use crate::eventually;
use crate::redis::free_port;

#[derive(Debug)]
pub struct Gateway {
    pub port: u16,
    pub base: String,
    nginx: Child,
    state: PathBuf,
}

/// The repository's root (the parent of this crate).
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Gateway {
    /// Starts nginx on a free port in front of every running instance of
    /// `cluster`; returns once it answers.
    ///
    /// # Panics
    /// If nginx is not installed (Debian's `nginx-light`; scripts/test.sh
    /// installs it).
    pub async fn start(cluster: &Cluster) -> Self {
        let addresses = |transport: Transport| {
            cluster
                .instances(transport)
                .iter()
                .filter(|instance| instance.is_running())
                .map(|instance| format!("127.0.0.1:{}", instance.port))
                .collect::<Vec<_>>()
                .join(",")
        };
        Self::in_front_of(Transport::ALL.map(addresses), &[]).await
    }

    /// Starts nginx on a free port in front of the given instances of each
    /// service (`host:port`, comma-separated; in [`Transport::ALL`] order),
    /// with `env` for its settings (`ALLOWED_ORIGINS`, `GATEWAY_*`).
    pub async fn in_front_of(addresses: [String; 3], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let state = std::env::temp_dir().join(format!("chat-tests-gateway-{port}"));
        let nginx = {
            use std::os::unix::process::CommandExt;
            crate::process::die_with_parent(&mut Command::new(
                repository().join("scripts/gateway.sh"),
            ))
            .arg(&state)
            .arg(format!("127.0.0.1:{port}"))
            .args(addresses)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("scripts/gateway.sh starts (is nginx installed? Debian package nginx-light)")
        };
        let gateway = Gateway {
            port,
            base: format!("http://127.0.0.1:{port}"),
            nginx,
            state,
        };
        let client = crate::app::http_client();
        eventually(Duration::from_secs(10), "the gateway to answer", || async {
            let response = client
                .get(gateway.url("/gateway/healthz"))
                .send()
                .await
                .ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // nginx's master and workers share the process group.
        let group = format!("-{}", self.nginx.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.nginx.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
