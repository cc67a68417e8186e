use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

fn ids(tasks: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn kill9_restart_loses_nothing_and_duplicates_nothing() {
    let mut p = Pacer::start(&[]);
    let app = json!({"id": "/keep/web", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 2, "labels": {"x": "y"}});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let before = ids(&p.wait_running("/keep/web", 2));
    let pids: Vec<i32> = before.iter().map(|t| p.pid_of(t)).collect();
    let stopped = json!({"id": "/keep/idle", "cmd": "sleep 1", "instances": 0});
    assert_eq!(p.post("/v2/apps", &stopped.to_string()).status, 201);
    let version = p.app("/keep/web")["version"].clone();

    p.kill9();
    // Tasks keep running while Pacer is down.
    assert!(pids.iter().all(|&pid| alive(pid)));
    p.spawn();

    let after = ids(&p.wait_running("/keep/web", 2));
    assert_eq!(
        after, before,
        "the same tasks are re-adopted, none relaunched"
    );
    assert!(pids.iter().all(|&pid| alive(pid)));
    let app = p.app("/keep/web");
    assert_eq!(app["version"], version);
    assert_eq!(app["labels"], json!({"x": "y"}));
    assert_eq!(p.app("/keep/idle")["instances"], 0);
    assert_eq!(
        p.get("/v2/tasks").body["tasks"].as_array().unwrap().len(),
        2,
        "no duplicates"
    );

    // Still fully operable: scale up, and the counts converge.
    assert_eq!(
        p.put("/v2/apps/keep/web", r#"{"instances": 3}"#).status,
        200
    );
    let scaled = ids(&p.wait_running("/keep/web", 3));
    assert!(before.iter().all(|t| scaled.contains(t)));
}

#[test]
fn a_task_that_exits_while_pacer_is_down_is_replaced() {
    let mut p = Pacer::start(&[]);
    let app = json!({"id": "/gone", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let task = p.wait_running("/gone", 1)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = p.pid_of(&task);
    p.kill9();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the task to die", Duration::from_secs(10), || {
        (!alive(pid)).then_some(())
    });
    p.spawn();
    let replacement = wait_for("a replacement task", Duration::from_secs(60), || {
        let t = p.wait_running("/gone", 1);
        (t[0]["id"] != task.as_str()).then(|| t[0]["id"].as_str().unwrap().to_string())
    });
    // Same instance, next incarnation.
    assert_eq!(
        replacement.rsplitn(3, '.').nth(2),
        task.rsplitn(3, '.').nth(2)
    );
}

#[test]
fn graceful_stop_leaves_tasks_running_for_the_next_start() {
    let mut p = Pacer::start(&[]);
    p.post(
        "/v2/apps",
        r#"{"id": "/calm", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8}"#,
    );
    let before = ids(&p.wait_running("/calm", 1));
    let status = p.stop();
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
    p.spawn();
    assert_eq!(ids(&p.wait_running("/calm", 1)), before);
}

#[test]
fn a_second_pacer_on_the_same_data_dir_is_refused() {
    let p = Pacer::start(&[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pacer"))
        .arg("--data_dir")
        .arg(p.data_dir())
        .args(["--http_port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already open"), "{err}");
}
