//! Probes against real sockets and processes on loopback.

use crate::agent::{self, CheckedTask, Verdict};
use crate::probe::{BoxFuture, CommandTarget, ProbeKind, ProbeKinds, Target};
use crate::prober::{ProbeResult, Prober};
use pacer_core::app::HealthCheck;
use pacer_core::cluster::{AgentCheck, AgentCheckKind};
use pacer_core::health::{ProbeCheck, ProbeOutcome, ProbeSpec, Watch};
use pacer_core::id::{InstanceId, PathId, TaskId};
use pacer_core::time::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP server that answers every request with `answer` after `delay`.
async fn server(answer: &'static str, delay: Duration) -> u32 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(delay).await;
                let _ = s.write_all(answer.as_bytes()).await;
                // Keep the connection open: a 1xx-only server never sends more.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    u32::from(port)
}

fn target(port: u32) -> Target {
    Target {
        host: "127.0.0.1".into(),
        port: Some(port),
        path: "/health".into(),
        timeout: Duration::from_secs(1),
        ..Default::default()
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
const PROCESSING: &str = "HTTP/1.1 102 Processing\r\n\r\n";

async fn probe(protocol: &str, t: &Target) -> ProbeOutcome {
    ProbeKinds::builtin().get(protocol).unwrap().probe(t).await
}

#[tokio::test]
async fn http_status_decides_health() {
    assert_eq!(
        probe("HTTP", &target(server(OK, Duration::ZERO).await)).await,
        ProbeOutcome::Healthy
    );
    assert_eq!(
        probe("HTTP", &target(server(UNAVAILABLE, Duration::ZERO).await)).await,
        ProbeOutcome::Unhealthy("HTTP 503".into())
    );
    let redirect = "HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        probe("HTTP", &target(server(redirect, Duration::ZERO).await)).await,
        ProbeOutcome::Healthy,
        "3xx is healthy"
    );
}

#[tokio::test]
async fn informational_answers_are_ignored_only_when_asked() {
    let port = server(PROCESSING, Duration::ZERO).await;
    let mut t = target(port);
    assert_eq!(
        probe("HTTP", &t).await,
        ProbeOutcome::Unhealthy("HTTP 102".into())
    );
    t.ignore_http1xx = true;
    assert_eq!(probe("HTTP", &t).await, ProbeOutcome::Ignored);
}

#[tokio::test]
async fn slow_and_closed_servers_fail() {
    let slow = server(OK, Duration::from_secs(3)).await;
    let ProbeOutcome::Unhealthy(cause) = probe("HTTP", &target(slow)).await else {
        panic!("slow answer must fail")
    };
    assert!(cause.contains("timed out"), "{cause}");

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        u32::from(l.local_addr().unwrap().port())
    };
    let ProbeOutcome::Unhealthy(cause) = probe("HTTP", &target(closed)).await else {
        panic!("closed port must fail")
    };
    assert!(cause.contains("connect"), "{cause}");
    assert!(matches!(
        probe("TCP", &target(closed)).await,
        ProbeOutcome::Unhealthy(_)
    ));
    assert_eq!(
        probe("TCP", &target(server(OK, Duration::ZERO).await)).await,
        ProbeOutcome::Healthy
    );
}

