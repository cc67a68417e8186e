//! HTTP API benchmark against the real daemon: `clients` keep-alive connections send requests as
//! fast as they can for `seconds`. Reads (`GET /v2/apps` with `apps` apps defined) against a plain
//! Pacer and one with every guard on (Basic auth, a concurrency limit, CORS); writes (`PUT` of an
//! app's labels, a durable change each) against a plain Pacer and one whose concurrency limit is a
//! quarter of the clients (overload). Prints requests per second, latency p50/p99/max and the
//! 503s shed. Asserts nothing. Everything listens on 127.0.0.1.
//!
//!     cargo build --release -p pacer --bin pacer --example api_bench && \
//!     ./target/release/examples/api_bench [clients] [apps] [seconds]

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

/// A daemon on its own temporary data directory (both go when dropped).
struct Daemon {
    _daemon: common::Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let daemon = common::start(dir.path(), extra);
    Daemon {
        port: daemon.port,
        _daemon: daemon,
        _dir: dir,
    }
}

/// One request on a keep-alive connection; returns the status code, or 0 when the server closed
/// the connection (it does after shedding a request whose body it never read).
fn request(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    auth: &str,
    body: &str,
) -> u16 {
    common::exchange(conn, method, path, auth, body, &mut Vec::new()).unwrap_or(0)
}

fn run(name: &str, d: &Daemon, clients: usize, apps: usize, seconds: u64, auth: &str, write: bool) {
    let mut setup = common::connect(d.port);
    for i in 0..apps {
        let body = format!(
            r#"{{"id": "/bench/app-{i}", "cmd": "sleep 1000", "instances": 0, "cpus": 0.01, "mem": 8}}"#
        );
        let s = request(&mut setup, "POST", "/v2/apps", auth, &body);
        assert!(s == 201 || s == 503, "create: {s}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, auth, port) = (stop.clone(), auth.to_string(), d.port);
            std::thread::spawn(move || {
                let mut conn = common::connect(port);
                let (mut ok_us, mut shed) = (Vec::new(), 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    n += 1;
                    let status = if write {
                        // Each client changes its own app, so no change waits for a lock.
                        let path = format!("/v2/apps/bench/app-{}?force=true", c % apps.max(1));
                        let body = format!(r#"{{"labels": {{"n": "{n}"}}}}"#);
                        request(&mut conn, "PUT", &path, &auth, &body)
                    } else {
                        request(&mut conn, "GET", "/v2/apps", &auth, "")
                    };
                    if status == 0 {
                        conn = common::connect(port);
                        continue;
                    }
                    match status {
                        200 | 201 => ok_us.push(t.elapsed().as_micros() as u64),
                        503 => shed += 1,
                        other => panic!("status {other}"),
                    }
                }
                (ok_us, shed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut shed) = (Vec::new(), 0);
    for w in workers {
        let (l, s) = w.join().unwrap();
        lat.extend(l);
        shed += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{name:<34} {:>9.0} ok/s  p50 {:>6} µs  p99 {:>6} µs  max {:>7} µs  503s {:>8.0}/s",
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        shed as f64 / elapsed
    );
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let clients = *args.first().unwrap_or(&8) as usize;
    let apps = *args.get(1).unwrap_or(&100) as usize;
    let seconds = *args.get(2).unwrap_or(&10);
    println!("{clients} clients, {apps} apps, {seconds} s per run, keep-alive connections");

    let plain = start(&[]);
    run("reads, plain", &plain, clients, apps, seconds, "", false);
    drop(plain);

    // base64("ops:s3cret")
    let auth = "Authorization: Basic b3BzOnMzY3JldA==\r\n";
    let guarded = start(&[
        "--http_credentials",
        "ops:s3cret",
        "--http_max_concurrent_requests",
        "1000",
        "--access_control_allow_origin",
        "*",
    ]);
    run(
        "reads, auth + limit + CORS",
        &guarded,
        clients,
        apps,
        seconds,
        auth,
        false,
    );
    drop(guarded);

    let plain = start(&[]);
    run("writes, plain", &plain, clients, apps, seconds, "", true);
    drop(plain);

    let limit = (clients / 4).max(1).to_string();
    let overloaded = start(&["--http_max_concurrent_requests", &limit]);
    run(
        &format!("writes, limit {limit}"),
        &overloaded,
        clients,
        apps,
        seconds,
        "",
        true,
    );
}
