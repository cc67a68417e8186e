use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn basic_example_runs_as_a_real_process() {
    let p = Pacer::start(&[]);
    let r = p.post("/v2/apps", &example("basic-0.json"));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("Location"), Some("/v2/apps/basic-0"));
    let dep = r
        .header("Marathon-Deployment-Id")
        .expect("deployment id header")
        .to_string();
    assert_eq!(r.body["deployments"], json!([{"id": dep}]));
    assert_eq!(r.body["id"], "/basic-0");
    assert_eq!(r.body["cpus"], 0.1);
    assert_eq!(r.body["mem"], 10.0);
    assert_eq!(r.body["tasksRunning"], 0);
    assert_eq!(
        r.body["portDefinitions"][0]["port"], 10000,
        "first dynamic service port"
    );

    let tasks = p.wait_running("/basic-0", 1);
    let t = &tasks[0];
    assert_eq!(t["host"], "127.0.0.1");
    assert_eq!(t["state"], "TASK_RUNNING");
    assert_eq!(t["servicePorts"], json!([10000]));
    let port = t["ports"][0].as_u64().unwrap() as u32;
    assert!(
        (p.agent_ports.0..=p.agent_ports.1).contains(&port),
        "host port {port} from the agent's range"
    );
    let id = t["id"].as_str().unwrap();
    assert!(
        id.starts_with("basic-0.instance-") && id.ends_with("._app.1"),
        "1.8+ task id: {id}"
    );
    assert!(t["stagedAt"].as_str().unwrap().ends_with('Z') && t["startedAt"].is_string());

    // It is a real process, writing to its sandbox.
    assert!(alive(p.pid_of(id)));
    let stdout = p.sandbox(id).join("stdout");
    wait_for("Hello Marathon in stdout", Duration::from_secs(20), || {
        std::fs::read_to_string(&stdout)
            .ok()
            .filter(|s| s.contains("Hello Marathon"))
    });

    // The same task shows up in the task lists.
    let all = p.get("/v2/tasks?status=running");
    assert_eq!(all.body["tasks"].as_array().unwrap().len(), 1);
    let app_tasks = p.get("/v2/apps/basic-0/tasks");
    assert_eq!(app_tasks.body["tasks"][0]["id"], t["id"]);
    let listed = p.get("/v2/apps");
    assert_eq!(listed.body["apps"][0]["tasksRunning"], 1);
    assert!(
        listed.body["apps"][0].get("tasks").is_none(),
        "tasks only on request"
    );
    let embedded = p.get("/v2/apps?embed=apps.tasks");
    assert_eq!(embedded.body["apps"][0]["tasks"][0]["id"], t["id"]);
}

#[test]
fn http_server_example_serves_on_port0() {
    let p = Pacer::start(&[]);
    assert_eq!(p.post("/v2/apps", &example("http-server.json")).status, 201);
    let tasks = p.wait_running("/http-server", 1);
    let port = tasks[0]["ports"][0].as_u64().unwrap();
    let body = wait_for("the app to answer HTTP", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .ok()
            .map(|r| r.status())
    });
    assert_eq!(body, 200);
}

#[test]
fn task_environment_follows_marathon() {
    let p = Pacer::start(&["--env_vars_prefix", "PFX_"]);
    let app = json!({
        "id": "/env/app", "cmd": "env | sort > env.txt; sleep 1000", "cpus": 0.01, "mem": 8,
        "env": {"GREETING": "hi"}, "labels": {"team-name": "core"},
        "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0}]
    });
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let tasks = p.wait_running("/env/app", 1);
    let id = tasks[0]["id"].as_str().unwrap();
    let ports: Vec<u64> = tasks[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let file = p.sandbox(id).join("env.txt");
    let env = wait_for("env.txt", Duration::from_secs(20), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| s.contains("MESOS_TASK_ID"))
    });
    for line in [
        "GREETING=hi".to_string(),
        format!("PFX_PORT0={}", ports[0]),
        format!("PFX_PORT1={}", ports[1]),
        format!("PFX_PORT={}", ports[0]),
        format!("PFX_PORTS={},{}", ports[0], ports[1]),
        format!("PFX_PORT_HTTP={}", ports[0]),
        "PFX_HOST=127.0.0.1".to_string(),
        format!("MESOS_TASK_ID={id}"),
        "MARATHON_APP_ID=/env/app".to_string(),
        "MARATHON_APP_RESOURCE_MEM=8.0".to_string(),
        "MARATHON_APP_LABELS=TEAM_NAME".to_string(),
        "MARATHON_APP_LABEL_TEAM_NAME=core".to_string(),
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "missing `{line}` in:\n{env}"
        );
    }
    // The group was created implicitly.
    let app = p.app("/env/app");
    assert!(app["version"].is_string());
}

