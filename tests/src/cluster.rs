//! A whole deployment on this machine: one Redis and real service
//! processes, several instances of each transport, as a load balancer would
//! see them.

use std::time::Duration;

use chat_client::Transport;

use crate::process::{ServiceProcess, binary};
use crate::{RedisServer, eventually};

#[derive(Debug)]
pub struct Cluster {
    pub redis: RedisServer,
    /// Per transport (in [`Transport::ALL`] order), its instances.
    instances: Vec<Vec<ServiceProcess>>,
}

fn slot(transport: Transport) -> usize {
    Transport::ALL
        .iter()
        .position(|t| *t == transport)
        .unwrap_or(0)
}

impl Cluster {
    /// Redis and `per_transport` instances of each service with `vars`,
    /// started at once; returns when every instance is ready.
    pub async fn start(per_transport: usize, vars: &[(&str, String)]) -> Self {
        let redis = RedisServer::start().await;
        let mut instances = Vec::new();
        for transport in Transport::ALL {
            let starting = (0..per_transport)
                .map(|_| ServiceProcess::start(binary(transport), Some(&redis), vars));
            instances.push(futures_util::future::join_all(starting).await);
        }
        Cluster { redis, instances }
    }

    /// Every instance of `transport`, running or not.
    pub fn instances(&self, transport: Transport) -> &[ServiceProcess] {
        &self.instances[slot(transport)]
    }

    pub fn instance(&self, transport: Transport, index: usize) -> &ServiceProcess {
        &self.instances[slot(transport)][index]
    }

    pub fn instance_mut(&mut self, transport: Transport, index: usize) -> &mut ServiceProcess {
        &mut self.instances[slot(transport)][index]
    }

    /// Adds one more instance of `transport` (e.g. one started after an
    /// outage, knowing nothing); returns its index.
    pub async fn add(&mut self, transport: Transport, vars: &[(&str, String)]) -> usize {
        let process = ServiceProcess::start(binary(transport), Some(&self.redis), vars).await;
        let list = &mut self.instances[slot(transport)];
        list.push(process);
        list.len() - 1
    }

    pub fn base(&self, transport: Transport, index: usize) -> String {
        self.instance(transport, index).base.clone()
    }

    /// The instances of `transport`, starting with `first`: what a
    /// subscriber connected to `first` falls back on.
    pub fn bases_from(&self, transport: Transport, first: usize) -> Vec<String> {
        let list = &self.instances[slot(transport)];
        (0..list.len())
            .map(|offset| list[(first + offset) % list.len()].base.clone())
            .collect()
    }

    /// Every running instance's base URL.
    pub fn all_bases(&self) -> Vec<String> {
        let running = self
            .instances
            .iter()
            .flatten()
            .filter(|process| process.is_running());
        running.map(|process| process.base.clone()).collect()
    }

    /// Waits until every running instance answers `/readyz` with `200`.
    pub async fn wait_ready(&self, within: Duration) {
        let client = crate::app::http_client();
        for base in self.all_bases() {
            eventually(within, &format!("{base} to be ready"), || async {
                let response = client.get(format!("{base}/readyz")).send().await.ok()?;
                (response.status() == 200).then_some(())
            })
            .await;
        }
    }
}
