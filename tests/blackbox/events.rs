//! The event bus over real HTTP: SSE clients (fast, filtered, slow) and HTTP callbacks.

use crate::harness::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Opens `/v2/events` and returns the raw connection after the response head.
fn open_stream(p: &Pacer, query: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    write!(
        s,
        "GET /v2/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return r;
        }
    }
}

/// Follows a stream on a thread; frames arrive as (event type, data).
fn follow(p: &Pacer, query: &str) -> mpsc::Receiver<(String, Value)> {
    let mut r = open_stream(p, query);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut event = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // The body is chunked: chunk-size lines are skipped, as are keep-alive comments.
            let l = line.trim_end();
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_string();
            } else if let Some(d) = l.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap();
                if tx.send((event.clone(), v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Receives frames until one of type `ty` satisfies `pred`; returns everything up to it.
fn until(
    rx: &mpsc::Receiver<(String, Value)>,
    ty: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (t, v) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {ty} within 30 s; saw {:?}", types(&seen)));
        let done = t == ty && pred(&v);
        seen.push((t, v));
        if done {
            return seen;
        }
    }
}

fn types(frames: &[(String, Value)]) -> Vec<&str> {
    frames.iter().map(|(t, _)| t.as_str()).collect()
}

/// Asserts that `want` appears in `got` in this order (other events may come between).
fn assert_in_order(got: &[&str], want: &[&str]) {
    let mut it = got.iter();
    for w in want {
        assert!(
            it.any(|g| g == w),
            "expected {want:?} in order within {got:?}"
        );
    }
}

#[test]
fn sse_follows_an_apps_life_in_order() {
    let p = Pacer::start(&[]);
    let rx = follow(&p, "");
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first.0, "event_stream_attached");
    assert_eq!(first.1["remoteAddress"], "127.0.0.1");
    assert_eq!(first.1["eventType"], "event_stream_attached");
    assert!(first.1["timestamp"].is_string());

    let app = json!({"id": "/ev", "cmd": "exec sleep 600", "cpus": 0.01, "mem": 8, "instances": 1});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    let created = until(&rx, "deployment_success", |_| true);
    assert_in_order(
        &types(&created),
        &[
            "api_post_event",
            "group_change_success",
            "deployment_info",
            "status_update_event",
            "instance_changed_event",
            "deployment_step_success",
            "deployment_success",
        ],
    );
    let post = &created
        .iter()
        .find(|(t, _)| t == "api_post_event")
        .unwrap()
        .1;
    assert_eq!(post["uri"], "/v2/apps");
    assert_eq!(post["clientIp"], "127.0.0.1");
    assert_eq!(post["appDefinition"]["id"], "/ev");
    let info = &created
        .iter()
        .find(|(t, _)| t == "deployment_info")
        .unwrap()
        .1;
    assert_eq!(
        info["plan"]["steps"][0]["actions"][0],
        json!({"action": "StartApplication", "app": "/ev"})
    );
    assert_eq!(
        info["currentStep"]["actions"][0]["action"],
        "StartApplication"
    );
    assert!(info["plan"]["version"].is_string());
    assert!(info["plan"].get("original").is_none(), "light plan format");
    let running = created
        .iter()
        .find(|(t, v)| t == "status_update_event" && v["taskStatus"] == "TASK_RUNNING")
        .map(|(_, v)| v.clone())
        .expect("TASK_RUNNING status update");
    for field in [
        "slaveId",
        "taskId",
        "appId",
        "host",
        "ports",
        "version",
        "ipAddresses",
        "message",
    ] {
        assert!(running.get(field).is_some(), "{field} in {running}");
    }
    assert_eq!(running["appId"], "/ev");

    // A refused change is announced too.
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 409);
    let failed = until(&rx, "group_change_failed", |_| true);
    let failed = &failed.last().unwrap().1;
    assert_eq!(failed["groupId"], "/");
    assert!(failed["reason"]
        .as_str()
        .unwrap()
        .contains("already exists"));

    let r = p.put("/v2/apps/ev", &json!({"instances": 2}).to_string());
    assert_eq!(r.status, 200);
    let scaled = until(&rx, "deployment_success", |_| true);
    assert_in_order(
        &types(&scaled),
        &["api_post_event", "deployment_info", "deployment_success"],
    );
    let task = running["taskId"].as_str().unwrap();
    assert_eq!(p.delete(&format!("/v2/apps/ev/tasks/{task}")).status, 200);
    until(&rx, "status_update_event", |v| {
        v["taskId"] == task && v["taskStatus"] == "TASK_KILLED"
    });
    assert_eq!(p.delete("/v2/apps/ev").status, 200);
    let gone = until(&rx, "app_terminated_event", |v| v["appId"] == "/ev");
    assert_in_order(&types(&gone), &["group_change_success", "deployment_info"]);
}

