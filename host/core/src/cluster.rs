//! The cluster port: what the core asks of a backend (launch, kill, reconcile, offers) and what a
//! backend reports back (offers and task status updates). The local backend and the Mesos backend
//! both implement [`Cluster`]; the core never calls it itself — the shell turns effects into calls.

use crate::id::{InstanceId, PathId, TaskId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AgentId(pub String);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OfferId(pub String);

/// An inclusive range of ports, as Mesos offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u32,
    pub end: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    Text(String),
    Scalar(f64),
}

/// Resources of one agent offered to Pacer. Memory and disk are in MB, as in app definitions.
/// The amounts are totals: unreserved (`*`) resources plus those in `reserved`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub gpus: f64,
    pub ports: Vec<PortRange>,
    pub attributes: BTreeMap<String, AttributeValue>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// The part of the amounts above that is reserved for a role (Mesos reservations); only
    /// apps of that role that accept it (`acceptedResourceRoles`) may use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<Box<Reserved>>,
    /// The role the offer is allocated to (the Mesos framework's role): only apps of this
    /// role may use it. `None`: any app (the local backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_role: Option<String>,
}

/// Resources of an offer reserved for one role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reserved {
    pub role: String,
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub gpus: f64,
    pub ports: Vec<PortRange>,
}

/// Mesos task states, with Mesos's names on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_ERROR")]
    Error,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_DROPPED")]
    Dropped,
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
    #[serde(rename = "TASK_GONE")]
    Gone,
    #[serde(rename = "TASK_GONE_BY_OPERATOR")]
    GoneByOperator,
    #[serde(rename = "TASK_UNKNOWN")]
    Unknown,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
                | TaskState::Unknown
        )
    }

    pub fn mesos_name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }
}

/// A status update for one task, as a backend reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    /// Human-readable detail, e.g. `Command exited with status 1`.
    pub message: Option<String>,
    pub agent_id: Option<AgentId>,
    pub healthy: Option<bool>,
}

/// What to run: a shell command or an argument vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandSpec {
    /// Run through `/bin/sh -c`.
    Shell(String),
    /// Run directly (first element is the program).
    Args(Vec<String>),
    /// Only a container image: run its default entrypoint.
    ImageDefault,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortMappingSpec {
    pub container_port: u32,
    /// The host port chosen from the offer; `None` when the mapping exposes no host port.
    pub host_port: Option<u32>,
    pub protocol: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NetworkSpec {
    Host,
    Bridge,
    /// A named container network.
    Container(Option<String>),
}

/// A Docker container for a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerSpec {
    pub image: String,
    pub force_pull: bool,
    pub privileged: bool,
    pub parameters: Vec<(String, String)>,
    pub network: NetworkSpec,
    pub port_mappings: Vec<PortMappingSpec>,
    pub volumes: Vec<VolumeSpec>,
}

/// Everything a backend needs to start one task. Built by the core; the backend adds nothing but
/// the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub task_id: TaskId,
    pub instance_id: InstanceId,
    pub app_id: PathId,
    pub offer_id: OfferId,
    pub agent_id: AgentId,
    pub hostname: String,
    pub command: CommandSpec,
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    /// Host ports reserved from the offer, in port-definition / port-mapping order.
    pub host_ports: Vec<u32>,
    pub docker: Option<DockerSpec>,
    /// SIGTERM → SIGKILL grace; `None` means the backend's default.
    pub kill_grace: Option<Duration>,
    pub fetch: Vec<String>,
    /// Health checks the agent runs next to the task (Mesos-level checks).
    #[serde(default)]
    pub health_checks: Vec<AgentCheck>,
    /// The roles whose resources the task may be given (`*` for unreserved ones), as matched.
    /// Empty: any the backend offered.
    #[serde(default)]
    pub resource_roles: Vec<String>,
    /// The app's labels (Mesos `TaskInfo.labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A health check run by the agent (Mesos's `HealthCheck`): it reports the result in the
/// `healthy` field of status updates and kills the task after `consecutive_failures`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCheck {
    pub kind: AgentCheckKind,
    /// Failures before the first success are ignored for this long after the task started.
    pub grace: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    /// Wait before the first check.
    pub delay: Duration,
    /// Kill after this many consecutive failures (0: at the first).
    pub consecutive_failures: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentCheckKind {
    Http {
        tls: bool,
        port: u32,
        path: String,
    },
    Tcp {
        port: u32,
    },
    /// A shell command run in the task's environment and sandbox; exit 0 is healthy.
    Command(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KillRequest {
    pub task_id: TaskId,
    pub agent_id: Option<AgentId>,
    pub grace: Option<Duration>,
}

/// What a backend reports to the shell.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    Offer(Offer),
    /// Several offers at once (a Mesos OFFERS event): placed as one batch.
    Offers(Vec<Offer>),
    OfferRescinded(OfferId),
    Status(TaskStatus),
    /// Registered with the cluster manager (a Mesos SUBSCRIBED): the shell reconciles every
    /// task it knows and announces it (`scheduler_registered_event` or `_reregistered_event`).
    Registered {
        framework_id: String,
        master: String,
        reregistered: bool,
    },
    /// The connection to the cluster manager is gone (`scheduler_disconnected_event`);
    /// the backend reconnects by itself.
    Disconnected {
        master: String,
        reason: String,
    },
}

/// Where a backend delivers its events; the shell forwards them into the core.
pub type ClusterEventSink = Arc<dyn Fn(ClusterEvent) + Send + Sync>;

/// A cluster backend. Calls return at once; outcomes arrive later as [`ClusterEvent`]s.
pub trait Cluster: Send + Sync {
    /// Launch tasks on the offer's agent, consuming the offer.
    fn launch(&self, offer: OfferId, tasks: Vec<LaunchSpec>);
    /// Return an unused offer; the backend should not re-offer the same resources for `refuse`.
    fn decline(&self, offer: OfferId, refuse: Duration);
    /// Kill a task: SIGTERM (or the backend's equivalent), then a hard kill after the grace period.
    fn kill(&self, kill: KillRequest);
    /// Report the current status of each task (unknown tasks get a terminal status).
    /// An empty list asks for every task the backend knows (implicit reconciliation).
    fn reconcile(&self, tasks: Vec<TaskId>);
    /// Pacer wants offers again (something is waiting to launch).
    fn revive(&self);
    /// Pacer needs no offers for now.
    fn suppress(&self);
    /// The shell has processed (and made durable) the latest status update of this task: a
    /// backend with reliable updates may acknowledge it now.
    fn acknowledge(&self, _task: &TaskId) {}
    /// A short name for logs and `/v2/info`.
    fn name(&self) -> &'static str;
}
