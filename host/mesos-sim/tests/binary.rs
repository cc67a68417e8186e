//! The `pacer-mesos-sim` binary and the `/sim/...` HTTP controls.

mod common;

use common::*;
use pacer_mesos_proto::v1::framework_info::capability::Type as Cap;
use pacer_mesos_proto::v1::TaskState;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn binary_serves_the_api_and_the_controls() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pacer-mesos-sim"))
        .args([
            "--port",
            "0",
            "--agents",
            "2",
            "--agent-cpus",
            "2",
            "--agent-mem",
            "1024",
            "--agent-ports",
            "5000-5009,6000-6000",
            "--allocation-interval-ms",
            "50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    let json = |r: &Reply| -> serde_json::Value { serde_json::from_slice(&r.body).unwrap() };
    let agents = json(&request(&base, "GET", "/sim/agents", &[], vec![]).await);
    assert_eq!(agents.as_array().unwrap().len(), 2);
    let r = request(&base, "POST", "/sim/agents?count=1", &[], vec![]).await;
    assert_eq!(json(&r).as_array().unwrap().len(), 3);

    let mut s =
        Stream::subscribe(&base, framework_info("bin", &[Cap::PartitionAware]), false).await;
    let offers = s.offers().await;
    assert_eq!(offers.len(), 3);
    let o = &offers[0];
    let p = o.resources.iter().find(|r| r.name == "ports").unwrap();
    let ranges: Vec<(u64, u64)> = p
        .ranges
        .as_ref()
        .unwrap()
        .range
        .iter()
        .map(|r| (r.begin, r.end))
        .collect();
    assert_eq!(ranges, vec![(5000, 5009), (6000, 6000)]);
    s.accept(
        &[&o.id],
        vec![
            task("b1", o, 1.0, 64.0, "sleep 1000"),
            task("b2", o, 1.0, 64.0, "sleep 1000"),
        ],
        Some(0.0),
    )
    .await;
    let mut running = 0;
    while running < 2 {
        if state_of(&s.update_acked().await) == TaskState::TaskRunning {
            running += 1;
        }
    }
    let tasks = json(&request(&base, "GET", "/sim/tasks", &[], vec![]).await);
    assert_eq!(tasks.as_array().unwrap().len(), 2);
    assert_eq!(tasks[0]["state"], "TASK_RUNNING");

    // Task controls.
    let r = request(
        &base,
        "POST",
        "/sim/tasks/b1/health?healthy=false",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    let st = s.update_acked().await;
    assert_eq!(
        (state_of(&st), st.healthy),
        (TaskState::TaskRunning, Some(false))
    );
    request(
        &base,
        "POST",
        "/sim/tasks/b1/fail?message=boom",
        &[],
        vec![],
    )
    .await;
    let st = s.update_acked().await;
    assert_eq!(
        (state_of(&st), st.message.as_deref()),
        (TaskState::TaskFailed, Some("boom"))
    );
    request(&base, "POST", "/sim/tasks/b2/finish", &[], vec![]).await;
    let st = s.update_acked().await;
    assert_eq!(state_of(&st), TaskState::TaskFinished);

    // Agent controls.
    let agent = &o.agent_id.value;
    let r = request(
        &base,
        "POST",
        &format!("/sim/agents/{agent}/lose"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    let e = s.expect(pacer_mesos_proto::event::Type::Failure).await;
    assert_eq!(&e.failure.unwrap().agent_id.unwrap().value, agent);
    let agents = json(&request(&base, "GET", "/sim/agents", &[], vec![]).await);
    assert!(agents
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == *agent && a["state"] == "Unreachable"));
    request(
        &base,
        "POST",
        &format!("/sim/agents/{agent}/reregister"),
        &[],
        vec![],
    )
    .await;
    request(
        &base,
        "POST",
        &format!("/sim/agents/{agent}/remove"),
        &[],
        vec![],
    )
    .await;

    // Mesos-like state.
    let state = json(&request(&base, "GET", "/master/state", &[], vec![]).await);
    assert_eq!(state["frameworks"][0]["id"], s.framework_id.as_str());
    assert_eq!(state["slaves"].as_array().unwrap().len(), 2);
    assert_eq!(state["slaves"][0]["resources"]["cpus"], 2.0);

    // Recorded calls and violations.
    let calls = json(&request(&base, "GET", "/sim/calls?type=ACCEPT", &[], vec![]).await);
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["status"], 202);
    assert_eq!(calls[0]["content_type"], "application/x-protobuf");
    assert!(calls[0]["body_base64"].as_str().unwrap().len() > 10);
    let v = json(&request(&base, "GET", "/sim/violations", &[], vec![]).await);
    assert_eq!(v, serde_json::json!([]));

    // Stream controls.
    request(&base, "POST", "/sim/mute?on=true", &[], vec![]).await;
    request(&base, "POST", "/sim/mute?on=false", &[], vec![]).await;
    request(&base, "POST", "/sim/stream/drop", &[], vec![]).await;
    assert!(s.ends().await);
    let r = request(&base, "POST", "/sim/failover", &[], vec![]).await;
    let new_url = json(&r)["url"].as_str().unwrap().to_string();
    assert_ne!(new_url, base);
    let r = request(&base, "GET", "/redirect", &[], vec![]).await;
    assert_eq!(r.status, 307);
    assert_eq!(format!("http:{}", r.header("location").unwrap()), new_url);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
