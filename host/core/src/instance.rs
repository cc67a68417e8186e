//! Instances and their tasks (Marathon 1.8 model): an instance is stable; each launch of it is a
//! task with the next incarnation number.

use crate::cluster::{AgentId, AttributeValue, TaskState};
use crate::id::{InstanceId, PathId, TaskId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Goal {
    Running,
    Stopped,
    Decommissioned,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent_id: AgentId,
    pub host: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// The agent's attributes when the task was placed, for placement constraints.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, AttributeValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: TaskId,
    pub state: TaskState,
    pub staged_at: Timestamp,
    pub started_at: Option<Timestamp>,
    /// When `state` last changed.
    pub since: Timestamp,
    pub host_ports: Vec<u32>,
    pub message: Option<String>,
    /// A kill has been sent and not yet confirmed.
    pub kill_sent: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub app_id: PathId,
    /// The app `version` this instance was created for.
    pub run_spec_version: Timestamp,
    /// `versionInfo.lastConfigChangeAt` of that version: instances older than the app's current
    /// config are replaced by a rolling restart.
    pub config_version: Timestamp,
    pub goal: Goal,
    pub created_at: Timestamp,
    pub agent: Option<AgentInfo>,
    /// The latest task; `None` until the first launch.
    pub task: Option<Task>,
    pub incarnation: u32,
}

impl Instance {
    /// Has a task that is not terminal (staging, starting, running, killing, unreachable).
    pub fn is_active(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.state.is_terminal())
    }

    pub fn is_running(&self) -> bool {
        self.task
            .as_ref()
            .is_some_and(|t| t.state == TaskState::Running)
    }

    /// Waiting for a launch: goal Running and no live task.
    pub fn is_scheduled(&self) -> bool {
        self.goal == Goal::Running && !self.is_active()
    }

    pub fn state(&self) -> Option<TaskState> {
        self.task.as_ref().map(|t| t.state)
    }

    /// Scale-down weight (Marathon's ScalingProposition): lower is killed first.
    pub fn kill_weight(&self) -> u8 {
        match self.state() {
            Some(TaskState::Unreachable) => 1,
            None => 0,
            Some(TaskState::Staging) => 2,
            Some(TaskState::Starting) => 3,
            Some(TaskState::Running) => 4,
            Some(s) if s.is_terminal() => 0,
            Some(_) => 5,
        }
    }
}

/// Marathon's `lastTaskFailure`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFailure {
    pub app_id: PathId,
    pub host: String,
    pub message: String,
    pub state: TaskState,
    pub task_id: TaskId,
    pub timestamp: Timestamp,
    pub version: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slave_id: Option<AgentId>,
}
