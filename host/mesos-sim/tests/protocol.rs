//! The simulator against a scheduler-side client over real HTTP on loopback.

mod common;

use common::*;
use pacer_mesos_proto::v1::framework_info::capability::Type as Cap;
use pacer_mesos_proto::v1::task_status::{Reason, Source};
use pacer_mesos_proto::v1::TaskState;
use pacer_mesos_proto::{call, event, v1, Call, JSON, PROTOBUF};
use pacer_mesos_sim::{AgentState, LeaderMode, Sim, SimConfig};
use std::time::Duration;

const PA: &[Cap] = &[Cap::PartitionAware, Cap::TaskKillingState];

fn fast() -> SimConfig {
    SimConfig {
        allocation_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

fn reason(s: &v1::TaskStatus) -> Reason {
    Reason::try_from(s.reason.unwrap()).unwrap()
}

/// Waits for one HEARTBEAT, then a second: with heartbeats slower than the allocation interval
/// an allocation ran in between, and anything it sent would have come before the second one.
async fn allocation_passes(s: &mut Stream) -> Vec<v1::Offer> {
    let mut offers = Vec::new();
    for _ in 0..2 {
        loop {
            let e = s.next().await.expect("stream open");
            match ty(&e) {
                event::Type::Heartbeat => break,
                event::Type::Offers => offers.extend(e.offers.unwrap().offers),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    offers
}

#[tokio::test]
async fn error_codes_follow_the_masters_order_of_checks() {
    let sim = Sim::start(fast()).await.unwrap();
    let base = sim.url();
    let s = Stream::subscribe(&base, framework_info("errors", PA), false).await;
    let fid = s.framework_id.clone();
    let sid = s.stream_id.clone();
    let fw = Some(v1::FrameworkId { value: fid.clone() });
    let typed = |t: call::Type| Call {
        r#type: Some(t as i32),
        framework_id: fw.clone(),
        ..Default::default()
    };
    let pb = |c: &Call| encode_call(c, false);
    let revive = pb(&typed(call::Type::Revive));

    struct Case<'a> {
        name: &'a str,
        method: &'a str,
        path: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        body: Vec<u8>,
        status: u16,
        contains: &'a str,
    }
    let ct_pb = ("Content-Type", PROTOBUF);
    let ct_json = ("Content-Type", JSON);
    let stream = ("Mesos-Stream-Id", sid.as_str());
    let mut no_fw = typed(call::Type::Kill);
    no_fw.framework_id = None;
    no_fw.kill = Some(call::Kill {
        task_id: v1::TaskId { value: "t".into() },
        ..Default::default()
    });
    let mut bad_ack = typed(call::Type::Acknowledge);
    bad_ack.acknowledge = Some(call::Acknowledge {
        agent_id: v1::AgentId { value: "a".into() },
        task_id: v1::TaskId { value: "t".into() },
        uuid: vec![1, 2, 3],
    });
    let mut mismatched = subscribe_call(framework_info("x", PA));
    mismatched.framework_id = Some(v1::FrameworkId {
        value: "other".into(),
    });
    let sub = pb(&subscribe_call(framework_info("x", PA)));
    let unknown_fw = pb(&Call {
        r#type: Some(call::Type::Revive as i32),
        framework_id: Some(v1::FrameworkId {
            value: "nope".into(),
        }),
        ..Default::default()
    });
    // Field 2 (type) = KILL, field 6 (kill) = an empty message: kill.task_id is missing.
    let missing_required = vec![0x10, 0x06, 0x32, 0x00];
    let cases = vec![
        Case {
            name: "GET",
            method: "GET",
            path: "/api/v1/scheduler",
            headers: vec![],
            body: vec![],
            status: 405,
            contains: "POST",
        },
        Case {
            name: "no content type",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![],
            body: revive.clone(),
            status: 400,
            contains: "Expecting 'Content-Type' to be present",
        },
        Case {
            name: "content type with parameters",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![("Content-Type", "application/json; charset=utf-8")],
            body: b"{}".to_vec(),
            status: 415,
            contains: "",
        },
        Case {
            name: "bad JSON",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_json],
            body: b"{".to_vec(),
            status: 400,
            contains: "Failed to parse body into JSON",
        },
        Case {
            name: "bad protobuf",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb],
            body: vec![0xff, 0xff],
            status: 400,
            contains: "Failed to parse body into Call protobuf",
        },
        Case {
            name: "missing required protobuf field",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: missing_required,
            status: 400,
            contains: "kill.task_id",
        },
        Case {
            name: "no type",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_json],
            body: b"{}".to_vec(),
            status: 400,
            contains: "Failed to validate scheduler::Call: Expecting 'type' to be present",
        },
        Case {
            name: "SUBSCRIBE without subscribe",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_json],
            body: br#"{"type":"SUBSCRIBE"}"#.to_vec(),
            status: 400,
            contains: "Expecting 'subscribe' to be present",
        },
        Case {
            name: "SUBSCRIBE id mismatch",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb],
            body: pb(&mismatched),
            status: 400,
            contains: "differs",
        },
        Case {
            name: "KILL without framework_id",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: pb(&no_fw),
            status: 400,
            contains: "Expecting 'framework_id' to be present",
        },
        Case {
            name: "short ACK uuid",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: pb(&bad_ack),
            status: 400,
            contains: "uuid",
        },
        Case {
            name: "SUBSCRIBE with bad Accept",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, ("Accept", "text/html")],
            body: sub.clone(),
            status: 406,
            contains: "",
        },
        Case {
            name: "SUBSCRIBE with stream id",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: sub.clone(),
            status: 400,
            contains: "Mesos-Stream-Id",
        },
        Case {
            name: "unknown framework",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: unknown_fw,
            status: 400,
            contains: "Framework cannot be found",
        },
        Case {
            name: "missing stream id",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb],
            body: revive.clone(),
            status: 400,
            contains: "Mesos-Stream-Id",
        },
        Case {
            name: "wrong stream id",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![
                ct_pb,
                ("Mesos-Stream-Id", "00000000-0000-4000-8000-000000000000"),
            ],
            body: revive.clone(),
            status: 400,
            contains: "didn't match",
        },
        Case {
            name: "UNKNOWN",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: pb(&typed(call::Type::Unknown)),
            status: 501,
            contains: "",
        },
        Case {
            name: "REVIVE",
            method: "POST",
            path: "/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: revive.clone(),
            status: 202,
            contains: "",
        },
        Case {
            name: "REVIVE on the master path",
            method: "POST",
            path: "/master/api/v1/scheduler",
            headers: vec![ct_pb, stream],
            body: revive.clone(),
            status: 202,
            contains: "",
        },
    ];
    for c in cases {
        let r = request(&base, c.method, c.path, &c.headers, c.body).await;
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.text());
        assert!(
            r.text().contains(c.contains),
            "{}: body {:?}",
            c.name,
            r.text()
        );
        if c.status == 405 {
            assert_eq!(r.header("allow").as_deref(), Some("POST"), "{}", c.name);
        }
    }

    // Not the leader: 503 without a leader, 307 (protocol-relative) with another one.
    sim.set_leader(LeaderMode::NoLeader);
    let r = request(
        &base,
        "POST",
        "/api/v1/scheduler",
        &[ct_pb, stream],
        revive.clone(),
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (503, "No leader elected"));
    sim.set_leader(LeaderMode::Redirect("10.1.2.3:5050".into()));
    let r = request(
        &base,
        "POST",
        "/api/v1/scheduler",
        &[ct_pb, stream],
        revive.clone(),
    )
    .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location").unwrap(),
        "//10.1.2.3:5050/api/v1/scheduler"
    );
    sim.set_leader(LeaderMode::Leader);
    let r = request(&base, "GET", "/redirect", &[], vec![]).await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location").unwrap(),
        format!("//127.0.0.1:{}", sim.port())
    );

    // A disconnected framework is known but not subscribed.
    sim.drop_stream();
    let r = request(&base, "POST", "/api/v1/scheduler", &[ct_pb, stream], revive).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "Framework is not subscribed")
    );

    let v = sim.violations();
    assert!(
        v.iter()
            .any(|v| v.contains("KILL call without framework_id")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|v| v.contains("without the Mesos-Stream-Id")),
        "{v:?}"
    );
    assert!(v.iter().any(|v| v.contains("with stream id")), "{v:?}");
    assert!(v.iter().any(|v| v.contains("3-byte uuid")), "{v:?}");
    let calls = sim.calls();
    assert!(calls
        .iter()
        .any(|c| c.status == 501 && c.type_name() == Some("UNKNOWN")));
    sim.stop().await;
}

