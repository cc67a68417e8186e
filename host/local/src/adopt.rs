//! Durable task records and re-adoption: one JSON file per live task under
//! `<data_dir>/local/tasks/`, so that tasks started before Pacer was killed can be found, checked
//! for pid reuse, and watched again.

use crate::config::file_name_for;
use pacer_core::cluster::LaunchSpec;
use pacer_core::id::TaskId;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped when the record layout changes incompatibly.
pub(crate) const RECORD_VERSION: u32 = 1;

/// What the agent remembers about a task across restarts of Pacer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub version: u32,
    /// Includes the task's resources and host ports.
    pub spec: LaunchSpec,
    pub sandbox: PathBuf,
    /// The process (and process group) id; `None` while the task is being launched.
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: Option<u64>,
    /// `/proc/sys/kernel/random/boot_id` when the process was started.
    pub boot_id: Option<String>,
    pub docker_name: Option<String>,
}

pub(crate) fn record_path(dir: &Path, task: &TaskId) -> PathBuf {
    dir.join(format!("{}.json", file_name_for(task)))
}

/// Writes a record atomically and durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_record(dir: &Path, record: &TaskRecord) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = record_path(dir, &record.spec.task_id);
    let tmp = dir.join(format!("{}.json.tmp", file_name_for(&record.spec.task_id)));
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

pub(crate) fn remove_record(dir: &Path, task: &TaskId) -> io::Result<()> {
    match fs::remove_file(record_path(dir, task)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every record in `dir`; unreadable ones come back as errors naming the file. Leftover temp
/// files of interrupted writes are removed.
pub(crate) fn load_records(dir: &Path) -> Vec<Result<TaskRecord, String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![Err(format!("cannot list {}: {e}", dir.display()))],
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json.tmp") {
            let _ = fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<TaskRecord>(&b).map_err(|e| e.to_string()))
            .map_err(|e| format!("{}: {e}", path.display()));
        out.push(parsed);
    }
    out
}

/// The parts of `/proc/<pid>/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

impl ProcStat {
    /// Zombies and dead entries have exited; only their parent's wait is missing.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), fields[2] field 5 (pgrp), fields[19] field 22 (starttime).
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub(crate) fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Is `pid` still the process the record describes, and not yet exited?
pub(crate) fn is_same_live_process(
    record: &TaskRecord,
    pid: u32,
    current_boot: Option<&str>,
) -> bool {
    if let (Some(then), Some(now)) = (record.boot_id.as_deref(), current_boot) {
        if then != now {
            return false;
        }
    }
    match proc_stat(pid) {
        None => false,
        Some(st) if st.exited() => false,
        Some(st) => match record.start_time {
            Some(t) => st.start_time == t,
            // Without a start time, at least insist on the process group the agent created.
            None => st.pgrp == pid as i32,
        },
    }
}

/// Finds the leader of a task whose record has no pid yet (Pacer died between spawning the
/// process and recording it): a live process group leader whose working directory is the
/// sandbox. Returns its pid and start time.
pub(crate) fn find_by_sandbox(sandbox: &Path) -> Option<(u32, u64)> {
    let mut best: Option<(u32, u64)> = None;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) if cwd == sandbox => {}
            _ => continue,
        }
        let Some(st) = proc_stat(pid) else { continue };
        if st.exited() || st.pgrp != pid as i32 {
            continue;
        }
        if best.is_none_or(|(_, t)| st.start_time < t) {
            best = Some((pid, st.start_time));
        }
    }
    best
}

/// A pidfd for `pid` (Linux 5.3+); it becomes readable when the process exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it reads
    // no memory of ours.
    let fd =
        unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0u32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How often a process without a pidfd is checked.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// How [`wait_gone`] noticed the exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Noticed {
    Pidfd,
    Polling,
}

/// Resolves once the (non-child) process has exited: through its pidfd when there is one,
/// else by looking at `/proc` every 500 ms.
pub(crate) async fn wait_gone(record: TaskRecord, pid: u32, pidfd: Option<OwnedFd>) -> Noticed {
    if let Some(fd) = pidfd {
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, which stays open and unchanged
        // until the AsyncFd is dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        };
        match registered {
            Ok(afd) => match afd.readable().await {
                Ok(_) => return Noticed::Pidfd,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "pidfd wait failed; polling /proc instead")
                }
            },
            Err(e) => tracing::warn!(pid, error = %e, "cannot watch pidfd; polling /proc instead"),
        }
    }
    let boot = boot_id();
    while is_same_live_process(&record, pid, boot.as_deref()) {
        tokio::time::sleep(POLL_EVERY).await;
    }
    Noticed::Polling
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let line = "1234 (we ird) na)me) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let st = parse_stat(line).unwrap();
        assert_eq!(
            st,
            ProcStat {
                state: 'S',
                pgrp: 1234,
                start_time: 987654
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[tokio::test]
    async fn pidfd_notices_exit() {
        use pacer_core::cluster::{AgentId, CommandSpec, OfferId};
        use pacer_core::id::{InstanceId, PathId};
        let mut child = tokio::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let app = PathId::resolve("/a", &PathId::root()).unwrap();
        let inst = InstanceId::new(&app, "u");
        let record = TaskRecord {
            version: RECORD_VERSION,
            spec: LaunchSpec {
                task_id: TaskId::new(&inst, 1),
                instance_id: inst,
                app_id: app,
                offer_id: OfferId("o".into()),
                agent_id: AgentId("a".into()),
                hostname: "h".into(),
                command: CommandSpec::Shell("sleep 1000".into()),
                user: None,
                env: Default::default(),
                cpus: 0.1,
                mem_mb: 1.0,
                disk_mb: 0.0,
                host_ports: vec![],
                docker: None,
                kill_grace: None,
                fetch: vec![],
                health_checks: vec![],
                resource_roles: vec![],
                labels: Default::default(),
            },
            sandbox: PathBuf::from("/nonexistent"),
            pid: Some(pid),
            start_time: proc_stat(pid).map(|s| s.start_time),
            boot_id: boot_id(),
            docker_name: None,
        };
        assert!(is_same_live_process(&record, pid, boot_id().as_deref()));
        let fd = pidfd_open(pid).expect("pidfd_open works on this kernel");
        let watch = tokio::spawn(wait_gone(record.clone(), pid, Some(fd)));
        child.start_kill().unwrap();
        assert_eq!(watch.await.unwrap(), Noticed::Pidfd);
        let _ = child.wait().await;
        assert!(!is_same_live_process(&record, pid, boot_id().as_deref()));
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let st = proc_stat(me).unwrap();
        assert!(!st.exited());
        assert!(st.start_time > 0);
    }
}
