//! Health and readiness checks against real task processes (a small Python server that can be
//! told to turn unhealthy, hang, or become ready through files in a control directory).

use crate::harness::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn server_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/blackbox/fixtures/health_server.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// An app running the test server; `extra` is merged into the definition.
pub(crate) fn server_app(
    id: &str,
    ctl: &Path,
    tag: &str,
    server_args: &str,
    extra: Value,
) -> String {
    let mut app = json!({
        "id": id,
        "cmd": format!("exec python3 {} {server_args}", server_script()),
        "instances": 1, "cpus": 0.01, "mem": 32,
        "env": {"CTL": ctl.display().to_string(), "TAG": tag},
        "portDefinitions": [{"port": 0, "name": "http"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        app[k] = v.clone();
    }
    app.to_string()
}

/// An HTTP check of `/health` every 2 s with a 1 s timeout.
fn http_check(grace: u64, max_failures: u32) -> Value {
    json!({"protocol": "HTTP", "path": "/health", "portIndex": 0, "gracePeriodSeconds": grace,
        "intervalSeconds": 2, "timeoutSeconds": 1, "maxConsecutiveFailures": max_failures})
}

pub(crate) fn ctl_dir(p: &Pacer) -> PathBuf {
    let d = p.dir.path().join("ctl");
    fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn touch(dir: &Path, name: &str) {
    fs::write(dir.join(name), "").unwrap();
}

/// The app's tasks (with `embed=apps.tasks` data) once `pred` holds for the app.
pub(crate) fn wait_app(
    p: &Pacer,
    id: &str,
    what: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, Duration::from_secs(secs), || {
        let app = p.app(id);
        pred(&app).then_some(app)
    })
}

pub(crate) fn task_ids(app: &Value) -> Vec<String> {
    app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn failing_http_check_kills_after_max_failures_and_replaces_the_task() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    // Grace covers a slow start on a loaded machine; after the first success it no longer
    // protects the task.
    let mut check = http_check(30, 2);
    check["intervalSeconds"] = json!(1);
    check["timeoutSeconds"] = json!(1);
    // Marathon requires timeout < interval.
    let r = p.post(
        "/v2/apps",
        &server_app("/web", &ctl, "web", "", json!({"healthChecks": [check]})),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    check["intervalSeconds"] = json!(2);
    check["timeoutSeconds"] = json!(1);
    let r = p.post(
        "/v2/apps",
        &server_app("/web", &ctl, "web", "", json!({"healthChecks": [check]})),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    let app = wait_app(&p, "/web", "a healthy task", 30, |a| {
        a["tasksHealthy"] == 1 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let task = &app["tasks"][0];
    let first_id = task["id"].as_str().unwrap().to_string();
    let result = &task["healthCheckResults"][0];
    assert_eq!(result["alive"], true);
    assert_eq!(result["consecutiveFailures"], 0);
    assert!(result["firstSuccess"].is_string());
    assert!(result["lastFailure"].is_null());
    assert_eq!(
        result["instanceId"].as_str().unwrap(),
        first_id.rsplitn(3, '.').nth(2).unwrap()
    );
    assert_eq!(app["tasksUnhealthy"], 0);
    let pid = p.pid_of(&first_id);

    // The task turns unhealthy: failures are counted and shown, then it is killed and replaced.
    touch(&ctl, "unhealthy-web");
    let app = wait_app(&p, "/web", "a counted failure", 30, |a| {
        a["tasks"][0]["healthCheckResults"][0]["consecutiveFailures"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    });
    let result = &app["tasks"][0]["healthCheckResults"][0];
    assert_eq!(result["alive"], false);
    assert_eq!(result["lastFailureCause"], "HTTP 503");
    assert_eq!(app["tasksUnhealthy"], 1);
    assert_eq!(app["tasksHealthy"], 0);
    let app = wait_app(&p, "/web", "the replacement task", 30, |a| {
        task_ids(a).iter().any(|t| t != &first_id)
    });
    wait_for(
        "the unhealthy process to end",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    );
    let new_id = &task_ids(&app)[0];
    assert!(
        new_id.ends_with("._app.2"),
        "same instance, next incarnation: {new_id}"
    );
    assert!(p.log_text().contains("Killing unhealthy task."));
    fs::remove_file(ctl.join("unhealthy-web")).unwrap();
    wait_app(&p, "/web", "the replacement to be healthy", 30, |a| {
        a["tasksHealthy"] == 1 && task_ids(a).iter().all(|t| t != &first_id)
    });
}

#[test]
fn grace_period_protects_a_slow_starter() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    // Both servers listen only after 4 s; only the one with a grace period survives that.
    for (id, grace) in [("/patient", 20), ("/impatient", 0)] {
        let r = p.post(
            "/v2/apps",
            &server_app(
                id,
                &ctl,
                &id[1..],
                "--start-after 4",
                json!({"healthChecks": [http_check(grace, 1)]}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let first = |id: &str| {
        wait_app(&p, id, "a task", 20, |a| !task_ids(a).is_empty())["tasks"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (patient, impatient) = (first("/patient"), first("/impatient"));
    wait_app(
        &p,
        "/impatient",
        "the impatient task to be killed",
        30,
        |a| task_ids(a).iter().any(|t| t != &impatient),
    );
    let app = wait_app(&p, "/patient", "the patient task to be healthy", 30, |a| {
        a["tasksHealthy"] == 1
    });
    assert_eq!(
        task_ids(&app),
        [patient],
        "never killed during its grace period"
    );
}

#[test]
fn command_checks_run_in_the_task_environment_and_the_agent_kills() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    let app = json!({"id": "/cmd", "cmd": "exec sleep 600", "instances": 1, "cpus": 0.01, "mem": 8,
        "env": {"CTL": ctl.display().to_string(), "GREETING": "hi"},
        "healthChecks": [{"protocol": "COMMAND",
            "command": {"value": "test -f stdout && test \"$GREETING\" = hi && test ! -f \"$CTL/sick\""},
            "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 0,
            "maxConsecutiveFailures": 2, "delaySeconds": 0}]});
    // COMMAND checks with timeout 0 are refused like any other.
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 422);
    let mut app = app;
    app["healthChecks"][0]["intervalSeconds"] = json!(2);
    app["healthChecks"][0]["timeoutSeconds"] = json!(1);
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let app = wait_app(&p, "/cmd", "a healthy command-checked task", 30, |a| {
        a["tasksHealthy"] == 1 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let first_id = task_ids(&app)[0].clone();
    assert_eq!(app["tasks"][0]["healthCheckResults"][0]["alive"], true);

    touch(&ctl, "sick");
    let app = wait_app(&p, "/cmd", "an unhealthy result", 30, |a| {
        a["tasksUnhealthy"] == 1
    });
    let cause = app["tasks"][0]["healthCheckResults"][0]["lastFailureCause"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cause.contains("status 1"), "{cause}");
    wait_app(&p, "/cmd", "the agent to kill and replace it", 30, |a| {
        task_ids(a).iter().any(|t| t != &first_id)
    });
}

#[test]
fn https_checks_accept_self_signed_certificates() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    let (cert, key) = (ctl.join("cert.pem"), ctl.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=pacer-test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed by scripts/setup-test-env.sh");
    assert!(ok.success());
    let mut check = http_check(30, 3);
    check["protocol"] = json!("HTTPS");
    let args = format!("--tls {} {}", cert.display(), key.display());
    let r = p.post(
        "/v2/apps",
        &server_app(
            "/secure",
            &ctl,
            "secure",
            &args,
            json!({"healthChecks": [check]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    wait_app(&p, "/secure", "a healthy HTTPS task", 30, |a| {
        a["tasksHealthy"] == 1
    });
    // The same server probed over plain HTTP fails: the check really spoke TLS.
    check["protocol"] = json!("HTTP");
    check["gracePeriodSeconds"] = json!(0);
    let r = p.post(
        "/v2/apps",
        &server_app(
            "/plain",
            &ctl,
            "plain",
            &args,
            json!({"healthChecks": [check]}),
        ),
    );
    assert_eq!(r.status, 201);
    wait_app(&p, "/plain", "an unhealthy HTTP task", 30, |a| {
        a["tasksUnhealthy"] == 1
    });
}

#[test]
fn informational_answers_count_only_without_ignore_http1xx() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    for (id, ignore) in [("/ignores", true), ("/counts", false)] {
        let mut check = http_check(0, 1);
        check["ignoreHttp1xx"] = json!(ignore);
        let r = p.post(
            "/v2/apps",
            &server_app(
                id,
                &ctl,
                &id[1..],
                "--informational",
                json!({"healthChecks": [check]}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let counted = wait_app(&p, "/counts", "102 counted as a failure", 30, |a| {
        a["tasksUnhealthy"] == 1
    });
    assert_eq!(
        counted["tasks"][0]["healthCheckResults"][0]["lastFailureCause"],
        "HTTP 102"
    );
    let first = task_ids(&counted)[0].clone();
    wait_app(
        &p,
        "/counts",
        "the task answering 102 to be replaced",
        30,
        |a| task_ids(a).iter().any(|t| t != &first),
    );
    // Meanwhile the app that ignores 1xx has no result at all and keeps its task.
    let ignoring = p.app("/ignores");
    assert_eq!(ignoring["tasksHealthy"], 0);
    assert_eq!(ignoring["tasksUnhealthy"], 0);
    assert_eq!(ignoring["tasks"][0]["healthCheckResults"], json!([]));
    assert!(ignoring["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .ends_with("._app.1"));
}

#[test]
fn rolling_upgrade_waits_for_health_and_keeps_old_tasks_when_new_ones_never_pass() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    // No grace and 0 (never kill): a failing v2 shows as unhealthy and stays.
    let check = http_check(0, 0);
    let app = |tag: &str| {
        server_app(
            "/svc",
            &ctl,
            tag,
            "",
            json!({"instances": 2, "healthChecks": [check],
                "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5}}),
        )
    };
    assert_eq!(p.post("/v2/apps", &app("v1")).status, 201);
    let v1 = wait_app(&p, "/svc", "two healthy v1 tasks", 40, |a| {
        a["tasksHealthy"] == 2 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let old = task_ids(&v1);

    // v2 never passes its check.
    touch(&ctl, "unhealthy-v2");
    let r = p.put("/v2/apps/svc", &app("v2"));
    assert_eq!(r.status, 200, "{}", r.text);
    let stuck = wait_app(&p, "/svc", "the first v2 task to fail its check", 40, |a| {
        a["tasksUnhealthy"] == 1
    });
    assert_eq!(
        stuck["tasks"].as_array().unwrap().len(),
        3,
        "one extra only"
    );
    // Several more intervals: the old tasks stay, the deployment waits.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let a = p.app("/svc");
        let ids = task_ids(&a);
        assert!(
            old.iter().all(|o| ids.contains(o)),
            "old tasks must survive: {ids:?}"
        );
        assert_eq!(a["tasksHealthy"], 2);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(p.get("/v2/deployments").body.as_array().unwrap().len(), 1);

    // A healthy v3 (forced over the stuck deployment) replaces everything.
    let r = p.put("/v2/apps/svc?force=true", &app("v3"));
    assert_eq!(r.status, 200, "{}", r.text);
    let done = wait_app(&p, "/svc", "two healthy v3 tasks", 60, |a| {
        a["tasksHealthy"] == 2
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
            && a["tasks"].as_array().is_some_and(|t| t.len() == 2)
    });
    assert!(task_ids(&done).iter().all(|t| !old.contains(t)));
}

#[test]
fn readiness_check_gates_the_deployment_and_shows_its_last_response() {
    let p = Pacer::start(&[]);
    let ctl = ctl_dir(&p);
    let api = |interval: u64, timeout: u64| {
        server_app(
            "/api",
            &ctl,
            "api",
            "",
            json!({"readinessChecks": [{"name": "warmup", "protocol": "HTTP", "path": "/ready",
                "portName": "http", "intervalSeconds": interval, "timeoutSeconds": timeout,
                "httpStatusCodesForReady": [200], "preserveLastResponse": true}]}),
        )
    };
    let r = p.post("/v2/apps", &api(1, 0));
    assert_eq!(r.status, 422, "timeout must be at least 1: {}", r.text);
    let r = p.post("/v2/apps", &api(2, 1));
    assert_eq!(r.status, 201, "{}", r.text);
    let deployment = wait_for("a not-ready result", Duration::from_secs(30), || {
        let list = p.get("/v2/deployments").body;
        let d = list.as_array()?.first()?.clone();
        let results = d["currentActions"][0]["readinessCheckResults"].as_array()?;
        (!results.is_empty()).then_some(d)
    });
    let result = &deployment["currentActions"][0]["readinessCheckResults"][0];
    assert_eq!(result["name"], "warmup");
    assert_eq!(result["ready"], false);
    assert_eq!(
        result["lastResponse"],
        json!({"status": 503, "contentType": "text/plain", "body": "not ready"})
    );
    assert!(result["taskId"].as_str().unwrap().contains("._app.1"));
    let embedded = p.get("/v2/apps/api?embed=app.readiness").body;
    assert_eq!(embedded["app"]["readinessCheckResults"][0]["ready"], false);
    assert_eq!(embedded["app"]["tasksRunning"], 1);

    touch(&ctl, "ready-api");
    wait_for("the deployment to finish", Duration::from_secs(30), || {
        p.get("/v2/deployments")
            .body
            .as_array()?
            .is_empty()
            .then_some(())
    });
    let after = p.get("/v2/apps/api?embed=app.readiness").body;
    assert_eq!(after["app"]["readinessCheckResults"], json!([]));
}

/// One probe slot for twelve tasks whose answers take 0.3 s, probed every 2 s with a 1 s
/// timeout: the prober cannot keep up (3.6 s of probing per 2 s). Probes that wait are late,
/// never failures, so nothing is killed. (A prober that started timeouts when a probe was due
/// fails this test: queued probes time out in every round.)
#[test]
fn an_overloaded_prober_kills_nothing_healthy() {
    let p = Pacer::start(&["--max_concurrent_marathon_health_checks", "1"]);
    let ctl = ctl_dir(&p);
    // Two failures in a row are tolerated, so one answer slowed by a busy machine is not a kill.
    let check = http_check(0, 2);
    let r = p.post(
        "/v2/apps",
        &server_app(
            "/busy",
            &ctl,
            "busy",
            "--delay 0.3",
            json!({"instances": 12, "healthChecks": [check]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let app = wait_app(&p, "/busy", "twelve running tasks", 40, |a| {
        a["tasksRunning"] == 12
    });
    let tasks = task_ids(&app);
    let until = Instant::now() + Duration::from_secs(16);
    let mut max_healthy = 0;
    while Instant::now() < until {
        let a = p.app("/busy");
        // (An answer slowed past the timeout by a busy machine may show as one failure; only
        // the prober's own lateness must never count.)
        assert_eq!(task_ids(&a), tasks, "no task may be replaced: {a}");
        max_healthy = max_healthy.max(a["tasksHealthy"].as_u64().unwrap());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(max_healthy >= 4, "probes still get through: {max_healthy}");
    assert!(!p.log_text().contains("Killing unhealthy task."));
}
