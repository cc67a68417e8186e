use crate::harness::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn info_leader_ping_metrics_and_headers() {
    let p = Pacer::start(&["--framework_name", "pacer-test"]);
    let info = p.get("/v2/info");
    assert_eq!(info.status, 200);
    assert_eq!(info.body["leader"], format!("127.0.0.1:{}", p.port));
    assert_eq!(info.body["elected"], true);
    assert_eq!(info.body["marathon_config"]["framework_name"], "pacer-test");
    assert_eq!(info.body["http_config"]["http_port"], p.port);
    assert_eq!(
        info.header("X-Marathon-Leader"),
        Some(format!("http://127.0.0.1:{}", p.port).as_str())
    );
    assert_eq!(
        info.header("Cache-Control"),
        Some("no-cache, no-store, must-revalidate")
    );

    assert_eq!(
        p.get("/v2/leader").body["leader"],
        format!("127.0.0.1:{}", p.port)
    );
    let ping = p.get("/ping");
    assert_eq!((ping.status, ping.text.as_str()), (200, "pong"));

    p.post(
        "/v2/apps",
        r#"{"id": "/m", "cmd": "sleep 100", "cpus": 0.01, "mem": 8}"#,
    );
    p.wait_running("/m", 1);
    let m = p.get("/metrics");
    assert!(m.text.contains("pacer_apps 1"), "{}", m.text);
    assert!(
        m.text.contains("pacer_instances{condition=\"Running\"} 1"),
        "{}",
        m.text
    );
    assert!(m.text.contains("pacer_http_requests_total"));
}

#[test]
fn flags_come_from_the_environment_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--http_address",
        "--http_port",
        "--data_dir",
        "--hostname",
        "--framework_name",
        "MARATHON_<FLAG_NAME_IN_UPPER_CASE>",
        "--disable_name",
    ] {
        assert!(text.contains(flag), "--help lists {flag}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .args(["--no_such_flag"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    // The environment is read: a bad value there stops start-up and names the flag...
    let out = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .env("MARATHON_HTTP_PORT", "notaport")
        .arg("--data_dir")
        .arg(dir.path().join("a"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the environment is read");
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_port"));

    // ...and a value on the command line wins over the environment.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pacer"));
    cmd.env("MARATHON_FRAMEWORK_NAME", "from-env")
        .env("MARATHON_HTTP_PORT", "notaport")
        .args([
            "--http_port",
            "0",
            "--hostname",
            "127.0.0.1",
            "--local_agent_ports",
            "32700-32760",
            "--data_dir",
        ])
        .arg(dir.path().join("b"))
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let port = {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            assert_eq!(
                err.read(&mut byte).unwrap(),
                1,
                "pacer exited early: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(rest) = text.split("pacer: listening on http://").nth(1) {
                if let Some(line) = rest.split('\n').next().filter(|_| rest.contains('\n')) {
                    break line
                        .rsplit(':')
                        .next()
                        .unwrap()
                        .trim()
                        .parse::<u16>()
                        .unwrap();
                }
            }
        }
    };
    let info: serde_json::Value = ureq::get(&format!("http://127.0.0.1:{port}/v2/info"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(info["marathon_config"]["framework_name"], "from-env");
}

#[test]
fn listens_on_loopback_by_default() {
    let p = Pacer::start(&[]);
    let log = p.log_text();
    assert!(
        log.contains(&format!("listening on http://127.0.0.1:{}", p.port)),
        "{log}"
    );
}

fn declined(p: &Pacer) -> u64 {
    let m = p.get("/metrics").text;
    m.lines()
        .find_map(|l| l.strip_prefix("pacer_offers_total{outcome=\"declined\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("declined offers metric")
}

#[test]
fn an_app_that_fits_nowhere_does_not_spin_or_block_others() {
    let p = Pacer::start(&["--local_agent_cpus", "2"]);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/huge", "cmd": "sleep 100", "cpus": 64, "mem": 8}"#,
    );
    assert_eq!(r.status, 201);
    wait_for(
        "the first decline",
        std::time::Duration::from_secs(20),
        || (declined(&p) >= 1).then_some(()),
    );
    // Observe a quiet window: with nothing changing, the declined offer must not come back
    // (a revive on every loop turn once produced thousands of declines a second).
    let before = declined(&p);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let after = declined(&p);
    assert!(
        after - before <= 2,
        "offers declined in a quiet 2 s window: {}",
        after - before
    );
    // Other apps still launch, and the big one still waits.
    assert_eq!(
        p.post(
            "/v2/apps",
            r#"{"id": "/small", "cmd": "sleep 100", "cpus": 0.01, "mem": 8}"#
        )
        .status,
        201
    );
    p.wait_running("/small", 1);
    assert_eq!(p.app("/huge")["tasksRunning"], 0);
}

#[test]
fn placement_constraints_hold_on_the_local_agent() {
    let p = Pacer::start(&["--local_agent_attributes", "rack:r1;weight:0.80"]);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/bad-constraint", "cmd": "sleep 100", "constraints": [["rack", "NEAR"]]}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/constraints(0)");
    assert_eq!(
        r.body["details"][0]["errors"][0],
        "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS"
    );
    // One machine: a UNIQUE hostname app runs one instance; the other waits with the reason.
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/one-per-host", "cmd": "sleep 100", "cpus": 0.01, "mem": 8, "instances": 2,
            "constraints": [["hostname", "UNIQUE"], ["rack", "IS", "r1"], ["weight", "IS", "0.8"]]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    wait_for("one running instance", Duration::from_secs(30), || {
        (p.app("/one-per-host")["tasksRunning"] == 1).then_some(())
    });
    let queue = wait_for(
        "the constraint in the queue's offer summary",
        Duration::from_secs(30),
        || {
            let q = p.get("/v2/queue").body;
            let item = q["queue"]
                .as_array()?
                .iter()
                .find(|i| i["app"]["id"] == "/one-per-host")?
                .clone();
            let declined = item["processedOffersSummary"]["rejectSummaryLastOffers"]
                .as_array()?
                .iter()
                .find(|r| r["reason"] == "UnfulfilledConstraint")?["declined"]
                .as_u64()?;
            (declined >= 1).then_some(item)
        },
    );
    assert_eq!(queue["count"], 1);
    // An attribute the agent does not have: nothing can run.
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/needs-gpu", "cmd": "sleep 100", "cpus": 0.01, "mem": 8,
            "constraints": [["gpu", "LIKE", "yes"]]}"#,
    );
    assert_eq!(r.status, 201);
    p.post(
        "/v2/apps",
        r#"{"id": "/anywhere", "cmd": "sleep 100", "cpus": 0.01, "mem": 8}"#,
    );
    p.wait_running("/anywhere", 1);
    assert_eq!(p.app("/needs-gpu")["tasksRunning"], 0);
}
