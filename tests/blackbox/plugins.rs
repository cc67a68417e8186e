//! Wasm plugins through the real daemon: plugin operators placing apps, a plugin health check
//! killing an unhealthy task, a sink posting events over loopback HTTP, and misbehaving or
//! invalid plugins stopped with a clear reason while scheduling goes on.

use crate::harness::*;
use crate::health::{ctl_dir, server_app, task_ids, touch, wait_app};
use pacer_wasm::testing::{guest, http_server};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Writes a plugin file naming built guests by absolute path.
fn plugin_conf(dir: &std::path::Path, plugins: Value) -> PathBuf {
    let mut plugins = plugins;
    for (_, p) in plugins.as_object_mut().unwrap() {
        let file = p["implementation"].as_str().unwrap().to_string();
        p["implementation"] = json!(guest(&file).display().to_string());
    }
    let path = dir.join("plugins.json");
    std::fs::write(&path, json!({"plugins": plugins}).to_string()).unwrap();
    path
}

/// A loopback HTTP server; the bodies it received, so far.
fn webhook_receiver() -> (u16, impl Fn() -> Vec<String>) {
    let (port, rx) = http_server(204, "");
    let bodies = Mutex::new(Vec::new());
    let received = move || {
        let mut b = bodies.lock().unwrap();
        b.extend(
            rx.try_iter()
                .map(|r| r.split_once("\r\n\r\n").unwrap().1.to_string()),
        );
        b.clone()
    };
    (port, received)
}

