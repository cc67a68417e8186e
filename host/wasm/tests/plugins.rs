//! The plugin host against the real example and fixture guests (built once from `plugins/`).

use pacer_core::cluster::{AgentId, AttributeValue, Offer, OfferId};
use pacer_core::constraints::{PlacedSummary, PluginRequest};
use pacer_wasm::testing::{guest, http_server};
use pacer_wasm::{config, Cause, HealthTarget, HealthVerdict, Phase, PluginError, Plugins};
use std::net::TcpListener;
use std::time::Duration;

fn specs(entries: &[(&str, &str, &str, &str)]) -> Vec<pacer_wasm::PluginSpec> {
    let body: Vec<String> = entries
        .iter()
        .map(|(id, kind, file, extra)| {
            let path = guest(file);
            format!(
                r#""{id}": {{"plugin": "{kind}", "implementation": "{}"{extra}}}"#,
                path.display()
            )
        })
        .collect();
    config::parse(&format!(r#"{{"plugins": {{{}}}}}"#, body.join(",")), None).unwrap()
}

async fn load(entries: &[(&str, &str, &str, &str)]) -> Result<Plugins, PluginError> {
    Plugins::load(specs(entries), None).await
}

fn offer(host: &str, rack: Option<&str>) -> Offer {
    Offer {
        id: OfferId(format!("o-{host}")),
        agent_id: AgentId(format!("a-{host}")),
        hostname: host.into(),
        cpus: 1.0,
        mem_mb: 128.0,
        disk_mb: 0.0,
        gpus: 0.0,
        ports: vec![],
        attributes: rack
            .map(|r| ("rack".to_string(), AttributeValue::Text(r.into())))
            .into_iter()
            .collect(),
        region: None,
        zone: None,
        reserved: None,
        allocation_role: None,
    }
}

fn request<'a>(operator: &'a str, field: &'a str, params: &'a str) -> PluginRequest<'a> {
    PluginRequest {
        app_id: "/web",
        operator,
        field,
        params,
        waiting: 3,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spread_even_places_on_the_emptiest_racks_and_validates_params() {
    let p = load(&[("spread", "constraint", "spread_even", "")])
        .await
        .unwrap();
    let c = p.constraints().unwrap();
    assert_eq!(c.operators(), ["SPREAD_EVEN"]);
    assert!(c.validate("SPREAD_EVEN", "rack", "2").is_ok());
    let bad = c.validate("SPREAD_EVEN", "rack", "many").unwrap_err();
    assert!(!bad.is_empty(), "a reason for bad params");

    let placed = PlacedSummary {
        total: 3,
        counts: [("r1".to_string(), 2), ("r2".to_string(), 1)].into(),
    };
    let offers = [
        offer("a", Some("r1")),
        offer("b", Some("r2")),
        offer("c", Some("r3")),
        offer("d", None),
    ];
    let refs: Vec<&Offer> = offers.iter().collect();
    let d = c.check(&request("SPREAD_EVEN", "rack", ""), &placed, &refs);
    let accepted: Vec<bool> = d.iter().map(|d| d.accept).collect();
    assert_eq!(accepted, [false, false, true, false], "{d:?}");
    assert!(d[0].reason.as_deref().unwrap().contains("r1"), "{d:?}");
    assert!(
        d[3].reason
            .as_deref()
            .unwrap()
            .contains("no attribute rack"),
        "{d:?}"
    );
    // A larger skew lets r2 (1 above the emptiest) take one more.
    let d = c.check(&request("SPREAD_EVEN", "rack", "2"), &placed, &refs);
    assert_eq!(
        d.iter().map(|d| d.accept).collect::<Vec<_>>(),
        [false, true, true, false]
    );
}

/// Each misbehaviour is stopped with its own cause, and the plugin works again right after.
#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_constraints_are_stopped_with_the_right_cause() {
    let p = load(&[
        (
            "bad",
            "constraint",
            "misbehave_constraint",
            r#", "limits": {"timeoutMs": 2000}"#,
        ),
        (
            "slow",
            "constraint",
            "misbehave_constraint",
            r#", "limits": {"fuelPerCall": 100000000000, "timeoutMs": 200}"#,
        ),
    ])
    .await
    .unwrap_err();
    // Two plugins may not provide the same operator.
    assert!(p.to_string().contains("also provided by"), "{p}");

    let p = load(&[(
        "bad",
        "constraint",
        "misbehave_constraint",
        r#", "limits": {"timeoutMs": 5000}"#,
    )])
    .await
    .unwrap();
    let host = p.constraint_host("bad").unwrap();
    let offers = [offer("a", None)];
    let refs: Vec<&Offer> = offers.iter().collect();
    let run = |mode: &str| {
        host.check_batch(
            &request("MISBEHAVE", "hostname", mode),
            &PlacedSummary::default(),
            &refs,
        )
    };
    let cause = |mode: &str| {
        let e = run(mode).unwrap_err();
        assert_eq!((e.plugin.as_str(), e.phase), ("bad", Phase::Check), "{e}");
        // The plugin is usable again at once.
        assert!(run("fine").unwrap()[0].accept, "after {mode}");
        e.cause
    };
    assert_eq!(cause("loop"), Cause::Fuel(10_000_000));
    match cause("panic") {
        Cause::Trap(t) => assert!(t.contains("fixture panic"), "{t}"),
        other => panic!("{other:?}"),
    }
    for (mode, import) in [
        ("socket", "wasi:sockets/"),
        ("file", "wasi:filesystem/"),
        ("clock", "wasi:clocks/"),
    ] {
        match cause(mode) {
            Cause::Denied(name) => assert!(name.starts_with(import), "{mode}: {name}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
    // The core sees failures as refusals with the reason (the default policy).
    let d = p.constraints().unwrap().check(
        &request("MISBEHAVE", "hostname", "panic"),
        &PlacedSummary::default(),
        &refs,
    );
    assert!(
        !d[0].accept && d[0].reason.as_deref().unwrap().contains("trapped"),
        "{d:?}"
    );

    // With (nearly) unlimited fuel, the memory cap stops a memory bomb and the wall-clock
    // deadline an endless loop.
    let p = load(&[(
        "slow",
        "constraint",
        "misbehave_constraint",
        r#", "limits": {"fuelPerCall": 100000000000000, "timeoutMs": 2000}, "onError": "ignore""#,
    )])
    .await
    .unwrap();
    let host = p.constraint_host("slow").unwrap();
    let e = host
        .check_batch(
            &request("MISBEHAVE", "hostname", "alloc"),
            &PlacedSummary::default(),
            &refs,
        )
        .unwrap_err();
    assert_eq!(e.cause, Cause::Memory(64));
    let e = host
        .check_batch(
            &request("MISBEHAVE", "hostname", "loop"),
            &PlacedSummary::default(),
            &refs,
        )
        .unwrap_err();
    assert_eq!(e.cause, Cause::Deadline(2000));
    // `onError: ignore` lets the offer through.
    let d = p.constraints().unwrap().check(
        &request("MISBEHAVE", "hostname", "panic"),
        &PlacedSummary::default(),
        &refs,
    );
    assert!(d[0].accept);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_kind_wrong_version_and_wrong_digest_are_refused_at_load() {
    let e = load(&[("h", "constraint", "http_body", "")])
        .await
        .unwrap_err();
    assert_eq!(e.phase, Phase::Load);
    assert!(
        e.to_string()
            .contains("it is a health-check plugin, but it is configured as a constraint plugin"),
        "{e}"
    );

    let e = load(&[("w", "constraint", "wrong_version", "")])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("@0.2.0") && e.to_string().contains("pacer:plugin@0.1.0"),
        "{e}"
    );

    let zeros = "0".repeat(64);
    let e = load(&[(
        "s",
        "constraint",
        "spread_even",
        &format!(r#", "sha256": "{zeros}""#),
    )])
    .await
    .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");

    // A sink may not import the health world's probe.
    let e = load(&[("m", "event-sink", "misbehave_health", "")])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("health-check plugin"), "{e}");

    let e = load(&[(
        "bad-config",
        "event-sink",
        "webhook",
        r#", "configuration": {"url": "ftp://x"}"#,
    )])
    .await
    .unwrap_err();
    assert_eq!(e.phase, Phase::Configure, "{e}");
}

fn target(port: u16, params: &str) -> HealthTarget {
    HealthTarget {
        app_id: "/web".into(),
        task_id: "web.1".into(),
        host: "127.0.0.1".into(),
        ports: vec![port],
        port: Some(port),
        path: Some("/health".into()),
        params: params.into(),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_plugins_speak_http_only_to_the_task_and_fail_as_checks() {
    let p = load(&[
        (
            "http-body",
            "health-check",
            "http_body",
            r#", "configuration": {"expect": "ok"}"#,
        ),
        (
            "bad",
            "health-check",
            "misbehave_health",
            r#", "limits": {"timeoutMs": 500}"#,
        ),
    ])
    .await
    .unwrap();
    let h = p.health("http-body").unwrap();
    let (good, requests) = http_server(200, "all ok");
    assert_eq!(
        h.check(target(good, "{}")).await.unwrap(),
        HealthVerdict::Healthy
    );
    assert!(requests.recv().unwrap().starts_with("GET /health HTTP/1.0"));
    let (sick, _) = http_server(503, "ok");
    assert_eq!(
        h.check(target(sick, "{}")).await.unwrap(),
        HealthVerdict::Unhealthy("HTTP 503".into())
    );
    // Per-check params override the configuration.
    match h
        .check(target(good, r#"{"expect": "fine"}"#))
        .await
        .unwrap()
    {
        HealthVerdict::Unhealthy(why) => assert!(why.contains("fine"), "{why}"),
        v => panic!("{v:?}"),
    }
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(matches!(
        h.check(target(closed, "{}")).await.unwrap(),
        HealthVerdict::Unhealthy(_)
    ));

    let bad = p.health("bad").unwrap();
    match bad
        .check(target(good, r#"{"mode": "foreign-port"}"#))
        .await
        .unwrap()
    {
        HealthVerdict::Unhealthy(why) => {
            assert!(why.contains("not one of the task's ports"), "{why}")
        }
        v => panic!("{v:?}"),
    }
    let e = bad
        .check(target(good, r#"{"mode": "socket"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&e.cause, Cause::Denied(n) if n.starts_with("wasi:sockets/")),
        "{e}"
    );
    let e = bad
        .check(target(good, r#"{"mode": "file"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&e.cause, Cause::Denied(n) if n.starts_with("wasi:filesystem/")),
        "{e}"
    );
    let e = bad
        .check(target(good, r#"{"mode": "loop"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(e.cause, Cause::Fuel(_) | Cause::Deadline(_)),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_sink_posts_batches_to_allowed_hosts_only() {
    let (port, requests) = http_server(200, "");
    let p = load(&[(
        "hook",
        "event-sink",
        "webhook",
        &format!(
            r#", "configuration": {{"url": "http://127.0.0.1:{port}/events", "token": "s3cret", "eventTypes": ["a_event", "b_event"]}},
               "allowedHosts": ["127.0.0.1:{port}"], "batch": {{"maxEvents": 3, "maxDelayMs": 50}}"#
        ),
    )])
    .await
    .unwrap();
    p.start_sinks();
    let sink = &p.sinks()[0];
    sink.push("a_event", r#"{"eventType":"a_event","n":1}"#);
    sink.push("c_event", r#"{"eventType":"c_event","n":2}"#);
    sink.push("b_event", r#"{"eventType":"b_event","n":3}"#);
    let req = tokio::task::spawn_blocking(move || {
        requests.recv_timeout(Duration::from_secs(10)).unwrap()
    })
    .await
    .unwrap();
    assert!(req.starts_with("POST /events HTTP/1.1"), "{req}");
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer s3cret"),
        "{req}"
    );
    let body = req.split("\r\n\r\n").nth(1).unwrap();
    let events: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        events,
        serde_json::json!([{"eventType":"a_event","n":1},{"eventType":"b_event","n":3}])
    );

    // A URL off the allowlist is refused by the host: the sink reports a failure.
    let p = load(&[(
        "hook",
        "event-sink",
        "webhook",
        &format!(r#", "configuration": {{"url": "http://127.0.0.1:{port}/x"}}, "allowedHosts": ["127.0.0.1:1"], "batch": {{"maxEvents": 1}}"#),
    )])
    .await
    .unwrap();
    p.start_sinks();
    p.sinks()[0].push("a_event", "{}");
    let m = &p.info()[0].metrics;
    wait(|| m.failures().get("guest").copied() == Some(1)).await;
    assert_eq!(
        m.events_dropped.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_sink_is_restarted_then_disabled() {
    let p = load(&[(
        "crash",
        "event-sink",
        "misbehave_sink",
        r#", "configuration": {"mode": "panic"}, "batch": {"maxEvents": 1, "maxDelayMs": 1}"#,
    )])
    .await
    .unwrap();
    p.start_sinks();
    let sink = &p.sinks()[0];
    let m = p.info()[0].metrics.clone();
    for _ in 0..5 {
        sink.push("a_event", "{}");
        let before = m.instantiations.load(std::sync::atomic::Ordering::Relaxed);
        wait(|| {
            m.failures().get("trap").copied().unwrap_or(0) as usize >= before as usize
                || sink.is_disabled()
        })
        .await;
    }
    wait(|| sink.is_disabled()).await;
    assert_eq!(
        m.failures().get("trap").copied(),
        Some(pacer_wasm::kinds::sink::MAX_CRASHES as u64)
    );
    // Restarted after each crash but the last.
    assert_eq!(
        m.instantiations.load(std::sync::atomic::Ordering::Relaxed),
        pacer_wasm::kinds::sink::MAX_CRASHES as u64
    );
    sink.push("a_event", "{}");
    assert!(m.events_dropped.load(std::sync::atomic::Ordering::Relaxed) >= 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_plugins_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = specs(&[("spread", "constraint", "spread_even", "")]);
    Plugins::load(s.clone(), Some(dir.path())).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    // A second load uses the artifact (a corrupt one is replaced, not fatal).
    let artifact = files[0].as_ref().unwrap().path();
    std::fs::write(&artifact, b"garbage").unwrap();
    let p = Plugins::load(s, Some(dir.path())).await.unwrap();
    assert_eq!(p.constraints().unwrap().operators(), ["SPREAD_EVEN"]);
    assert!(std::fs::read(&artifact).unwrap().len() > 1000);
}

/// Waits (bounded) for a condition another task makes true.
async fn wait(mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}
