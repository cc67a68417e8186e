//! Measures the scheduler-side prober: `tasks` watched tasks, one HTTP check each every second,
//! against one loopback server, for `seconds`, with `cap` probes in flight at most.
//! Prints probes per second, late and failed results, CPU and memory; asserts nothing.
//!
//!     cargo run --release -p pacer-health --example prober_bench [tasks] [seconds] [cap]

use pacer_core::app::HealthCheck;
use pacer_core::health::{ProbeCheck, ProbeOutcome, ProbeSpec, Watch};
use pacer_core::id::{InstanceId, PathId, TaskId};
use pacer_core::time::Timestamp;
use pacer_health::{ProbeKinds, ProbeResult, Prober};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn proc_stat() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_mb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    (ticks / 100.0, rss_mb)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tasks = args.first().copied().unwrap_or(1000);
    let seconds = args.get(1).copied().unwrap_or(10) as u64;
    let cap = args.get(2).copied().unwrap_or(256);

    // A deep accept queue: the server stands for many tasks, each with its own listener.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let port = u32::from(listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });

    let check: HealthCheck = serde_json::from_value(serde_json::json!({
        "protocol": "HTTP", "path": "/health", "intervalSeconds": 1, "timeoutSeconds": 1
    }))
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (cpu0, rss0) = proc_stat();
    let mut prober = Prober::new(ProbeKinds::builtin(), cap, tx);
    let app = PathId::parse_app_id("/bench", &PathId::root()).unwrap();
    for n in 0..tasks {
        let iid = InstanceId::new(&app, &format!("00000000-0000-1000-8000-{n:012}"));
        prober.apply(Watch::Start(Arc::new(ProbeSpec {
            task_id: TaskId::new(&iid, 1),
            instance_id: iid,
            app_id: app.clone(),
            version: Timestamp::EPOCH,
            host: "127.0.0.1".into(),
            host_ports: vec![],
            checks: vec![ProbeCheck {
                index: 0,
                check: check.clone(),
                port: Some(port),
            }],
            readiness: None,
        })));
    }
    let (_, rss_watched) = proc_stat();
    let (mut healthy, mut late, mut failed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while let Ok(Some(r)) = tokio::time::timeout_at(until, rx.recv()).await {
        if let ProbeResult::Health(h) = r {
            match h.outcome {
                ProbeOutcome::Healthy => healthy += 1,
                ProbeOutcome::Late => late += 1,
                other => {
                    if failed == 0 {
                        println!("first failure: {other:?}");
                    }
                    failed += 1
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, rss1) = proc_stat();
    // The first probe of each task comes within one interval.
    let expected = tasks as f64 * (seconds as f64 - 1.0);
    println!("tasks={tasks} interval=1s cap={cap} seconds={seconds}");
    println!(
        "probes:   {:>8.0}/s healthy ({healthy} of ~{expected:.0} due), {late} late, {failed} failed",
        healthy as f64 / elapsed
    );
    println!(
        "cpu:      {:>8.2} s over {elapsed:.1} s ({:.0} µs per probe, probe and server together)",
        cpu1 - cpu0,
        (cpu1 - cpu0) * 1e6 / healthy.max(1) as f64
    );
    println!(
        "memory:   {:>8.1} MB while watching ({:.1} KB per task), {:.1} MB at the end",
        rss_watched,
        (rss_watched - rss0) * 1024.0 / tasks as f64,
        rss1
    );
}