#[test]
fn scale_restart_kill_and_delete() {
    let p = Pacer::start(&[]);
    let app = json!({"id": "/life", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 1});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    p.wait_running("/life", 1);

    // Scale 1 → 3.
    let r = p.put("/v2/apps/life", r#"{"instances": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deploymentId"].is_string() && r.body["version"].is_string());
    assert_eq!(
        r.header("Marathon-Deployment-Id"),
        r.body["deploymentId"].as_str()
    );
    let tasks = p.wait_running("/life", 3);
    let pids: Vec<i32> = tasks
        .iter()
        .map(|t| p.pid_of(t["id"].as_str().unwrap()))
        .collect();
    assert!(pids.iter().all(|&pid| alive(pid)));
    let app = p.app("/life");
    assert_ne!(
        app["versionInfo"]["lastScalingAt"], app["versionInfo"]["lastConfigChangeAt"],
        "a scale is not a config change"
    );

    // Restart replaces every task.
    let before: Vec<Value> = tasks.iter().map(|t| t["id"].clone()).collect();
    let r = p.post("/v2/apps/life/restart", "");
    assert_eq!(r.status, 200, "{}", r.text);
    let after = wait_for("new tasks after restart", Duration::from_secs(60), || {
        let t = p.wait_running("/life", 3);
        t.iter().all(|x| !before.contains(&x["id"])).then_some(t)
    });
    wait_for("old processes to exit", Duration::from_secs(20), || {
        pids.iter().all(|&pid| !alive(pid)).then_some(())
    });

    // Killing a task relaunches the same instance with the next incarnation.
    let victim = after[0]["id"].as_str().unwrap().to_string();
    let victim_pid = p.pid_of(&victim);
    let r = p.delete(&format!("/v2/apps/life/tasks/{victim}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["task"]["id"], victim.as_str());
    let instance = victim.rsplitn(3, '.').nth(2).unwrap().to_string();
    wait_for(
        "the killed task's replacement",
        Duration::from_secs(60),
        || {
            let tasks = p.wait_running("/life", 3);
            tasks
                .iter()
                .any(|t| t["id"] == format!("{instance}._app.2"))
                .then_some(())
        },
    );
    assert!(!alive(victim_pid));

    // Kill with scale lowers the instance count.
    let one = p.wait_running("/life", 3)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = p.delete(&format!("/v2/apps/life/tasks/{one}?scale=true"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["deploymentId"].is_string());
    assert_eq!(p.app("/life")["instances"], 2);
    p.wait_running("/life", 2);

    // Suspend: instances 0 stops everything.
    let pids: Vec<i32> = p
        .wait_running("/life", 2)
        .iter()
        .map(|t| p.pid_of(t["id"].as_str().unwrap()))
        .collect();
    assert_eq!(p.put("/v2/apps/life", r#"{"instances": 0}"#).status, 200);
    p.wait_running("/life", 0);
    wait_for(
        "suspended processes to exit",
        Duration::from_secs(20),
        || pids.iter().all(|&pid| !alive(pid)).then_some(()),
    );

    // Versions: every change stored, newest first.
    let versions = p.get("/v2/apps/life/versions");
    let list = versions.body["versions"].as_array().unwrap();
    assert!(list.len() >= 4, "{list:?}");
    assert!(list[0].as_str() > list[1].as_str());
    let old = p.get(&format!(
        "/v2/apps/life/versions/{}",
        list.last().unwrap().as_str().unwrap()
    ));
    assert_eq!(old.body["instances"], 1);

    // Delete.
    assert_eq!(p.put("/v2/apps/life", r#"{"instances": 1}"#).status, 200);
    let pid = p.pid_of(p.wait_running("/life", 1)[0]["id"].as_str().unwrap());
    let r = p.delete("/v2/apps/life");
    assert_eq!(r.status, 200);
    assert!(r.body["deploymentId"].is_string());
    assert_eq!(p.get("/v2/apps/life").status, 404);
    wait_for(
        "deleted app's process to exit",
        Duration::from_secs(20),
        || (!alive(pid)).then_some(()),
    );
    wait_for("no tasks left", Duration::from_secs(20), || {
        p.get("/v2/tasks").body["tasks"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
}

#[test]
fn crashing_command_is_backed_off_and_reported() {
    let p = Pacer::start(&[]);
    let app = json!({"id": "/crash", "cmd": "echo boom; exit 3", "cpus": 0.01, "mem": 8, "backoffSeconds": 1, "backoffFactor": 2.0});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let failure = wait_for("lastTaskFailure", Duration::from_secs(30), || {
        let app = p.app("/crash");
        app.get("lastTaskFailure").cloned()
    });
    assert_eq!(failure["state"], "TASK_FAILED");
    assert_eq!(failure["appId"], "/crash");
    assert!(
        failure["message"].as_str().unwrap().contains("status 3"),
        "{failure}"
    );
    // The instance is relaunched (same instance, higher incarnation), with growing delays:
    // after the 3rd failure the next delay is 4 s, so the 4th incarnation cannot appear early.
    let third = wait_for("third incarnation to fail", Duration::from_secs(30), || {
        let f = p.app("/crash")["lastTaskFailure"].clone();
        let done = f["taskId"]
            .as_str()
            .is_some_and(|id| id.ends_with("._app.3"));
        done.then_some(f)
    });
    let failed_at = third["timestamp"].as_str().unwrap().to_string();
    let fourth = wait_for("fourth incarnation", Duration::from_secs(30), || {
        let f = p.app("/crash")["lastTaskFailure"].clone();
        let done = f["taskId"]
            .as_str()
            .is_some_and(|id| id.ends_with("._app.4"));
        done.then_some(f)
    });
    let t3 = time_ms(&failed_at);
    let t4 = time_ms(fourth["timestamp"].as_str().unwrap());
    assert!(
        t4 - t3 >= 4000,
        "backoff of 4 s between the 3rd and 4th failure, saw {} ms",
        t4 - t3
    );
}

fn time_ms(ts: &str) -> i64 {
    pacer_core::time::Timestamp::parse(ts)
        .expect("a Marathon timestamp")
        .as_millis() as i64
}
