//! Load on the simulator at benchmark size: 1,000 agents of 100 cpus and 100,000 tasks that run
//! at once; prints timings. Run: `cargo run --release -p pacer-mesos-sim --example sim_load`.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use pacer_mesos_proto::v1::framework_info::capability::Type as Cap;
use pacer_mesos_proto::v1::TaskState;
use pacer_mesos_proto::{call, v1, Call, PROTOBUF};
use pacer_mesos_sim::{Sim, SimConfig};
use prost::Message;
use std::time::{Duration, Instant};

/// A keep-alive connection for many calls in a row.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    async fn open(base: &str) -> Conn {
        let uri: hyper::Uri = base.parse().unwrap();
        let authority = uri.authority().unwrap().to_string();
        let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Conn { sender, authority }
    }

    async fn post(&mut self, stream_id: &str, call: &Call) -> u16 {
        self.sender.ready().await.unwrap();
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/api/v1/scheduler")
            .header("Host", &self.authority)
            .header("Content-Type", PROTOBUF)
            .header("Mesos-Stream-Id", stream_id)
            .body(Full::new(Bytes::from(call.encode_to_vec())))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        status
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let agents = 1000;
    let per_agent = 100;
    let sim = Sim::start(SimConfig {
        agents,
        agent_cpus: 100.0,
        agent_mem_mb: 500_000.0,
        agent_ports: vec![(10_000, 20_000)],
        starting_after: Duration::ZERO,
        running_after: Duration::ZERO,
        allocation_interval: Duration::from_millis(200),
        record_calls: std::env::var("SIM_RECORD_CALLS").map_or(true, |v| v != "0"),
        ..Default::default()
    })
    .await
    .unwrap();
    let start = Instant::now();
    let mut s = Stream::subscribe(
        &sim.url(),
        framework_info("load", &[Cap::PartitionAware]),
        false,
    )
    .await;
    let offers = s.offers().await;
    assert_eq!(offers.len(), agents);
    println!(
        "subscribed and got {} offers after {:?}",
        offers.len(),
        start.elapsed()
    );

    let fid = s.fid();
    let stream_id = s.stream_id.clone();
    let mut conn = Conn::open(&sim.url()).await;
    let launch = Instant::now();
    for (i, o) in offers.iter().enumerate() {
        let tasks = (0..per_agent)
            .map(|j| {
                let mut t = task(&format!("t{i}-{j}"), o, 0.5, 1000.0, "sleep 1000");
                t.resources
                    .push(ports(&[(10_000 + j as u64, 10_000 + j as u64)]));
                t
            })
            .collect();
        let c = Call {
            framework_id: fid.clone(),
            r#type: Some(call::Type::Accept as i32),
            accept: Some(call::Accept {
                offer_ids: vec![o.id.clone()],
                operations: vec![v1::offer::Operation {
                    r#type: Some(v1::offer::operation::Type::Launch as i32),
                    launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
                }],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            }),
            ..Default::default()
        };
        assert_eq!(conn.post(&stream_id, &c).await, 202);
    }
    println!(
        "{} ACCEPTs sent in {:?}; {}",
        offers.len(),
        launch.elapsed(),
        rss()
    );

    // ACKs from a few keep-alive connections, fed by the stream reader.
    let (tx, rx) = async_channel();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let rx = rx.clone();
            let base = sim.url();
            let stream_id = stream_id.clone();
            let fid = fid.clone();
            tokio::spawn(async move {
                let mut conn = Conn::open(&base).await;
                while let Some(st) = rx.recv().await {
                    let st: v1::TaskStatus = st;
                    let c = Call {
                        framework_id: fid.clone(),
                        r#type: Some(call::Type::Acknowledge as i32),
                        acknowledge: Some(call::Acknowledge {
                            agent_id: st.agent_id.clone().unwrap(),
                            task_id: st.task_id.clone(),
                            uuid: st.uuid.clone().unwrap(),
                        }),
                        ..Default::default()
                    };
                    assert_eq!(conn.post(&stream_id, &c).await, 202);
                }
            })
        })
        .collect();
    let total = agents * per_agent;
    let mut running = 0;
    while running < total {
        let st = s.update().await;
        if state_of(&st) == TaskState::TaskRunning {
            running += 1;
        }
        tx.send(st).await;
    }
    drop(tx);
    for w in workers {
        w.await.unwrap();
    }
    println!(
        "{total} tasks RUNNING and acknowledged {:?} after the first ACCEPT ({:.0} tasks/s)",
        launch.elapsed(),
        total as f64 / launch.elapsed().as_secs_f64()
    );
    println!("memory after launching: {}", rss());
    let t = Instant::now();
    assert_eq!(sim.tasks().len(), total);
    println!("sim.tasks() at {total} tasks: {:?}", t.elapsed());
    let t = Instant::now();
    let r = request(&sim.url(), "GET", "/master/state", &[], vec![]).await;
    assert_eq!(r.status, 200);
    println!(
        "/master/state at {total} tasks: {:?}, {} bytes",
        t.elapsed(),
        r.body.len()
    );
    assert!(sim.violations().is_empty());
    println!("memory at the end: {}", rss());
    sim.stop().await;
}

fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "RSS {} (peak {}) for simulator and client together",
        field("VmRSS:"),
        field("VmHWM:")
    )
}

/// A tiny multi-consumer channel over tokio's mpsc (a shared receiver).
fn async_channel() -> (Tx, Rx) {
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    (Tx(tx), Rx(std::sync::Arc::new(tokio::sync::Mutex::new(rx))))
}

struct Tx(tokio::sync::mpsc::Sender<v1::TaskStatus>);
impl Tx {
    async fn send(&self, st: v1::TaskStatus) {
        self.0.send(st).await.unwrap();
    }
}

#[derive(Clone)]
struct Rx(std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<v1::TaskStatus>>>);
impl Rx {
    async fn recv(&self) -> Option<v1::TaskStatus> {
        self.0.lock().await.recv().await
    }
}
