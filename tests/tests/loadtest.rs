//! The load tester, run briefly against each service: it must report a
//! complete delivery (and so is itself checked), with every figure filled in.

use chat_tests::process::ServiceProcess;
use chat_tests::{AppBuilder, RedisServer};
use clap::Parser;
use loadtest::Cli;

async fn short_run(
    service: common::Service,
    transport: &str,
    extra: &[&str],
) -> loadtest::report::Report {
    let redis = RedisServer::start().await;
    let app = AppBuilder::new(service).redis(&redis).spawn().await;
    let mut args = vec!["loadtest", transport, "--url", &app.base];
    args.extend([
        "--subscribers",
        "20",
        "--publishers",
        "2",
        "--rate",
        "100",
        "--duration",
        "2",
        "--size",
        "64",
    ]);
    args.extend(extra);
    let cli = Cli::parse_from(args);
    let report = loadtest::run(&cli, &app.base, "loadtest")
        .await
        .expect("the run happens");
    eprintln!("{report}");
    report
}

fn assert_sane(report: &loadtest::report::Report) {
    assert!(report.complete(), "{report}");
    // The target is 200 in 2 s; a debug build sharing a busy machine with
    // its own load tester reaches a fraction of it (the benchmark, in
    // release, measures throughput), but the publishers must keep going.
    assert!(
        report.published >= 20,
        "at least 10/s published for 2 s at a target of 100/s: {report}"
    );
    assert_eq!(report.delivered, report.published * 20);
    assert!(
        report.delivery_latency_ms.p50 > 0.0 && report.delivery_latency_ms.max < 5_000.0,
        "{report}"
    );
    assert!(
        report.server_after.resident_bytes.is_some(),
        "the service's metrics were read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_measures_long_polling() {
    assert_sane(&short_run(longpoll_svc::service(), "longpoll", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_measures_sse() {
    assert_sane(&short_run(sse_svc::service(), "sse", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_measures_websocket_publishing_over_websocket() {
    assert_sane(&short_run(ws_svc::service(), "ws", &["--publish-over", "ws"]).await);
}

/// A service and its Redis as real processes, so that `/proc` holds what
/// they spent and nothing of the load tester's.
async fn service_process(binary: &str) -> (RedisServer, ServiceProcess, Vec<String>) {
    let redis = RedisServer::start().await;
    let service = ServiceProcess::start(
        binary,
        Some(&redis),
        &[("LONGPOLL_TIMEOUT_SECS", "60".to_owned())],
    )
    .await;
    let pids = vec![
        service.pid().to_string(),
        redis.pid().expect("Redis runs").to_string(),
    ];
    (redis, service, pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_spreads_the_load_over_rooms_and_charges_the_servers_cpu_to_it() {
    let (_redis, service, pids) = service_process("sse-svc").await;
    let mut args = vec!["loadtest", "sse", "--url", &service.base];
    args.extend(["--rooms", "5", "--subscribers", "20", "--publishers", "3"]);
    args.extend(["--rate", "100", "--duration", "2", "--size", "64"]);
    args.extend(["--server-pid", &pids[0], "--server-pid", &pids[1]]);
    let cli = Cli::parse_from(args);
    let report = loadtest::run(&cli, &service.base, "spread")
        .await
        .expect("the run happens");
    eprintln!("{report}");
    assert!(report.complete(), "{report}");
    assert_eq!(report.rooms, 5);
    // Four subscribers per room: every message reaches four, not twenty.
    assert_eq!(report.expected_deliveries, report.published * 4, "{report}");
    assert_eq!(report.delivered, report.expected_deliveries);

    let cpu = report.server_cpu.as_ref().expect("--server-pid was given");
    let names: Vec<&str> = cpu.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sse-svc", "redis-server"]);
    assert!(
        cpu.processes[0].cpu_seconds > 0.0,
        "the service worked for ~{} deliveries: {cpu:?}",
        report.delivered
    );
    let total: f64 = cpu.processes.iter().map(|p| p.cpu_seconds).sum();
    assert_eq!(cpu.cpu_seconds, total);
    let per_delivery = cpu.deliveries_per_cpu_second.expect("CPU was spent");
    assert!((per_delivery - report.delivered as f64 / total).abs() < 1e-6);
    let per_message = cpu.cpu_us_per_message.expect("messages were published");
    assert!((per_message - total * 1e6 / report.published as f64).abs() < 1e-6);
    // The window is the publishing and the drain, not the connecting.
    assert!(
        cpu.window_seconds >= 2.0 && cpu.window_seconds < 2.0 + 10.0,
        "{cpu:?}"
    );
    // A CPU-second on loopback delivers thousands, not millions, nor a handful.
    assert!(
        (100.0..5_000_000.0).contains(&per_delivery),
        "{per_delivery} deliveries per CPU-second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_measures_publishing_alone_and_refuses_a_wrong_pid() {
    let (_redis, service, pids) = service_process("longpoll-svc").await;
    let args = [
        "loadtest",
        "longpoll",
        "--subscribers",
        "0",
        "--rate",
        "0",
        "--publishers",
        "2",
        "--duration",
        "1",
        "--server-pid",
        &pids[0],
        "--server-pid",
        &pids[1],
    ];
    let report = loadtest::run(&Cli::parse_from(args), &service.base, "alone")
        .await
        .expect("the run happens");
    eprintln!("{report}");
    assert!(report.complete() && report.published > 20, "{report}");
    assert_eq!(report.expected_deliveries, 0);
    let cpu = report.server_cpu.as_ref().expect("measured");
    assert!(
        cpu.processes[1].cpu_seconds > 0.0,
        "Redis ran every publish's script"
    );
    assert!(cpu.cpu_us_per_message.expect("published") > 0.0);

    let wrong = [
        "loadtest",
        "longpoll",
        "--server-pid",
        "4294967295",
        "--duration",
        "1",
    ];
    let err = loadtest::run(&Cli::parse_from(wrong), &service.base, "alone")
        .await
        .expect_err("no such process");
    assert!(err.contains("/proc/4294967295"), "{err}");
}

async fn idle_run(binary: &str, transport: &str, connections: &str) -> loadtest::idle::IdleReport {
    let (_redis, service, pids) = service_process(binary).await;
    let args = [
        "loadtest",
        transport,
        "--idle",
        connections,
        "--settle",
        "1",
        "--server-pid",
        &pids[0],
        "--source-ip",
        "127.0.0.1,127.0.0.2",
    ];
    let report = loadtest::idle::run(&Cli::parse_from(args), &service.base, "idle")
        .await
        .expect("the run happens");
    eprintln!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_measures_memory_per_idle_websocket() {
    let report = idle_run("ws-svc", "ws", "500").await;
    assert!(report.complete(), "{report}");
    assert_eq!(report.opened, 500);
    let per = report.bytes_per_connection.expect("connections held");
    // A socket costs the service something, and far less than 1 MiB.
    assert!(per > 0.0 && per < 1_048_576.0, "{report}");
    assert!(report.held.total_bytes > report.before.total_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tester_holds_polls_idle() {
    let report = idle_run("longpoll-svc", "longpoll", "300").await;
    assert!(report.complete(), "held, not answered: {report}");
    assert!(report.bytes_per_connection.expect("held") > 0.0, "{report}");
}
