//! Pacer on ZooKeeper (a real server): moving a running installation from the embedded store to
//! ZooKeeper with `pacer backup` / `pacer restore`, without restarting its tasks.

use crate::harness::*;
use pacer_zk::testing::ZkCluster;
use std::process::Command;
use std::time::Duration;

fn pacer_tool(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pacer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn an_embedded_installation_moves_to_zookeeper_with_its_tasks() {
    let zk = ZkCluster::start(1);
    let url = zk.url("/pacer-move");
    let mut p = Pacer::start(&[]);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/moving/web", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let before = p.wait_running("/moving/web", 2);
    let versions = p.get("/v2/apps/moving/web/versions").body["versions"].clone();
    assert!(p.stop().success());

    let file = p.dir.path().join("state.backup");
    let data_dir = p.data_dir();
    let (ok, err) = pacer_tool(&[
        "backup",
        file.to_str().unwrap(),
        "--data_dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("records backed up from embedded"), "{err}");
    let (ok, err) = pacer_tool(&["restore", file.to_str().unwrap(), "--zk", &url]);
    assert!(ok, "{err}");
    // Restoring twice would mix histories: refused.
    let (ok, err) = pacer_tool(&["restore", file.to_str().unwrap(), "--zk", &url]);
    assert!(!ok && err.contains("not empty"), "{err}");

    // The same machine (same sandboxes) now on ZooKeeper: the tasks are adopted, not restarted.
    p.set_flags(&["--zk", &url, "--disable_ha"]);
    p.spawn();
    let after = p.wait_running("/moving/web", 2);
    let ids = |tasks: &[serde_json::Value]| {
        let mut v: Vec<String> = tasks
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&after), ids(&before), "no task was relaunched");
    assert_eq!(
        p.get("/v2/apps/moving/web/versions").body["versions"],
        versions
    );
    let info = p.get("/v2/info").body;
    assert_eq!(info["zookeeper_config"]["zk"], url.as_str());
    // Changes now go to ZooKeeper and survive a restart.
    let r = p.put("/v2/apps/moving/web", r#"{"instances": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    p.wait_running("/moving/web", 1);
    // A change too large for a ZooKeeper node is refused as Marathon does, and nothing of it kept.
    let mut x: u64 = 1;
    let noise: String = (0..2_000_000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                    [(x >> 58) as usize % 62],
            )
        })
        .collect();
    let body = serde_json::json!({"id": "/too-big", "cmd": "sleep 1", "labels": {"blob": noise}});
    let r = p.post("/v2/apps", &body.to_string());
    assert_eq!(r.status, 422, "{}", &r.text[..r.text.len().min(300)]);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("maximum ZK node size"),
        "{}",
        r.body["message"]
    );
    assert_eq!(p.get("/v2/apps/too-big").status, 404);
    assert!(p.stop().success());
    p.spawn();
    p.wait_running("/moving/web", 1);
    wait_for("the log to name the store", Duration::from_secs(5), || {
        p.log_text().contains("zookeeper at zk://").then_some(())
    });
}

#[test]
fn an_unreachable_ensemble_stops_start_up_within_the_connection_timeout() {
    // Port 1 on loopback: nothing listens there.
    let (code, err) = pacer_refuses(
        &[
            "--zk",
            "zk://127.0.0.1:1/pacer",
            "--zk_connection_timeout",
            "1000",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot use ZooKeeper at zk://127.0.0.1:1/pacer"),
        "{err}"
    );
}
