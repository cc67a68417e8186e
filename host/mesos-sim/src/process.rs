//! Tasks run as real local processes (`SimConfig::run_commands`), the way Mesos's command
//! executor runs them: `/bin/sh -c value` for shell commands, otherwise `value` executed with
//! `arguments` (whose first element is argv[0]); a sandbox directory of its own; a process group
//! of its own so a kill reaches every descendant.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use pacer_core::cluster::{AgentCheck, AgentCheckKind};
use pacer_mesos_proto::v1;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub sandbox: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
}

/// The environment of a task: PATH, HOME and LANG from the simulator, the command's variables,
/// and the `MESOS_*` variables an executor provides.
fn task_env(
    cmd: &v1::CommandInfo,
    ids: &TaskIds<'_>,
    sandbox: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for key in ["PATH", "HOME", "LANG"] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| FALLBACK_PATH.into());
    let sandbox = sandbox.to_string_lossy().into_owned();
    for (k, v) in [
        ("MESOS_TASK_ID", ids.task),
        ("MESOS_FRAMEWORK_ID", ids.framework),
        ("MESOS_AGENT_ID", ids.agent),
        ("MESOS_EXECUTOR_ID", ids.executor),
        ("MESOS_SANDBOX", &sandbox),
        ("MESOS_DIRECTORY", &sandbox),
    ] {
        env.insert(k.into(), v.to_string());
    }
    if let Some(e) = &cmd.environment {
        for var in &e.variables {
            env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
        }
    }
    env
}

pub(crate) struct TaskIds<'a> {
    pub task: &'a str,
    pub framework: &'a str,
    pub agent: &'a str,
    pub executor: &'a str,
}

/// Starts the task's command. Must be called inside a tokio runtime.
pub(crate) fn spawn(cmd: &v1::CommandInfo, ids: &TaskIds<'_>) -> Result<Spawned, String> {
    let sandbox = tempfile::Builder::new()
        .prefix("pacer-mesos-sim-sandbox-")
        .tempdir()
        .map_err(|e| format!("Failed to create the sandbox: {e}"))?;
    let env = task_env(cmd, ids, sandbox.path());
    let mut command = if cmd.shell.unwrap_or(true) {
        let value = cmd
            .value
            .as_deref()
            .ok_or("Shell command of the task has no 'value'")?;
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c").arg(value);
        c
    } else {
        let value = cmd
            .value
            .as_deref()
            .ok_or("Command of the task has no 'value' to execute")?;
        let mut c = tokio::process::Command::new(value);
        if let Some((argv0, rest)) = cmd.arguments.split_first() {
            c.arg0(argv0);
            c.args(rest);
        }
        c
    };
    let open = |name: &str| {
        std::fs::File::create(sandbox.path().join(name))
            .map_err(|e| format!("Failed to create the sandbox's {name}: {e}"))
    };
    command
        .env_clear()
        .envs(&env)
        .current_dir(sandbox.path())
        .stdin(Stdio::null())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?)
        .process_group(0)
        .kill_on_drop(false);
    let child = command
        .spawn()
        .map_err(|e| format!("Failed to launch the command: {e}"))?;
    let pid = child
        .id()
        .ok_or("The command exited before it could be tracked")?;
    Ok(Spawned {
        child,
        pid,
        sandbox,
        env,
    })
}

/// Sends `sig` to the process group led by `pid`; a group that is gone is fine.
pub(crate) fn signal_group(pid: u32, sig: Signal) {
    match killpg(Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pid, signal = %sig, error = %e, "cannot signal a task's process group")
        }
    }
}

/// How a process ended, as the command executor words it; `true` for exit status 0.
pub(crate) fn describe_exit(status: std::io::Result<ExitStatus>) -> (bool, String) {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code == 0, format!("Command exited with status {code}")),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| sig.to_string());
                (false, format!("Command terminated with signal {name}"))
            }
            (None, None) => (false, format!("Command ended with wait status {s}")),
        },
        Err(e) => (false, format!("Failed to wait for the command: {e}")),
    }
}

fn secs(v: Option<f64>, default: f64) -> Duration {
    let v = v.unwrap_or(default);
    if v.is_finite() && v >= 0.0 {
        Duration::from_secs_f64(v.min(1e9))
    } else {
        Duration::from_secs_f64(default)
    }
}

/// The agent-side check for a Mesos `HealthCheck`, with Mesos's defaults.
pub(crate) fn agent_check(hc: &v1::HealthCheck) -> Option<AgentCheck> {
    use v1::health_check::Type;
    let ty = hc
        .r#type
        .and_then(|t| Type::try_from(t).ok())
        .unwrap_or(if hc.http.is_some() {
            Type::Http
        } else if hc.tcp.is_some() {
            Type::Tcp
        } else if hc.command.is_some() {
            Type::Command
        } else {
            Type::Unknown
        });
    let kind = match ty {
        Type::Http => {
            let h = hc.http.as_ref()?;
            AgentCheckKind::Http {
                tls: h.scheme.as_deref() == Some("https"),
                port: h.port,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            }
        }
        Type::Tcp => AgentCheckKind::Tcp {
            port: hc.tcp.as_ref()?.port,
        },
        Type::Command => {
            let c = hc.command.as_ref()?;
            let mut shell = c.value.clone()?;
            if c.shell == Some(false) {
                for a in c.arguments.iter().skip(1) {
                    shell.push(' ');
                    shell.push_str(a);
                }
            }
            AgentCheckKind::Command(shell)
        }
        Type::Unknown => return None,
    };
    Some(AgentCheck {
        kind,
        grace: secs(hc.grace_period_seconds, 10.0),
        interval: secs(hc.interval_seconds, 10.0),
        timeout: secs(hc.timeout_seconds, 20.0),
        delay: secs(hc.delay_seconds, 15.0),
        consecutive_failures: hc.consecutive_failures.unwrap_or(3),
    })
}
