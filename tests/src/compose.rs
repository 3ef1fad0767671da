//! The docker-compose deployment, for real: `docker-compose up` of the
//! repository's docker-compose.yml on a Docker engine, with the images
//! scripts/images.sh builds (or others named by `REDIS_IMAGE`,
//! `NGINX_IMAGE`, `SERVICES_IMAGE`), under a project name of its own per
//! test, taken down with its volumes (`down -v`) when the [`Deployment`] is
//! dropped, whether the test passed or not.
//!
//! Nothing here skips: without a Docker engine, docker-compose or the
//! images, a test fails and says which is missing.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use chat_client::Transport;
use tokio::process::Command;

use crate::eventually;
use crate::gateway::repository;

/// The images scripts/images.sh builds and tags.
const IMAGES: [(&str, &str); 3] = [
    ("REDIS_IMAGE", "chat-local/redis:bookworm"),
    ("NGINX_IMAGE", "chat-local/nginx:bookworm"),
    ("SERVICES_IMAGE", "chat-services:latest"),
];

/// How long a deployment may take to come up (all replicas healthy).
const UP_WITHIN: Duration = Duration::from_secs(90);

/// The compose service of `transport`.
pub fn service_of(transport: Transport) -> &'static str {
    match transport {
        Transport::LongPoll => "longpoll-svc",
        Transport::Sse => "sse-svc",
        Transport::Ws => "ws-svc",
    }
}

/// The port each service listens on inside its container.
pub fn port_of(service: &str) -> u16 {
    match service {
        "longpoll-svc" => 8081,
        "sse-svc" => 8082,
        "ws-svc" => 8083,
        other => panic!("{other} is not one of the services"),
    }
}

/// One container of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub service: String,
    pub id: String,
}

