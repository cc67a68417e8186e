//! The canonical app definition (Marathon 1.5+ form). This is what Pacer stores and what the API
//! prints; deprecated input forms are folded into it by [`crate::normalize`].

use crate::id::PathId;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// An environment value: a plain string or a secret reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Secret { secret: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    #[serde(default)]
    pub port: i64,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: i64,
    /// `None`: no host port (container networks); `Some(0)`: pick one from the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default)]
    pub service_port: i64,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_names: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "container/bridge")]
    ContainerBridge,
    #[serde(rename = "container")]
    Container,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default = "host_mode")]
    pub mode: NetworkMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

fn host_mode() -> NetworkMode {
    NetworkMode::Host
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerType {
    #[serde(rename = "DOCKER")]
    Docker,
    #[serde(rename = "MESOS")]
    Mesos,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DockerParameter {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    pub image: String,
    pub force_pull_image: bool,
    pub privileged: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<DockerParameter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_config: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: ContainerType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    /// Only for non-host networks; omitted from output for host networking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    pub volumes: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_info: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandCheck {
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default = "http_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandCheck>,
    #[serde(default = "d300")]
    pub grace_period_seconds: i64,
    #[serde(default = "d60")]
    pub interval_seconds: i64,
    #[serde(default = "d20")]
    pub timeout_seconds: i64,
    #[serde(default = "d3")]
    pub max_consecutive_failures: i64,
    #[serde(default = "d15")]
    pub delay_seconds: i64,
    #[serde(default, rename = "ignoreHttp1xx")]
    pub ignore_http1xx: bool,
    #[serde(default = "ipv4")]
    pub ip_protocol: String,
    /// Pacer: the health-check plugin a `PLUGIN` check runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Pacer: parameters handed to the plugin (any JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

fn http_protocol() -> String {
    "HTTP".into()
}
fn ipv4() -> String {
    "IPv4".into()
}
fn d300() -> i64 {
    300
}
fn d60() -> i64 {
    60
}
fn d30() -> i64 {
    30
}
fn d20() -> i64 {
    20
}
fn d15() -> i64 {
    15
}
fn d10() -> i64 {
    10
}
fn d3() -> i64 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "readiness_name")]
    pub name: String,
    #[serde(default = "http_protocol")]
    pub protocol: String,
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default = "http_api")]
    pub port_name: String,
    #[serde(default = "d30")]
    pub interval_seconds: i64,
    #[serde(default = "d10")]
    pub timeout_seconds: i64,
    #[serde(default = "ok_codes")]
    pub http_status_codes_for_ready: Vec<i64>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn readiness_name() -> String {
    "readinessCheck".into()
}
fn slash() -> String {
    "/".into()
}
fn http_api() -> String {
    "http-api".into()
}
fn ok_codes() -> Vec<i64> {
    vec![200]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreachableEnabled {
    #[serde(default)]
    pub inactive_after_seconds: i64,
    #[serde(default)]
    pub expunge_after_seconds: i64,
}

/// `"disabled"` or the two timeouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    Disabled(DisabledMarker),
    Enabled(UnreachableEnabled),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisabledMarker {
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled(UnreachableEnabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: Timestamp,
    pub last_config_change_at: Timestamp,
}

/// A validated, normalised app definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppDefinition {
    pub id: PathId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub executor: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<FetchUri>,
    pub backoff_seconds: u64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<ReadinessCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<PathId>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_resource_roles: Option<Vec<String>>,
    pub version: Timestamp,
    pub version_info: VersionInfo,
    pub require_ports: bool,
    /// Host networking only; omitted from output otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub networks: Vec<Network>,
    pub kill_selection: KillSelection,
    pub unreachable_strategy: UnreachableStrategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_kill_grace_period_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Value>,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residency: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor_resources: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<Value>,
}

impl AppDefinition {
    pub fn is_host_networking(&self) -> bool {
        self.networks.iter().all(|n| n.mode == NetworkMode::Host)
    }

    /// Number of ports the app asks for: port definitions (host) or port mappings (others).
    pub fn port_names(&self) -> Vec<Option<String>> {
        if self.is_host_networking() {
            self.port_definitions
                .iter()
                .flatten()
                .map(|p| p.name.clone())
                .collect()
        } else {
            self.port_mappings()
                .iter()
                .map(|p| p.name.clone())
                .collect()
        }
    }

    pub fn port_mappings(&self) -> &[PortMapping] {
        self.container
            .as_ref()
            .and_then(|c| c.port_mappings.as_deref())
            .unwrap_or(&[])
    }

    /// The service ports, in port order (as tasks report them in `servicePorts`).
    pub fn service_ports(&self) -> Vec<i64> {
        if self.is_host_networking() {
            self.port_definitions
                .iter()
                .flatten()
                .map(|p| p.port)
                .collect()
        } else {
            self.port_mappings()
                .iter()
                .map(|p| p.service_port)
                .collect()
        }
    }

    pub fn docker_image(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|c| c.docker.as_ref())
            .map(|d| d.image.as_str())
    }

    pub fn is_docker(&self) -> bool {
        matches!(
            self.container,
            Some(Container {
                kind: ContainerType::Docker,
                ..
            })
        )
    }

    /// Whether going from `self` to `to` changes configuration (a restart), not only the scale.
    /// Follows Marathon's `isUpgrade`: everything except `instances` and the version fields.
    pub fn is_config_change(&self, to: &AppDefinition) -> bool {
        let mut a = self.clone();
        let mut b = to.clone();
        for x in [&mut a, &mut b] {
            x.instances = 0;
            x.version = Timestamp::EPOCH;
            x.version_info = VersionInfo {
                last_scaling_at: Timestamp::EPOCH,
                last_config_change_at: Timestamp::EPOCH,
            };
        }
        a != b
    }
}
