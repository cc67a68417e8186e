//! App definitions as clients send them: every field optional, deprecated forms accepted.
//! [`AppPatch::apply`] folds a patch onto a base (or onto the defaults) and yields the canonical
//! [`AppDefinition`]; [`parse_app_patch`] turns JSON type errors into Marathon's paths and codes.

use crate::app::*;
use crate::id::{PathError, PathId};
use crate::time::Timestamp;
use crate::violation::{Collector, Violation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerInput {
    pub image: Option<String>,
    pub force_pull_image: Option<bool>,
    pub privileged: Option<bool>,
    pub parameters: Option<Vec<DockerParameter>>,
    pub pull_config: Option<Value>,
    /// Deprecated: `HOST`, `BRIDGE`, `USER`, `NONE`.
    pub network: Option<String>,
    /// Deprecated: moved to `container.portMappings`.
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Rejected since 1.5.
    pub credential: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInput {
    #[serde(rename = "type")]
    pub kind: Option<ContainerType>,
    pub docker: Option<DockerInput>,
    pub port_mappings: Option<Vec<PortMapping>>,
    pub volumes: Option<Vec<Value>>,
    pub linux_info: Option<Value>,
}

/// A client's app JSON: a full definition, a partial update, or a rollback (`{"version": ..}`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPatch {
    pub id: Option<String>,
    pub cmd: Option<String>,
    pub args: Option<Vec<String>>,
    pub user: Option<String>,
    pub env: Option<BTreeMap<String, EnvValue>>,
    pub instances: Option<i64>,
    pub cpus: Option<f64>,
    pub mem: Option<f64>,
    pub disk: Option<f64>,
    pub gpus: Option<i64>,
    pub executor: Option<String>,
    pub constraints: Option<Vec<Vec<String>>>,
    pub fetch: Option<Vec<FetchUri>>,
    pub uris: Option<Vec<String>>,
    pub backoff_seconds: Option<i64>,
    pub backoff_factor: Option<f64>,
    pub max_launch_delay_seconds: Option<i64>,
    pub container: Option<ContainerInput>,
    pub health_checks: Option<Vec<HealthCheck>>,
    pub readiness_checks: Option<Vec<ReadinessCheck>>,
    pub dependencies: Option<Vec<String>>,
    pub upgrade_strategy: Option<UpgradeStrategy>,
    pub labels: Option<BTreeMap<String, String>>,
    pub accepted_resource_roles: Option<Vec<String>>,
    pub version: Option<String>,
    pub require_ports: Option<bool>,
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub ports: Option<Vec<i64>>,
    pub networks: Option<Vec<Network>>,
    pub ip_address: Option<Value>,
    pub kill_selection: Option<KillSelection>,
    pub unreachable_strategy: Option<UnreachableStrategy>,
    pub task_kill_grace_period_seconds: Option<i64>,
    pub secrets: Option<BTreeMap<String, Value>>,
    pub role: Option<String>,
    pub tty: Option<bool>,
    pub residency: Option<Value>,
    pub executor_resources: Option<Value>,
    pub resource_limits: Option<Value>,
    pub check: Option<Value>,
    pub store_urls: Option<Vec<String>>,
    /// Top-level keys the client sent (recorded by [`parse_app_patch`]).
    #[serde(skip)]
    pub present_keys: Vec<String>,
}

/// Parses a JSON value into a patch; type errors become violations with Marathon's
/// `error.expected.*` codes at the offending path.
pub fn parse_app_patch(value: Value) -> Result<AppPatch, Vec<Violation>> {
    let keys: Vec<String> = value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut patch = serde_path_to_error::deserialize::<_, AppPatch>(value).map_err(|e| {
        let path = marathon_path(&e.path().to_string());
        vec![Violation::new(path, expected_code(&e.inner().to_string()))]
    })?;
    patch.present_keys = keys;
    Ok(patch)
}

/// Converts serde's `a.b[0].c` into Marathon's `/a/b(0)/c`.
pub fn marathon_path(serde_path: &str) -> String {
    if serde_path == "." || serde_path.is_empty() {
        return "/".into();
    }
    let mut out = String::new();
    for seg in serde_path.split('.') {
        let (name, idx) = match seg.find('[') {
            Some(i) => (&seg[..i], Some(&seg[i..])),
            None => (seg, None),
        };
        if !name.is_empty() {
            out.push('/');
            out.push_str(name);
        }
        if let Some(idx) = idx {
            out.push_str(&idx.replace('[', "(").replace(']', ")"));
        }
    }
    if out.is_empty() {
        "/".into()
    } else {
        out
    }
}

fn expected_code(msg: &str) -> String {
    let expected = msg.split("expected ").nth(1).unwrap_or("");
    let code = if msg.starts_with("unknown variant") {
        "error.expected.validenumvalue"
    } else if expected.starts_with("f64")
        || expected.starts_with("i64")
        || expected.contains("integer")
        || expected.starts_with("u") && expected.len() <= 4
    {
        "error.expected.jsnumber"
    } else if expected.starts_with("a string") {
        "error.expected.jsstring"
    } else if expected.starts_with("a sequence") {
        "error.expected.jsarray"
    } else if expected.starts_with("a boolean") {
        "error.expected.jsboolean"
    } else if expected.starts_with("a map") || expected.starts_with("struct") {
        "error.expected.jsobject"
    } else if msg.starts_with("missing field") {
        "error.path.missing"
    } else {
        return msg.split(" at line ").next().unwrap_or(msg).to_string();
    };
    code.to_string()
}

/// Context for folding a patch: where relative ids resolve and what the defaults are.
pub struct NormalizeContext<'a> {
    /// The group relative ids are resolved against (root for `/v2/apps`).
    pub base: &'a PathId,
    /// `--mesos_role`.
    pub default_role: &'a str,
    pub now: Timestamp,
}

