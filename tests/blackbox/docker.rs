//! Docker tasks. With an engine (the test command starts one where it can) the container really
//! runs and serves; without one the task must fail with a clear reason.

use crate::harness::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn engine_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn image_available() -> bool {
    Command::new("docker")
        .args(["image", "inspect", "pacer/busybox:local"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn docker_app_runs_in_a_container_or_fails_clearly() {
    if !engine_available() {
        eprintln!("docker: no Docker engine reachable here; checking that Docker tasks fail with a clear reason instead");
        let p = Pacer::start(&[]);
        assert_eq!(
            p.post("/v2/apps", &example("docker-busybox.json")).status,
            201
        );
        let failure = wait_for("a task failure", Duration::from_secs(60), || {
            p.app("/docker-busybox").get("lastTaskFailure").cloned()
        });
        assert!(
            failure["message"].as_str().unwrap().contains("Docker"),
            "{failure}"
        );
        return;
    }
    assert!(
        image_available(),
        "the test command builds pacer/busybox:local (examples/docker/build-local-image.sh)"
    );
    let p = Pacer::start(&[]);
    let r = p.post("/v2/apps", &example("docker-busybox.json"));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["container"]["portMappings"][0]["containerPort"],
        8080
    );
    let tasks = p.wait_running("/docker-busybox", 1);
    let port = tasks[0]["ports"][0].as_u64().unwrap() as u32;
    assert!((p.agent_ports.0..=p.agent_ports.1).contains(&port));
    let status = wait_for("the container to serve", Duration::from_secs(60), || {
        ureq::get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .ok()
            .map(|r| r.status())
    });
    assert_eq!(status, 200);
    let task_id = tasks[0]["id"].as_str().unwrap().to_string();
    let containers = || {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label=MESOS_TASK_ID={task_id}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert!(
        !containers().is_empty(),
        "the container carries the MESOS_TASK_ID label"
    );
    assert_eq!(p.delete("/v2/apps/docker-busybox").status, 200);
    wait_for(
        "the container to be removed",
        Duration::from_secs(60),
        || containers().is_empty().then_some(()),
    );
}
