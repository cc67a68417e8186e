//! Measures the pure core at scale: creating apps, placing their instances on offers, applying
//! status updates and health results, and taking snapshots. Prints numbers; asserts nothing.
//!
//!     cargo run --release -p pacer-core --example core_bench [apps] [instances_per_app]

use pacer_core::cluster::*;
use pacer_core::id::{PathId, TaskId};
use pacer_core::machine::{Command, Config, Effect, Scheduler};
use pacer_core::normalize::parse_app_patch;
use pacer_core::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Instant;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let apps = args.first().copied().unwrap_or(1000);
    let per_app = args.get(1).copied().unwrap_or(10);
    let total = apps * per_app;
    let config = Config {
        // Every app's deployment runs until its instances are placed, all at once.
        max_running_deployments: usize::MAX,
        max_instances_per_offer: 1000,
        ..Config::default()
    };
    let mut core = Scheduler::new(config, 1);
    let mut now = Timestamp::from_millis(1_700_000_000_000);
    let rss0 = rss_mb();
    let mut writes = 0usize;
    let mut drain = |core: &mut Scheduler, launched: &mut Vec<TaskId>| {
        while let Some(e) = core.poll_effect() {
            match e {
                Effect::Persist(ops) => writes += ops.len(),
                Effect::Launch { tasks, .. } => {
                    launched.extend(tasks.into_iter().map(|t| t.task_id))
                }
                _ => {}
            }
        }
    };
    let mut launched = Vec::new();

    let t = Instant::now();
    for i in 0..apps {
        let id = format!("/bench/group-{}/app-{i}", i % 50);
        let patch = parse_app_patch(serde_json::json!({"id": id, "cmd": "sleep 1000", "cpus": 0.001, "mem": 1, "instances": per_app,
            "portDefinitions": [{"port": 0}], "healthChecks": [{"protocol": "HTTP", "path": "/health"}]})).unwrap();
        let id = PathId::parse_app_id(&id, &PathId::root()).unwrap();
        core.command(
            now,
            Command::CreateApp {
                force: false,
                id,
                patch: Box::new(patch),
            },
        )
        .unwrap();
        drain(&mut core, &mut launched);
    }
    let create = t.elapsed();

    let t = Instant::now();
    let mut offers = 0;
    while core.wants_offers(now) {
        offers += 1;
        core.handle_offer(
            now,
            Offer {
                id: OfferId(format!("o{offers}")),
                agent_id: AgentId(format!("agent-{}", offers % 100)),
                hostname: format!("host-{}", offers % 100),
                cpus: 1e9,
                mem_mb: 1e12,
                disk_mb: 1e12,
                gpus: 0.0,
                ports: vec![PortRange {
                    begin: 1,
                    end: 65535,
                }],
                attributes: BTreeMap::new(),
                region: None,
                zone: None,
                reserved: None,
                allocation_role: None,
            },
        );
        drain(&mut core, &mut launched);
    }
    let place = t.elapsed();

    now = now.plus(std::time::Duration::from_secs(1));
    let t = Instant::now();
    for task in launched.clone() {
        core.handle_status(
            now,
            TaskStatus {
                task_id: task,
                state: TaskState::Running,
                message: None,
                agent_id: None,
                healthy: None,
            },
        );
        drain(&mut core, &mut Vec::new());
    }
    let status = t.elapsed();

    // Health: the first result of each task flips it healthy (and finishes its app's
    // deployment once all are); the second is the steady state of a probed task.
    let health_round = |core: &mut Scheduler, now: Timestamp| {
        let t = Instant::now();
        for task in &launched {
            core.handle_health(
                now,
                pacer_core::health::HealthReport {
                    instance_id: task.instance_id().unwrap(),
                    task_id: task.clone(),
                    check_index: 0,
                    outcome: pacer_core::health::ProbeOutcome::Healthy,
                },
            );
            while core.poll_effect().is_some() {}
        }
        t.elapsed()
    };
    let health_first = health_round(&mut core, now);
    let health_steady = health_round(&mut core, now.plus(std::time::Duration::from_secs(60)));

    let t = Instant::now();
    let snaps = 1000;
    for _ in 0..snaps {
        std::hint::black_box(core.snapshot());
    }
    let snap = t.elapsed();
    let state = core.snapshot();
    assert_eq!(state.instances.len(), total);
    assert!(state.deployments.is_empty());

    println!("apps={apps} instances={total} offers={offers} store_ops={writes}");
    println!(
        "create apps:        {:>9.1} ms  ({:.1} µs/app)",
        create.as_secs_f64() * 1e3,
        create.as_secs_f64() * 1e6 / apps as f64
    );
    println!(
        "place instances:    {:>9.1} ms  ({:.1} µs/instance)",
        place.as_secs_f64() * 1e3,
        place.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "status → RUNNING:   {:>9.1} ms  ({:.1} µs/update)",
        status.as_secs_f64() * 1e3,
        status.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "first health result:{:>9.1} ms  ({:.1} µs/result)",
        health_first.as_secs_f64() * 1e3,
        health_first.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "steady health result:{:>8.1} ms  ({:.1} µs/result)",
        health_steady.as_secs_f64() * 1e3,
        health_steady.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "snapshot:           {:>9.3} µs each",
        snap.as_secs_f64() * 1e6 / snaps as f64
    );
    println!(
        "resident memory:    {:>9.1} MB (+{:.1} MB for the state)",
        rss_mb(),
        rss_mb() - rss0
    );
}
