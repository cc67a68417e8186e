//! Prints the cost of placement constraint decisions, native against a Wasm plugin (batched and
//! not), with 10 attributes per agent and 1,000 placed instances, and the cost of a health
//! plugin check in a fresh instance.
//!
//! `cargo run --release -p pacer-wasm --example plugin_bench [rounds]`

use pacer_core::cluster::{AgentId, AttributeValue, Offer, OfferId};
use pacer_core::constraints::{parse, Field, Placed, PlacedSummary, PluginRequest};
use pacer_core::instance::AgentInfo;
use pacer_wasm::testing::guest;
use pacer_wasm::{config, HealthTarget, Plugins};
use std::time::{Duration, Instant};

const PLACED: usize = 1_000;
const BATCH: usize = 100;

fn attributes(i: usize) -> std::collections::BTreeMap<String, AttributeValue> {
    (0..10)
        .map(|a| {
            let v = if a == 0 {
                AttributeValue::Text(format!("r{}", i % 20))
            } else {
                AttributeValue::Scalar((i * a) as f64)
            };
            (
                if a == 0 {
                    "rack".into()
                } else {
                    format!("attr{a}")
                },
                v,
            )
        })
        .collect()
}

fn offer(i: usize) -> Offer {
    Offer {
        id: OfferId(format!("o{i}")),
        agent_id: AgentId(format!("a{i}")),
        hostname: format!("host-{i}"),
        cpus: 8.0,
        mem_mb: 1024.0,
        disk_mb: 0.0,
        gpus: 0.0,
        ports: vec![],
        attributes: attributes(i),
        region: Some("eu".into()),
        zone: Some(format!("z{}", i % 3)),
        reserved: None,
        allocation_role: None,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let placed: Vec<AgentInfo> = (0..PLACED)
        .map(|i| AgentInfo {
            agent_id: AgentId(format!("a{i}")),
            host: format!("host-{i}"),
            region: Some("eu".into()),
            zone: None,
            attributes: attributes(i),
        })
        .collect();
    let offers: Vec<Offer> = (0..BATCH).map(|i| offer(PLACED + i)).collect();
    let refs: Vec<&Offer> = offers.iter().collect();

    // Native: MAX_PER over the rack attribute, counting the placed instances per offer.
    let native = parse(&["rack".into(), "MAX_PER".into(), "100".into()]).unwrap();
    let mut native_t = Vec::new();
    let mut accepted = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        for o in &offers {
            accepted += native.admits(o, placed.iter()) as usize;
        }
        native_t.push(t.elapsed() / BATCH as u32);
    }
    std::hint::black_box(accepted);
    // Native again, but batched like the plugin: one summary per batch, then a lookup per offer.
    let mut native_summary_t = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..10 {
            let summary = PlacedSummary::of(&Field::Attribute("rack".into()), placed.iter());
            for o in &offers {
                let v = o.value_of(&Field::Attribute("rack".into())).unwrap();
                accepted += (summary.counts.get(&v).copied().unwrap_or(0) < 100) as usize;
            }
        }
        native_summary_t.push(t.elapsed() / (10 * BATCH) as u32);
    }
    std::hint::black_box(accepted);

    let specs = config::parse(
        &format!(
            r#"{{"plugins": {{"spread": {{"plugin": "constraint", "implementation": "{}"}},
                          "probe": {{"plugin": "health-check", "implementation": "{}"}}}}}}"#,
            guest("spread_even").display(),
            guest("misbehave_health").display()
        ),
        None,
    )
    .unwrap();
    let load_started = Instant::now();
    let plugins = Plugins::load(specs, None).await.unwrap();
    let load_time = load_started.elapsed();
    let c = plugins.constraints().unwrap();
    let req = PluginRequest {
        app_id: "/bench",
        operator: "SPREAD_EVEN",
        field: "rack",
        params: "",
        waiting: 100,
    };
    let field = Field::Attribute("rack".into());
    // Batched: the host summarises the placed instances once, then one call decides 100 offers.
    let mut batched_t = Vec::new();
    let mut single_t = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..10 {
            let summary = PlacedSummary::of(&field, placed.iter());
            let d = c.check(&req, &summary, &refs);
            assert_eq!(d.len(), BATCH);
        }
        batched_t.push(t.elapsed() / (10 * BATCH) as u32);
        let t = Instant::now();
        for o in &refs {
            let summary = PlacedSummary::of(&field, placed.iter());
            std::hint::black_box(c.check(&req, &summary, std::slice::from_ref(o)));
        }
        single_t.push(t.elapsed() / BATCH as u32);
    }

    // Health: a fresh instance, configure and check (no IO) per probe.
    let h = plugins.health("probe").unwrap();
    let target = HealthTarget {
        app_id: "/bench".into(),
        task_id: "bench.1".into(),
        host: "127.0.0.1".into(),
        ports: vec![1],
        port: Some(1),
        path: None,
        params: "{}".into(),
        timeout: Duration::from_secs(1),
    };
    let mut health_t = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..200 {
            h.check(target.clone()).await.unwrap();
        }
        health_t.push(t.elapsed() / 200);
    }

    let (n, b, s, hc) = (
        median(native_t),
        median(batched_t),
        median(single_t),
        median(health_t),
    );
    println!("plugin_bench: {PLACED} placed instances, 10 attributes per agent, batches of {BATCH} offers, median of {rounds} rounds");
    println!("load + compile 2 plugins (no cache): {load_time:?}");
    let ns = median(native_summary_t);
    println!("native MAX_PER per offer, recounting placed (as the core does): {n:?}");
    println!("native MAX_PER per offer, batched with one summary:             {ns:?}");
    println!(
        "plugin SPREAD_EVEN per offer, batched (incl. summary): {b:?}  ({:.1}x native batched)",
        b.as_secs_f64() / ns.as_secs_f64()
    );
    println!(
        "plugin SPREAD_EVEN per offer, one offer per call:      {s:?}  ({:.2}x native recount)",
        s.as_secs_f64() / n.as_secs_f64()
    );
    println!("health plugin check in a fresh instance (no IO):       {hc:?}");
}