pub fn path_error_message(e: &PathError) -> String {
    e.to_string()
}

fn from_i64_u32(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

fn from_i64_u64(v: i64) -> u64 {
    v.max(0) as u64
}

impl AppDefinition {
    /// The definition a bare `{"id": ..}` gets: Marathon's documented defaults.
    pub fn with_defaults(id: PathId, default_role: &str, now: Timestamp) -> Self {
        AppDefinition {
            id,
            cmd: None,
            args: Vec::new(),
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0,
            executor: String::new(),
            constraints: Vec::new(),
            fetch: Vec::new(),
            backoff_seconds: 1,
            backoff_factor: 1.15,
            max_launch_delay_seconds: 300,
            container: None,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            accepted_resource_roles: None,
            version: now,
            version_info: VersionInfo {
                last_scaling_at: now,
                last_config_change_at: now,
            },
            require_ports: false,
            port_definitions: None,
            networks: vec![Network {
                mode: NetworkMode::Host,
                name: None,
                labels: None,
            }],
            kill_selection: KillSelection::YoungestFirst,
            unreachable_strategy: UnreachableStrategy::default(),
            task_kill_grace_period_seconds: None,
            secrets: BTreeMap::new(),
            role: default_role.to_string(),
            tty: None,
            residency: None,
            executor_resources: None,
            resource_limits: None,
            check: None,
        }
    }
}

const ARCHIVE_SUFFIXES: [&str; 7] = [
    ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
];

impl AppPatch {
    /// True when the patch is a rollback request: only `id` and `version` given.
    pub fn is_version_only(&self) -> bool {
        self.version.is_some()
            && self
                .present_keys
                .iter()
                .all(|k| k == "id" || k == "version")
    }

    /// Resolves the patch's id (if any) against the context's base group.
    pub fn resolve_id(&self, ctx: &NormalizeContext) -> Option<Result<PathId, PathError>> {
        self.id
            .as_deref()
            .map(|raw| PathId::parse_app_id(raw, ctx.base))
    }

    /// Folds this patch onto `base` (a partial update) or onto the defaults (create, or a full
    /// replacement with `partialUpdate=false`), normalising deprecated forms.
    /// `id` is the already resolved id. Versions are left for the caller to set.
    pub fn apply(
        &self,
        id: PathId,
        base: Option<&AppDefinition>,
        ctx: &NormalizeContext,
    ) -> Result<AppDefinition, Vec<Violation>> {
        let mut errs = Collector::default();
        let mut app = match base {
            Some(b) => b.clone(),
            None => AppDefinition::with_defaults(id.clone(), ctx.default_role, ctx.now),
        };
        app.id = id;
        let p = self;
        if let Some(v) = &p.cmd {
            app.cmd = Some(v.clone());
        }
        if let Some(v) = &p.args {
            app.args = v.clone();
        }
        if let Some(v) = &p.user {
            app.user = Some(v.clone());
        }
        if let Some(v) = &p.env {
            app.env = v.clone();
        }
        if let Some(v) = p.instances {
            errs.check(v >= 0, "/instances", format!("got {v}, expected 0 or more"));
            app.instances = from_i64_u32(v);
        }
        if let Some(v) = p.cpus {
            app.cpus = v;
        }
        if let Some(v) = p.mem {
            app.mem = v;
        }
        if let Some(v) = p.disk {
            app.disk = v;
        }
        if let Some(v) = p.gpus {
            errs.check(v >= 0, "/gpus", format!("got {v}, expected 0 or more"));
            app.gpus = from_i64_u32(v);
        }
        if let Some(v) = &p.executor {
            app.executor = v.clone();
        }
        if let Some(v) = &p.constraints {
            app.constraints = v.clone();
        }
        match (&p.fetch, &p.uris) {
            (Some(_), Some(_)) => errs.add("/", "fetch and uris are mutually exclusive"),
            (Some(f), None) => app.fetch = f.clone(),
            (None, Some(uris)) => {
                app.fetch = uris
                    .iter()
                    .map(|u| FetchUri {
                        uri: u.clone(),
                        extract: ARCHIVE_SUFFIXES.iter().any(|s| u.ends_with(s)),
                        executable: false,
                        cache: false,
                        dest_path: None,
                    })
                    .collect()
            }
            (None, None) => {}
        }
        if p.store_urls.as_ref().is_some_and(|s| !s.is_empty()) {
            errs.add(
                "/storeUrls",
                "storeUrls (the artifact store) was removed in Marathon 1.5 and is not supported",
            );
        }
        if let Some(v) = p.backoff_seconds {
            errs.check(
                v >= 0,
                "/backoffSeconds",
                format!("got {v}, expected 0 or more"),
            );
            app.backoff_seconds = from_i64_u64(v);
        }
        if let Some(v) = p.backoff_factor {
            app.backoff_factor = v;
        }
        if let Some(v) = p.max_launch_delay_seconds {
            errs.check(
                v >= 0,
                "/maxLaunchDelaySeconds",
                format!("got {v}, expected 0 or more"),
            );
            app.max_launch_delay_seconds = from_i64_u64(v);
        }
        if let Some(v) = &p.health_checks {
            app.health_checks = v.clone();
        }
        if let Some(v) = &p.readiness_checks {
            app.readiness_checks = v.clone();
        }
        if let Some(deps) = &p.dependencies {
            let mut out = Vec::new();
            for (i, d) in deps.iter().enumerate() {
                match PathId::resolve(d, &app.id.parent()) {
                    Ok(pid) if !pid.is_root() => out.push(pid),
                    Ok(_) => errs.add(
                        format!("/dependencies({i})"),
                        "Path must contain at least one path element",
                    ),
                    Err(e) => errs.add(format!("/dependencies({i})"), e.to_string()),
                }
            }
            app.dependencies = out;
        }
        if let Some(v) = &p.upgrade_strategy {
            app.upgrade_strategy = v.clone();
        }
        if let Some(v) = &p.labels {
            app.labels = v.clone();
        }
        if let Some(v) = &p.accepted_resource_roles {
            app.accepted_resource_roles = Some(v.clone());
        }
        if let Some(v) = p.require_ports {
            app.require_ports = v;
        }
        if let Some(v) = p.kill_selection {
            app.kill_selection = v;
        }
        if let Some(v) = &p.unreachable_strategy {
            app.unreachable_strategy = v.clone();
        }
        if let Some(v) = p.task_kill_grace_period_seconds {
            errs.check(
                v >= 0,
                "/taskKillGracePeriodSeconds",
                format!("got {v}, expected 0 or more"),
            );
            app.task_kill_grace_period_seconds = Some(from_i64_u64(v));
        }
        if let Some(v) = &p.secrets {
            app.secrets = v.clone();
        }
        if let Some(v) = &p.role {
            app.role = v.clone();
        }
        if let Some(v) = p.tty {
            app.tty = Some(v);
        }
        // Opaque objects Pacer stores and echoes; `null` clears them.
        for (src, dst) in [
            (&p.residency, &mut app.residency),
            (&p.executor_resources, &mut app.executor_resources),
            (&p.resource_limits, &mut app.resource_limits),
            (&p.check, &mut app.check),
        ] {
            if let Some(v) = src {
                *dst = if v.is_null() { None } else { Some(v.clone()) };
            }
        }

        // Networking: canonical `networks` vs the deprecated docker.network / ipAddress.
        let docker_in = p.container.as_ref().and_then(|c| c.docker.as_ref());
        let deprecated_net = docker_in.and_then(|d| d.network.clone());
        if p.networks.is_some() && (deprecated_net.is_some() || p.ip_address.is_some()) {
            errs.add("/", "cannot mix deprecated and canonical network APIs");
        }
        let mut networks_changed = false;
        if let Some(n) = &p.networks {
            app.networks = if n.is_empty() {
                vec![Network {
                    mode: NetworkMode::Host,
                    name: None,
                    labels: None,
                }]
            } else {
                n.clone()
            };
            networks_changed = true;
        } else if let Some(net) = &deprecated_net {
            let mode = match net.as_str() {
                "HOST" => Some(NetworkMode::Host),
                "BRIDGE" => Some(NetworkMode::ContainerBridge),
                "USER" => Some(NetworkMode::Container),
                "NONE" => {
                    errs.add(
                        "/container/docker/network",
                        "NONE networking is not supported",
                    );
                    None
                }
                _ => {
                    errs.add("/container/docker/network", "error.expected.validenumvalue");
                    None
                }
            };
            if let Some(mode) = mode {
                let name = p
                    .ip_address
                    .as_ref()
                    .and_then(|ip| ip.get("networkName"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                app.networks = vec![Network {
                    mode,
                    name,
                    labels: None,
                }];
                networks_changed = true;
            }
        } else if let Some(ip) = &p.ip_address {
            if !ip.is_null() {
                let name = ip
                    .get("networkName")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                app.networks = vec![Network {
                    mode: NetworkMode::Container,
                    name,
                    labels: None,
                }];
                networks_changed = true;
            }
        }

        // Container.
        if let Some(c) = &p.container {
            let docker = c.docker.as_ref().map(|d| {
                if d.credential.is_some() {
                    errs.add(
                        "/container/docker/credential",
                        "docker credentials are not supported since Marathon 1.5; use pullConfig",
                    );
                }
                Docker {
                    image: d.image.clone().unwrap_or_default(),
                    force_pull_image: d.force_pull_image.unwrap_or(false),
                    privileged: d.privileged.unwrap_or(false),
                    parameters: d.parameters.clone().unwrap_or_default(),
                    pull_config: d.pull_config.clone(),
                }
            });
            let kind = c.kind.unwrap_or(ContainerType::Docker);
            if kind == ContainerType::Docker && docker.is_none() {
                errs.add(
                    "/container/docker",
                    "is required when the container type is DOCKER",
                );
            }
            let mappings = match (
                &c.port_mappings,
                docker_in.and_then(|d| d.port_mappings.clone()),
            ) {
                (Some(_), Some(_)) => {
                    errs.add("/container", "cannot mix deprecated container.docker.portMappings with container.portMappings");
                    None
                }
                (Some(m), None) => Some(m.clone()),
                (None, Some(m)) => Some(m),
                (None, None) => None,
            };
            app.container = Some(Container {
                kind,
                docker,
                port_mappings: mappings,
                volumes: c.volumes.clone().unwrap_or_default(),
                linux_info: c.linux_info.clone(),
            });
        }

        // Ports: `ports` (deprecated) vs `portDefinitions`.
        match (&p.ports, &p.port_definitions) {
            (Some(_), Some(_)) => {
                errs.add("/", "You cannot specify both ports and port definitions")
            }
            (Some(ports), None) => {
                app.port_definitions = Some(
                    ports
                        .iter()
                        .map(|&port| PortDefinition {
                            port,
                            protocol: "tcp".into(),
                            name: None,
                            labels: None,
                        })
                        .collect(),
                )
            }
            (None, Some(defs)) => app.port_definitions = Some(defs.clone()),
            (None, None) => {}
        }

        if app.is_host_networking() {
            if let Some(c) = &mut app.container {
                if p.container.as_ref().is_some_and(|ci| {
                    ci.port_mappings.is_some()
                        || docker_in.is_some_and(|d| d.port_mappings.is_some())
                }) && c.port_mappings.as_ref().is_some_and(|m| !m.is_empty())
                {
                    errs.add(
                        "/container/portMappings",
                        "portMappings are not allowed with host-networking",
                    );
                }
                c.port_mappings = None;
            }
            if app.port_definitions.is_none() {
                app.port_definitions = Some(vec![PortDefinition {
                    port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: None,
                }]);
            }
        } else {
            if p.port_definitions.as_ref().is_some_and(|d| !d.is_empty())
                || p.ports.as_ref().is_some_and(|d| !d.is_empty())
            {
                errs.add("/portDefinitions", "Port definitions are only allowed with host networking; use container.portMappings");
            }
            app.port_definitions = None;
            app.require_ports = false;
            let bridge = app
                .networks
                .iter()
                .any(|n| n.mode == NetworkMode::ContainerBridge);
            let c = app.container.get_or_insert_with(|| Container {
                kind: ContainerType::Mesos,
                docker: None,
                port_mappings: None,
                volumes: Vec::new(),
                linux_info: None,
            });
            if c.port_mappings.is_none()
                || networks_changed && base.is_some() && p.container.is_none()
            {
                c.port_mappings = Some(vec![PortMapping {
                    container_port: 0,
                    host_port: bridge.then_some(0),
                    service_port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: None,
                    network_names: None,
                }]);
            }
            if bridge {
                for m in c.port_mappings.iter_mut().flatten() {
                    m.host_port.get_or_insert(0);
                }
            }
        }

        // Health checks without a port get portIndex 0 when the app has ports.
        let has_ports = !app.port_names().is_empty();
        for hc in &mut app.health_checks {
            let network_check = !matches!(hc.protocol.as_str(), "COMMAND");
            if network_check && hc.port.is_none() && hc.port_index.is_none() && has_ports {
                hc.port_index = Some(0);
            }
            if hc.path.is_none()
                && matches!(
                    hc.protocol.as_str(),
                    "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
                )
            {
                hc.path = Some("/".into());
            }
        }

        if errs.is_empty() {
            Ok(app)
        } else {
            Err(errs.violations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(now: u64) -> (PathId, Timestamp) {
        (PathId::root(), Timestamp::from_millis(now))
    }

    fn create(v: Value) -> Result<AppDefinition, Vec<Violation>> {
        let (base, now) = ctx(1000);
        let c = NormalizeContext {
            base: &base,
            default_role: "*",
            now,
        };
        let p = parse_app_patch(v)?;
        let id = p.resolve_id(&c).unwrap().unwrap();
        p.apply(id, None, &c)
    }

    #[test]
    fn defaults_and_host_port_definition() {
        let app = create(json!({"id": "basic-0", "cmd": "sleep 1"})).unwrap();
        assert_eq!(app.id.as_str(), "/basic-0");
        assert_eq!(app.instances, 1);
        assert_eq!(app.mem, 128.0);
        assert_eq!(app.max_launch_delay_seconds, 300);
        let defs = app.port_definitions.as_ref().unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].name.as_deref(), Some("default"));
        let out = serde_json::to_value(&app).unwrap();
        assert!(out.get("ports").is_none());
        assert!(out.get("constraints").is_none(), "empty arrays are omitted");
        assert_eq!(out["labels"], json!({}));
        assert_eq!(out["networks"], json!([{"mode": "host"}]));
        assert_eq!(
            out["unreachableStrategy"],
            json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0})
        );
        assert_eq!(
            out["upgradeStrategy"],
            json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 1.0})
        );
    }

    #[test]
    fn deprecated_forms_are_normalised() {
        let app = create(json!({
            "id": "/old", "cmd": "x", "ports": [0, 8080], "uris": ["http://h/a.tgz", "http://h/b.sh"]
        }))
        .unwrap();
        let ports: Vec<i64> = app
            .port_definitions
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, [0, 8080]);
        assert!(app.fetch[0].extract && !app.fetch[1].extract);

        let app = create(json!({
            "id": "/d", "container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
                "portMappings": [{"containerPort": 80, "hostPort": 0}]}}
        }))
        .unwrap();
        assert_eq!(app.networks[0].mode, NetworkMode::ContainerBridge);
        assert!(app.port_definitions.is_none());
        assert_eq!(app.port_mappings()[0].container_port, 80);
        let out = serde_json::to_value(&app).unwrap();
        assert!(out["container"]["docker"].get("network").is_none());
        assert!(out.get("portDefinitions").is_none());
    }

    #[test]
    fn type_errors_have_marathon_paths() {
        let errs = create(json!({"id": "/x", "cpus": "lots"})).unwrap_err();
        assert_eq!(
            errs,
            vec![Violation::new("/cpus", "error.expected.jsnumber")]
        );
        let errs = create(json!({"id": "/x", "portDefinitions": [{"port": 1}, {"port": "a"}]}))
            .unwrap_err();
        assert_eq!(errs[0].path, "/portDefinitions(1)/port");
        assert_eq!(
            marathon_path("container.portMappings[0].containerPort"),
            "/container/portMappings(0)/containerPort"
        );
    }

    #[test]
    fn mixing_forms_is_rejected() {
        let errs = create(json!({"id": "/x", "cmd": "a", "ports": [1], "portDefinitions": []}))
            .unwrap_err();
        assert_eq!(
            errs[0].message,
            "You cannot specify both ports and port definitions"
        );
        let errs = create(
            json!({"id": "/x", "cmd": "a", "networks": [{"mode": "host"}],
            "container": {"docker": {"image": "i", "network": "HOST"}}}),
        )
        .unwrap_err();
        assert_eq!(
            errs[0].message,
            "cannot mix deprecated and canonical network APIs"
        );
    }

    #[test]
    fn partial_update_keeps_other_fields() {
        let base =
            create(json!({"id": "/x", "cmd": "a", "mem": 64, "labels": {"a": "b"}})).unwrap();
        let (root, now) = ctx(2000);
        let c = NormalizeContext {
            base: &root,
            default_role: "*",
            now,
        };
        let p = parse_app_patch(json!({"instances": 3})).unwrap();
        let app = p.apply(base.id.clone(), Some(&base), &c).unwrap();
        assert_eq!(app.instances, 3);
        assert_eq!(app.mem, 64.0);
        assert_eq!(app.labels.get("a").map(String::as_str), Some("b"));
        assert!(!base.is_config_change(&app));
        let p = parse_app_patch(json!({"cmd": "b"})).unwrap();
        assert!(base.is_config_change(&p.apply(base.id.clone(), Some(&base), &c).unwrap()));
    }

    #[test]
    fn version_only_patch_is_a_rollback() {
        assert!(
            parse_app_patch(json!({"id": "/x", "version": "2015-01-01T00:00:00.000Z"}))
                .unwrap()
                .is_version_only()
        );
        assert!(!parse_app_patch(json!({"version": "v", "cmd": "c"}))
            .unwrap()
            .is_version_only());
    }

    #[test]
    fn health_checks_get_port_index_zero() {
        let app = create(json!({"id": "/x", "cmd": "a", "healthChecks": [{"protocol": "HTTP"}, {"protocol": "COMMAND", "command": {"value": "true"}}]})).unwrap();
        assert_eq!(app.health_checks[0].port_index, Some(0));
        assert_eq!(app.health_checks[0].path.as_deref(), Some("/"));
        assert_eq!(app.health_checks[1].port_index, None);
    }
}
