//! Starting task processes (directly or through the Docker CLI), their environment, signals to
//! their process groups, and how an exit is described.

use crate::adopt::{self, TaskRecord};
use crate::config::Settings;
use crate::docker::{self, DockerProbe};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{Gid, Pid, Uid, User};
use pacer_core::cluster::{CommandSpec, LaunchSpec, TaskState};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use tokio::process::{Child, Command};

/// PATH for tasks when Pacer itself has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a task's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
    /// A re-adopted process that is not our child: its status cannot be known.
    Unknown,
    WaitFailed(String),
}

impl Exit {
    pub fn of(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::WaitFailed(format!("unrecognised wait status {status}")),
        }
    }

    /// The terminal state and message for this exit. `killed`: a kill was requested, which makes
    /// any ending a TASK_KILLED, as with Mesos.
    pub fn outcome(&self, killed: bool, detail: Option<&str>) -> (TaskState, String) {
        let fail_or_kill = if killed {
            TaskState::Killed
        } else {
            TaskState::Failed
        };
        let (state, mut message) = match self {
            Exit::Code(0) if !killed => (TaskState::Finished, "Command exited with status 0".to_string()),
            Exit::Code(c) => (fail_or_kill, format!("Command exited with status {c}")),
            Exit::Signal(s) => (fail_or_kill, format!("Command terminated with signal {}", signal_name(*s))),
            Exit::Unknown if killed => (
                TaskState::Killed,
                "Task exited after it was killed; its exit status is unknown (it was started before Pacer restarted)"
                    .to_string(),
            ),
            Exit::Unknown => (
                TaskState::Failed,
                "Task exited while Pacer was restarting; its exit status is unknown".to_string(),
            ),
            Exit::WaitFailed(e) => (fail_or_kill, format!("Could not wait for the command: {e}")),
        };
        if let Some(d) = detail {
            message.push_str(": ");
            message.push_str(d);
        }
        (state, message)
    }
}

pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

/// Sends `sig` to the process group led by `pid`. A group that is already gone is not an error.
pub(crate) fn signal_group(pid: u32, sig: Signal) {
    match killpg(Pid::from_raw(pid as i32), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, signal = %sig, error = %e, "cannot signal process group"),
    }
}

/// The user a task runs as, when that differs from Pacer's own.
pub(crate) struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
}

/// Looks up `user`; `None` when the task simply runs as Pacer's user.
fn resolve_user(user: Option<&str>) -> Result<Option<RunAs>, String> {
    let Some(name) = user.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let me = nix::unistd::geteuid();
    let target = User::from_name(name)
        .map_err(|e| format!("Cannot look up user '{name}': {e}"))?
        .ok_or_else(|| format!("User '{name}' does not exist on this agent"))?;
    if target.uid == me {
        return Ok(None);
    }
    if !me.is_root() {
        let my_name = User::from_uid(me)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| me.to_string());
        return Err(format!(
            "Cannot run the task as user '{name}': Pacer runs as '{my_name}' and only root can switch users"
        ));
    }
    Ok(Some(RunAs {
        name: target.name,
        uid: target.uid,
        gid: target.gid,
        home: target.dir,
    }))
}

