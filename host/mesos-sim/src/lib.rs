//! `pacer-mesos-sim`: a Mesos master simulator that speaks the v1 scheduler HTTP API.
//!
//! It keeps simulated agents (resources, attributes, fault domains), makes offers, launches
//! tasks through a simulated (or, with [`SimConfig::run_commands`], a real process-based)
//! lifecycle, sends reliable status updates that must be acknowledged, answers reconciliation,
//! and lets tests inject faults: lost, re-registered and removed agents, failed and finished
//! tasks, health changes, dropped or muted streams, master failover and leadership changes.
//! Everything a scheduler sends is recorded, and protocol mistakes are collected as
//! [`Sim::violations`].
//!
//! Every listener serves, besides the scheduler API (`POST /api/v1/scheduler` and
//! `/master/api/v1/scheduler`), `GET /redirect`, a Mesos-like `GET /master/state`, and the same
//! controls over HTTP (for the `pacer-mesos-sim` binary):
//!
//! | request | effect |
//! |---|---|
//! | `POST /sim/agents?count=N` | [`Sim::add_agents`] |
//! | `POST /sim/agents/{id}/lose`, `/reregister`, `/remove` | [`Sim::lose_agent`], ... |
//! | `POST /sim/tasks/{id}/fail?message=…`, `/finish`, `/health?healthy=false` | [`Sim::fail_task`], ... |
//! | `POST /sim/stream/drop`, `POST /sim/mute?on=true` | [`Sim::drop_stream`], [`Sim::mute`] |
//! | `POST /sim/failover` | [`Sim::failover`]; answers `{"url", "master_id"}` |
//! | `POST /sim/leader?mode=leader\|noleader\|redirect&to=host:port` | [`Sim::set_leader`] |
//! | `GET /sim/tasks`, `/sim/agents`, `/sim/framework`, `/sim/violations` | inspection (JSON) |
//! | `GET /sim/calls?type=ACCEPT` | recorded calls: `content_type`, `body_base64`, `status`, ... |

mod http;
mod process;
mod resources;
mod state;
mod state_doc;
mod wire;
mod zk;

use pacer_mesos_proto::{v1, Call};
use serde::Serialize;
use state::Shared;
use std::sync::Arc;
use std::time::Duration;

/// How the simulated cluster looks and how fast things happen.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Agents registered at start.
    pub agents: usize,
    pub agent_cpus: f64,
    pub agent_mem_mb: f64,
    pub agent_disk_mb: f64,
    /// The `ports` resource of every agent (inclusive ranges).
    pub agent_ports: Vec<(u64, u64)>,
    /// `None`: agent `n` is called `agent-<n>.sim`; `Some(h)`: every agent is called `h`
    /// (e.g. `127.0.0.1` when tasks run as real local processes).
    pub agent_hostname: Option<String>,
    /// Resources statically reserved for a role on every agent: `(role, cpus, mem)`, taken out
    /// of the agent's totals and offered to frameworks subscribed with that role.
    pub roles_reserved: Option<(String, f64, f64)>,
    /// Advertised in SUBSCRIBED; HEARTBEAT events follow at this period.
    pub heartbeat_interval: Duration,
    /// Offers are made in batches at this period.
    pub allocation_interval: Duration,
    /// TASK_STAGING to TASK_STARTING.
    pub starting_after: Duration,
    /// TASK_STARTING to TASK_RUNNING.
    pub running_after: Duration,
    /// A simulated task's kill takes this long (TASK_KILLING to TASK_KILLED).
    pub kill_after: Duration,
    /// An unacknowledged status update is sent again after this, doubling up to 10 minutes.
    pub status_retry: Duration,
    /// Run tasks that have a `CommandInfo` as real local processes.
    pub run_commands: bool,
    /// `zk://host:port[,host:port]/path`: announce the master there with a `json.info_` node.
    pub zk: Option<String>,
    /// Port of the first listener on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Keep every scheduler call (body and decoded form) for [`Sim::calls`]. Benchmarks with
    /// very many calls may turn this off to save memory.
    pub record_calls: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            agents: 3,
            agent_cpus: 4.0,
            agent_mem_mb: 8192.0,
            agent_disk_mb: 10000.0,
            agent_ports: vec![(31000, 32000)],
            agent_hostname: None,
            roles_reserved: None,
            heartbeat_interval: Duration::from_secs(15),
            allocation_interval: Duration::from_secs(1),
            starting_after: Duration::from_millis(20),
            running_after: Duration::from_millis(20),
            kill_after: Duration::from_millis(20),
            status_retry: Duration::from_secs(10),
            run_commands: false,
            zk: None,
            port: 0,
            record_calls: true,
        }
    }
}