#[tokio::test]
async fn subscribe_gets_subscribed_heartbeat_and_offers() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("subscriber", PA), false).await;
    assert_eq!(s.content_type, PROTOBUF);
    assert_eq!(s.stream_id.len(), 36);
    let master = sim.master_id();
    assert_eq!(s.framework_id, format!("{master}-0000"));
    let sub = s.subscribed.clone().unwrap();
    assert_eq!(sub.heartbeat_interval_seconds, Some(15.0));
    let mi = sub.master_info.unwrap();
    assert_eq!(mi.id, master);
    assert_eq!(mi.port, u32::from(sim.port()));
    assert_eq!(mi.pid.unwrap(), format!("master@127.0.0.1:{}", sim.port()));
    assert_eq!(mi.address.unwrap().ip.as_deref(), Some("127.0.0.1"));
    // The heartbeat comes at once, before anything else.
    let e = s.next().await.unwrap();
    assert_eq!(ty(&e), event::Type::Heartbeat);
    let offers = s.offers().await;
    assert_eq!(offers.len(), 3);
    for o in &offers {
        assert!(
            o.id.value.starts_with(&format!("{master}-O")),
            "{}",
            o.id.value
        );
        assert!(o.agent_id.value.starts_with(&format!("{master}-S")));
        assert_eq!(o.framework_id.value, s.framework_id);
        assert_eq!(scalar_of(o, "cpus"), 4.0);
        assert_eq!(scalar_of(o, "mem"), 8192.0);
        assert_eq!(scalar_of(o, "disk"), 10000.0);
        let p = o.resources.iter().find(|r| r.name == "ports").unwrap();
        let r = &p.ranges.as_ref().unwrap().range;
        assert_eq!((r[0].begin, r[0].end), (31000, 32000));
        #[allow(deprecated)]
        let role = p.role.as_deref();
        assert_eq!(role, Some("*"));
        let n: usize = o
            .agent_id
            .value
            .rsplit("-S")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(o.hostname, format!("agent-{n}.sim"));
        let rack = o.attributes.iter().find(|a| a.name == "rack").unwrap();
        assert_eq!(rack.text.as_ref().unwrap().value, format!("rack-{}", n % 3));
        let index = o.attributes.iter().find(|a| a.name == "index").unwrap();
        assert_eq!(index.scalar.as_ref().unwrap().value, n as f64);
        let fd = o.domain.as_ref().unwrap().fault_domain.as_ref().unwrap();
        assert_eq!(fd.region.name, "region-1");
        assert_eq!(fd.zone.name, format!("zone-{}", n % 3));
        assert_eq!(o.url.as_ref().unwrap().address.port, 5051);
    }
    assert_eq!(sim.subscriptions(), 1);
    let fw = sim.framework().unwrap();
    assert!(fw.connected);
    assert_eq!(fw.stream_id.as_deref(), Some(s.stream_id.as_str()));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn json_subscription_launch_and_acknowledge() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("json", PA), true).await;
    assert_eq!(s.content_type, JSON);
    let offers = s.offers().await;
    let o = &offers[0];
    s.accept(&[&o.id], vec![task("j1", o, 1.0, 64.0, "true")], Some(0.0))
        .await;
    let st = s.update().await;
    assert_eq!(state_of(&st), TaskState::TaskStarting);
    assert_eq!(st.uuid.as_ref().unwrap().len(), 16);
    // The ACK goes out as JSON with the uuid in base64.
    s.ack(&st).await;
    let st = s.update_acked().await;
    assert_eq!(state_of(&st), TaskState::TaskRunning);
    let acks = sim
        .calls()
        .into_iter()
        .filter(|c| c.type_name() == Some("ACKNOWLEDGE"))
        .collect::<Vec<_>>();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[0].content_type.as_deref(), Some(JSON));
    let body: serde_json::Value = serde_json::from_slice(&acks[0].body).unwrap();
    assert!(body["acknowledge"]["uuid"].is_string());
    eventually("task acknowledged", || {
        sim.task("j1").is_some_and(|t| t.unacknowledged == 0)
    })
    .await;

    // camelCase keys are ignored by a real master: the call then lacks framework_id.
    let body = format!(
        r#"{{"type":"REVIVE","frameworkId":{{"value":"{}"}}}}"#,
        s.framework_id
    );
    let r = request(
        &s.base,
        "POST",
        "/api/v1/scheduler",
        &[("Content-Type", JSON), ("Mesos-Stream-Id", &s.stream_id)],
        body.into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = sim.violations();
    assert!(v.iter().any(|v| v.contains("frameworkId")), "{v:?}");
    sim.stop().await;
}