#[tokio::test]
async fn commands_run_in_the_task_environment_and_sandbox() {
    let dir = std::env::temp_dir().join(format!("pacer-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ok"), "").unwrap();
    let mut t = Target {
        timeout: Duration::from_secs(2),
        command: Some(CommandTarget {
            shell: "test -f ok && test \"$GREETING\" = hello".into(),
            env: [("GREETING".to_string(), "hello".to_string())].into(),
            cwd: Some(dir.clone()),
        }),
        ..Default::default()
    };
    assert_eq!(probe("COMMAND", &t).await, ProbeOutcome::Healthy);
    t.command.as_mut().unwrap().shell = "echo broken >&2; exit 3".into();
    assert_eq!(
        probe("COMMAND", &t).await,
        ProbeOutcome::Unhealthy("command exited with status 3: broken".into())
    );
    t.command.as_mut().unwrap().shell = "sleep 30".into();
    t.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    assert!(
        matches!(probe("COMMAND", &t).await, ProbeOutcome::Unhealthy(c) if c.contains("timed out"))
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    std::fs::remove_dir_all(dir).unwrap();
}

fn spec(n: usize, port: u32, interval: i64, timeout: i64) -> Arc<ProbeSpec> {
    let app = PathId::parse_app_id("/web", &PathId::root()).unwrap();
    let iid = InstanceId::new(&app, &format!("00000000-0000-1000-8000-{n:012}"));
    let check: HealthCheck = serde_json::from_value(serde_json::json!({
        "protocol": "HTTP", "path": "/", "intervalSeconds": interval, "timeoutSeconds": timeout
    }))
    .unwrap();
    Arc::new(ProbeSpec {
        task_id: TaskId::new(&iid, 1),
        instance_id: iid,
        app_id: app,
        version: Timestamp::EPOCH,
        host: "127.0.0.1".into(),
        host_ports: vec![port],
        checks: vec![ProbeCheck {
            index: 0,
            check,
            port: Some(port),
        }],
        readiness: None,
    })
}

/// A saturated prober (one slot, answers that take most of the timeout, more targets than one
/// interval can serve) reports late results, never failures: the timeout runs from sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_prober_reports_late_not_unhealthy() {
    let port = server(OK, Duration::from_millis(400)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut prober = Prober::new(ProbeKinds::builtin(), 1, tx);
    for n in 0..6 {
        prober.apply(Watch::Start(spec(n, port, 1, 1)));
    }
    assert_eq!(prober.watched(), 6);
    let (mut healthy, mut late, mut failed) = (0, 0, Vec::new());
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(r)) = tokio::time::timeout_at(until, rx.recv()).await {
        let ProbeResult::Health(r) = r else {
            continue;
        };
        match r.outcome {
            ProbeOutcome::Healthy => healthy += 1,
            ProbeOutcome::Late => late += 1,
            other => failed.push(other),
        }
    }
    assert!(
        failed.is_empty(),
        "no failures from a slow prober: {failed:?}"
    );
    assert!(healthy >= 5, "probes still get through: {healthy}");
    assert!(late >= 3, "the backlog is reported late: {late}");
    let stats = prober.stats();
    assert_eq!(stats.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A kind that blocks its thread past the timeout, as a starved runtime would.
struct Stalls;

impl ProbeKind for Stalls {
    fn probe<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            std::thread::sleep(t.timeout + Duration::from_millis(800));
            ProbeOutcome::Unhealthy("timed out".into())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_prober_does_not_count_its_own_timeouts() {
    let mut kinds = ProbeKinds::builtin();
    kinds.register("HTTP", Arc::new(Stalls));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut prober = Prober::new(kinds, 4, tx);
    prober.apply(Watch::Start(spec(1, 1, 2, 1)));
    let r = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let ProbeResult::Health(r) = r else { panic!() };
    assert_eq!(r.outcome, ProbeOutcome::Late);
    // Stopping a task ends its probes.
    prober.apply(Watch::Stop {
        instance_id: r.instance_id,
        task_id: r.task_id,
    });
    assert_eq!(prober.watched(), 0);
}

#[tokio::test]
async fn agent_checks_follow_mesos_semantics() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        u32::from(l.local_addr().unwrap().port())
    };
    let open = server(OK, Duration::ZERO).await;
    let check = |port: u32, grace_ms: u64, failures: u32| AgentCheck {
        kind: AgentCheckKind::Tcp { port },
        grace: Duration::from_millis(grace_ms),
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(90),
        delay: Duration::ZERO,
        consecutive_failures: failures,
    };
    let task = CheckedTask {
        host: "127.0.0.1".into(),
        env: Default::default(),
        cwd: None,
    };
    let run = |checks: Vec<AgentCheck>, wait_ms: u64| {
        let task = task.clone();
        async move {
            let seen: Arc<Mutex<Vec<Verdict>>> = Arc::default();
            let sink = {
                let seen = seen.clone();
                Arc::new(move |v: Verdict| seen.lock().unwrap().push(v))
            };
            let handles = agent::spawn(&ProbeKinds::builtin(), &checks, task, sink);
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            for h in handles {
                h.abort();
            }
            let v = seen.lock().unwrap().clone();
            v
        }
    };
    // Healthy: reported once, on the transition.
    let v = run(vec![check(open, 0, 3)], 450).await;
    assert_eq!(
        v,
        [Verdict {
            healthy: true,
            message: None,
            kill: false
        }]
    );
    // Failing: every failure is reported; the third kills, and then checking stops.
    let v = run(vec![check(closed, 0, 3)], 700).await;
    assert_eq!(v.len(), 3, "{v:?}");
    assert_eq!(
        v.iter().map(|v| (v.healthy, v.kill)).collect::<Vec<_>>(),
        [(false, false), (false, false), (false, true)]
    );
    // 0 kills at the first failure; grace holds failures back.
    let v = run(vec![check(closed, 0, 0)], 250).await;
    assert_eq!(v.len(), 1);
    assert!(v[0].kill);
    let v = run(vec![check(closed, 10_000, 0)], 400).await;
    assert!(v.is_empty(), "within grace: {v:?}");
    // Two checks: healthy only once both pass.
    let v = run(vec![check(open, 0, 3), check(closed, 10_000, 3)], 400).await;
    assert!(v.is_empty(), "{v:?}");
}
