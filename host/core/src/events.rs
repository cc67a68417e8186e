//! Facts the core announces as it works. The shell logs them; the event bus (SSE, callbacks,
//! sink plugins) is built on the same enum.

use crate::app::HealthCheck;
use crate::cluster::{AgentId, TaskState};
use crate::id::{InstanceId, PathId, TaskId};
use crate::state::Deployment;
use crate::time::Timestamp;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A deployment started a step (`deployment_info`).
    DeploymentInfo { plan: Arc<Deployment> },
    /// A step's actions all completed (`deployment_step_success`).
    DeploymentStepSuccess { plan: Arc<Deployment> },
    /// Every step completed (`deployment_success`).
    DeploymentSuccess { plan: Arc<Deployment> },
    /// The deployment was given up (`deployment_failed`), with the reason.
    DeploymentFailed {
        plan: Arc<Deployment>,
        reason: String,
    },
    /// One health check's result flipped between alive and not (`health_status_changed_event`).
    HealthStatusChanged {
        app_id: PathId,
        instance_id: InstanceId,
        version: Timestamp,
        alive: bool,
    },
    /// A failure that counts (`failed_health_check_event`; Marathon puts the instance id in
    /// its `taskId` field).
    FailedHealthCheck {
        app_id: PathId,
        instance_id: InstanceId,
        health_check: Box<HealthCheck>,
    },
    /// A task is killed for failing its health checks (`unhealthy_instance_kill_event`).
    UnhealthyInstanceKill {
        app_id: PathId,
        task_id: TaskId,
        instance_id: InstanceId,
        version: Timestamp,
        reason: String,
        host: String,
        slave_id: Option<AgentId>,
    },
    /// The instance's overall health changed (`instance_health_changed_event`).
    InstanceHealthChanged {
        instance_id: InstanceId,
        run_spec_id: PathId,
        run_spec_version: Timestamp,
        healthy: Option<bool>,
    },
    /// A task's state changed (`status_update_event`).
    StatusUpdate {
        slave_id: Option<AgentId>,
        task_id: TaskId,
        task_status: TaskState,
        message: String,
        app_id: PathId,
        host: String,
        ports: Vec<u32>,
        version: Timestamp,
    },
    /// An instance's condition changed (`instance_changed_event`).
    InstanceChanged {
        instance_id: InstanceId,
        condition: &'static str,
        run_spec_id: PathId,
        agent_id: Option<AgentId>,
        host: String,
        run_spec_version: Timestamp,
    },
    /// A terminal update for a task Pacer does not know (`unknown_instance_terminated_event`).
    UnknownInstanceTerminated {
        instance_id: InstanceId,
        run_spec_id: PathId,
        condition: &'static str,
    },
    /// An app version with this health check was stored (`add_health_check_event`).
    AddHealthCheck {
        app_id: PathId,
        version: Timestamp,
        health_check: Box<HealthCheck>,
    },
    /// An app with health checks was removed (`remove_health_check_event`).
    RemoveHealthCheck { app_id: PathId },
    /// A step could not finish (`deployment_step_failure`).
    DeploymentStepFailure { plan: Arc<Deployment> },
    /// A change of the root group was accepted (`group_change_success`).
    GroupChangeSuccess {
        group_id: PathId,
        version: Timestamp,
    },
    /// A removed app's last instance is gone (`app_terminated_event`).
    AppTerminated { app_id: PathId },
}

/// Marathon's instance condition name for a task state (`None`: not launched yet).
pub fn condition(state: Option<TaskState>) -> &'static str {
    match state {
        None => "Scheduled",
        Some(TaskState::Staging) => "Staging",
        Some(TaskState::Starting) => "Starting",
        Some(TaskState::Running) => "Running",
        Some(TaskState::Killing) => "Killing",
        Some(TaskState::Finished) => "Finished",
        Some(TaskState::Failed) => "Failed",
        Some(TaskState::Killed) => "Killed",
        Some(TaskState::Error) => "Error",
        Some(TaskState::Lost) | Some(TaskState::Gone) => "Gone",
        Some(TaskState::Dropped) => "Dropped",
        Some(TaskState::Unreachable) => "Unreachable",
        Some(TaskState::GoneByOperator) => "GoneByOperator",
        Some(TaskState::Unknown) => "Unknown",
    }
}

impl Event {
    /// Marathon's `eventType`.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::DeploymentInfo { .. } => "deployment_info",
            Event::DeploymentStepSuccess { .. } => "deployment_step_success",
            Event::DeploymentSuccess { .. } => "deployment_success",
            Event::DeploymentFailed { .. } => "deployment_failed",
            Event::HealthStatusChanged { .. } => "health_status_changed_event",
            Event::FailedHealthCheck { .. } => "failed_health_check_event",
            Event::UnhealthyInstanceKill { .. } => "unhealthy_instance_kill_event",
            Event::InstanceHealthChanged { .. } => "instance_health_changed_event",
            Event::StatusUpdate { .. } => "status_update_event",
            Event::InstanceChanged { .. } => "instance_changed_event",
            Event::UnknownInstanceTerminated { .. } => "unknown_instance_terminated_event",
            Event::AddHealthCheck { .. } => "add_health_check_event",
            Event::RemoveHealthCheck { .. } => "remove_health_check_event",
            Event::DeploymentStepFailure { .. } => "deployment_step_failure",
            Event::GroupChangeSuccess { .. } => "group_change_success",
            Event::AppTerminated { .. } => "app_terminated_event",
        }
    }
}