#[tokio::test]
async fn updates_are_reliable_and_ordered_per_task() {
    let sim = Sim::start(SimConfig {
        status_retry: Duration::from_millis(200),
        ..fast()
    })
    .await
    .unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("acks", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    let mut t = task("t1", o, 0.5, 128.0, "sleep 1000");
    t.resources.push(ports(&[(31000, 31001)]));
    s.accept(&[&o.id], vec![t], Some(0.0)).await;
    let first = s.update().await;
    assert_eq!(state_of(&first), TaskState::TaskStarting);
    assert_eq!(first.source, Some(Source::Executor as i32));
    assert_eq!(first.executor_id.as_ref().unwrap().value, "t1");
    assert_eq!(first.agent_id.as_ref().unwrap(), &o.agent_id);
    assert!(first.timestamp.is_some());
    // Without an ACK the same update comes again, and RUNNING waits behind it.
    let again = s.update().await;
    assert_eq!(state_of(&again), TaskState::TaskStarting);
    assert_eq!(again.uuid, first.uuid);
    let t = sim.task("t1").unwrap();
    assert_eq!(t.host_ports, vec![31000, 31001]);
    assert_eq!((t.cpus, t.mem_mb), (0.5, 128.0));
    s.ack(&first).await;
    // A duplicate ACK of an update already acknowledged is fine.
    s.ack(&again).await;
    let running = s.update().await;
    assert_eq!(state_of(&running), TaskState::TaskRunning);
    assert_ne!(running.uuid, first.uuid);
    s.ack(&running).await;
    eventually("everything acknowledged", || {
        sim.task("t1")
            .is_some_and(|t| t.unacknowledged == 0 && t.state == TaskState::TaskRunning)
    })
    .await;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());

    // An ACK of a uuid the master never sent is a violation (and still 202).
    let mut bogus = running.clone();
    bogus.uuid = Some(vec![7; 16]);
    s.ack(&bogus).await;
    let v = sim.violations();
    assert!(
        v.iter().any(|v| v.contains("ACKNOWLEDGE of unknown uuid")),
        "{v:?}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn invalid_offers_drop_tasks() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("offers", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    // An offer id the master never made.
    let bogus = v1::OfferId {
        value: format!("{}-O999", sim.master_id()),
    };
    s.accept(&[&bogus], vec![task("d1", o, 1.0, 64.0, "true")], None)
        .await;
    let st = s.update().await;
    assert_eq!(state_of(&st), TaskState::TaskDropped);
    assert_eq!(reason(&st), Reason::InvalidOffers);
    assert_eq!(st.source, Some(Source::Master as i32));
    assert!(st.uuid.is_none());
    assert!(st.message.unwrap().contains("no longer valid"));
    // A used offer cannot be used again.
    s.accept(&[&o.id], vec![task("d2", o, 1.0, 64.0, "true")], Some(0.0))
        .await;
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskStarting);
    s.accept(&[&o.id], vec![task("d3", o, 1.0, 64.0, "true")], None)
        .await;
    loop {
        let st = s.update_acked().await;
        if st.task_id.value == "d3" {
            assert_eq!(state_of(&st), TaskState::TaskDropped);
            break;
        }
    }
    let v = sim.violations();
    assert!(v.iter().any(|v| v.contains("never made")), "{v:?}");
    assert!(v.iter().any(|v| v.contains("already accepted")), "{v:?}");
    sim.stop().await;
}

