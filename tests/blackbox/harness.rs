//! Starts the real `pacer` binary and talks to it over HTTP.

use serde_json::Value;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Each Pacer in this test binary offers its own host port range so parallel tests never collide.
static NEXT_RANGE: AtomicU32 = AtomicU32::new(0);

pub struct Pacer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The plain HTTP port (0 when `--disable_http`).
    pub port: u16,
    /// The HTTPS port, when a certificate was configured.
    pub https_port: Option<u16>,
    pub agent_ports: (u32, u32),
    log: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// Another Pacer's data directory, shared (HA Pacers on one machine share the local agent).
    shared_data: Option<PathBuf>,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
    /// The body as sent (e.g. gzip-compressed).
    pub bytes: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Polls `f` until it returns `Some`, failing the test with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `pacer` with these flags and environment, expecting it to refuse to start; returns its
/// exit code and stderr.
pub fn pacer_refuses(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pacer"))
        .arg("--data_dir")
        .arg(dir.path().join("data"))
        .args(["--http_port", "0"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run pacer");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("pacer was killed by a signal: {stderr}"));
    (code, stderr)
}

/// A block of 100 host ports no other Pacer (or simulated agent) of this test binary uses.
pub fn reserve_ports() -> (u32, u32) {
    let n = NEXT_RANGE.fetch_add(1, Ordering::SeqCst) % 117;
    let begin = 21000 + n * 100;
    (begin, begin + 99)
}

impl Pacer {
    pub fn start(extra: &[&str]) -> Pacer {
        Pacer::start_with_env(extra, &[])
    }

    /// Starts Pacer with extra environment variables (e.g. `MARATHON_*`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Pacer {
        // Below Linux's ephemeral range (32768+), so outgoing connections never hold a task's
        // port; 100 ports per Pacer.
        let mut p = Pacer {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            https_port: None,
            agent_ports: reserve_ports(),
            log: PathBuf::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            shared_data: None,
        };
        p.spawn();
        p
    }

    /// Another Pacer on the same machine as `other`: same data directory (so the same local
    /// agent's tasks) and host port range.
    pub fn start_sharing(other: &Pacer, extra: &[&str]) -> Pacer {
        let mut p = Pacer {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            https_port: None,
            agent_ports: other.agent_ports,
            log: PathBuf::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            shared_data: Some(other.data_dir()),
        };
        p.spawn();
        p
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("pacer to exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Flags for the next [`Pacer::spawn`] (e.g. to restart on another store).
    pub fn set_flags(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.shared_data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// (Re)starts the process on the same data directory.
    pub fn spawn(&mut self) {
        let n = fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        self.log = self.dir.path().join(format!("pacer-{n}.log"));
        let log = fs::File::create(&self.log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pacer"));
        cmd.arg("--data_dir")
            .arg(self.data_dir())
            .args([
                "--http_port",
                "0",
                "--hostname",
                "127.0.0.1",
                "--local_agent_kill_grace",
                "1000",
            ])
            .arg("--local_agent_ports")
            .arg(format!("{}-{}", self.agent_ports.0, self.agent_ports.1))
            .args(&self.extra)
            .envs(self.env.iter().cloned())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start pacer"));
        let log_path = self.log.clone();
        let has = |flag: &str| self.extra.iter().any(|a| a == flag);
        let want_http = !has("--disable_http");
        let want_https = has("--ssl_cert_path") || has("--ssl_keystore_path");
        let port_of = |text: &str, prefix: &str| -> Option<u16> {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|a| a.rsplit(':').next()?.trim().parse().ok())
        };
        let (http, https) = wait_for("pacer to listen", Duration::from_secs(30), || {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("pacer exited with {status} before listening:\n{text}");
                }
            }
            let http = port_of(&text, "pacer: listening on http://");
            let https = port_of(&text, "pacer: listening on https://");
            (http.is_some() == want_http && https.is_some() == want_https).then_some((http, https))
        });
        self.port = http.unwrap_or(0);
        self.https_port = https;
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.request(method, path, body, &[])
    }

    /// A request with extra headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        let mut req = agent
            .request(method, &self.url(path))
            .set("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|h| (h.clone(), resp.header(&h).unwrap_or("").to_string()))
            .collect();
        // Bytes, not text: a gzip body is not UTF-8.
        let mut bytes = Vec::new();
        resp.into_reader().read_to_end(&mut bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
            bytes,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &str) -> Resp {
        self.call("POST", path, Some(body))
    }
    pub fn put(&self, path: &str, body: &str) -> Resp {
        self.call("PUT", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None)
    }

    pub fn app(&self, id: &str) -> Value {
        let r = self.get(&format!("/v2/apps{id}"));
        assert_eq!(r.status, 200, "GET app {id}: {}", r.text);
        r.body["app"].clone()
    }

    /// Waits until the app has exactly `n` tasks, all TASK_RUNNING, and no deployment; returns them.
    pub fn wait_running(&self, id: &str, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let app = self.app(id);
            let tasks = app["tasks"].as_array().cloned().unwrap_or_default();
            let ok = tasks.len() == n
                && tasks.iter().all(|t| t["state"] == "TASK_RUNNING")
                && app["tasksRunning"] == n
                && app["deployments"].as_array().is_some_and(|d| d.is_empty());
            if ok {
                return tasks;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let queue = self.get("/v2/queue").text;
                let deployments = self.get("/v2/deployments").text;
                panic!(
                    "timed out after 60s waiting for {n} running tasks of {id}; last seen: \
                     {app:#}\nqueue: {queue}\ndeployments: {deployments}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sandbox directory of a task.
    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        let root = self.data_dir().join("sandboxes");
        fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().contains(task_id))
            .unwrap_or_else(|| panic!("no sandbox for {task_id} under {}", root.display()))
    }

    /// The pid of a task's process, from the local agent's record.
    pub fn pid_of(&self, task_id: &str) -> i32 {
        let dir = self.data_dir().join("local").join("tasks");
        wait_for(
            &format!("pid of {task_id}"),
            Duration::from_secs(20),
            || {
                let rec = fs::read_dir(&dir)
                    .ok()?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .find(|p| {
                        p.to_string_lossy().contains(task_id)
                            && p.extension().is_some_and(|x| x == "json")
                    })?;
                let v: Value = serde_json::from_slice(&fs::read(rec).ok()?).ok()?;
                v["pid"].as_i64().map(|p| p as i32)
            },
        )
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie counts as dead: it has exited and waits only to be reaped.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.kill9();
        // A failing test shows what Pacer logged; the temporary directory goes away with it.
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(150).collect();
            eprintln!("---- pacer log ({}), last lines ----", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        // Tasks outlive Pacer by design; the test must not leave them behind.
        let dir = self.data_dir().join("local").join("tasks");
        for rec in fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
        {
            if let Ok(v) =
                serde_json::from_slice::<Value>(&fs::read(rec.path()).unwrap_or_default())
            {
                if let Some(pid) = v["pid"].as_i64() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                if let Some(name) = v["docker_name"].as_str() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f", name])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

pub fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/apps")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
