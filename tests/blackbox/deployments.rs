//! Deployments, groups, versions, backoff and the queue, on real processes.

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::time::{Duration, Instant};

/// Processes whose command line is exactly `sleep <arg>`.
fn count_sleepers(arg: &str) -> usize {
    let want = format!("sleep\0{arg}\0");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .filter(|c| c == want.as_bytes())
        .count()
}

fn deployments(p: &Pacer) -> Vec<Value> {
    p.get("/v2/deployments")
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn rolling_upgrade_of_six_stays_within_bounds_on_real_processes() {
    let p = Pacer::start(&[]);
    // Unique sleep arguments per test, so other tests' processes are not counted.
    let (v1, v2) = (
        format!("{}1", p.agent_ports.0),
        format!("{}2", p.agent_ports.0),
    );
    let app = |arg: &str| {
        json!({"id": "/roll", "cmd": format!("exec sleep {arg}"), "instances": 6,
            "cpus": 0.01, "mem": 8,
            "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2}})
        .to_string()
    };
    assert_eq!(p.post("/v2/apps", &app(&v1)).status, 201);
    p.wait_running("/roll", 6);
    wait_for("6 v1 processes", Duration::from_secs(20), || {
        (count_sleepers(&v1) == 6).then_some(())
    });

    let r = p.put("/v2/apps/roll", &app(&v2));
    assert_eq!(r.status, 200, "{}", r.text);
    let dep = r.body["deploymentId"].as_str().unwrap().to_string();
    let listed = deployments(&p);
    assert_eq!(listed[0]["id"], dep.as_str());
    assert_eq!(
        listed[0]["steps"],
        json!([{"actions": [{"action": "RestartApplication", "app": "/roll"}]}])
    );
    // Sample the processes while the upgrade runs.
    let (mut max_total, mut min_total, mut samples) = (0, usize::MAX, 0);
    let start = Instant::now();
    loop {
        let (a, b) = (count_sleepers(&v1), count_sleepers(&v2));
        max_total = max_total.max(a + b);
        min_total = min_total.min(a + b);
        samples += 1;
        if a == 0 && b == 6 && deployments(&p).is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "upgrade did not finish: v1={a} v2={b}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(samples > 1);
    assert!(
        max_total <= 7,
        "never more than 7 processes, saw {max_total}"
    );
    assert!(
        min_total >= 3,
        "never fewer than 3 processes, saw {min_total}"
    );
    let tasks = p.wait_running("/roll", 6);
    let version = p.app("/roll")["version"].clone();
    assert!(tasks.iter().all(|t| t["version"] == version));
}

#[test]
fn groups_start_in_dependency_order_and_stop_in_reverse() {
    let p = Pacer::start(&[]);
    let log = p.dir.path().join("order.log");
    let cmd = |name: &str| {
        format!(
            "trap 'echo stop-{name} >> {log}; exit 0' TERM; echo start-{name} >> {log}; while true; do sleep 0.2; done",
            log = log.display()
        )
    };
    let group = json!({"id": "/shop", "apps": [
        {"id": "web", "cmd": cmd("web"), "cpus": 0.01, "mem": 8, "dependencies": ["api"]},
        {"id": "api", "cmd": cmd("api"), "cpus": 0.01, "mem": 8, "dependencies": ["/shop/db"]},
        {"id": "db", "cmd": cmd("db"), "cpus": 0.01, "mem": 8}
    ]});
    let r = p.post("/v2/groups", &group.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("Location"), Some("/v2/groups/shop"));
    for app in ["/shop/db", "/shop/api", "/shop/web"] {
        p.wait_running(app, 1);
    }
    let g = p.get("/v2/groups/shop");
    assert_eq!(g.status, 200);
    assert_eq!(g.body["id"], "/shop");
    assert_eq!(g.body["apps"].as_array().unwrap().len(), 3);
    assert_eq!(
        p.post("/v2/groups", &json!({"id": "/shop"}).to_string())
            .status,
        409
    );

    let r = p.delete("/v2/groups/shop");
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("the group to go", Duration::from_secs(60), || {
        (p.get("/v2/groups/shop").status == 404 && deployments(&p).is_empty()).then_some(())
    });
    let lines: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "start-db",
            "start-api",
            "start-web",
            "stop-web",
            "stop-api",
            "stop-db"
        ]
    );
}

#[test]
fn backoff_is_delayed_in_the_queue_and_delete_delay_resets_it() {
    let p = Pacer::start(&[]);
    let app = json!({"id": "/crash", "cmd": "exit 1", "cpus": 0.01, "mem": 8,
        "backoffSeconds": 600, "backoffFactor": 2});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let item = wait_for("a delayed queue entry", Duration::from_secs(30), || {
        let q = p.get("/v2/queue");
        q.body["queue"]
            .as_array()?
            .iter()
            .find(|i| i["app"]["id"] == "/crash" && i["delay"]["overdue"] == false)
            .cloned()
    });
    assert_eq!(item["count"], 1);
    // 600 s capped by maxLaunchDelaySeconds (default 300).
    let left = item["delay"]["timeLeftSeconds"].as_u64().unwrap();
    assert!(left > 250 && left <= 300, "{left}");
    let failure = p.app("/crash")["lastTaskFailure"].clone();
    assert_eq!(failure["state"], "TASK_FAILED");
    // Delayed: no relaunch while the delay runs.
    std::thread::sleep(Duration::from_millis(500));
    let first = failure["taskId"].as_str().unwrap().to_string();
    assert_eq!(p.app("/crash")["lastTaskFailure"]["taskId"], first.as_str());

    let r = p.delete("/v2/queue/crash/delay");
    assert_eq!(r.status, 204, "{}", r.text);
    // It launches at once, and fails again.
    let again = wait_for("a relaunch", Duration::from_secs(30), || {
        let f = p.app("/crash")["lastTaskFailure"].clone();
        (f["taskId"] != first.as_str()).then_some(f)
    });
    assert!(again["taskId"].as_str().unwrap().ends_with("._app.2"));
    assert_eq!(p.delete("/v2/queue/nothing/delay").status, 404);

    // An app that fits nowhere waits (overdue) and says why.
    let big = json!({"id": "/big", "cmd": "sleep 1", "cpus": 10000, "mem": 8});
    assert_eq!(p.post("/v2/apps", &big.to_string()).status, 201);
    let item = wait_for(
        "a waiting queue entry with offers",
        Duration::from_secs(30),
        || {
            let q = p.get("/v2/queue");
            q.body["queue"]
                .as_array()?
                .iter()
                .find(|i| {
                    i["app"]["id"] == "/big"
                        && i["processedOffersSummary"]["unusedOffersCount"].as_u64() > Some(0)
                })
                .cloned()
        },
    );
    assert_eq!(item["delay"]["overdue"], true);
    let cpus = item["processedOffersSummary"]["rejectSummaryLastOffers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "InsufficientCpus")
        .unwrap()
        .clone();
    assert!(cpus["declined"].as_u64().unwrap() > 0);
}

#[test]
fn deployment_api_conflicts_force_and_rollback() {
    let p = Pacer::start(&["--max_running_deployments", "2"]);
    // Fits nowhere, so its deployment keeps running.
    let stuck = json!({"id": "/stuck", "cmd": "sleep 100", "cpus": 10000, "mem": 8});
    let r = p.post("/v2/apps", &stuck.to_string());
    assert_eq!(r.status, 201);
    let first = r.header("Marathon-Deployment-Id").unwrap().to_string();

    let r = p.put("/v2/apps/stuck", r#"{"cmd": "sleep 200"}"#);
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.body["message"],
        format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'.")
    );
    assert_eq!(r.body["deployments"], json!([{"id": first}]));
    assert_eq!(p.app("/stuck")["cmd"], "sleep 100", "nothing applied");

    let r = p.put("/v2/apps/stuck?force=true", r#"{"cmd": "sleep 200"}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let second = r.body["deploymentId"].as_str().unwrap().to_string();
    let ids: Vec<Value> = deployments(&p).iter().map(|d| d["id"].clone()).collect();
    assert_eq!(ids, vec![json!(second)]);

    // Revert: a new deployment that puts the old definition back.
    let r = p.delete(&format!("/v2/deployments/{second}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let revert = r.body["deploymentId"].as_str().unwrap().to_string();
    assert_eq!(r.header("Marathon-Deployment-Id"), Some(revert.as_str()));
    assert_eq!(p.app("/stuck")["cmd"], "sleep 100");
    let r = p.delete(&format!("/v2/deployments/{revert}?force=true"));
    assert_eq!(r.status, 202);
    assert!(deployments(&p).is_empty());
    assert_eq!(p.delete("/v2/deployments/nope").status, 404);

    // Version rollback of an app.
    let versions = p.get("/v2/apps/stuck/versions").body["versions"].clone();
    let versions: Vec<String> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 3);
    assert!(versions.windows(2).all(|w| w[0] > w[1]), "newest first");
    let r = p.put(
        "/v2/apps/stuck?force=true",
        &json!({"version": versions[1]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(p.app("/stuck")["cmd"], "sleep 200");

    // --max_running_deployments 2: the stuck app holds one; a second is fine, a third is not.
    let a = json!({"id": "/other/a", "cmd": "sleep 1", "cpus": 10000});
    assert_eq!(p.post("/v2/apps", &a.to_string()).status, 201);
    let b = json!({"id": "/other/b", "cmd": "sleep 1", "cpus": 10000});
    let r = p.post("/v2/apps", &b.to_string());
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .starts_with("Max number (2) of running deployments"));

    // Groups: dry run and scaleBy.
    let r = p.put("/v2/groups/other?dryRun=true", r#"{"scaleBy": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"steps": [{"actions": [{"action": "ScaleApplication", "app": "/other/a"}]}]})
    );
    assert_eq!(
        p.app("/other/a")["instances"],
        1,
        "a dry run changes nothing"
    );
    let r = p.put("/v2/groups/other?force=true", r#"{"scaleBy": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(p.app("/other/a")["instances"], 3);
    // DELETE of an app overrides locks by default.
    assert_eq!(p.delete("/v2/apps/stuck").status, 200);
    assert_eq!(p.get("/v2/apps/stuck").status, 404);
    // Root group versions are listed newest first.
    let gv = p.get("/v2/groups/versions").body;
    assert!(gv.as_array().unwrap().len() >= 5, "{gv}");
}

#[test]
fn a_deployment_resumes_after_kill9_without_relaunching_new_instances() {
    let mut p = Pacer::start(&[]);
    let dir = p.dir.path().to_path_buf();
    let v1 = format!("{}1", p.agent_ports.0);
    let v2 = format!("{}2", p.agent_ports.0);
    let app = |cmd: String| {
        json!({"id": "/resume", "cmd": cmd, "instances": 3, "cpus": 0.01, "mem": 8,
            "backoffSeconds": 1, "backoffFactor": 1,
            "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0}})
        .to_string()
    };
    assert_eq!(
        p.post("/v2/apps", &app(format!("exec sleep {v1}"))).status,
        201
    );
    let old = p.wait_running("/resume", 3);
    // Only one v2 instance can start until the gate opens: the deployment stalls half-way.
    let gated = format!(
        "if [ -e {d}/open ] || mkdir {d}/first 2>/dev/null; then exec sleep {v2}; else exit 1; fi",
        d = dir.display()
    );
    let r = p.put("/v2/apps/resume", &app(gated));
    assert_eq!(r.status, 200, "{}", r.text);
    let dep = r.body["deploymentId"].as_str().unwrap().to_string();
    let version = r.body["version"].clone();
    let first_new = wait_for("one v2 task running", Duration::from_secs(30), || {
        p.app("/resume")["tasks"]
            .as_array()?
            .iter()
            .find(|t| t["version"] == version && t["state"] == "TASK_RUNNING")
            .cloned()
    });
    let first_id = first_new["id"].as_str().unwrap().to_string();
    let first_pid = p.pid_of(&first_id);

    p.kill9();
    p.spawn();
    let listed = deployments(&p);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], dep.as_str(), "the same deployment resumes");

    fs::write(dir.join("open"), "").unwrap();
    let tasks = p.wait_running("/resume", 3);
    assert!(tasks.iter().all(|t| t["version"] == version));
    assert!(
        tasks.iter().any(|t| t["id"] == first_id.as_str()),
        "the v2 task that already ran was kept"
    );
    assert!(alive(first_pid));
    assert_eq!(count_sleepers(&v1), 0);
    assert!(old.iter().all(|t| tasks.iter().all(|n| n["id"] != t["id"])));
}

/// The status marathon-ui derives for an app (its `AppsStore`): from `deployments`, counts and
/// the queue's delay.
fn ui_status(app: &Value, queue: &Value) -> &'static str {
    let mut status = if app["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
        "Deploying"
    } else if app["instances"] == 0 && app["tasksRunning"] == 0 {
        "Suspended"
    } else if app["tasksRunning"].as_u64() > Some(0) {
        "Running"
    } else {
        "Unknown"
    };
    if let Some(item) = queue["queue"]
        .as_array()
        .and_then(|q| q.iter().find(|i| i["app"]["id"] == app["id"]))
    {
        status = if item["delay"]["overdue"] == true {
            "Waiting"
        } else {
            "Delayed"
        };
    }
    status
}

#[test]
fn lifecycle_status_comes_out_as_the_ui_derives_it() {
    let p = Pacer::start(&["--local_agent_cpus", "1"]);
    let apps = [
        json!({"id": "/life/running", "cmd": "sleep 300", "cpus": 0.01, "mem": 8}),
        json!({"id": "/life/suspended", "cmd": "sleep 300", "instances": 0, "cpus": 0.01, "mem": 8}),
        json!({"id": "/life/delayed", "cmd": "exit 3", "cpus": 0.01, "mem": 8, "backoffSeconds": 300}),
        json!({"id": "/life/waiting", "cmd": "sleep 300", "cpus": 10000, "mem": 8}),
    ];
    for a in &apps {
        assert_eq!(p.post("/v2/apps", &a.to_string()).status, 201);
    }
    p.wait_running("/life/running", 1);
    let want = [
        ("/life/running", "Running"),
        ("/life/suspended", "Suspended"),
        ("/life/delayed", "Delayed"),
        ("/life/waiting", "Waiting"),
    ];
    wait_for("every status", Duration::from_secs(30), || {
        let listed = p.get("/v2/apps").body;
        let queue = p.get("/v2/queue").body;
        let got: Vec<(String, &str)> = listed["apps"]
            .as_array()?
            .iter()
            .map(|a| (a["id"].as_str().unwrap().to_string(), ui_status(a, &queue)))
            .collect();
        want.iter()
            .all(|(id, s)| got.iter().any(|(i, g)| i == id && g == s))
            .then_some(())
    });
    // A change in progress shows as Deploying until it is done.
    let r = p.put("/v2/apps/life/running", r#"{"cmd": "sleep 301"}"#);
    assert_eq!(r.status, 200);
    p.wait_running("/life/running", 1);
    // Two instances of 0.6 cpus on a 1-cpu machine: the second never fits.
    let stuck = json!({"id": "/life/deploying", "cmd": "sleep 300", "cpus": 0.6, "mem": 8,
        "instances": 2});
    let r = p.post("/v2/apps", &stuck.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let app = wait_for("one task running", Duration::from_secs(30), || {
        let a = p.app("/life/deploying");
        (a["tasksRunning"] == 1).then_some(a)
    });
    let queue = p.get("/v2/queue").body;
    // The second instance stays in the queue (Waiting) while its deployment runs.
    assert!(!app["deployments"].as_array().unwrap().is_empty());
    assert_eq!(ui_status(&app, &queue), "Waiting");
}

#[test]
fn a_stuck_deployment_fails_by_deadline_and_rolls_back() {
    let p = Pacer::start(&[]);
    let v1 = json!({"id": "/deadline", "cmd": "sleep 300", "cpus": 0.01, "mem": 8});
    assert_eq!(p.post("/v2/apps", &v1.to_string()).status, 201);
    let before = p.wait_running("/deadline", 1);
    // The new version fits nowhere; the app asks for a 2 s progress deadline and a rollback.
    let v2 = json!({"cmd": "sleep 301", "cpus": 10000, "labels": {
        "PACER_DEPLOYMENT_PROGRESS_DEADLINE_SECONDS": "2",
        "PACER_DEPLOYMENT_ROLLBACK_ON_FAILURE": "true"}});
    let r = p.put("/v2/apps/deadline", &v2.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    let failed = r.body["deploymentId"].as_str().unwrap().to_string();
    wait_for("the rollback to finish", Duration::from_secs(30), || {
        let app = p.app("/deadline");
        (app["cmd"] == "sleep 300"
            && app["deployments"].as_array()?.is_empty()
            && deployments(&p).is_empty())
        .then_some(())
    });
    let log = p.log_text();
    assert!(
        log.contains("Deployment failed")
            && log.contains(&failed)
            && log.contains("No progress for 2 seconds"),
        "{log}"
    );
    // The instance that ran the old version was never touched.
    let after = p.wait_running("/deadline", 1);
    assert_eq!(after[0]["id"], before[0]["id"]);
}

#[test]
fn group_api_embeds_clashes_and_relative_ids() {
    let p = Pacer::start(&[]);
    let body = json!({"id": "prod", "dependencies": ["/infra"], "apps": [
        {"id": "web", "cmd": "sleep 300", "cpus": 0.01, "mem": 8, "instances": 0}],
        "groups": [{"id": "back", "apps": [{"id": "api", "cmd": "sleep 300", "instances": 0}]}]});
    let r = p.post("/v2/groups", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("Location"), Some("/v2/groups/prod"));
    assert!(
        p.get("/v2/apps/prod/back/api").status == 200,
        "relative ids nest"
    );

    let root = p.get("/v2/groups").body;
    assert_eq!(root["id"], "/");
    assert_eq!(root["groups"][0]["id"], "/prod");
    assert_eq!(root["groups"][0]["dependencies"], json!(["/infra"]));
    assert_eq!(
        root["groups"][0]["groups"][0]["apps"][0]["id"],
        "/prod/back/api"
    );
    assert!(root["groups"][0]["apps"][0].get("tasksRunning").is_none());
    let only_groups = p.get("/v2/groups/prod?embed=group.groups").body;
    assert!(only_groups.get("apps").is_none() && only_groups["groups"].is_array());
    let counts = p
        .get("/v2/groups/prod?embed=group.apps&embed=group.apps.counts")
        .body;
    assert_eq!(counts["apps"][0]["tasksRunning"], 0);
    assert_eq!(p.get("/v2/groups/nope").status, 404);
    assert_eq!(
        p.get("/v2/groups/nope").body["message"],
        "Group '/nope' does not exist"
    );

    // Apps and groups share one namespace.
    let r = p.post("/v2/groups", &json!({"id": "/prod/web"}).to_string());
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        r.body["message"],
        "An app with the path /prod/web already exists."
    );
    let r = p.post(
        "/v2/apps",
        &json!({"id": "/prod/back", "cmd": "x"}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let r = p.post(
        "/v2/groups",
        &json!({"id": "/cyc", "apps": [
            {"id": "a", "cmd": "x", "dependencies": ["b"]},
            {"id": "b", "cmd": "x", "dependencies": ["a"]}]})
        .to_string(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.body["details"],
        json!([{"path": "/", "errors": ["Dependency graph has cyclic dependencies."]}])
    );
    let r = p.put(
        "/v2/groups/prod",
        r#"{"apps": [{"id": "web", "instances": "x"}]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/apps(0)/instances");

    // Versions of a group, and the group as it was.
    let versions = p.get("/v2/groups/prod/versions").body;
    let first = versions
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let old = p.get(&format!("/v2/groups/prod/versions/{first}"));
    assert_eq!(old.status, 200, "{}", old.text);
    assert_eq!(old.body["apps"][0]["id"], "/prod/web");

    let r = p.delete("/v2/groups/prod");
    assert_eq!(r.status, 200);
    wait_for("the group to go", Duration::from_secs(20), || {
        (p.get("/v2/groups/prod").status == 404).then_some(())
    });
    assert_eq!(p.get("/v2/apps").body["apps"], json!([]));
}