#[tokio::test]
async fn oversized_and_invalid_tasks_get_task_error() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("errors", PA), false).await;
    let offers = s.offers().await;
    let (o, other) = (&offers[0], &offers[1]);
    let big = task("big", o, 100.0, 64.0, "true");
    let mut bad_ports = task("ports", o, 0.1, 16.0, "true");
    bad_ports.resources.push(ports(&[(40000, 40000)]));
    let mut wrong_agent = task("agent", o, 0.1, 16.0, "true");
    wrong_agent.agent_id = other.agent_id.clone();
    let ok = task("ok", o, 0.1, 16.0, "true");
    let dup = task("ok", o, 0.1, 16.0, "true");
    let mut both = task("both", o, 0.1, 16.0, "true");
    both.executor = Some(v1::ExecutorInfo {
        executor_id: v1::ExecutorId { value: "e".into() },
        ..Default::default()
    });
    let bad_id = task("a/b", o, 0.1, 16.0, "true");
    s.accept(
        &[&o.id],
        vec![big, bad_ports, wrong_agent, ok, dup, both, bad_id],
        Some(0.0),
    )
    .await;
    let mut errors = std::collections::BTreeMap::new();
    while errors.len() < 6 {
        let st = s.update_acked().await;
        if state_of(&st) == TaskState::TaskError {
            assert_eq!(reason(&st), Reason::TaskInvalid);
            assert!(st.uuid.is_none());
            errors.insert(st.task_id.value.clone(), st.message.unwrap_or_default());
        } else {
            assert_eq!(st.task_id.value, "ok");
        }
    }
    assert!(errors["big"].contains("more than available"), "{errors:?}");
    assert!(
        errors["ports"].contains("more than available"),
        "{errors:?}"
    );
    assert!(errors["agent"].contains("invalid agent"), "{errors:?}");
    assert!(errors["ok"].contains("duplicate"), "{errors:?}");
    assert!(errors["both"].contains("not both"), "{errors:?}");
    assert!(errors.contains_key("a/b"), "{errors:?}");
    let v = sim.violations();
    assert!(v.iter().any(|v| v.contains("task 'big' needs")), "{v:?}");
    assert!(
        v.iter().any(|v| v.contains("task 'ports' uses ports")),
        "{v:?}"
    );
    assert!(
        v.iter().any(|v| v.contains("task 'agent' names agent")),
        "{v:?}"
    );
    assert!(v.iter().any(|v| v.contains("task 'ok' reuses")), "{v:?}");
    assert_eq!(sim.tasks().len(), 1);
    sim.stop().await;
}

