//! High availability on a real ZooKeeper ensemble: three Pacers on one machine (sharing the local
//! agent's directory), one leader, standbys proxying to it, and failovers that lose nothing.

use crate::harness::*;
use nix::sys::signal::Signal;
use pacer_zk::testing::ZkCluster;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Short sessions so a crashed leader is replaced quickly (the ensemble's tick is 500 ms).
const SESSION_MS: &str = "2000";

fn ha_flags(url: &str) -> Vec<String> {
    ha_flags_with(url, SESSION_MS)
}

fn ha_flags_with(url: &str, session_ms: &str) -> Vec<String> {
    ["--zk", url, "--zk_session_timeout", session_ms]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn start_three(url: &str) -> Vec<Pacer> {
    start_three_with(url, SESSION_MS)
}

fn start_three_with(url: &str, session_ms: &str) -> Vec<Pacer> {
    let flags = ha_flags_with(url, session_ms);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Pacer::start(&flags);
    let b = Pacer::start_sharing(&a, &flags);
    let c = Pacer::start_sharing(&a, &flags);
    vec![a, b, c]
}

/// Waits until exactly one running Pacer serves as leader and every other running one names it;
/// returns its index.
fn wait_leader(ps: &mut [Pacer], timeout: Duration) -> usize {
    let mut running: Vec<bool> = ps.iter_mut().map(|p| p.is_running()).collect();
    wait_for("a single leader known to all", timeout, || {
        running = ps.iter_mut().map(|p| p.is_running()).collect();
        let health: Vec<Option<Resp>> = ps
            .iter()
            .zip(&running)
            .map(|(p, r)| r.then(|| p.get("/leader/health")))
            .collect();
        let leaders: Vec<usize> = health
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_ref().is_some_and(|h| h.status == 200))
            .map(|(i, _)| i)
            .collect();
        let [l] = leaders[..] else { return None };
        let id = format!("127.0.0.1:{}", ps[l].port);
        let all_agree = health
            .iter()
            .flatten()
            .all(|h| h.body["leader"] == id.as_str());
        all_agree.then_some(l)
    })
}

/// Live task processes (process-group leaders) that carry `marker` in their environment.
fn live_tasks_with(marker: &str) -> usize {
    let needle = format!("HA_MARKER={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let group_leader = fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(*pid);
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            group_leader
                && fields.first() != Some(&"Z")
                && environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        })
        .count()
}

