//! `pacer-local`: Pacer's embedded single-machine cluster backend.
//!
//! This machine is one agent. [`LocalCluster`] offers its resources (minus those of live tasks),
//! runs tasks as real processes — directly, each in its own process group and sandbox, or through
//! the Docker CLI — and reports their status through the [`ClusterEventSink`].
//!
//! Tasks outlive Pacer: every live task has a durable record under `<data_dir>/local/tasks/`, and
//! a later [`LocalCluster::start`] on the same data directory re-adopts the ones still running.
//! Dropping a `LocalCluster` stops the agent but leaves its tasks running.

mod adopt;
mod agent;
mod config;
mod docker;
mod process;
mod supervisor;

pub use config::{LocalConfig, DEFAULT_PORTS};

use agent::{Capacity, Ledger};
use config::Settings;
use docker::DockerProbe;
use pacer_core::cluster::{AgentId, Cluster, ClusterEventSink, KillRequest, LaunchSpec, OfferId};
use pacer_core::id::TaskId;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use supervisor::{Msg, Supervisor};
use tokio::sync::mpsc;

/// Why the local agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("the local cluster must be started inside a tokio runtime")]
    NoRuntime,
    #[error("invalid local agent configuration: {0}")]
    Config(String),
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot determine this machine's resources: {0}")]
    Resources(String),
    /// Another process runs a local agent on the same data directory (for instance the Pacer
    /// that led before, still shutting down).
    #[error("another Pacer's local agent is using {}", path.display())]
    Busy { path: PathBuf },
}

/// The local agent. Implements [`Cluster`]; every call returns at once and its outcome arrives
/// through the sink given to [`LocalCluster::start`].
pub struct LocalCluster {
    tx: mpsc::UnboundedSender<Msg>,
    actor: tokio::task::AbortHandle,
    stopped: Arc<AtomicBool>,
    agent_id: AgentId,
    hostname: String,
    data_dir: PathBuf,
    /// An exclusive `flock` on `<data_dir>/local/agent.lock`, held for the agent's lifetime: two
    /// agents on one directory would both supervise (and reap) the same tasks.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl LocalCluster {
    /// Starts the agent: prepares `data_dir`, measures the machine, re-adopts the tasks of an
    /// earlier run, and begins serving calls. Must be called inside a tokio runtime (with IO and
    /// time enabled). No offer is sent until [`Cluster::revive`] is called.
    pub fn start(
        config: LocalConfig,
        sink: ClusterEventSink,
    ) -> Result<Arc<LocalCluster>, LocalError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LocalError::NoRuntime)?;
        config.validate().map_err(LocalError::Config)?;

        let data_dir_err = |path: &PathBuf| {
            let path = path.clone();
            move |source| LocalError::DataDir { path, source }
        };
        for dir in [
            config.data_dir.join("sandboxes"),
            config.data_dir.join("local").join("tasks"),
        ] {
            std::fs::create_dir_all(&dir).map_err(data_dir_err(&dir))?;
        }
        let data_dir = config
            .data_dir
            .canonicalize()
            .map_err(data_dir_err(&config.data_dir))?;
        let lock_path = data_dir.join("local").join("agent.lock");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(data_dir_err(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => LocalError::Busy {
                    path: data_dir.clone(),
                },
                e => LocalError::DataDir {
                    path: lock_path.clone(),
                    source: e.into(),
                },
            })?;
        let measured = config::measure(&config, &data_dir).map_err(LocalError::Resources)?;

        let agent_id = config.effective_agent_id();
        let settings = Arc::new(Settings {
            agent_id: agent_id.clone(),
            data_dir: data_dir.clone(),
            docker_bin: config.docker_bin.clone(),
            default_kill_grace: config.default_kill_grace,
        });
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        let total = Capacity {
            cpus: measured.cpus,
            mem_mb: measured.mem_mb,
            disk_mb: measured.disk_mb,
            ports: config.ports.clone(),
        };
        let ledger = Ledger::new(
            agent_id.clone(),
            config.hostname.clone(),
            config.attributes.clone(),
            total,
            &format!("{nonce:x}"),
        );

        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Arc::new(DockerProbe::new(config.docker_bin.clone()));
        let mut supervisor = Supervisor::new(settings.clone(), probe, sink, tx.clone(), ledger);
        // Entering the runtime lets adoption spawn its watchers from here.
        let _enter = runtime.enter();
        supervisor.adopt(adopt::load_records(&settings.tasks_dir()));
        let stopped = Arc::new(AtomicBool::new(false));
        let actor = runtime
            .spawn(supervisor.run(rx, stopped.clone()))
            .abort_handle();
        tracing::info!(
            agent_id = %agent_id.0,
            hostname = %config.hostname,
            data_dir = %data_dir.display(),
            cpus = measured.cpus,
            mem_mb = measured.mem_mb,
            disk_mb = measured.disk_mb,
            "local agent started"
        );
        Ok(Arc::new(LocalCluster {
            tx,
            actor,
            stopped,
            agent_id,
            hostname: config.hostname,
            data_dir,
            _lock: lock,
        }))
    }

    pub fn agent_id(&self) -> &AgentId {
        &self.agent_id
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The canonical data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Where the sandbox of `task` is (or would be).
    pub fn sandbox_dir(&self, task: &TaskId) -> PathBuf {
        self.data_dir
            .join("sandboxes")
            .join(config::file_name_for(task))
    }

    fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_err() {
            tracing::warn!("local agent is not running; call ignored");
        }
    }
}

impl Drop for LocalCluster {
    /// Stops the agent; its tasks keep running and are re-adopted by the next start.
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.actor.abort();
    }
}

impl Cluster for LocalCluster {
    fn launch(&self, offer: OfferId, tasks: Vec<LaunchSpec>) {
        self.send(Msg::Launch { offer, tasks });
    }

    fn decline(&self, offer: OfferId, refuse: Duration) {
        self.send(Msg::Decline { offer, refuse });
    }

    fn kill(&self, kill: KillRequest) {
        self.send(Msg::Kill(kill));
    }

    fn reconcile(&self, tasks: Vec<TaskId>) {
        self.send(Msg::Reconcile(tasks));
    }

    fn revive(&self) {
        self.send(Msg::Revive);
    }

    fn suppress(&self) {
        self.send(Msg::Suppress);
    }

    fn name(&self) -> &'static str {
        "local"
    }
}