fn queue_reasons(p: &Pacer, app: &str) -> Vec<String> {
    let q = p.get("/v2/queue?embed=lastUnusedOffers").body.clone();
    q["queue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["app"]["id"] == app)
        .flat_map(|i| {
            i["lastUnusedOffers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|o| o["reason"].as_array().cloned().unwrap_or_default())
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn app(id: &str, instances: u32, constraints: Value) -> String {
    json!({"id": id, "cmd": "sleep 600", "cpus": 0.01, "mem": 16, "instances": instances,
           "constraints": constraints})
    .to_string()
}

#[test]
fn constraint_plugins_place_apps_refuse_with_reasons_and_misbehave_harmlessly() {
    let conf_dir = tempfile::tempdir().unwrap();
    let (hook_port, bodies) = webhook_receiver();
    let conf = plugin_conf(
        conf_dir.path(),
        json!({
            "spread": {"plugin": "constraint", "implementation": "spread_even",
                       "tags": ["placement"], "info": {"owner": "ops"}},
            "bad": {"plugin": "constraint", "implementation": "misbehave_constraint"},
            "hook": {"plugin": "event-sink", "implementation": "webhook",
                     "configuration": {"url": format!("http://127.0.0.1:{hook_port}/events"),
                                       "eventTypes": ["api_post_event"]},
                     "allowedHosts": [format!("127.0.0.1:{hook_port}")],
                     "batch": {"maxEvents": 10, "maxDelayMs": 100}},
        }),
    );
    let p = Pacer::start(&[
        "--plugin_conf",
        conf.to_str().unwrap(),
        "--local_agent_attributes",
        "rack:r1",
    ]);

    let listed = p.get("/v2/plugins").body.clone();
    let spread = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "spread")
        .cloned()
        .unwrap();
    assert_eq!(spread["plugin"], "pacer:plugin/constraint");
    assert_eq!(spread["tags"], json!(["placement"]));
    assert_eq!(spread["info"], json!({"owner": "ops"}));
    assert!(spread["implementation"]
        .as_str()
        .unwrap()
        .ends_with("spread_even.wasm"));
    assert_eq!(listed["plugins"].as_array().unwrap().len(), 3);

    // Unknown operators are refused with the built-in and the plugin operators listed.
    let r = p.post("/v2/apps", &app("/near", 1, json!([["rack", "NEAR"]])));
    assert_eq!(r.status, 422, "{}", r.text);
    let msg = r.body.clone()["details"][0]["errors"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with("operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE, IS, ")
            && msg.contains("MISBEHAVE")
            && msg.contains("SPREAD_EVEN"),
        "{msg}"
    );
    assert_eq!(r.body.clone()["details"][0]["path"], "/constraints(0)");
    // The plugin validates its own params.
    let r = p.post(
        "/v2/apps",
        &app("/skew", 1, json!([["rack", "SPREAD_EVEN", "lots"]])),
    );
    assert_eq!(r.status, 422, "{}", r.text);

    // Placed by the plugin operator (one rack: evenly spread by definition).
    let r = p.post(
        "/v2/apps",
        &app("/spread", 3, json!([["rack", "SPREAD_EVEN"]])),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    p.wait_running("/spread", 3);

    // Refused by the plugin, with its reason in the queue.
    let r = p.post(
        "/v2/apps",
        &app("/norack", 1, json!([["dc", "SPREAD_EVEN"]])),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let reasons = wait_for(
        "the plugin's reason in the queue",
        Duration::from_secs(30),
        || {
            let r = queue_reasons(&p, "/norack");
            (!r.is_empty()).then_some(r)
        },
    );
    assert_eq!(reasons[0], "UnfulfilledConstraint");
    assert_eq!(reasons[1], "SPREAD_EVEN: offer has no attribute dc");

    // Misbehaving plugins are stopped; their apps wait with the cause, others deploy.
    for (mode, cause) in [
        ("loop", "ran out of fuel"),
        ("panic", "fixture panic"),
        ("socket", "called wasi:sockets/"),
        ("file", "called wasi:filesystem/"),
    ] {
        let id = format!("/bad-{mode}");
        let r = p.post(
            "/v2/apps",
            &app(&id, 1, json!([["hostname", "MISBEHAVE", mode]])),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let reasons = wait_for(&format!("{mode} refused"), Duration::from_secs(30), || {
            let r = queue_reasons(&p, &id);
            (r.len() >= 2).then_some(r)
        });
        assert!(
            reasons[1].starts_with("MISBEHAVE: plugin \"bad\" failed in check: ")
                && reasons[1].contains(cause),
            "{mode}: {reasons:?}"
        );
    }
    let r = p.post("/v2/apps", &app("/plain", 2, json!([])));
    assert_eq!(r.status, 201, "{}", r.text);
    p.wait_running("/plain", 2);
    assert_eq!(p.app("/bad-loop")["tasksRunning"], 0);

    let metrics = p.get("/metrics").text;
    assert!(
        metrics.contains(r#"pacer_plugin_failures_total{plugin="bad",cause="fuel"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"pacer_plugin_failures_total{plugin="bad",cause="denied"}"#));
    let calls = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"pacer_plugin_calls_total{plugin="spread"} "#))
        .map(|v| v.parse::<u64>().unwrap())
        .unwrap();
    assert!(calls >= 3, "{calls}");

    // The sink got the API events it asked for, as JSON arrays, and nothing else.
    let posted = wait_for(
        "api_post_event at the webhook",
        Duration::from_secs(30),
        || {
            let b = bodies();
            let events: Vec<Value> = b
                .iter()
                .flat_map(|body| serde_json::from_str::<Vec<Value>>(body).unwrap())
                .collect();
            events
                .iter()
                .any(|e| e["appDefinition"]["id"] == "/plain")
                .then_some(events)
        },
    );
    assert!(
        posted.iter().all(|e| e["eventType"] == "api_post_event"),
        "{posted:?}"
    );
    assert!(metrics.contains(r#"pacer_plugin_sink_events_delivered_total{plugin="hook"}"#));
}

#[test]
fn a_plugin_health_check_kills_an_unhealthy_task() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = plugin_conf(
        conf_dir.path(),
        json!({"http-body": {"plugin": "health-check", "implementation": "http_body",
                             "configuration": {"expect": "ok"}}}),
    );
    let p = Pacer::start(&["--plugin_conf", conf.to_str().unwrap()]);
    let ctl = ctl_dir(&p);
    let check = |params: Value| {
        json!({"protocol": "PLUGIN", "plugin": "http-body", "path": "/health", "portIndex": 0,
               "params": params, "gracePeriodSeconds": 30, "intervalSeconds": 2,
               "timeoutSeconds": 1, "maxConsecutiveFailures": 2})
    };
    // Only loaded plugins may be named.
    let mut unknown = check(json!({}));
    unknown["plugin"] = json!("grpc");
    let r = p.post(
        "/v2/apps",
        &server_app("/x", &ctl, "x", "", json!({"healthChecks": [unknown]})),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body.clone()["details"][0]["path"],
        "/healthChecks(0)/plugin"
    );

    let r = p.post(
        "/v2/apps",
        &server_app(
            "/web",
            &ctl,
            "web",
            "",
            json!({"healthChecks": [check(json!({}))]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // The definition keeps the plugin fields as given.
    assert_eq!(p.app("/web")["healthChecks"][0]["plugin"], "http-body");
    let app = wait_app(&p, "/web", "a healthy task", 30, |a| a["tasksHealthy"] == 1);
    let first = task_ids(&app)[0].clone();

    // A check whose body never matches explains why.
    let mut picky = check(json!({"expect": "never"}));
    picky["gracePeriodSeconds"] = json!(0);
    picky["maxConsecutiveFailures"] = json!(100);
    let r = p.post(
        "/v2/apps",
        &server_app(
            "/picky",
            &ctl,
            "picky",
            "",
            json!({"healthChecks": [picky]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let picky = wait_app(&p, "/picky", "a failed plugin check", 30, |a| {
        a["tasks"][0]["healthCheckResults"][0]["lastFailureCause"].is_string()
    });
    let cause = picky["tasks"][0]["healthCheckResults"][0]["lastFailureCause"]
        .as_str()
        .unwrap();
    assert!(cause.contains("never"), "{cause}");

    touch(&ctl, "unhealthy-web");
    let app = wait_app(&p, "/web", "the unhealthy task replaced", 40, |a| {
        task_ids(a).iter().any(|t| t != &first)
    });
    assert!(!task_ids(&app).contains(&first));
    let metrics = p.get("/metrics").text;
    assert!(
        metrics.contains(r#"pacer_plugin_instantiations_total{plugin="http-body"}"#),
        "a fresh instance per check is counted"
    );
}

#[test]
fn an_invalid_plugin_stops_start_up_with_a_clear_reason() {
    let conf_dir = tempfile::tempdir().unwrap();
    for (plugins, want) in [
        (
            json!({"h": {"plugin": "constraint", "implementation": "http_body"}}),
            "it is a health-check plugin, but it is configured as a constraint plugin",
        ),
        (
            json!({"w": {"plugin": "constraint", "implementation": "wrong_version"}}),
            "pacer:plugin@0.1.0",
        ),
        (
            json!({"s": {"plugin": "event-sink", "implementation": "webhook",
                         "configuration": {"url": "ftp://nowhere"}}}),
            "plugin \"s\" failed in configure",
        ),
    ] {
        let conf = plugin_conf(conf_dir.path(), plugins);
        let (code, stderr) = pacer_refuses(&["--plugin_conf", conf.to_str().unwrap()], &[]);
        assert_eq!(code, 102, "{stderr}");
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
    let bad = conf_dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"plugins": {"x": {"plugin": "constraint"}}}"#).unwrap();
    let (code, stderr) = pacer_refuses(&["--plugin_conf", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 102, "{stderr}");
    assert!(
        stderr.contains("missing field `implementation`"),
        "{stderr}"
    );
}