impl Replica {
    pub fn short(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// A running compose project; `down -v` when dropped.
#[derive(Debug)]
pub struct Deployment {
    pub project: String,
    env: BTreeMap<String, String>,
    /// `http://127.0.0.1:<port>`: the gateway's plain HTTP port.
    pub http: String,
    /// `https://localhost:<port>`: the gateway's TLS port (HTTP/2).
    pub https: String,
}

/// Fails, saying what is missing, unless a Docker engine answers and
/// docker-compose is installed.
pub async fn require_docker() {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .await;
    match info {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "no Docker engine answers (`docker info` failed: {}): the compose tests need a \
             running Docker engine and docker-compose",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => panic!(
            "the docker command is missing ({err}): the compose tests need a Docker engine and \
             docker-compose (Debian: docker.io, docker-compose)"
        ),
    }
    let compose = Command::new("docker-compose").arg("version").output().await;
    assert!(
        compose.is_ok_and(|output| output.status.success()),
        "docker-compose is missing: the compose tests need it (Debian: docker-compose; \
         scripts/test.sh installs it)"
    );
}

impl Deployment {
    /// `docker-compose up -d` under a project named after `name` (and this
    /// process), with each `(service, replicas)` of `scale`, and `env` on
    /// top of the test defaults (no per-client limits, since every test
    /// client comes from one address; a short broker-loss grace). Returns
    /// once every container is healthy and the gateway answers on both
    /// ports.
    pub async fn up(name: &str, scale: &[(&str, usize)], env: &[(&str, &str)]) -> Self {
        require_docker().await;
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        for (var, image) in IMAGES {
            let image = std::env::var(var).unwrap_or_else(|_| image.to_owned());
            let found = Command::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}", &image])
                .output()
                .await
                .expect("docker runs");
            assert!(
                found.status.success(),
                "image {image} is missing: build the images with scripts/images.sh \
                 (scripts/test.sh does), or name others in {var}"
            );
            vars.insert(var.to_owned(), image);
        }
        for (var, value) in [
            ("GATEWAY_PORT", "127.0.0.1:"),
            ("GATEWAY_TLS_PORT", "127.0.0.1:"),
            ("PUBLISH_RATE_PER_SEC", "0"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("GATEWAY_CONNECTIONS_PER_ADDRESS", "0"),
            ("GATEWAY_PUBLISH_RATE_PER_SEC", "0"),
            ("BROKER_LOSS_GRACE_SECS", "3"),
            ("RUST_LOG", "info,actix_web=warn"),
        ] {
            vars.insert(var.to_owned(), value.to_owned());
        }
        for (var, value) in env {
            vars.insert((*var).to_owned(), (*value).to_owned());
        }
        let project = format!(
            "chattest{}{}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), ""),
            std::process::id()
        );
        let mut deployment = Deployment {
            project,
            env: vars,
            http: String::new(),
            https: String::new(),
        };
        let mut args = vec!["up".to_owned(), "-d".to_owned(), "--no-build".to_owned()];
        for (service, replicas) in scale {
            args.push("--scale".into());
            args.push(format!("{service}={replicas}"));
        }
        deployment.compose_ok(&args).await;
        deployment.wait_all_healthy(UP_WITHIN).await;
        let http_port = deployment.published_port(8080).await;
        let tls_port = deployment.published_port(8443).await;
        deployment.http = format!("http://127.0.0.1:{http_port}");
        deployment.https = format!("https://localhost:{tls_port}");
        let client = crate::app::http_client();
        let health = format!("{}/gateway/healthz", deployment.http);
        eventually(Duration::from_secs(30), "the gateway to answer", || async {
            client
                .get(&health)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        deployment
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(repository()).envs(&self.env);
        command
    }

    /// Runs `docker-compose -p <project> ARGS` and returns its output.
    pub async fn compose<S: AsRef<str>>(&self, args: &[S]) -> std::process::Output {
        self.command("docker-compose")
            .args(["-p", &self.project, "-f", "docker-compose.yml"])
            .args(args.iter().map(AsRef::as_ref))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("docker-compose runs")
    }

    /// As [`Self::compose`]; panics with its output unless it succeeds.
    pub async fn compose_ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let output = self.compose(args).await;
        let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        assert!(
            output.status.success(),
            "docker-compose {} failed: {}{}",
            shown.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The host port docker published for the gateway's `port`.
    async fn published_port(&self, port: u16) -> u16 {
        let out = self
            .compose_ok(&["port", "gateway", &port.to_string()])
            .await;
        out.trim()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no published port for gateway:{port}: {out:?}"))
    }

    /// The running containers of `service` (a killed or stopped one is not
    /// among them).
    pub async fn replicas(&self, service: &str) -> Vec<Replica> {
        let out = self
            .docker(&[
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .await;
        out.split_whitespace()
            .map(|id| Replica {
                service: service.to_owned(),
                id: id.to_owned(),
            })
            .collect()
    }

    /// `docker <args>`; panics with its output unless it succeeds.
    pub async fn docker<S: AsRef<str>>(&self, args: &[S]) -> String {
        let output = self
            .command("docker")
            .args(args.iter().map(AsRef::as_ref))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("docker runs");
        let shown: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        assert!(
            output.status.success(),
            "docker {} failed: {}",
            shown.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The health of a container: `healthy`, `starting`, `unhealthy`, or
    /// its state when it has no health check or is not running.
    pub async fn health(&self, replica: &Replica) -> String {
        self.docker(&[
            "inspect",
            "--format",
            "{{if and .State.Running .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
            &replica.id,
        ])
        .await
    }

    /// Waits until every container of the project runs and those with a
    /// health check are healthy.
    pub async fn wait_all_healthy(&self, within: Duration) {
        let ids = self.compose_ok(&["ps", "-q"]).await;
        let ids: Vec<String> = ids.split_whitespace().map(str::to_owned).collect();
        assert!(!ids.is_empty(), "the project has no containers");
        eventually(within, "every container healthy", || async {
            for id in &ids {
                let replica = Replica {
                    service: String::new(),
                    id: id.clone(),
                };
                let health = self.health(&replica).await;
                if health != "healthy" && health != "running" {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    /// Waits until `replica` runs and is healthy.
    pub async fn wait_healthy(&self, replica: &Replica, within: Duration) {
        eventually(
            within,
            &format!("{} {} healthy", replica.service, replica.short()),
            || async { (self.health(replica).await == "healthy").then_some(()) },
        )
        .await;
    }

    /// The name of this project's network `name` (`edge` or `backend`).
    pub fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// The address of `replica` on the `edge` network, reachable from the
    /// host (a bridge network's addresses are).
    pub async fn address(&self, replica: &Replica) -> String {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network("edge")
        );
        let ip = self
            .docker(&["inspect", "--format", &format, &replica.id])
            .await;
        assert!(!ip.is_empty(), "{} has no edge address", replica.short());
        format!("{ip}:{}", port_of(&replica.service))
    }

    /// `http://<address>` of `replica`: its own port, not the gateway.
    pub async fn base(&self, replica: &Replica) -> String {
        format!("http://{}", self.address(replica).await)
    }

    /// `replica`'s `/metrics` value of `chat_connected_clients`.
    pub async fn connected_clients(&self, replica: &Replica) -> u64 {
        self.metric(replica, "chat_connected_clients").await
    }

    /// The value of the metric `name` (no labels besides the instance's
    /// own) in `replica`'s `/metrics`.
    pub async fn metric(&self, replica: &Replica, name: &str) -> u64 {
        let url = format!("{}/metrics", self.base(replica).await);
        let text = crate::app::http_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|err| panic!("{url}: {err}"))
            .text()
            .await
            .expect("a metrics body");
        metric_value(&text, name).unwrap_or_else(|| panic!("{name} not in {url}"))
    }

    /// The last lines of `replica`'s log, to show when a test fails.
    pub async fn logs(&self, replica: &Replica) -> String {
        let output = self
            .command("docker")
            .args(["logs", "--tail", "400", &replica.id])
            .output()
            .await
            .expect("docker runs");
        // The answers it repeats (each refused request says why) are
        // counted, and the first and last shown.
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let (refusals, lines): (Vec<&str>, Vec<&str>) =
            all.lines().partition(|line| line.contains("answering 503"));
        let mut shown = lines[lines.len().saturating_sub(40)..].join("\n");
        if let (Some(first), Some(last)) = (refusals.first(), refusals.last()) {
            shown.push_str(&format!(
                "\n({} lines 'answering 503' left out; the first: {first}; the last: {last})",
                refusals.len()
            ));
        }
        shown
    }

    /// Waits until `replica`'s `/readyz` answers `status`; panics with its
    /// log after `within`.
    pub async fn wait_ready(&self, replica: &Replica, status: u16, within: Duration) {
        self.wait_on(replica, within, || async {
            let now = self.ready(replica).await;
            (now != status).then(|| format!("/readyz still {now}, not {status},"))
        })
        .await;
    }

    /// Waits until `replica` holds clients (`any`: at least one) or none
    /// (`!any`); panics with its log after `within`.
    pub async fn wait_clients(&self, replica: &Replica, any: bool, within: Duration) {
        self.wait_on(replica, within, || async {
            let now = self.connected_clients(replica).await;
            ((now > 0) != any).then(|| format!("still {now} clients"))
        })
        .await;
    }

    /// Checks `replica` every 100 ms until `unmet` says nothing is missing
    /// (`None`); panics with what it last said and the replica's log after
    /// `within`.
    async fn wait_on<F, Fut>(&self, replica: &Replica, within: Duration, mut unmet: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<String>>,
    {
        let deadline = tokio::time::Instant::now() + within;
        while let Some(now) = unmet().await {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{} {}: {now} after {within:?}; its log:\n{}",
                    replica.service,
                    replica.short(),
                    self.logs(replica).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `replica`'s `/readyz` status (0 when it does not answer).
    pub async fn ready(&self, replica: &Replica) -> u16 {
        let url = format!("{}/readyz", self.base(replica).await);
        crate::app::http_client()
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_or(0, |response| response.status().as_u16())
    }
}

/// The value of the first sample of `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map(|value| value as u64)
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let output = std::process::Command::new("docker-compose")
            .current_dir(repository())
            .envs(&self.env)
            .args(["-p", &self.project, "-f", "docker-compose.yml"])
            .args(["down", "-v", "--remove-orphans", "-t", "2"])
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "docker-compose down of {} failed: {}",
                self.project,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => eprintln!("docker-compose down of {}: {err}", self.project),
        }
    }
}
