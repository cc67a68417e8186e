//! Event-bus benchmark against the real daemon: `clients` SSE clients and `callbacks` callback
//! receivers follow the events while the API makes `rate` changes per second for `seconds`.
//! Prints the lag from an event's timestamp to its receipt (p50/p99/max) and what each kind of
//! consumer missed. Asserts nothing. Everything listens on 127.0.0.1.
//!
//!     cargo build --release -p pacer && \
//!     cargo run --release -p pacer --example events_bench [clients] [callbacks] [rate] [seconds]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Parses Marathon's `2015-09-25T15:13:50.343Z` into epoch milliseconds.
fn ts_ms(s: &str) -> Option<i64> {
    if s.len() < 24 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, se, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

#[derive(Default)]
struct Tally {
    lags_ms: Vec<i64>,
    received: usize,
}

fn http(port: u16, method: &str, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(100) as usize;
    let callbacks = args.get(1).copied().unwrap_or(10) as usize;
    let rate = args.get(2).copied().unwrap_or(50);
    let seconds = args.get(3).copied().unwrap_or(60);
    let bin = std::env::var("PACER_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/pacer").into()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(&bin)
        .args(["--http_port", "0", "--hostname", "127.0.0.1"])
        .args(["--event_subscriber", "http_callback"])
        .arg("--data_dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (build it with --release first)"));
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let port: u16 = loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("pacer exited");
        }
        if let Some(a) = line.trim().strip_prefix("pacer: listening on http://") {
            break a.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });

    // Only the events of the changes are measured.
    let measured = |v: &Value| v["eventType"] == "api_post_event";
    let sse: Arc<Mutex<Tally>> = Arc::default();
    for _ in 0..clients {
        let tally = sse.clone();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /v2/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(d) = line.trim_end().strip_prefix("data: ") {
                    let got = now_ms();
                    if let Ok(v) = serde_json::from_str::<Value>(d) {
                        if measured(&v) {
                            let sent = v["timestamp"].as_str().and_then(ts_ms).unwrap_or(got);
                            let mut t = tally.lock().unwrap();
                            t.lags_ms.push(got - sent);
                            t.received += 1;
                        }
                    }
                }
                line.clear();
            }
        });
    }
    let cb: Arc<Mutex<Tally>> = Arc::default();
    for _ in 0..callbacks {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/", l.local_addr().unwrap().port());
        assert_eq!(
            http(
                port,
                "POST",
                &format!("/v2/eventSubscriptions?callbackUrl={url}"),
                ""
            ),
            200
        );
        let tally = cb.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(s) = conn else { return };
                let tally = tally.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let (mut len, mut line) = (0usize, String::new());
                    while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        line.clear();
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    let got = now_ms();
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        if measured(&v) {
                            let sent = v["timestamp"].as_str().and_then(ts_ms).unwrap_or(got);
                            let mut t = tally.lock().unwrap();
                            t.lags_ms.push(got - sent);
                            t.received += 1;
                        }
                    }
                    let mut s = s;
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
    }
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    let mut changes = 0u64;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = start + period * changes as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let app = json!({"id": "/bench", "cmd": "sleep 1", "cpus": 0.01, "mem": 8,
            "instances": 0, "labels": {"N": changes.to_string()}});
        let status = http(port, "PUT", "/v2/apps/bench?force=true", &app.to_string());
        assert!(status == 200 || status == 201, "PUT answered {status}");
        changes += 1;
    }
    let achieved = changes as f64 / start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "clients={clients} callbacks={callbacks} changes={changes} ({achieved:.1}/s over {seconds} s)"
    );
    for (name, tally, consumers) in [("sse", &sse, clients), ("callback", &cb, callbacks)] {
        let mut t = tally.lock().unwrap();
        t.lags_ms.sort_unstable();
        let pct = |p: f64| {
            t.lags_ms
                .get(((t.lags_ms.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        let expected = changes as usize * consumers;
        println!(
            "{name:<9} lag p50 {} ms, p99 {} ms, max {} ms; received {} of {expected} ({} missed)",
            pct(0.5),
            pct(0.99),
            t.lags_ms.last().copied().unwrap_or(0),
            t.received,
            expected.saturating_sub(t.received)
        );
    }
}