fn task_ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_leader_serves_and_standbys_proxy_to_it() {
    let zk = ZkCluster::start(3);
    let url = zk.url("/pacer-proxy");
    // Sessions as long as the ensemble allows (20 ticks): only a clean hand-over is quick.
    let mut ps = start_three_with(&url, "10000");
    let l = wait_leader(&mut ps, Duration::from_secs(30));
    let s = (l + 1) % 3;
    let (leader, standby) = (&ps[l], &ps[s]);
    let leader_id = format!("127.0.0.1:{}", leader.port);
    let leader_url = format!("http://{leader_id}");

    // Who leads, from everywhere; standbys answer with the leader's view.
    for p in &ps {
        let r = p.get("/v2/leader");
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["leader"], leader_id.as_str());
        let info = p.get("/v2/info").body;
        assert_eq!(info["elected"], true, "answered by the leader");
        assert_eq!(info["leader"], leader_id.as_str());
        assert_eq!(info["marathon_config"]["ha"], true);
    }
    // Leader discovery for scripts and clients, straight from ZooKeeper.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pacer"))
        .args(["leader", "--zk", &url])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        found,
        serde_json::json!({"leader": leader_id, "url": leader_url})
    );
    let r = standby.get("/leader/health");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body["self"],
        format!("127.0.0.1:{}", standby.port).as_str()
    );

    // A write with a body through a standby: forwarded, answered by the leader, headers marked.
    let r = standby.post(
        "/v2/apps",
        r#"{"id": "/ha/web", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["id"], "/ha/web");
    assert_eq!(r.header("X-Marathon-Leader"), Some(leader_url.as_str()));
    let via = format!("1.1 127.0.0.1:{}", standby.port);
    assert!(
        r.header("X-Marathon-Via").is_some_and(|v| v.contains(&via)),
        "{:?}",
        r.headers
    );
    let tasks = leader.wait_running("/ha/web", 1);
    // Queries and errors come back as the leader gave them.
    let r = standby.get("/v2/apps?id=/ha/");
    assert_eq!(r.body["apps"].as_array().unwrap().len(), 1, "{}", r.text);
    let r = standby.post("/v2/apps", r#"{"id": "/ha/bad", "cpus": -1}"#);
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(
        r.body,
        leader
            .post("/v2/apps", r#"{"id": "/ha/bad", "cpus": -1}"#)
            .body
    );
    let r = standby.get("/v2/apps/ha/missing");
    assert_eq!(r.status, 404, "{}", r.text);

    // A request that already passed through this standby is a loop.
    let r = standby.request("GET", "/v2/apps", None, &[("X-Marathon-Via", &via)]);
    assert_eq!(r.status, 502);
    assert_eq!(r.body["message"], "Detected proxying loop.");
    // Another proxy's mark is fine.
    let r = standby.request(
        "GET",
        "/v2/apps",
        None,
        &[("X-Marathon-Via", "1.1 elsewhere:1")],
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // The event stream is not proxied: the standby redirects to the leader.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = agent
        .get(&standby.url("/v2/events?event_type=status_update_event"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.header("Location"),
        Some(format!("{leader_url}/v2/events?event_type=status_update_event").as_str())
    );
    // Facts about the process itself are answered locally.
    assert_eq!(standby.get("/ping").text, "pong");
    let metrics = standby.get("/metrics").text;
    assert!(metrics.contains("pacer_leader 0"), "{metrics}");
    assert!(leader.get("/metrics").text.contains("pacer_leader 1"));

    // Abdication through a standby: the leader steps down and exits; another takes over at once
    // (no session timeout to wait for) and keeps the task running.
    let r = standby.delete("/v2/leader");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["message"], "Leadership abdicated");
    let status = ps[l].wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(103), "{}", ps[l].log_text());
    // Well inside the 10 s session timeout: the latch was deleted, not left to expire.
    let l2 = wait_leader(&mut ps, Duration::from_secs(8));
    assert_ne!(l2, l);
    let after = ps[l2].wait_running("/ha/web", 1);
    assert_eq!(
        task_ids(&after),
        task_ids(&tasks),
        "the task was adopted, not relaunched"
    );
}

#[test]
fn repeated_leader_crashes_during_rolling_upgrades_lose_nothing() {
    let zk = ZkCluster::start(3);
    let url = zk.url("/pacer-failover");
    let mut ps = start_three(&url);
    let marker = format!("{}-{}", std::process::id(), ps[0].port);
    let l = wait_leader(&mut ps, Duration::from_secs(30));
    let app = |version: u32| {
        format!(
            r#"{{"id": "/ha/rolling", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 3,
                "env": {{"HA_MARKER": "{marker}", "V": "{version}"}},
                "upgradeStrategy": {{"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}}}"#
        )
    };
    let r = ps[l].post("/v2/apps", &app(0));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = ps[l].post(
        "/v2/apps",
        r#"{"id": "/ha/steady", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    ps[l].wait_running("/ha/rolling", 3);
    let steady = task_ids(&ps[l].wait_running("/ha/steady", 2));

    let flags = ha_flags(&url);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut l = l;
    for round in 1..=4u32 {
        // Start a rolling upgrade and crash the leader while it runs.
        let r = ps[l].put("/v2/apps/ha/rolling", &app(round));
        assert_eq!(r.status, 200, "round {round}: {}", r.text);
        let deployment = r.body["deploymentId"].as_str().unwrap().to_string();
        let dead_id = format!("127.0.0.1:{}", ps[l].port);
        ps[l].kill9();
        let crashed_at = Instant::now();

        // Until the dead leader's session expires, standbys still name it: requests get a clear
        // 502 rather than hanging.
        let s = (l + 1) % 3;
        let before = ps[s].get("/leader/health").body["leader"].clone();
        let r = ps[s].get("/v2/apps");
        let after = ps[s].get("/leader/health").body["leader"].clone();
        if before == dead_id.as_str() && after == dead_id.as_str() {
            assert_eq!(r.status, 502, "round {round}: {}", r.text);
            assert!(
                r.body["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Connection to leader refused."),
                "{}",
                r.text
            );
        }

        let new = wait_leader(&mut ps, Duration::from_secs(30));
        eprintln!("round {round}: new leader after {:?}", crashed_at.elapsed());
        // The supervisor's part: the crashed Pacer comes back as a standby.
        ps[l].set_flags(&flags);
        ps[l].spawn();
        l = new;

        // The deployment resumes and completes; every version is kept; nothing is duplicated.
        let tasks = ps[l].wait_running("/ha/rolling", 3);
        for t in &tasks {
            let v = ps[l].get(&format!(
                "/v2/apps/ha/rolling/versions/{}",
                t["version"].as_str().unwrap()
            ));
            assert_eq!(
                v.body["env"]["V"],
                round.to_string(),
                "round {round}: {}",
                v.text
            );
        }
        let deployments = ps[l].get("/v2/deployments").body;
        assert!(
            deployments
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["id"] != deployment.as_str()),
            "{deployments}"
        );
        wait_for("no stray task processes", Duration::from_secs(10), || {
            (live_tasks_with(&marker) == 3).then_some(())
        });
        let versions = ps[l].get("/v2/apps/ha/rolling/versions").body["versions"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(versions, round as usize + 1, "round {round}");
        assert_eq!(
            task_ids(&ps[l].wait_running("/ha/steady", 2)),
            steady,
            "round {round}: the untouched app's tasks were adopted, never relaunched"
        );
    }
}

#[test]
fn a_frozen_leader_is_replaced_and_its_late_writes_are_fenced() {
    let zk = ZkCluster::start(1);
    let url = zk.url("/pacer-frozen");
    let flags = ha_flags(&url);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Pacer::start(&flags);
    let mut ps = vec![a];
    wait_leader(&mut ps, Duration::from_secs(30));
    let b = Pacer::start_sharing(&ps[0], &flags);
    ps.push(b);
    assert_eq!(wait_leader(&mut ps, Duration::from_secs(10)), 0);
    let r = ps[0].post(
        "/v2/apps",
        r#"{"id": "/ha/frozen", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let tasks = task_ids(&ps[0].wait_running("/ha/frozen", 1));
    let version = ps[0].app("/ha/frozen")["version"].clone();

    // Freeze the leader: its session expires, B wins the election, and B waits for the local
    // agent that the frozen process still holds.
    ps[0].signal(Signal::SIGSTOP);
    wait_for("B to win the election", Duration::from_secs(20), || {
        let h = ps[1].get("/leader/health").body;
        (h["leader"] == format!("127.0.0.1:{}", ps[1].port).as_str()).then_some(())
    });
    // Wake A: it finds its session gone and exits without acting; B then takes over fully.
    ps[0].signal(Signal::SIGCONT);
    let status = ps[0].wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(103), "{}", ps[0].log_text());
    let log = ps[0].log_text();
    assert!(
        log.contains("leadership lost") || log.contains("Leadership ended"),
        "{log}"
    );
    assert_eq!(wait_leader(&mut ps, Duration::from_secs(20)), 1);
    assert_eq!(task_ids(&ps[1].wait_running("/ha/frozen", 1)), tasks);
    assert_eq!(ps[1].app("/ha/frozen")["version"], version);
    let r = ps[1].put("/v2/apps/ha/frozen", r#"{"instances": 2}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    ps[1].wait_running("/ha/frozen", 2);
}

#[test]
fn zookeeper_failures_suspend_the_leader_and_lose_nothing() {
    // The ensemble's own leader dies: ZooKeeper elects another within a second, sessions
    // survive, and Pacer keeps (or quickly regains) a leader with everything intact.
    let mut zk = ZkCluster::start(3);
    let url = zk.url("/pacer-zkfail");
    let flags = ["--zk", url.as_str(), "--zk_session_timeout", "4000"];
    let a = Pacer::start(&flags);
    let b = Pacer::start_sharing(&a, &flags);
    let mut ps = vec![a, b];
    let l = wait_leader(&mut ps, Duration::from_secs(30));
    let r = ps[l].post(
        "/v2/apps",
        r#"{"id": "/ha/kept", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let kept = task_ids(&ps[l].wait_running("/ha/kept", 2));
    zk.leader().expect("an ensemble leader").kill();
    let l = wait_leader(&mut ps, Duration::from_secs(30));
    let r = wait_for("a write to succeed again", Duration::from_secs(30), || {
        let r = ps[l].post(
            "/v2/apps",
            r#"{"id": "/ha/after", "cmd": "sleep 600", "cpus": 0.01, "mem": 8}"#,
        );
        (r.status != 503).then_some(r)
    });
    assert_eq!(r.status, 201, "{}", r.text);
    ps[l].wait_running("/ha/after", 1);
    assert_eq!(task_ids(&ps[l].wait_running("/ha/kept", 2)), kept);

    // The only server goes away: the leader suspends at once (503, nothing changes), and
    // resumes as the same leader when the server is back within the session timeout.
    let mut zk1 = ZkCluster::start(1);
    let url = zk1.url("/pacer-suspend");
    let mut p = Pacer::start(&["--zk", &url, "--zk_session_timeout", "10000"]);
    wait_leader(std::slice::from_mut(&mut p), Duration::from_secs(30));
    let app = r#"{"id": "/ha/later", "cmd": "sleep 600", "cpus": 0.01, "mem": 8}"#;
    zk1.nodes[0].kill();
    wait_for("the leader to suspend", Duration::from_secs(10), || {
        (p.get("/leader/health").status == 503).then_some(())
    });
    let r = p.post("/v2/apps", app);
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.body["message"].as_str().unwrap().contains("suspended"),
        "{}",
        r.text
    );
    zk1.nodes[0].restart();
    wait_for("the leader to resume", Duration::from_secs(20), || {
        (p.get("/leader/health").status == 200).then_some(())
    });
    assert!(p.is_running(), "the same process resumed");
    let r = p.post("/v2/apps", app);
    assert_eq!(r.status, 201, "{}", r.text);
    p.wait_running("/ha/later", 1);
    assert!(p.log_text().contains("suspended"));
}