#[tokio::test]
async fn kill_goes_through_killing_to_killed() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("killer", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    s.accept(
        &[&o.id],
        vec![task("k1", o, 1.0, 64.0, "sleep 1000")],
        Some(0.0),
    )
    .await;
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskStarting);
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskRunning);
    // A KILL naming another agent is ignored...
    s.kill("k1", Some("some-other-agent")).await;
    // ...a KILL of an unknown task is answered like a reconciliation...
    s.kill("ghost", Some(&o.agent_id.value)).await;
    let st = s.update().await;
    assert_eq!(st.task_id.value, "ghost");
    assert_eq!(state_of(&st), TaskState::TaskGone);
    assert!(st.uuid.is_none());
    // ...and a real one goes through KILLING.
    s.kill("k1", None).await;
    let st = s.update_acked().await;
    assert_eq!(
        (st.task_id.value.as_str(), state_of(&st)),
        ("k1", TaskState::TaskKilling)
    );
    let st = s.update_acked().await;
    assert_eq!(state_of(&st), TaskState::TaskKilled);
    assert!(st.uuid.is_some());
    eventually("killed task forgotten after its ACK", || {
        sim.tasks().is_empty()
    })
    .await;
    let a = sim
        .agents()
        .into_iter()
        .find(|a| a.id == o.agent_id.value)
        .unwrap();
    assert_eq!(a.free_cpus, 4.0);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn reconciliation_answers_per_the_table() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("reconciler", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    let agent = o.agent_id.value.clone();
    s.accept(
        &[&o.id],
        vec![
            task("r1", o, 1.0, 64.0, "sleep 1000"),
            task("r2", o, 1.0, 64.0, "sleep 1000"),
        ],
        Some(0.0),
    )
    .await;
    // r1 is acknowledged to RUNNING; r2's STARTING is left unacknowledged.
    let mut r2_starting = None;
    let mut r1_running = false;
    while !(r1_running && r2_starting.is_some()) {
        let st = s.update().await;
        match (st.task_id.value.as_str(), state_of(&st)) {
            ("r1", TaskState::TaskStarting) => s.ack(&st).await,
            ("r1", TaskState::TaskRunning) => {
                s.ack(&st).await;
                r1_running = true;
            }
            ("r2", TaskState::TaskStarting) => r2_starting = Some(st),
            other => panic!("unexpected {other:?}"),
        }
    }
    eventually("r2 running on the agent", || {
        sim.task("r2")
            .is_some_and(|t| t.state == TaskState::TaskRunning)
    })
    .await;
    s.reconcile(&[
        ("r1", None),
        ("r2", Some(&agent)),
        ("x1", Some(&agent)),
        ("x2", None),
    ])
    .await;
    let mut got = std::collections::BTreeMap::new();
    while got.len() < 4 {
        let st = s.update().await;
        if st.uuid.is_some() {
            continue; // a retry of r2's STARTING
        }
        assert_eq!(reason(&st), Reason::Reconciliation);
        assert_eq!(st.source, Some(Source::Master as i32));
        assert!(st
            .message
            .as_deref()
            .unwrap()
            .starts_with("Reconciliation:"));
        got.insert(st.task_id.value.clone(), st);
    }
    assert_eq!(state_of(&got["r1"]), TaskState::TaskRunning);
    assert_eq!(got["r1"].agent_id.as_ref().unwrap().value, agent);
    // The oldest unacknowledged update's state, not the latest one.
    assert_eq!(state_of(&got["r2"]), TaskState::TaskStarting);
    assert_eq!(state_of(&got["x1"]), TaskState::TaskGone);
    assert_eq!(state_of(&got["x2"]), TaskState::TaskUnknown);

    // Implicit: one answer per known task.
    s.reconcile(&[]).await;
    let mut implicit = std::collections::BTreeSet::new();
    while implicit.len() < 2 {
        let st = s.update().await;
        if st.uuid.is_none() {
            assert_eq!(reason(&st), Reason::Reconciliation);
            implicit.insert(st.task_id.value.clone());
        }
    }
    assert_eq!(implicit.into_iter().collect::<Vec<_>>(), vec!["r1", "r2"]);

    // Without PARTITION_AWARE every unknown task is TASK_LOST.
    let mut old = Stream::subscribe(&sim.url(), framework_info("legacy", &[]), false).await;
    old.reconcile(&[("x1", Some(&agent)), ("x2", None)]).await;
    for _ in 0..2 {
        let st = old.update().await;
        assert_eq!(state_of(&st), TaskState::TaskLost, "{st:?}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn decline_filters_suppress_and_revive() {
    let sim = Sim::start(SimConfig {
        heartbeat_interval: Duration::from_millis(150),
        ..fast()
    })
    .await
    .unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("decliner", PA), false).await;
    let offers = s.offers().await;
    assert_eq!(offers.len(), 3);
    let ids: Vec<&v1::OfferId> = offers.iter().map(|o| &o.id).collect();
    s.decline(&ids, Some(3600.0)).await;
    // Filtered agents stay quiet; a new agent is offered.
    sim.add_agents(1);
    let next = s.offers().await;
    assert_eq!(next.len(), 1);
    assert!(offers.iter().all(|o| o.agent_id != next[0].agent_id));
    assert!(allocation_passes(&mut s).await.is_empty());
    // refuse_seconds 0: offered again at once.
    s.decline(&[&next[0].id], Some(0.0)).await;
    let again = s.offers().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].agent_id, next[0].agent_id);
    // SUPPRESS: nothing more, even for resources that come back.
    assert_eq!(s.simple(call::Type::Suppress).await.status, 202);
    s.decline(&[&again[0].id], Some(0.0)).await;
    assert!(allocation_passes(&mut s).await.is_empty());
    assert!(sim.framework().unwrap().suppressed);
    // REVIVE: unsuppressed and every filter cleared.
    assert_eq!(s.simple(call::Type::Revive).await.status, 202);
    let mut agents = std::collections::BTreeSet::new();
    while agents.len() < 4 {
        for o in s.offers().await {
            agents.insert(o.agent_id.value);
        }
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    // Declining an offer twice is a violation.
    s.decline(&[&offers[0].id], None).await;
    assert!(sim
        .violations()
        .iter()
        .any(|v| v.contains("already accepted or declined")));
    sim.stop().await;
}

