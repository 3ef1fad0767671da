//! A real Redis Cluster per test: six `redis-server --cluster-enabled yes`
//! on free loopback ports, three masters and three replicas, joined with
//! `redis-cli --cluster create`. Nodes are stopped by PID (and die with the
//! test); a master can be killed to make its replica take over.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::redis::free_port;
use crate::{RedisServer, eventually};

/// Milliseconds a node may be silent before the cluster fails it over: short,
/// so failover tests stay short.
const NODE_TIMEOUT_MS: u32 = 1000;

#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts six nodes and makes them a cluster of three masters with a
    /// replica each; returns once every node sees the cluster as ok.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing (Debian's `redis-server`
    /// package has both; scripts/test.sh installs it).
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "chat-tests-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            let child = crate::process::die_with_parent(&mut Command::new("redis-server"))
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| {
                    panic!("cannot start redis-server (Debian package redis-server): {err}")
                });
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, dir };
        for node in &cluster.nodes {
            eventually(
                Duration::from_secs(10),
                "a cluster node to start",
                || async {
                    RedisServer::command_on(node.port, &["PING"])
                        .await
                        .contains("PONG")
                        .then_some(())
                },
            )
            .await;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli runs (Debian package redis-tools, with redis-server)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_ok(Duration::from_secs(30)).await;
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node, for `REDIS_CLUSTER_URLS`.
    pub fn seed_urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node says the cluster is ok and every slot
    /// is served.
    pub async fn wait_ok(&self, within: Duration) {
        eventually(within, "the cluster to be ok", || async {
            for node in self.nodes.iter().filter(|node| node.child.is_some()) {
                let info = RedisServer::command_on(node.port, &["CLUSTER", "INFO"]).await;
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let reply = RedisServer::command_on(self.any_port(), &["CLUSTER", "KEYSLOT", key]).await;
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap_or_else(|_| panic!("a slot, not {reply:?}"))
    }

    /// The port of the master serving `slot` now.
    pub async fn master_of(&self, slot: u16) -> u16 {
        let nodes = RedisServer::command_on(self.any_port(), &["CLUSTER", "NODES"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut bounds = range.split('-').filter_map(|b| b.parse::<u16>().ok());
                match (bounds.next(), bounds.next()) {
                    (Some(low), Some(high)) => (low..=high).contains(&slot),
                    (Some(only), None) => only == slot,
                    _ => false,
                }
            });
            if serves {
                let port = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|port| port.parse().ok());
                if let Some(port) = port {
                    return port;
                }
            }
        }
        panic!("no master serves slot {slot}:\n{nodes}")
    }

    /// The three masters' ports, in slot order.
    pub async fn masters(&self) -> Vec<u16> {
        let mut masters = Vec::new();
        for slot in [0, 8192, 16383] {
            masters.push(self.master_of(slot).await);
        }
        masters
    }

    /// A room name whose keys live on the master at `port`, from `prefix-0`,
    /// `prefix-1`... (rooms hash by their `{room}` tag).
    pub async fn room_on(&self, port: u16, prefix: &str) -> String {
        for n in 0..10_000 {
            let room = format!("{prefix}-{n}");
            let slot = self.slot_of(&format!("chat:{{{room}}}:seq")).await;
            if self.master_of(slot).await == port {
                return room;
            }
        }
        panic!("no room named {prefix}-N lands on the master at port {port}")
    }

    /// Waits until the replicas of the master at `port` have every write it
    /// took (so killing it loses nothing acknowledged).
    pub async fn wait_replicated(&self, port: u16) {
        eventually(Duration::from_secs(10), "replicas caught up", || async {
            let info = RedisServer::command_on(port, &["INFO", "replication"]).await;
            let offset = field(&info, "master_repl_offset")?;
            let caught_up = info
                .lines()
                .filter(|line| line.starts_with("slave"))
                .all(|line| line.contains(&format!("offset={offset},")));
            caught_up.then_some(())
        })
        .await;
    }

    /// Kills (SIGKILL) the node on `port`: its replica takes over after the
    /// node timeout.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of this cluster");
        crate::process::kill_now(&mut node.child);
    }

    fn any_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|node| node.child.is_some())
            .map(|node| node.port)
            .expect("a running node")
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            crate::process::kill_now(&mut node.child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
