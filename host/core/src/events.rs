//! Facts the core announces as it works. The shell logs them; the event bus (SSE, callbacks,
//! sink plugins) is built on the same enum.

use crate::app::HealthCheck;
use crate::cluster::AgentId;
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
        health_check: HealthCheck,
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
        }
    }
}
