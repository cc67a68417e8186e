//! Facts the core announces as it works. The shell logs them; the event bus (SSE, callbacks,
//! sink plugins) is built on the same enum.

use crate::state::Deployment;
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
}