#[test]
fn filters_non_sse_clients_and_subscriptions_without_callbacks() {
    let p = Pacer::start(&[]);
    assert_eq!(p.get("/v2/events").status, 406);
    let r = p.get("/v2/eventSubscriptions");
    assert_eq!(r.status, 400);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("--event_subscriber http_callback"));

    let rx = follow(
        &p,
        "?event_type=deployment_success&event_type=app_terminated_event",
    );
    let app = json!({"id": "/f", "cmd": "exec sleep 600", "cpus": 0.01, "mem": 8, "instances": 1});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    p.wait_running("/f", 1);
    assert_eq!(p.delete("/v2/apps/f").status, 200);
    let seen = until(&rx, "app_terminated_event", |_| true);
    let kinds: Vec<&str> = types(&seen);
    assert!(
        kinds
            .iter()
            .all(|t| *t == "deployment_success" || *t == "app_terminated_event"),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"deployment_success"));
}

/// A client that stops reading falls behind and is disconnected; one that reads keeps getting
/// every event.
#[test]
fn a_slow_sse_client_is_disconnected_while_a_fast_one_keeps_up() {
    let p = Pacer::start(&["--event_stream_max_outstanding_messages", "16"]);
    let filter = "?event_type=api_post_event";
    let mut slow = open_stream(&p, filter);
    let fast = follow(&p, filter);
    // Big definitions make big events, so the slow client's socket buffers fill quickly.
    let n = 150;
    let pad = "x".repeat(60_000);
    for i in 0..n {
        let app = json!({"id": "/big", "cmd": "exec sleep 600", "cpus": 0.01, "mem": 8,
            "instances": 0, "labels": {"PAD": pad, "N": i.to_string()}});
        let r = p.put("/v2/apps/big?force=true", &app.to_string());
        assert!(r.status == 200 || r.status == 201, "{}", r.text);
    }
    let got = until(&fast, "api_post_event", |v| {
        v["appDefinition"]["labels"]["N"] == (n - 1).to_string().as_str()
    });
    assert_eq!(
        got.iter().filter(|(t, _)| t == "api_post_event").count(),
        n,
        "the fast client got every event"
    );
    // The slow one was cut off: its stream ends before all events.
    slow.get_mut()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => rest.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server must close the stream of a client that fell behind: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&rest);
    let received = text.matches("event: api_post_event").count();
    assert!(received < n, "the slow client got {received} of {n}");
    wait_for("the disconnect in the log", Duration::from_secs(5), || {
        p.log_text()
            .contains("Event stream client fell behind")
            .then_some(())
    });
    let metrics = p.get("/metrics").text;
    assert!(
        metrics.contains("pacer_event_stream_disconnects_total 1"),
        "{metrics}"
    );
}

/// What a receiver got: the status it answered and the event.
type Received = Arc<Mutex<Vec<(u16, Value)>>>;

/// A receiver that answers 500 to its first `fail` requests, then 200; records what it got.
fn receiver(fail: usize) -> (String, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/events", l.local_addr().unwrap().port());
    let got: Received = Arc::default();
    let log = got.clone();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let status = if n < fail { 500 } else { 200 };
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap().push((status, v));
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

#[test]
fn callbacks_are_delivered_backed_off_and_persisted() {
    let mut p = Pacer::start(&["--event_subscriber", "http_callback"]);
    let (url, got) = receiver(2);
    assert_eq!(
        p.post("/v2/eventSubscriptions?callbackUrl=ftp://nowhere", "")
            .status,
        422
    );
    let r = p.post(&format!("/v2/eventSubscriptions?callbackUrl={url}"), "");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["eventType"], "subscribe_event");
    assert_eq!(r.body["callbackUrl"], url.as_str());
    assert_eq!(
        p.get("/v2/eventSubscriptions").body,
        json!({"callbackUrls": [url]})
    );

    // Events keep coming; the first deliveries fail, the subscriber is backed off, then served.
    let app = json!({"id": "/cb", "cmd": "exec sleep 600", "cpus": 0.01, "mem": 8, "instances": 1});
    assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    p.wait_running("/cb", 1);
    wait_for(
        "deliveries to fail and recover",
        Duration::from_secs(30),
        || {
            let n = got.lock().unwrap().len();
            if n < 3 {
                // Keep events flowing through the backoff.
                let _ = p.put(
                    "/v2/apps/cb",
                    &json!({"instances": 1 + (n % 2)}).to_string(),
                );
                std::thread::sleep(Duration::from_millis(500));
                return None;
            }
            Some(())
        },
    );
    let log = got.lock().unwrap().clone();
    assert_eq!(log[0].0, 500);
    assert_eq!(log[1].0, 500);
    assert_eq!(log[2].0, 200);
    assert!(log.iter().all(|(_, v)| v["eventType"].is_string()));
    let metrics = p.get("/metrics").text;
    assert!(metrics.contains(&format!(
        "pacer_events_delivered_total{{consumer=\"{url}\"}}"
    )));

    // Subscribers survive a restart; DELETE removes them.
    p.stop();
    p.spawn();
    assert_eq!(
        p.get("/v2/eventSubscriptions").body,
        json!({"callbackUrls": [url]})
    );
    let r = p.delete(&format!("/v2/eventSubscriptions?callbackUrl={url}"));
    assert_eq!(r.body["eventType"], "unsubscribe_event");
    assert_eq!(
        p.get("/v2/eventSubscriptions").body,
        json!({"callbackUrls": []})
    );
}