#[tokio::test]
async fn second_subscription_fails_over_the_first_stream() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut a = Stream::subscribe(&sim.url(), framework_info("twice", PA), false).await;
    let first = a.offers().await;
    let mut info = framework_info("twice", PA);
    info.id = a.fid();
    let mut b = Stream::subscribe(&sim.url(), info, false).await;
    assert_eq!(b.framework_id, a.framework_id);
    assert_ne!(b.stream_id, a.stream_id);
    let e = a.next_non_heartbeat().await.unwrap();
    assert_eq!(ty(&e), event::Type::Error);
    assert_eq!(e.error.unwrap().message, "Framework failed over");
    assert!(a.ends().await);
    // The old offers were discarded and the resources are offered again on the new stream.
    let offers = b.offers().await;
    assert_eq!(offers.len(), 3);
    assert!(offers.iter().all(|o| first.iter().all(|f| f.id != o.id)));
    // The old stream id is no longer accepted.
    let r = a.simple(call::Type::Revive).await;
    assert_eq!(r.status, 400);
    assert_eq!(sim.subscriptions(), 2);
    sim.stop().await;
}

#[tokio::test]
async fn lost_agent_fails_rescinds_and_comes_back() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("partition", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    let agent = o.agent_id.value.clone();
    s.accept(
        &[&o.id],
        vec![task("p1", o, 1.0, 64.0, "sleep 1000")],
        Some(0.0),
    )
    .await;
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskStarting);
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskRunning);
    // The rest of the agent is offered again (refuse_seconds 0).
    let rest = loop {
        let found = s
            .offers()
            .await
            .into_iter()
            .find(|x| x.agent_id.value == agent);
        if let Some(x) = found {
            break x;
        }
    };
    assert_eq!(scalar_of(&rest, "cpus"), 3.0);

    sim.lose_agent(&agent);
    let (mut rescinded, mut failure, mut unreachable) = (false, false, false);
    while !(rescinded && failure && unreachable) {
        let e = s.next_non_heartbeat().await.unwrap();
        match ty(&e) {
            event::Type::Rescind => {
                assert_eq!(e.rescind.unwrap().offer_id, rest.id);
                rescinded = true;
            }
            event::Type::Failure => {
                let f = e.failure.unwrap();
                assert_eq!(f.agent_id.unwrap().value, agent);
                assert!(f.executor_id.is_none());
                failure = true;
            }
            event::Type::Update => {
                let st = e.update.unwrap().status;
                assert_eq!(state_of(&st), TaskState::TaskUnreachable);
                assert_eq!(reason(&st), Reason::AgentRemoved);
                assert!(st.uuid.is_none());
                assert!(st.unreachable_time.is_some());
                unreachable = true;
            }
            event::Type::Offers => {
                let offers = e.offers.unwrap().offers;
                assert!(offers.iter().all(|x| x.agent_id.value != agent));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        sim.agents().iter().find(|a| a.id == agent).unwrap().state,
        AgentState::Unreachable
    );
    s.reconcile(&[("p1", None)]).await;
    let st = s.update().await;
    assert_eq!(state_of(&st), TaskState::TaskUnreachable);

    sim.reregister_agent(&agent);
    s.reconcile(&[("p1", None)]).await;
    let st = s.update().await;
    assert_eq!(state_of(&st), TaskState::TaskRunning);
    assert_eq!(reason(&st), Reason::AgentReregistered);

    // Removal by the operator.
    sim.remove_agent(&agent);
    let mut gone = false;
    while !gone {
        let e = s.next_non_heartbeat().await.unwrap();
        if ty(&e) == event::Type::Update {
            let st = e.update.unwrap().status;
            assert_eq!(state_of(&st), TaskState::TaskGoneByOperator);
            assert_eq!(reason(&st), Reason::AgentRemovedByOperator);
            gone = true;
        }
    }
    assert!(sim.tasks().is_empty());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn master_failover_redirects_and_keeps_tasks() {
    let sim = Sim::start(fast()).await.unwrap();
    let old_base = sim.url();
    let old_master = sim.master_id();
    let mut s = Stream::subscribe(&old_base, framework_info("survivor", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    s.accept(
        &[&o.id],
        vec![task("f1", o, 1.0, 64.0, "sleep 1000")],
        Some(0.0),
    )
    .await;
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskStarting);
    assert_eq!(state_of(&s.update_acked().await), TaskState::TaskRunning);

    sim.failover().await;
    assert!(s.ends().await);
    assert_ne!(sim.master_id(), old_master);
    let new_port = sim.port();
    assert_ne!(sim.url(), old_base);
    let r = post_call(
        &old_base,
        &subscribe_call(framework_info("x", PA)),
        false,
        None,
    )
    .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location").unwrap(),
        format!("//127.0.0.1:{new_port}/api/v1/scheduler")
    );
    let r = request(&old_base, "GET", "/redirect", &[], vec![]).await;
    assert_eq!(
        r.header("location").unwrap(),
        format!("//127.0.0.1:{new_port}")
    );

    let mut info = framework_info("survivor", PA);
    info.id = s.fid();
    let mut s2 = Stream::subscribe(&sim.url(), info, false).await;
    assert_eq!(s2.framework_id, s.framework_id);
    assert_eq!(
        s2.subscribed
            .as_ref()
            .unwrap()
            .master_info
            .as_ref()
            .unwrap()
            .id,
        sim.master_id()
    );
    // New offers carry the new master id; the used agent offers what is left.
    let offers = s2.offers().await;
    assert!(offers
        .iter()
        .all(|x| x.id.value.starts_with(&sim.master_id())));
    let used = offers.iter().find(|x| x.agent_id == o.agent_id).unwrap();
    assert_eq!(scalar_of(used, "cpus"), 3.0);
    s2.reconcile(&[("f1", None)]).await;
    let st = s2.update().await;
    assert_eq!(state_of(&st), TaskState::TaskRunning);
    assert_eq!(sim.tasks().len(), 1);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn teardown_and_disconnection() {
    let sim = Sim::start(SimConfig {
        status_retry: Duration::from_secs(3600),
        ..fast()
    })
    .await
    .unwrap();
    let base = sim.url();
    // A disconnected framework with a failover timeout keeps its tasks; unacknowledged updates
    // are sent again on the next stream.
    let mut s = Stream::subscribe(&base, framework_info("dropper", PA), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    s.accept(
        &[&o.id],
        vec![task("u1", o, 1.0, 64.0, "sleep 1000")],
        Some(0.0),
    )
    .await;
    let starting = s.update().await;
    assert_eq!(state_of(&starting), TaskState::TaskStarting);
    sim.drop_stream();
    assert!(s.ends().await);
    assert!(!sim.framework().unwrap().connected);
    let mut info = framework_info("dropper", PA);
    info.id = s.fid();
    let mut s2 = Stream::subscribe(&base, info.clone(), false).await;
    assert_ne!(s2.stream_id, s.stream_id);
    let again = s2.update().await;
    assert_eq!(again.uuid, starting.uuid);
    s2.ack(&again).await;
    assert_eq!(state_of(&s2.update_acked().await), TaskState::TaskRunning);
    // The client going away is noticed too.
    s2.close();
    eventually("disconnect noticed", || {
        sim.framework().is_some_and(|f| !f.connected)
    })
    .await;
    let mut s3 = Stream::subscribe(&base, info.clone(), false).await;

    // TEARDOWN: tasks killed, stream closed, framework gone for good.
    assert_eq!(s3.simple(call::Type::Teardown).await.status, 202);
    assert!(s3.ends().await);
    assert!(sim.tasks().is_empty());
    let mut s4 = Stream::open(&base, info, false).await;
    let e = s4.next().await.unwrap();
    assert_eq!(ty(&e), event::Type::Error);
    assert_eq!(e.error.unwrap().message, "Framework has been removed");
    assert!(s4.ends().await);

    // failover_timeout 0: a dropped stream removes the framework and its tasks at once.
    let mut quick = framework_info("quick", PA);
    quick.failover_timeout = None;
    let mut q = Stream::subscribe(&base, quick, false).await;
    let offers = q.offers().await;
    let o = &offers[0];
    q.accept(
        &[&o.id],
        vec![task("q1", o, 1.0, 64.0, "sleep 1000")],
        Some(0.0),
    )
    .await;
    q.update().await;
    sim.drop_stream();
    eventually("framework removed", || {
        sim.framework().is_none() && sim.tasks().is_empty()
    })
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn many_agents_and_tasks() {
    let sim = Sim::start(SimConfig {
        agents: 200,
        agent_cpus: 100.0,
        agent_mem_mb: 500_000.0,
        starting_after: Duration::ZERO,
        running_after: Duration::ZERO,
        record_calls: false,
        ..fast()
    })
    .await
    .unwrap();
    let mut s = Stream::subscribe(&sim.url(), framework_info("bulk", PA), false).await;
    let offers = s.offers().await;
    assert_eq!(offers.len(), 200);
    let per_agent = 10;
    for o in &offers {
        let tasks = (0..per_agent)
            .map(|i| {
                task(
                    &format!("{}-{i}", o.agent_id.value),
                    o,
                    1.0,
                    100.0,
                    "sleep 1000",
                )
            })
            .collect();
        s.accept(&[&o.id], tasks, Some(3600.0)).await;
    }
    let total = offers.len() * per_agent;
    let mut running = 0;
    while running < total {
        let st = s.update_acked().await;
        if state_of(&st) == TaskState::TaskRunning {
            running += 1;
        }
    }
    assert_eq!(sim.tasks().len(), total);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn reserved_resources_go_to_their_role() {
    let sim = Sim::start(SimConfig {
        agents: 1,
        roles_reserved: Some(("web".into(), 1.0, 1024.0)),
        ..fast()
    })
    .await
    .unwrap();
    let mut info = framework_info("roles", &[Cap::MultiRole, Cap::PartitionAware]);
    info.roles = vec!["web".into()];
    let mut s = Stream::subscribe(&sim.url(), info, false).await;
    let offers = s.offers().await;
    assert_eq!(offers.len(), 1);
    let o = &offers[0];
    assert_eq!(
        o.allocation_info.as_ref().unwrap().role.as_deref(),
        Some("web")
    );
    #[allow(deprecated)]
    let role_cpus = |role: &str| -> f64 {
        o.resources
            .iter()
            .filter(|r| r.name == "cpus" && r.role.as_deref() == Some(role))
            .map(|r| r.scalar.as_ref().unwrap().value)
            .sum()
    };
    assert_eq!((role_cpus("*"), role_cpus("web")), (3.0, 1.0));
    assert!(o
        .resources
        .iter()
        .all(|r| r.allocation_info.as_ref().unwrap().role.as_deref() == Some("web")));
    // A task may use the reserved resources as offered (allocation_info included)...
    let mut good = task("reserved", o, 0.0, 0.0, "sleep 1000");
    good.resources = o
        .resources
        .iter()
        .filter(|r| r.name == "cpus" || r.name == "mem")
        .cloned()
        .collect();
    #[allow(deprecated)]
    good.resources.retain(|r| r.role.as_deref() == Some("web"));
    // ...but resources without allocation_info are not in a MULTI_ROLE offer.
    let bare = task("bare", o, 0.5, 64.0, "sleep 1000");
    s.accept(&[&o.id], vec![good, bare], Some(0.0)).await;
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let st = s.update_acked().await;
        seen.entry(st.task_id.value.clone())
            .or_insert(state_of(&st));
    }
    assert_eq!(seen["reserved"], TaskState::TaskStarting);
    assert_eq!(seen["bare"], TaskState::TaskError);
    let t = sim.task("reserved").unwrap();
    assert_eq!((t.cpus, t.mem_mb), (1.0, 1024.0));
    sim.stop().await;
}
