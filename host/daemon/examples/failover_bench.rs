//! Failover benchmark: two Pacers on a real ZooKeeper server (started here, on loopback), `apps`
//! apps stored. The leader is stopped `rounds` times, alternately with SIGTERM (a clean hand-over)
//! and with `kill -9` (the standby waits for the dead leader's session to expire), and the
//! supervisor's part is played by restarting it as a standby. For each failover it prints:
//! - `gone`: from the stop to the old latch node disappearing (seen through a ZooKeeper watch);
//! - `leader`: from the latch disappearing to the standby answering `/leader/health` with 200;
//! - `state`: from the latch disappearing to `GET /v2/apps` listing every app on the new leader.
//!
//! Asserts nothing beyond the state being complete.
//!
//!     cargo build --release -p pacer --bin pacer --example failover_bench && \
//!     ./target/release/examples/failover_bench [apps] [rounds] [session_ms]

use pacer_api::leader::LeaderAddr;
use pacer_zk::election::follow_leader;
use pacer_zk::testing::ZkCluster;
use pacer_zk::{ZkStore, ZkStoreConfig, ZkUrl};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::Daemon;

fn start(data_dir: &Path, zk: &str, session_ms: u64) -> Daemon {
    let session = session_ms.to_string();
    common::start(data_dir, &["--zk", zk, "--zk_session_timeout", &session])
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

fn status(port: u16, path: &str) -> u16 {
    match agent()
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(_) => 0,
    }
}

fn app_count(port: u16) -> usize {
    agent()
        .get(&format!("http://127.0.0.1:{port}/v2/apps"))
        .call()
        .ok()
        .and_then(|r| r.into_json::<serde_json::Value>().ok())
        .and_then(|v| v["apps"].as_array().map(|a| a.len()))
        .unwrap_or(0)
}

fn poll_until(mut f: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "gave up after 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    Instant::now()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let apps: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4);
    let session_ms: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4000);

    let zk = ZkCluster::start(1);
    let url = zk.url("/pacer-bench");
    let dir = tempfile::tempdir().unwrap();
    let mut pacers = [
        start(dir.path(), &url, session_ms),
        start(dir.path(), &url, session_ms),
    ];
    poll_until(|| status(pacers[0].port, "/leader/health") == 200);

    // Apps with no instances, 100 per group so every write stays well inside a ZooKeeper multi.
    let created = Instant::now();
    for g in 0..apps.div_ceil(100) {
        let group_apps: Vec<serde_json::Value> = (0..100.min(apps - g * 100))
            .map(|i| {
                serde_json::json!({"id": format!("app{i}"), "cmd": "sleep 600", "cpus": 0.01,
                    "mem": 8, "instances": 0, "labels": {"bench": "failover"}})
            })
            .collect();
        let body = serde_json::json!({"id": format!("/bench/g{g}"), "apps": group_apps});
        agent()
            .post(&format!("http://127.0.0.1:{}/v2/groups", pacers[0].port))
            .send_json(body)
            .expect("create a group");
    }
    println!(
        "stored {apps} apps in {:.1} s; session timeout {session_ms} ms",
        created.elapsed().as_secs_f64()
    );

    // Watch the latch from outside to see when the old leader's session is gone.
    let observer = ZkStore::connect(
        &ZkUrl::parse(&url).unwrap(),
        Duration::from_secs(10),
        ZkStoreConfig::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None::<LeaderAddr>);
    rt.spawn(follow_leader(observer.client(), tx));

    let mut cur = 0;
    for round in 0..rounds {
        let next = 1 - cur;
        let old_id = format!("127.0.0.1:{}", pacers[cur].port);
        let mut seen = rx.clone();
        let kill9 = round % 2 == 1;
        let stopped = Instant::now();
        if kill9 {
            let _ = pacers[cur].child.kill();
        } else {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pacers[cur].child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let gone = rt.block_on(async {
            let _ = seen
                .wait_for(|l| l.as_ref().is_none_or(|l| l.id != old_id))
                .await;
            Instant::now()
        });
        let serving = poll_until(|| status(pacers[next].port, "/leader/health") == 200);
        let full = poll_until(|| app_count(pacers[next].port) == apps);
        println!(
            "round {}: {:<8} gone {:>6} ms  leader {:>5} ms  state {:>5} ms",
            round + 1,
            if kill9 { "kill -9" } else { "SIGTERM" },
            (gone - stopped).as_millis(),
            serving.saturating_duration_since(gone).as_millis(),
            full.saturating_duration_since(gone).as_millis(),
        );
        let _ = pacers[cur].child.wait();
        pacers[cur] = start(dir.path(), &url, session_ms);
        cur = next;
    }
    drop(observer);
}