/// Who answers on the current master listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderMode {
    /// This master leads and serves the API.
    Leader,
    /// Another master leads: answer 307 to `//<host:port><path>`.
    Redirect(String),
    /// No leader is elected: answer 503.
    NoLeader,
}

/// A task as the simulated master knows it.
#[derive(Clone, Debug, Serialize)]
pub struct SimTask {
    pub task_id: String,
    pub name: String,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub state: v1::TaskState,
    pub healthy: Option<bool>,
    /// The process (group leader) of a task run as a real process.
    pub pid: Option<u32>,
    pub host_ports: Vec<u64>,
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    /// The part of `cpus` and `mem_mb` taken from resources reserved for the role.
    pub reserved_cpus: f64,
    pub reserved_mem_mb: f64,
    /// Status updates sent to the scheduler and not yet acknowledged.
    pub unacknowledged: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AgentState {
    Active,
    /// Partitioned away (see [`Sim::lose_agent`]); may come back.
    Unreachable,
    /// Removed by the operator; never comes back.
    Gone,
}

/// An agent as the simulated master knows it.
#[derive(Clone, Debug, Serialize)]
pub struct SimAgent {
    pub id: String,
    pub hostname: String,
    pub state: AgentState,
    /// Resources not used by tasks (offered ones included).
    pub free_cpus: f64,
    pub free_mem_mb: f64,
    pub free_disk_mb: f64,
    /// Resources in outstanding offers.
    pub offered_cpus: f64,
    pub offered_mem_mb: f64,
    /// Tasks on the agent (including terminal ones whose last update is not acknowledged).
    pub tasks: usize,
}

/// A framework as the simulated master knows it.
#[derive(Clone, Debug, Serialize)]
pub struct SimFramework {
    pub id: String,
    pub connected: bool,
    /// The current (or, when disconnected, the last) SUBSCRIBE stream's id.
    pub stream_id: Option<String>,
    pub info: v1::FrameworkInfo,
    /// Every role of the framework is suppressed.
    pub suppressed: bool,
    pub suppressed_roles: Vec<String>,
    pub outstanding_offers: usize,
}

/// A request as kept by the master: the body only (decoding every kept call up front would
/// cost about 1 KB per call, too much with hundreds of thousands of ACKs).
#[derive(Clone, Debug)]
pub(crate) struct StoredCall {
    pub path: &'static str,
    pub content_type: Option<String>,
    pub stream_id: Option<String>,
    pub body: bytes::Bytes,
    pub call_type: Option<pacer_mesos_proto::call::Type>,
    pub status: u16,
}

impl StoredCall {
    pub(crate) fn decoded(&self) -> RecordedCall {
        let call = wire::decode_any(self.content_type.as_deref(), &self.body);
        RecordedCall {
            path: self.path.to_string(),
            content_type: self.content_type.clone(),
            stream_id: self.stream_id.clone(),
            body: self.body.clone(),
            call,
            status: self.status,
        }
    }
}

/// One request to the scheduler endpoint, as received and answered.
#[derive(Clone, Debug)]
pub struct RecordedCall {
    pub path: String,
    pub content_type: Option<String>,
    pub stream_id: Option<String>,
    pub body: bytes::Bytes,
    /// The call, when the body could be decoded.
    pub call: Option<Call>,
    /// The HTTP status answered.
    pub status: u16,
}

impl RecordedCall {
    /// The call's type name (`"ACCEPT"`, ...), when decoded.
    pub fn type_name(&self) -> Option<&'static str> {
        let t = self.call.as_ref()?.r#type?;
        pacer_mesos_proto::call::Type::try_from(t)
            .ok()
            .map(|t| t.as_str_name())
    }
}

/// A running simulator. Clones share the same master.
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
}

impl Sim {
    /// Starts the master (listener, allocator, clock) with its agents.
    pub async fn start(config: SimConfig) -> std::io::Result<Sim> {
        let shared = state::start(config).await?;
        Ok(Sim { shared })
    }

