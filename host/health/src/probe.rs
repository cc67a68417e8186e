//! Health-check kinds behind one interface, looked up by protocol name. The built-in kinds
//! live here; the plugin host registers more (e.g. `PLUGIN`) without touching these.

use crate::http::{self, HttpError};
use pacer_core::health::ProbeOutcome;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where and how to probe one task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    pub host: String,
    pub port: Option<u32>,
    pub path: String,
    pub timeout: Duration,
    pub ignore_http1xx: bool,
    /// For command checks: what to run, in the task's environment and sandbox.
    pub command: Option<CommandTarget>,
    /// For `PLUGIN` checks: which plugin, and what it may know.
    pub plugin: Option<PluginTarget>,
}

/// What a health-check plugin is told about the checked task.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginTarget {
    pub plugin: String,
    /// The check's `params` as JSON (`{}` when absent).
    pub params: String,
    pub app_id: String,
    pub task_id: String,
    /// All of the task's host ports.
    pub ports: Vec<u32>,
    /// The check's `path`, if it has one.
    pub path: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandTarget {
    pub shell: String,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
}

/// One kind of health check. A probe must finish within `target.timeout` (the caller enforces
/// it too) and says only what it saw; what a result means is the core's business.
pub trait ProbeKind: Send + Sync {
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, ProbeOutcome>;
}

/// The kinds known by protocol name.
#[derive(Clone)]
pub struct ProbeKinds {
    kinds: HashMap<String, Arc<dyn ProbeKind>>,
}

impl ProbeKinds {
    /// HTTP, HTTPS and TCP (scheduler-side), their `MESOS_` twins and COMMAND (agent-side).
    pub fn builtin() -> Self {
        let mut k = ProbeKinds {
            kinds: HashMap::new(),
        };
        for (name, kind) in [
            ("HTTP", Arc::new(Http { tls: false }) as Arc<dyn ProbeKind>),
            ("HTTPS", Arc::new(Http { tls: true })),
            ("TCP", Arc::new(Tcp)),
            ("MESOS_HTTP", Arc::new(Http { tls: false })),
            ("MESOS_HTTPS", Arc::new(Http { tls: true })),
            ("MESOS_TCP", Arc::new(Tcp)),
            ("COMMAND", Arc::new(Command)),
        ] {
            k.register(name, kind);
        }
        k
    }

    pub fn register(&mut self, protocol: &str, kind: Arc<dyn ProbeKind>) {
        self.kinds.insert(protocol.to_string(), kind);
    }

    pub fn get(&self, protocol: &str) -> Option<Arc<dyn ProbeKind>> {
        self.kinds.get(protocol).cloned()
    }
}

/// Healthy iff the answer is 200–399; 1xx is ignored with `ignoreHttp1xx`.
pub struct Http {
    pub tls: bool,
}

impl ProbeKind for Http {
    fn probe<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            let Some(port) = t.port else {
                return ProbeOutcome::Unhealthy("the task has no port for this check".into());
            };
            let informational = |code: u16| {
                if t.ignore_http1xx {
                    ProbeOutcome::Ignored
                } else {
                    ProbeOutcome::Unhealthy(format!("HTTP {code}"))
                }
            };
            match http::get(&t.host, port, &t.path, self.tls, t.timeout, false).await {
                Ok(r) if (200..400).contains(&r.status) => ProbeOutcome::Healthy,
                Ok(r) if (100..200).contains(&r.status) => informational(r.status),
                Ok(r) => ProbeOutcome::Unhealthy(format!("HTTP {}", r.status)),
                Err(HttpError::Informational(code)) => informational(code),
                Err(e) => ProbeOutcome::Unhealthy(e.to_string()),
            }
        })
    }
}

/// Healthy iff a TCP connection opens within the timeout.
pub struct Tcp;

impl ProbeKind for Tcp {
    fn probe<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            let Some(port) = t.port.and_then(|p| u16::try_from(p).ok()) else {
                return ProbeOutcome::Unhealthy("the task has no port for this check".into());
            };
            let connect = tokio::net::TcpStream::connect((t.host.as_str(), port));
            match tokio::time::timeout(t.timeout, connect).await {
                Ok(Ok(_)) => ProbeOutcome::Healthy,
                Ok(Err(e)) => ProbeOutcome::Unhealthy(format!("connect to {}:{port}: {e}", t.host)),
                Err(_) => ProbeOutcome::Unhealthy(format!("timed out after {:?}", t.timeout)),
            }
        })
    }
}

/// Healthy iff `/bin/sh -c <command>` exits 0 within the timeout; on timeout its whole process
/// group is killed.
pub struct Command;

impl ProbeKind for Command {
    fn probe<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            let Some(c) = &t.command else {
                return ProbeOutcome::Unhealthy("no command given".into());
            };
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(&c.shell)
                .env_clear()
                .envs(&c.env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if let Some(dir) = &c.cwd {
                cmd.current_dir(dir);
            }
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return ProbeOutcome::Unhealthy(format!("cannot run the command: {e}")),
            };
            let pid = child.id();
            match tokio::time::timeout(t.timeout, child.wait_with_output()).await {
                Ok(Ok(out)) if out.status.success() => ProbeOutcome::Healthy,
                Ok(Ok(out)) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let err = err.trim();
                    let mut cause = match out.status.code() {
                        Some(code) => format!("command exited with status {code}"),
                        None => "command was killed by a signal".to_string(),
                    };
                    if !err.is_empty() {
                        cause.push_str(": ");
                        cause.push_str(&err.chars().take(200).collect::<String>());
                    }
                    ProbeOutcome::Unhealthy(cause)
                }
                Ok(Err(e)) => ProbeOutcome::Unhealthy(format!("waiting for the command: {e}")),
                Err(_) => {
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    ProbeOutcome::Unhealthy(format!("command timed out after {:?}", t.timeout))
                }
            }
        })
    }
}
