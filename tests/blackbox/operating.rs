//! Operating Pacer: flags and environment, Basic auth, HTTPS, overload shedding, CORS, metrics,
//! run-time log levels and graceful shutdown — against the real binary.

use crate::harness::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Sends a raw HTTP/1.1 request head and returns the connection with the status line read.
fn raw(port: u16, head: &str) -> (BufReader<TcpStream>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    (r, status)
}

/// Reads response header lines up to the blank line.
fn read_head(r: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            return lines;
        }
        lines.push(line.trim_end().to_ascii_lowercase());
    }
}

#[test]
fn flags_come_from_the_environment_and_bad_ones_stop_start_up() {
    // The command line wins over MARATHON_*; an empty value is a bare toggle.
    let p = Pacer::start_with_env(
        &[
            "--framework_name",
            "from-cli",
            "--metrics_statsd",
            "--log_format",
            "json",
        ],
        &[
            ("MARATHON_FRAMEWORK_NAME", "from-env"),
            ("MARATHON_MESOS_ROLE", "env-role"),
            ("MARATHON_DISABLE_HTTP_COMPRESSION", ""),
            ("MARATHON_APP_ID", "/not-a-flag"),
        ],
    );
    let info = p.get("/v2/info").body;
    assert_eq!(info["marathon_config"]["framework_name"], "from-cli");
    assert_eq!(info["marathon_config"]["mesos_role"], "env-role");
    assert_eq!(info["http_config"]["http_port"], p.port);
    assert_eq!(
        info["zookeeper_config"]["zk"],
        "zk://localhost:2181/marathon"
    );
    let gzip = [("Accept-Encoding", "gzip")];
    let r = p.request("GET", "/v2/info", None, &gzip);
    assert_eq!(
        r.header("Content-Encoding"),
        None,
        "compression was disabled"
    );
    // Listings big enough to be kept compressed by the render cache are not compressed either.
    for i in 0..3 {
        let app = json!({"id": format!("/listed/app-{i}"), "cmd": "sleep 1000", "instances": 0});
        assert_eq!(p.post("/v2/apps", &app.to_string()).status, 201);
    }
    for path in ["/v2/apps", "/v2/groups", "/v2/apps/listed/*"] {
        let r = p.request("GET", path, None, &gzip);
        assert!(
            r.bytes.len() > 1024,
            "{path}: big enough to be cached compressed"
        );
        assert_eq!(r.header("Content-Encoding"), None, "{path}");
    }
    let log = p.log_text();
    // JSON log lines, one object each, with the compat flag's warning among them.
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["fields"]["message"] == "Store opened."));
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("--metrics_statsd has no effect in Pacer"))),
        "{log}"
    );

    // Compression is on by default, for plain responses and cached listings alike; a cached
    // listing decompresses to what a client without gzip gets.
    let p2 = Pacer::start(&[]);
    let r = p2.request("GET", "/v2/info", None, &gzip);
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    for i in 0..3 {
        let app = json!({"id": format!("/listed/app-{i}"), "cmd": "sleep 1000", "instances": 0});
        assert_eq!(p2.post("/v2/apps", &app.to_string()).status, 201);
    }
    for path in [
        "/v2/apps",
        "/v2/groups",
        "/v2/apps/listed/*",
        "/v2/apps/listed/app-1",
    ] {
        let plain = p2.get(path);
        assert_eq!(plain.header("Content-Encoding"), None, "{path}");
        let r = p2.request("GET", path, None, &gzip);
        assert_eq!(r.header("Content-Encoding"), Some("gzip"), "{path}");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.bytes[..]), &mut text)
            .unwrap();
        assert_eq!(text, plain.text, "{path}");
    }

    for (args, env, needle) in [
        (vec!["--no_such_flag", "1"], vec![], "--no_such_flag"),
        (
            vec![],
            vec![("MARATHON_NO_SUCH_FLAG", "1")],
            "MARATHON_NO_SUCH_FLAG",
        ),
        (
            vec!["--master", "https://user:secret@m1:5050"],
            vec![],
            "--master",
        ),
        (
            vec!["--http_address", "0.0.0.0"],
            vec![],
            "--http_credentials",
        ),
        (
            vec!["--ssl_keystore_path", "/nonexistent.p12"],
            vec![],
            "--ssl_keystore_path",
        ),
    ] {
        let (code, err) = pacer_refuses(&args, &env);
        assert_eq!(code, 112, "{args:?} {env:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("secret"), "credentials leaked: {err}");
    }
}

