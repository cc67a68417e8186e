//! The `FrameworkInfo` Pacer registers with, from its flags.

use pacer_mesos_proto::v1::{self, framework_info::capability::Type as Cap};

#[derive(Clone, Debug)]
pub struct FrameworkSettings {
    /// `--framework_name`.
    pub name: String,
    /// `--mesos_user` (defaults to the user Pacer runs as).
    pub user: String,
    /// `--mesos_role`.
    pub role: String,
    /// `--[disable_]checkpoint`.
    pub checkpoint: bool,
    /// `--failover_timeout`, seconds.
    pub failover_timeout_secs: f64,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--webui_url`.
    pub webui_url: Option<String>,
    /// `--mesos_authentication_principal`.
    pub principal: Option<String>,
    /// `--enable_features gpu_resources`.
    pub gpu_resources: bool,
}

/// Capabilities: TASK_KILLING_STATE (TASK_KILLING updates), PARTITION_AWARE (TASK_UNREACHABLE,
/// TASK_GONE… instead of TASK_LOST), REGION_AWARE (fault domains), and GPU_RESOURCES on request.
/// MULTI_ROLE is not asked for: Pacer registers one role and reads the pre-refinement resource
/// format (`role` on each resource).
#[allow(deprecated)] // `role`: Pacer registers one role, without MULTI_ROLE.
pub fn framework_info(s: &FrameworkSettings, id: Option<&str>) -> v1::FrameworkInfo {
    let mut caps = vec![Cap::TaskKillingState, Cap::PartitionAware, Cap::RegionAware];
    if s.gpu_resources {
        caps.push(Cap::GpuResources);
    }
    v1::FrameworkInfo {
        user: s.user.clone(),
        name: s.name.clone(),
        id: id.map(|v| v1::FrameworkId { value: v.into() }),
        failover_timeout: Some(s.failover_timeout_secs),
        checkpoint: Some(s.checkpoint),
        role: Some(s.role.clone()),
        roles: Vec::new(),
        hostname: s.hostname.clone(),
        principal: s.principal.clone(),
        webui_url: s.webui_url.clone(),
        capabilities: caps
            .into_iter()
            .map(|c| v1::framework_info::Capability {
                r#type: Some(c as i32),
            })
            .collect(),
        labels: None,
    }
}