    /// `http://127.0.0.1:<port>` of the current master's listener.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The current master's listener port.
    pub fn port(&self) -> u16 {
        self.shared.with(|s| s.port)
    }

    pub fn master_id(&self) -> String {
        self.shared.with(|s| s.master_id.clone())
    }

    pub fn tasks(&self) -> Vec<SimTask> {
        self.shared.with(|s| s.sim_tasks())
    }

    /// One task by id (any framework).
    pub fn task(&self, task_id: &str) -> Option<SimTask> {
        self.shared.with(|s| s.sim_task(task_id))
    }

    pub fn agents(&self) -> Vec<SimAgent> {
        self.shared.with(|s| s.sim_agents())
    }

    /// The most recently subscribed framework, while the master knows it.
    pub fn framework(&self) -> Option<SimFramework> {
        self.shared.with(|s| s.sim_framework())
    }

    /// Every framework the master knows.
    pub fn frameworks(&self) -> Vec<SimFramework> {
        self.shared.with(|s| s.sim_frameworks())
    }

    /// Every request received on the scheduler endpoint, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        let stored = self.shared.with(|s| s.calls.clone());
        stored.iter().map(StoredCall::decoded).collect()
    }

    /// Protocol violations seen so far, as human-readable sentences.
    pub fn violations(&self) -> Vec<String> {
        self.shared.with(|s| s.violations.clone())
    }

    /// Successful SUBSCRIBE calls so far.
    pub fn subscriptions(&self) -> usize {
        self.shared.with(|s| s.subscriptions)
    }

    /// Registers `n` more agents.
    pub fn add_agents(&self, n: usize) {
        self.shared.with(|s| s.add_agents(n))
    }

    /// The agent becomes unreachable: FAILURE, TASK_UNREACHABLE (or TASK_LOST) for its tasks,
    /// RESCIND for its offers, and no more offers from it.
    pub fn lose_agent(&self, agent_id: &str) {
        self.shared.with(|s| s.lose_agent(agent_id))
    }

    /// An unreachable agent comes back with its tasks still running.
    pub fn reregister_agent(&self, agent_id: &str) {
        self.shared.with(|s| s.reregister_agent(agent_id))
    }

    /// The operator removes the agent: FAILURE, TASK_GONE_BY_OPERATOR (or TASK_LOST), RESCIND.
    pub fn remove_agent(&self, agent_id: &str) {
        self.shared.with(|s| s.remove_agent(agent_id))
    }

    /// The task fails (TASK_FAILED from its executor, reliable).
    pub fn fail_task(&self, task_id: &str, message: &str) {
        self.shared.with(|s| s.fail_task(task_id, message))
    }

    /// The task finishes (TASK_FINISHED from its executor, reliable).
    pub fn finish_task(&self, task_id: &str) {
        self.shared.with(|s| s.finish_task(task_id))
    }

    /// The task's health changes (TASK_RUNNING with `healthy`, reliable).
    pub fn set_task_health(&self, task_id: &str, healthy: bool) {
        self.shared.with(|s| s.set_task_health(task_id, healthy))
    }

    /// Closes every framework's SUBSCRIBE stream: the frameworks become disconnected and their
    /// failover timers start.
    pub fn drop_stream(&self) {
        self.shared.with(|s| s.drop_streams())
    }

    /// While on, nothing is sent on open streams (no heartbeats, no events, no offers): a
    /// network partition between master and scheduler.
    pub fn mute(&self, on: bool) {
        self.shared.with(|s| s.set_muted(on))
    }

    /// Master failover: a new master (new id, new listener on a new port) takes over; the old
    /// listener redirects to it. Streams close, offers and frameworks are forgotten, tasks stay.
    pub async fn failover(&self) {
        if let Err(e) = state::failover(&self.shared).await {
            tracing::error!(error = %e, "master failover failed");
        }
    }

    /// Changes what the current listener answers (leader, redirect, no leader).
    pub fn set_leader(&self, mode: LeaderMode) {
        self.shared.with(|s| s.leader = mode)
    }

    /// Stops every listener and the clock, kills every process the simulator started and
    /// withdraws its ZooKeeper node.
    pub async fn stop(self) {
        state::stop(&self.shared).await
    }
}
