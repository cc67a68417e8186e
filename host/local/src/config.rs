//! Configuration of the local agent, the settings derived from it at start, and reading this
//! machine's resources.

use pacer_core::cluster::{AgentId, AttributeValue, PortRange};
use pacer_core::id::TaskId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the local agent presents this machine. Build one with [`LocalConfig::new`] and override
/// fields as needed.
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The hostname put into offers (and thus into the `HOST` variable of tasks).
    /// Default: this machine's hostname.
    pub hostname: String,
    /// The agent id of this machine. `None` (the default) means `local-<hostname>`.
    pub agent_id: Option<AgentId>,
    /// Sandboxes go to `<data_dir>/sandboxes/<task id>/`, the agent's own state to
    /// `<data_dir>/local/`. Created if missing.
    pub data_dir: PathBuf,
    /// Host ports that may be offered. Default: 31000–32000.
    pub ports: Vec<PortRange>,
    /// Attributes put into every offer. Default: none.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// CPUs to offer in total. Default: the machine's available parallelism.
    pub cpus: Option<f64>,
    /// Memory to offer in total, in MB. Default: `MemTotal` from `/proc/meminfo`.
    pub mem_mb: Option<f64>,
    /// Disk to offer in total, in MB. Default: the space available to unprivileged users on the
    /// file system of `data_dir` (statvfs), measured at start.
    pub disk_mb: Option<f64>,
    /// SIGTERM → SIGKILL grace when neither the kill request nor the task names one. Default: 3 s.
    pub default_kill_grace: Duration,
    /// The Docker CLI used for tasks with a Docker container. Default: `docker` (looked up in PATH).
    pub docker_bin: PathBuf,
}

/// The port range offered when none is configured.
pub const DEFAULT_PORTS: PortRange = PortRange {
    begin: 31000,
    end: 32000,
};

impl LocalConfig {
    /// A configuration with every default filled in, keeping its state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        LocalConfig {
            hostname,
            agent_id: None,
            data_dir: data_dir.into(),
            ports: vec![DEFAULT_PORTS],
            attributes: BTreeMap::new(),
            cpus: None,
            mem_mb: None,
            disk_mb: None,
            default_kill_grace: Duration::from_secs(3),
            docker_bin: PathBuf::from("docker"),
        }
    }

    /// The agent id this configuration results in.
    pub fn effective_agent_id(&self) -> AgentId {
        self.agent_id
            .clone()
            .unwrap_or_else(|| AgentId(format!("local-{}", self.hostname)))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.hostname.trim().is_empty() {
            return Err("hostname must not be empty".into());
        }
        if self.effective_agent_id().0.trim().is_empty() {
            return Err("agent id must not be empty".into());
        }
        for r in &self.ports {
            if r.begin > r.end || r.end > 65535 || r.begin == 0 {
                return Err(format!("invalid port range {}-{}", r.begin, r.end));
            }
        }
        for (name, v) in [
            ("cpus", self.cpus),
            ("mem_mb", self.mem_mb),
            ("disk_mb", self.disk_mb),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("{name} must be a non-negative number, not {v}"));
                }
            }
        }
        Ok(())
    }
}

/// What the running agent needs from the configuration, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Settings {
    pub agent_id: AgentId,
    /// Absolute and canonical.
    pub data_dir: PathBuf,
    pub docker_bin: PathBuf,
    pub default_kill_grace: Duration,
}

impl Settings {
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.data_dir.join("sandboxes")
    }

    pub fn tasks_dir(&self) -> PathBuf {
        self.data_dir.join("local").join("tasks")
    }

    pub fn sandbox_of(&self, task: &TaskId) -> PathBuf {
        self.sandboxes_dir().join(file_name_for(task))
    }
}

/// A file name for a task id: task ids Pacer creates are kept as they are; any byte that could
/// escape the directory or confuse a shell is percent-encoded.
pub(crate) fn file_name_for(task: &TaskId) -> String {
    let mut out = String::new();
    for (i, b) in task.as_str().bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Total capacity of the machine as configured or measured.
pub(crate) struct Measured {
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
}

pub(crate) fn measure(config: &LocalConfig, data_dir: &Path) -> Result<Measured, String> {
    let cpus = match config.cpus {
        Some(c) => c,
        None => std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .map_err(|e| format!("cannot read the number of CPUs: {e}"))?,
    };
    let mem_mb = match config.mem_mb {
        Some(m) => m,
        None => {
            let text = std::fs::read_to_string("/proc/meminfo")
                .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
            mem_total_mb(&text).ok_or("no MemTotal line in /proc/meminfo")?
        }
    };
    let disk_mb = match config.disk_mb {
        Some(d) => d,
        None => {
            let st = nix::sys::statvfs::statvfs(data_dir)
                .map_err(|e| format!("cannot statvfs {}: {e}", data_dir.display()))?;
            let bytes = st.blocks_available() as f64 * st.fragment_size() as f64;
            (bytes / (1024.0 * 1024.0)).floor()
        }
    };
    Ok(Measured {
        cpus,
        mem_mb,
        disk_mb,
    })
}

/// `MemTotal` of a `/proc/meminfo` text, in MB.
pub(crate) fn mem_total_mb(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).floor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape() {
        let t = |s: &str| file_name_for(&TaskId::from_raw(s));
        assert_eq!(t("web.instance-1._app.1"), "web.instance-1._app.1");
        assert_eq!(t("../x"), "%2E.%2Fx");
        assert_eq!(t("a b/c"), "a%20b%2Fc");
        assert_eq!(t(""), "%00");
    }

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       16303428 kB\nMemFree:          123 kB\n";
        assert_eq!(mem_total_mb(text), Some(15921.0));
        assert_eq!(mem_total_mb("nothing"), None);
    }

    #[test]
    fn agent_id_defaults_to_hostname() {
        let mut c = LocalConfig::new("/tmp/x");
        c.hostname = "box".into();
        assert_eq!(c.effective_agent_id(), AgentId("local-box".into()));
        c.ports = vec![PortRange { begin: 10, end: 5 }];
        assert!(c.validate().is_err());
    }
}
