//! Pacer on a simulated Mesos cluster at scale (issue 8's W1–W4). Starts the master simulator
//! in this process (1,000 agents of 100 cpus / 500 GB, tasks RUNNING as soon as launched) and
//! the release `pacer` against it, then measures:
//!
//! - W1: 1,000 one-instance apps POSTed concurrently → until every deployment succeeded;
//! - W2: one app scaled to 10,000 instances → until `tasksRunning == 10000`;
//! - W3: the same app scaled to `W3_INSTANCES` (default 100,000): tasks/s and Pacer's peak RSS;
//! - W4: `GET /v2/apps?embed=apps.tasks` and `GET /v2/tasks` at 10,000 tasks: p50/p99 latency
//!   and requests/s at concurrency 1 and 32, without and with `Accept-Encoding: gzip`.
//!
//! W2 and W3 poll `GET /v2/apps/w2` (every task embedded, as Marathon answers it) like a
//! deployment watcher would.
//!
//! Run: `cargo build --release --bin pacer --example mesos_bench &&
//!       ./target/release/examples/mesos_bench [w3_instances] [--skip-w4]`

#[path = "common/mod.rs"]
mod common;

use pacer_mesos_sim::{Sim, SimConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

fn get_json(a: &ureq::Agent, url: &str) -> serde_json::Value {
    a.get(url).call().unwrap().into_json().unwrap()
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not done after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn running(a: &ureq::Agent, base: &str, app: &str) -> u64 {
    get_json(a, &format!("{base}/v2/apps/{app}"))["app"]["tasksRunning"]
        .as_u64()
        .unwrap_or(0)
}

/// `requests` GETs of `path` (with `headers`) spread over `concurrency` threads:
/// (p50 ms, p99 ms, req/s, body bytes as sent, the first request's ms).
fn load(
    port: u16,
    path: &str,
    headers: &'static str,
    concurrency: usize,
    requests: usize,
) -> (f64, f64, f64, usize, f64) {
    let size = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let size = size.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut conn = common::connect(port);
                let mut body = Vec::new();
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    let status = common::exchange(&mut conn, "GET", &path, headers, "", &mut body);
                    assert_eq!(status.unwrap(), 200);
                    assert!(body.len() > 2);
                    size.store(body.len(), Ordering::Relaxed);
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let per_thread: Vec<Vec<f64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first = per_thread[0].first().copied().unwrap_or(0.0);
    let mut all: Vec<f64> = per_thread.into_iter().flatten().collect();
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (
        pct(0.50),
        pct(0.99),
        all.len() as f64 / secs,
        size.load(Ordering::Relaxed),
        first,
    )
}

fn main() {
    let w3: u64 = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with("--"))
        .map(|s| s.parse().expect("w3 instances"))
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt
        .block_on(Sim::start(SimConfig {
            agents: 1000,
            agent_cpus: 100.0,
            agent_mem_mb: 500_000.0,
            agent_disk_mb: 1_000_000.0,
            agent_ports: vec![(10_000, 20_000)],
            starting_after: Duration::ZERO,
            running_after: Duration::ZERO,
            allocation_interval: Duration::from_millis(200),
            ..SimConfig::default()
        }))
        .expect("start the simulator");
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--master",
        &sim.url(),
        "--launch_tokens",
        "100000",
        "--launch_token_refresh_interval",
        "1000",
        "--max_instances_per_offer",
        "100",
        "--decline_offer_duration",
        "1000",
        "--min_revive_offers_interval",
        "100",
        // W1 runs 1,000 deployments at once (Marathon's default allows 100).
        "--max_running_deployments",
        "2000",
    ];
    let d = common::start(dir.path(), &flags);
    let base = format!("http://127.0.0.1:{}", d.port);
    let a = agent();
    wait_until("registration", Duration::from_secs(30), || {
        get_json(&a, &format!("{base}/v2/info"))["frameworkId"].is_string()
    });
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("machine: {cpus} cpus; commit {commit}; simulator: 1000 agents x 100 cpus / 500 GB");
    println!("pacer flags: {}", flags[2..].join(" "));

    // W1
    let posted = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let base = base.clone();
            let posted = posted.clone();
            std::thread::spawn(move || {
                let a = agent();
                for i in (t..1000).step_by(32) {
                    let body = serde_json::json!({"id": format!("/w1/app-{i}"), "cmd": "sleep 1000",
                        "cpus": 0.01, "mem": 8, "instances": 1});
                    let r = a.post(&format!("{base}/v2/apps")).send_json(body).unwrap();
                    assert_eq!(r.status(), 201);
                    posted.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let posts = start.elapsed();
    wait_until("W1 deployments", Duration::from_secs(600), || {
        get_json(&a, &format!("{base}/v2/deployments"))
            .as_array()
            .is_some_and(|d| d.is_empty())
    });
    let w1 = start.elapsed();
    println!(
        "W1: 1000 apps POSTed in {:.2} s; all deployments succeeded after {:.2} s",
        posts.as_secs_f64(),
        w1.as_secs_f64()
    );

    // W2
    let start = Instant::now();
    let body = serde_json::json!({"id": "/w2", "cmd": "sleep 1000", "cpus": 0.001, "mem": 1,
        "instances": 10_000});
    let r = a.post(&format!("{base}/v2/apps")).send_json(body).unwrap();
    assert_eq!(r.status(), 201);
    // From before the POST: the 201 itself waits for 10,000 instance records to be written.
    wait_until("W2", Duration::from_secs(600), || {
        running(&a, &base, "w2") >= 10_000
    });
    let t = start.elapsed();
    println!(
        "W2: 10000 instances running after {:.2} s ({:.0} tasks/s)",
        t.as_secs_f64(),
        10_000.0 / t.as_secs_f64()
    );

    println!("pacer RSS after W2: {:.0} MB", rss_mb(d.child.id()));
    // W4 at 10,000 tasks (plus W1's 1,000). `--skip-w4` leaves it out, so W3's memory is not
    // measured on top of what 32 concurrent renders of 11,000 tasks left in the heap.
    let skip_w4 = std::env::args().any(|a| a == "--skip-w4");
    // Without and with `Accept-Encoding: gzip` (what most HTTP client libraries send).
    let gzip = "Accept-Encoding: gzip\r\n";
    for (path, headers) in [
        ("/v2/apps?embed=apps.tasks", ""),
        ("/v2/tasks", ""),
        ("/v2/apps?embed=apps.tasks", gzip),
        ("/v2/tasks", gzip),
    ] {
        if skip_w4 {
            break;
        }
        for (c, n) in [(1, 100), (32, 320)] {
            let (p50, p99, rps, size, first) = load(d.port, path, headers, c, n);
            let how = if headers.is_empty() { "" } else { " (gzip)" };
            // At concurrency 1 the first request renders the body; the others reuse it.
            let cold = if c == 1 {
                format!(", first request {first:.1} ms")
            } else {
                String::new()
            };
            println!(
                "W4: GET {path}{how} at 11000 tasks, concurrency {c}: p50 {p50:.1} ms, p99 {p99:.1} ms, {rps:.1} req/s, {:.0} KB{cold}",
                size as f64 / 1024.0
            );
        }
    }

    // W3: its own peak (writing 5 to clear_refs resets the peak RSS W4 left).
    let _ = std::fs::write(format!("/proc/{}/clear_refs", d.child.id()), "5");
    let start = Instant::now();
    let r = a
        .put(&format!("{base}/v2/apps/w2"))
        .send_json(serde_json::json!({"instances": w3}))
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until("W3", Duration::from_secs(1200), || {
        running(&a, &base, "w2") >= w3
    });
    let t = start.elapsed();
    let added = (w3 - 10_000) as f64;
    println!(
        "W3: scaled to {w3} instances in {:.2} s ({:.0} tasks/s); pacer peak RSS {:.0} MB; simulator tasks {}",
        t.as_secs_f64(),
        added / t.as_secs_f64(),
        peak_rss_mb(d.child.id()),
        sim.tasks().len()
    );
    println!("pacer RSS after W3: {:.0} MB", rss_mb(d.child.id()));
    drop(d);
    rt.block_on(sim.stop());
}