/// The environment of a task run directly on the host: a cleared environment plus PATH, HOME
/// and LANG from Pacer, the task's own variables, and MESOS_SANDBOX.
pub(crate) fn host_env(
    spec: &LaunchSpec,
    sandbox: &Path,
    run_as: Option<&RunAs>,
) -> BTreeMap<String, OsString> {
    let mut env = BTreeMap::new();
    for key in ["PATH", "HOME", "LANG"] {
        if let Some(v) = std::env::var_os(key) {
            env.insert(key.to_string(), v);
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| FALLBACK_PATH.into());
    if let Some(u) = run_as {
        env.insert("HOME".into(), u.home.clone().into_os_string());
        env.insert("USER".into(), u.name.clone().into());
        env.insert("LOGNAME".into(), u.name.clone().into());
    }
    for (k, v) in &spec.env {
        env.insert(k.clone(), v.into());
    }
    env.insert("MESOS_SANDBOX".into(), sandbox.as_os_str().to_owned());
    env
}

fn host_command(
    spec: &LaunchSpec,
    sandbox: &Path,
    run_as: Option<&RunAs>,
) -> Result<Command, String> {
    let mut cmd = match &spec.command {
        CommandSpec::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        CommandSpec::Args(args) => {
            let (program, rest) = args
                .split_first()
                .ok_or("The task's command has no arguments")?;
            let mut c = Command::new(program);
            c.args(rest);
            c
        }
        CommandSpec::ImageDefault => {
            return Err("The task has neither a command nor a container image to run".into());
        }
    };
    cmd.env_clear().envs(host_env(spec, sandbox, run_as));
    if let Some(u) = run_as {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    Ok(cmd)
}

fn docker_command(bin: &Path, spec: &LaunchSpec, sandbox: &Path, name: &str) -> Command {
    let docker = spec
        .docker
        .as_ref()
        .expect("docker_command is only called for Docker tasks");
    // The CLI keeps Pacer's environment (DOCKER_HOST, DOCKER_CONFIG, ...); the task's variables
    // go to the container through `-e`.
    let mut cmd = Command::new(bin);
    cmd.args(docker::run_args(spec, docker, name, sandbox));
    cmd
}

/// Creates the sandbox with its `stdout` and `stderr` files, owned by the task's user.
fn prepare_sandbox(sandbox: &Path, run_as: Option<(Uid, Gid)>) -> std::io::Result<(File, File)> {
    std::fs::create_dir_all(sandbox)?;
    let open = |name: &str| -> std::io::Result<File> {
        let path = sandbox.join(name);
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Some((uid, gid)) = run_as {
            nix::unistd::chown(&path, Some(uid), Some(gid))?;
        }
        Ok(f)
    };
    if let Some((uid, gid)) = run_as {
        nix::unistd::chown(sandbox, Some(uid), Some(gid))?;
    }
    Ok((open("stdout")?, open("stderr")?))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("internal error: {e}"))
}

/// A started task: its child process (to be waited on) and the durable record written for it.
pub(crate) struct Started {
    pub child: Child,
    pub pid: u32,
}

/// Prepares the sandbox, records the task durably, and spawns its process in a process group of
/// its own. Errors are messages for a TASK_FAILED.
pub(crate) async fn start(
    settings: &Settings,
    probe: &DockerProbe,
    spec: &LaunchSpec,
) -> Result<Started, String> {
    let sandbox = settings.sandbox_of(&spec.task_id);
    let docker_name = spec
        .docker
        .as_ref()
        .map(|_| docker::container_name(&spec.task_id));
    if spec.docker.is_some() {
        probe
            .reachable()
            .await
            .map_err(|why| format!("Docker engine not reachable: {why}"))?;
    }
    // Containers run as their image says; only host commands switch users.
    let run_as = match spec.docker {
        None => {
            let user = spec.user.clone();
            blocking(move || resolve_user(user.as_deref())).await??
        }
        Some(_) => None,
    };

    let mut record = TaskRecord {
        version: adopt::RECORD_VERSION,
        spec: spec.clone(),
        sandbox: sandbox.clone(),
        pid: None,
        start_time: None,
        boot_id: adopt::boot_id(),
        docker_name: docker_name.clone(),
    };
    let tasks_dir = settings.tasks_dir();
    let (stdout, stderr) = {
        let (sandbox, record, tasks_dir) = (sandbox.clone(), record.clone(), tasks_dir.clone());
        let owner = run_as.as_ref().map(|u| (u.uid, u.gid));
        blocking(move || {
            // Recorded before the process exists, so a crash right after spawning leaves a trace
            // that leads back to the process (through its working directory).
            adopt::write_record(&tasks_dir, &record).map_err(|e| {
                format!(
                    "Could not write the task record in {}: {e}",
                    tasks_dir.display()
                )
            })?;
            prepare_sandbox(&sandbox, owner)
                .map_err(|e| format!("Could not prepare the sandbox {}: {e}", sandbox.display()))
        })
        .await??
    };

    let mut cmd = match &docker_name {
        Some(name) => docker_command(&settings.docker_bin, spec, &sandbox, name),
        None => host_command(spec, &sandbox, run_as.as_ref())?,
    };
    cmd.current_dir(&sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd
        .spawn()
        .map_err(|e| format!("Failed to start the command: {e}"))?;
    let pid = child
        .id()
        .ok_or("The command exited before its pid was known")?;

    record.pid = Some(pid);
    let write = blocking(move || {
        record.start_time = adopt::proc_stat(pid).map(|s| s.start_time);
        adopt::write_record(&tasks_dir, &record)
    })
    .await;
    match write {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(task_id = %spec.task_id, pid, error = %e, "cannot record task pid; it cannot be re-adopted after a crash")
        }
        Err(e) => {
            tracing::warn!(task_id = %spec.task_id, pid, error = %e, "cannot record task pid")
        }
    }
    Ok(Started { child, pid })
}

/// The last non-empty line of a (possibly large) log file, for failure messages.
pub(crate) fn last_line(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| l.chars().take(300).collect())
}

/// Exit codes with which the Docker CLI reports its own failures (rather than the container's).
pub(crate) fn is_docker_cli_failure(exit: &Exit) -> bool {
    matches!(exit, Exit::Code(125..=127))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exits() {
        assert_eq!(
            Exit::Code(0).outcome(false, None),
            (TaskState::Finished, "Command exited with status 0".into())
        );
        assert_eq!(
            Exit::Code(3).outcome(false, None),
            (TaskState::Failed, "Command exited with status 3".into())
        );
        assert_eq!(Exit::Code(0).outcome(true, None).0, TaskState::Killed);
        assert_eq!(
            Exit::Signal(15).outcome(true, None),
            (
                TaskState::Killed,
                "Command terminated with signal SIGTERM".into()
            )
        );
        assert_eq!(Exit::Signal(11).outcome(false, None).0, TaskState::Failed);
        assert_eq!(
            Exit::Code(125).outcome(false, Some("no such image")).1,
            "Command exited with status 125: no such image"
        );
        assert!(Exit::Unknown
            .outcome(false, None)
            .1
            .contains("exit status is unknown"));
    }

    #[test]
    fn unknown_users_and_switching_rules() {
        assert!(resolve_user(None).unwrap().is_none());
        let err = resolve_user(Some("no-such-user-pacer-test")).err().unwrap();
        assert!(err.contains("does not exist"), "{err}");
        let me = User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
        assert!(
            resolve_user(Some(&me.name)).unwrap().is_none(),
            "same user: nothing to switch"
        );
    }
}