#[test]
fn basic_auth_guards_every_path() {
    let p = Pacer::start(&[
        "--http_credentials",
        "ops:s3cret",
        "--http_realm",
        "Pacer test",
    ]);
    let good = format!("Basic {}", b64("ops:s3cret"));
    let bad = format!("Basic {}", b64("ops:wrong"));
    for path in [
        "/ping",
        "/v2/apps",
        "/v2/info",
        "/metrics",
        "/logging",
        "/v2/events",
        "/no/such/path",
    ] {
        for auth in [None, Some(bad.as_str()), Some("Bearer x")] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("Authorization", a)).into_iter().collect();
            let r = p.request("GET", path, None, &headers);
            assert_eq!(r.status, 401, "{path} with {auth:?}");
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Basic realm=\"Pacer test\""),
                "{path}"
            );
        }
    }
    let r = p.request("GET", "/ping", None, &[("Authorization", &good)]);
    assert_eq!((r.status, r.text.as_str()), (200, "pong"));
    let r = p.request("GET", "/v2/apps", None, &[("Authorization", &good)]);
    assert_eq!(r.status, 200);
    assert!(!p
        .request("GET", "/v2/info", None, &[("Authorization", &good)])
        .text
        .contains("s3cret"));
    // The event stream opens with credentials.
    let (mut r, status) = raw(
        p.port,
        &format!("GET /v2/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: {good}\r\n\r\n"),
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(read_head(&mut r).contains(&"content-type: text/event-stream".to_string()));

    // Marathon's environment variable for the same credentials.
    let p = Pacer::start_with_env(&[], &[("MESOSPHERE_HTTP_CREDENTIALS", "env:pw")]);
    assert_eq!(p.get("/ping").status, 401);
    let auth = format!("Basic {}", b64("env:pw"));
    assert_eq!(
        p.request("GET", "/ping", None, &[("Authorization", &auth)])
            .status,
        200
    );
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (installed by scripts/setup-test-env.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl` over HTTPS, trusting only the test's own certificate.
fn curl_https(dir: &Path, port: u16, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(dir.join("cert.pem"))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn https_with_a_self_signed_certificate_and_a_pkcs12_keystore() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let p = Pacer::start(&[
        "--disable_http",
        "--https_port",
        "0",
        "--ssl_cert_path",
        cert.to_str().unwrap(),
        "--ssl_key_path",
        key.to_str().unwrap(),
    ]);
    let port = p.https_port.expect("https port");
    let (body, err) = curl_https(dir, port, "/v2/info");
    let info: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body} {err}"));
    assert_eq!(info["http_config"]["https_port"], port);
    assert_eq!(info["leader"], format!("127.0.0.1:{port}"));
    // Plain HTTP is off; a plain-text request on the TLS port gets no API answer.
    assert_eq!(p.port, 0);

    // The same certificate as a PKCS#12 keystore, Marathon's way of configuring HTTPS.
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "cert.pem",
            "-inkey",
            "key.pem",
            "-out",
            "ks.p12",
            "-passout",
            "pass:changeit",
        ],
    );
    let ks = dir.join("ks.p12");
    let p = Pacer::start_with_env(
        &[
            "--https_port",
            "0",
            "--ssl_keystore_path",
            ks.to_str().unwrap(),
        ],
        &[("MESOSPHERE_KEYSTORE_PASS", "changeit")],
    );
    let (body, err) = curl_https(dir, p.https_port.unwrap(), "/ping");
    assert_eq!(body, "pong", "{err}");
    assert_eq!(p.get("/ping").text, "pong", "plain HTTP is still served");
    let (code, err) = pacer_refuses(
        &[
            "--ssl_keystore_path",
            ks.to_str().unwrap(),
            "--ssl_keystore_password",
            "wrong",
        ],
        &[],
    );
    assert_eq!(code, 112, "{err}");
    assert!(err.contains("--ssl_keystore_path"), "{err}");
}

#[test]
fn requests_beyond_the_limit_are_shed_with_503() {
    let p = Pacer::start(&["--http_max_concurrent_requests", "2"]);
    // Two requests whose bodies never finish hold both slots. One that arrives while a probe
    // below holds a slot is itself shed (it gets an answer): it is sent again.
    let body = "{\"id\": \"/held\", \"cmd\": \"sleep 100\"}";
    let hold = || {
        let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        write!(
            s,
            "POST /v2/apps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len() + 1,
            &body[..10]
        )
        .unwrap();
        s.set_nonblocking(true).unwrap();
        s
    };
    let answered = |s: &TcpStream| {
        let mut b = [0u8; 1];
        matches!(s.peek(&mut b), Ok(n) if n > 0)
    };
    let mut held = vec![hold(), hold()];
    let shed = wait_for("a request to be shed", Duration::from_secs(20), || {
        for s in held.iter_mut() {
            if answered(s) {
                *s = hold();
            }
        }
        let r = p.get("/v2/info");
        (r.status == 503).then_some(r)
    });
    assert_eq!(shed.text, "Too many concurrent requests! Allowed: 2.");
    // Once they finish, requests are served again.
    drop(held);
    wait_for(
        "requests to be served again",
        Duration::from_secs(20),
        || (p.get("/v2/info").status == 200).then_some(()),
    );
    let metrics = p.get("/metrics").text;
    assert!(
        metrics.contains(
            "pacer_http_requests_total{route=\"/v2/info\",method=\"GET\",status=\"503\"}"
        ),
        "{metrics}"
    );
}

#[test]
fn cors_and_body_limits_follow_the_flags() {
    let p = Pacer::start(&[
        "--access_control_allow_origin",
        "http://ui.example,http://other.example",
        "--http_max_request_body_bytes",
        "2000",
    ]);
    let r = p.request("GET", "/v2/apps", None, &[("Origin", "http://ui.example")]);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://ui.example")
    );
    assert_eq!(
        r.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(r.header("Access-Control-Max-Age"), Some("86400"));
    let r = p.request(
        "GET",
        "/v2/apps",
        None,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(r.header("Access-Control-Allow-Origin"), None);
    let r = p.request(
        "OPTIONS",
        "/v2/apps",
        None,
        &[
            ("Origin", "http://other.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-custom"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://other.example")
    );
    assert_eq!(r.header("Access-Control-Allow-Headers"), Some("x-custom"));

    let big = format!("{{\"id\": \"/big\", \"cmd\": \"{}\"}}", "x".repeat(3000));
    let r = p.post("/v2/apps", &big);
    assert_eq!(r.status, 413, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("limit"));
    assert_eq!(p.get("/v2/apps").body["apps"], serde_json::json!([]));
}

/// `(name, labels) → value` for every sample, parsed by a Prometheus text parser.
fn scrape(text: &str) -> (prometheus_parse::Scrape, HashMap<String, f64>) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
    let mut flat = HashMap::new();
    for s in &scrape.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        flat.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    (scrape, flat)
}

#[test]
fn metrics_are_prometheus_text_with_what_an_operator_needs() {
    let p = Pacer::start(&["--metrics_name_prefix", "pacer"]);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/metered", "cmd": "exec python3 -m http.server --bind 127.0.0.1 $PORT0",
            "cpus": 0.01, "mem": 32, "instances": 2,
            "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                              "intervalSeconds": 2, "timeoutSeconds": 1,
                              "gracePeriodSeconds": 60}],
            "portDefinitions": [{"port": 0}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    p.wait_running("/metered", 2);
    let (parsed, m) = wait_for(
        "a finished deployment in the metrics",
        Duration::from_secs(30),
        || {
            let (s, m) = scrape(&p.get("/metrics").text);
            (m.get("pacer_deployments_total{result=succeeded}") == Some(&1.0)).then_some((s, m))
        },
    );
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("{k} missing: {m:#?}"));
    assert_eq!(get("pacer_leader{}"), 1.0);
    assert_eq!(get("pacer_apps{}"), 1.0);
    assert_eq!(get("pacer_instances{condition=Running}"), 2.0);
    assert_eq!(get("pacer_launch_queue_instances{}"), 0.0);
    assert_eq!(get("pacer_deployments_running{}"), 0.0);
    assert!(get("pacer_offers_total{outcome=used}") >= 1.0);
    assert!(get("pacer_http_requests_total{method=POST,route=/v2/apps,status=201}") >= 1.0);
    assert!(get("pacer_http_request_duration_seconds{method=POST,route=/v2/apps}") >= 1.0);
    assert!(get("pacer_store_write_duration_seconds{}") >= 1.0);
    assert_eq!(get("pacer_store_write_errors_total{}"), 0.0);
    assert!(get("pacer_events_published_total{}") >= 1.0);
    assert!(m.contains_key("pacer_health_checks_total{result=late}"));
    assert!(m.contains_key("pacer_event_consumers{kind=sse}"));
    // Every family is typed, and histograms parse as histograms.
    assert!(parsed
        .docs
        .contains_key("pacer_http_request_duration_seconds"));
    assert!(parsed
        .samples
        .iter()
        .any(|s| s.metric == "pacer_http_request_duration_seconds"
            && matches!(s.value, prometheus_parse::Value::Histogram(_))));
    // Health checks ran against the tasks.
    wait_for(
        "health checks in the metrics",
        Duration::from_secs(30),
        || {
            let (_, m) = scrape(&p.get("/metrics").text);
            (m.get("pacer_health_checks_total{result=run}")
                .copied()
                .unwrap_or(0.0)
                >= 2.0)
                .then_some(())
        },
    );
    // Marathon 1.7's path serves the same text.
    assert_eq!(p.get("/metrics/prometheus").status, 200);
    assert!(p
        .get("/metrics/prometheus")
        .text
        .contains("# TYPE pacer_apps gauge"));
    let off = Pacer::start(&["--disable_metrics"]);
    assert_eq!(off.get("/metrics").status, 404);
}

#[test]
fn log_levels_change_at_run_time_and_expire() {
    let p = Pacer::start(&[]);
    assert_eq!(p.get("/logging").body, serde_json::json!({"ROOT": "INFO"}));
    // tower_http logs each request at debug: silent until its level is lowered.
    p.get("/v2/apps");
    assert!(!p.log_text().contains("finished processing request"));
    let r = p.post(
        "/logging",
        r#"{"logger": "tower_http", "level": "debug", "durationSeconds": 3}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["tower_http"], "DEBUG");
    p.get("/v2/apps");
    wait_for(
        "a debug line from tower_http",
        Duration::from_secs(10),
        || {
            p.log_text()
                .contains("finished processing request")
                .then_some(())
        },
    );
    // The change expires by itself.
    wait_for(
        "the temporary level to expire",
        Duration::from_secs(20),
        || (p.get("/logging").body == serde_json::json!({"ROOT": "INFO"})).then_some(()),
    );
    let r = p.post("/logging", r#"{"logger": "ROOT", "level": "loud"}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.body["details"][0]["path"], "/level");
}

#[test]
fn sigterm_ends_event_streams_and_exits_cleanly() {
    let mut p = Pacer::start(&["--graceful_shutdown_timeout", "120000"]);
    let (mut stream, status) = raw(
        p.port,
        "GET /v2/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let head = read_head(&mut stream);
    // Gzip is on by default, but never for the event stream (it would hold events back).
    assert!(
        !head.iter().any(|h| h.starts_with("content-encoding")),
        "{head:?}"
    );
    let started = std::time::Instant::now();
    let exit = p.stop();
    assert!(exit.success(), "exit status {exit}");
    // The stream ended (EOF), rather than being held open until the grace ran out.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "shutdown waited for the stream until the grace ran out"
    );
    assert!(p.log_text().contains("Pacer stopped"));
}
