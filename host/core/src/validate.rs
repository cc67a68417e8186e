//! Semantic validation of a normalised app definition, with Marathon's paths and messages.
//! Type errors are caught earlier by [`crate::normalize::parse_app_patch`].

use crate::app::*;
use crate::violation::{num, Collector, Violation};
use std::collections::BTreeSet;

/// What validation needs to know beyond the app itself.
pub struct ValidationContext<'a> {
    /// `--mesos_role`.
    pub default_role: &'a str,
    /// `--enable_features`.
    pub features: &'a BTreeSet<String>,
    /// Operators and health-check types that plugins add.
    pub extensions: &'a crate::plugins::Extensions,
}

const HEALTH_PROTOCOLS: [&str; 7] = [
    "HTTP",
    "HTTPS",
    "TCP",
    "COMMAND",
    "MESOS_HTTP",
    "MESOS_HTTPS",
    "MESOS_TCP",
];

fn port_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn protocol_ok(p: &str) -> bool {
    matches!(p, "tcp" | "udp" | "udp,tcp" | "tcp,udp")
}

fn role_ok(role: &str) -> bool {
    !(role.is_empty()
        || role == "."
        || role == ".."
        || role.starts_with('-')
        || role
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '\u{7f}'))
}

pub fn validate_app(app: &AppDefinition, ctx: &ValidationContext) -> Vec<Violation> {
    let mut e = Collector::default();

    let has_cmd = app.cmd.is_some();
    let has_args = !app.args.is_empty();
    if !((has_cmd ^ has_args) || (!(has_cmd && has_args) && app.container.is_some())) {
        e.add(
            "/",
            "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
        );
    }
    if app.cmd.as_deref() == Some("") {
        e.add("/cmd", "must not be empty");
    }

    for (field, v, min) in [
        ("cpus", app.cpus, 0.0),
        ("mem", app.mem, 0.0),
        ("disk", app.disk, 0.0),
    ] {
        if !v.is_finite() || v < min {
            e.add(
                format!("/{field}"),
                format!("got {}, expected {} or more", num(v), num(min)),
            );
        }
    }
    if app.gpus > 0 && !ctx.features.contains("gpu_resources") {
        e.add(
            "/gpus",
            "Feature gpu_resources is not enabled. Enable with --enable_features gpu_resources)",
        );
    }
    // Written so that NaN fails too.
    if app.backoff_factor.is_nan() || app.backoff_factor < 1.0 {
        e.add(
            "/backoffFactor",
            format!("got {}, expected 1.0 or more", num(app.backoff_factor)),
        );
    }

    let us = &app.upgrade_strategy;
    for (field, v) in [
        ("minimumHealthCapacity", us.minimum_health_capacity),
        ("maximumOverCapacity", us.maximum_over_capacity),
    ] {
        let path = format!("/upgradeStrategy/{field}");
        if v < 0.0 {
            e.add(path, "is less than 0");
        } else if v > 1.0 {
            e.add(path, "is greater than 1");
        }
    }
    if app
        .labels
        .get("MARATHON_SINGLE_INSTANCE_APP")
        .map(String::as_str)
        == Some("true")
    {
        if app.instances > 1 {
            e.add(
                "/instances",
                "got more than 1 instance, expected at most 1 for a single instance app",
            );
        }
        if us.minimum_health_capacity != 0.0 || us.maximum_over_capacity != 0.0 {
            e.add("/upgradeStrategy", "Single instance app may only have minimumHealthCapacity = 0 and maximumOverCapacity = 0");
        }
    }

    for (i, c) in app.constraints.iter().enumerate() {
        if let Err(msg) = crate::constraints::parse_with(c, ctx.extensions.constraints.as_deref()) {
            e.add(format!("/constraints({i})"), msg);
        }
    }

    for (i, f) in app.fetch.iter().enumerate() {
        if f.uri.is_empty() || f.uri.len() > 1024 {
            e.add(
                format!("/fetch({i})/uri"),
                "must be a non-empty URI of at most 1024 characters",
            );
        }
    }

    for key in app.env.keys() {
        if key.is_empty() {
            e.add("/env", "must not contain empty variable names");
        }
    }
    for (name, value) in &app.env {
        if let EnvValue::Secret { secret } = value {
            if !ctx.features.contains("secrets") {
                e.add(
                    format!("/env/{name}"),
                    "Feature secrets is not enabled. Enable with --enable_features secrets)",
                );
            } else if !app.secrets.contains_key(secret) {
                e.add(format!("/env/{name}"), "references an undefined secret");
            }
        }
    }

    // Networks.
    let host_count = app
        .networks
        .iter()
        .filter(|n| n.mode == NetworkMode::Host)
        .count();
    let bridge_count = app
        .networks
        .iter()
        .filter(|n| n.mode == NetworkMode::ContainerBridge)
        .count();
    if (host_count > 0 || bridge_count > 0) && app.networks.len() > 1 {
        e.add("/networks", "must contain either a single host network, a single bridge network, or one or more container networks");
    }
    for (i, n) in app.networks.iter().enumerate() {
        if let Some(name) = &n.name {
            let ok = name.len() <= 63 && !name.is_empty() && port_name_ok(&name.replace('_', "-"));
            e.check(ok, format!("/networks({i})/name"), "must match the network name pattern ^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$ and be at most 63 characters");
        }
        if n.mode == NetworkMode::Container && n.name.is_none() {
            e.add(
                format!("/networks({i})/name"),
                "container networks must have a name (or set --default_network_name)",
            );
        }
    }
    if app.is_docker()
        && app
            .networks
            .iter()
            .filter(|n| n.mode == NetworkMode::Container)
            .count()
            > 1
    {
        e.add(
            "/networks",
            "may contain at most one container network with the Docker containerizer",
        );
    }

    // Ports.
    if let Some(defs) = &app.port_definitions {
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        for (i, d) in defs.iter().enumerate() {
            let path = format!("/portDefinitions({i})");
            if !(0..=65535).contains(&d.port) {
                e.add(
                    format!("{path}/port"),
                    format!("got {}, expected between 0 and 65535", d.port),
                );
            }
            if !protocol_ok(&d.protocol) {
                e.add(
                    format!("{path}/protocol"),
                    "is not one of (tcp,udp,udp,tcp)",
                );
            }
            if let Some(n) = &d.name {
                e.check(
                    port_name_ok(n),
                    format!("{path}/name"),
                    "must match \"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\"",
                );
                if !names.insert(n.clone()) {
                    e.add("/portDefinitions", "Port names must be unique.");
                }
            }
            if d.port != 0 && !ports.insert(d.port) {
                e.add("/portDefinitions", "Ports must be unique.");
            }
        }
        if app.require_ports && defs.iter().any(|d| d.port == 0) {
            e.add(
                "/requirePorts",
                "requirePorts needs non-zero ports in portDefinitions",
            );
        }
    }
    let mut mapping_names = BTreeSet::new();
    for (i, m) in app.port_mappings().iter().enumerate() {
        let path = format!("/container/portMappings({i})");
        for (field, v) in [
            ("containerPort", Some(m.container_port)),
            ("hostPort", m.host_port),
            ("servicePort", Some(m.service_port)),
        ] {
            if let Some(v) = v {
                if !(0..=65535).contains(&v) {
                    e.add(
                        format!("{path}/{field}"),
                        format!("got {v}, expected between 0 and 65535"),
                    );
                }
            }
        }
        if !protocol_ok(&m.protocol) {
            e.add(
                format!("{path}/protocol"),
                "is not one of (tcp,udp,udp,tcp)",
            );
        }
        if let Some(n) = &m.name {
            e.check(
                port_name_ok(n),
                format!("{path}/name"),
                "must match \"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\"",
            );
            if !mapping_names.insert(n.clone()) {
                e.add("/container/portMappings", "Port names must be unique.");
            }
        }
    }

    // Container.
    if let Some(c) = &app.container {
        if let Some(d) = &c.docker {
            if d.image.trim().is_empty() {
                e.add("/container/docker/image", "must not be empty");
            }
            if c.kind == ContainerType::Mesos && !d.parameters.is_empty() {
                e.add(
                    "/container/docker/parameters",
                    "must be empty for the MESOS containerizer",
                );
            }
        }
        for (i, v) in c.volumes.iter().enumerate() {
            let path = format!("/container/volumes({i})");
            let cp = v
                .get("containerPath")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            if cp.is_empty() {
                e.add(format!("{path}/containerPath"), "must not be empty");
            }
            if let Some(mode) = v.get("mode").and_then(|x| x.as_str()) {
                e.check(
                    mode == "RO" || mode == "RW",
                    format!("{path}/mode"),
                    "is not one of (RO,RW)",
                );
            }
        }
    }

    // Health and readiness checks.
    let port_count = app.port_names().len() as i64;
    for (i, hc) in app.health_checks.iter().enumerate() {
        let path = format!("/healthChecks({i})");
        let plugins = &ctx.extensions.health_checks;
        if !HEALTH_PROTOCOLS.contains(&hc.protocol.as_str())
            && (hc.protocol != "PLUGIN" || plugins.is_empty())
        {
            let mut known = HEALTH_PROTOCOLS.join(",");
            if !plugins.is_empty() {
                known.push_str(",PLUGIN");
            }
            e.add(
                format!("{path}/protocol"),
                format!("is not one of ({known})"),
            );
            continue;
        }
        if hc.protocol == "PLUGIN" {
            match hc.plugin.as_deref() {
                Some(id) if plugins.contains(id) => {}
                _ => e.add(
                    format!("{path}/plugin"),
                    format!(
                        "must name a loaded health-check plugin (one of {})",
                        plugins.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
            if hc.params.as_ref().is_some_and(|p| !p.is_object()) {
                e.add(format!("{path}/params"), "must be a JSON object");
            }
        }
        if hc.protocol == "COMMAND" {
            if hc.command.as_ref().is_none_or(|c| c.value.is_empty()) {
                e.add(
                    format!("{path}/command"),
                    "is required for COMMAND health checks",
                );
            }
        } else if let Some(idx) = hc.port_index {
            if hc.port.is_none() && (idx < 0 || idx >= port_count) {
                e.add(path.clone(), "Health check port indices must address an element of the ports array or container port mappings.");
            }
        } else if hc.port.is_none() {
            e.add(path.clone(), "Health check port indices must address an element of the ports array or container port mappings.");
        }
        for (field, v, min) in [
            ("gracePeriodSeconds", hc.grace_period_seconds, 0),
            ("intervalSeconds", hc.interval_seconds, 1),
            ("timeoutSeconds", hc.timeout_seconds, 1),
            ("maxConsecutiveFailures", hc.max_consecutive_failures, 0),
            ("delaySeconds", hc.delay_seconds, 0),
        ] {
            if v < min {
                e.add(
                    format!("{path}/{field}"),
                    format!("got {v}, expected {min} or more"),
                );
            }
        }
        if hc.timeout_seconds >= hc.interval_seconds
            && hc.interval_seconds >= 1
            && hc.timeout_seconds >= 1
        {
            e.add(
                format!("{path}/timeoutSeconds"),
                "must be smaller than intervalSeconds",
            );
        }
    }
    let mesos_checks = app
        .health_checks
        .iter()
        .filter(|h| h.protocol.starts_with("MESOS_"))
        .count();
    if mesos_checks > 1 {
        e.add(
            "/healthChecks",
            "AppDefinition can contain at most one Mesos health check.",
        );
    }
    if app.readiness_checks.len() > 1 {
        e.add(
            "/readinessChecks",
            "AppDefinition can contain at most one readinessCheck.",
        );
    }
    let names = app.port_names();
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        let path = format!("/readinessChecks({i})");
        if !names
            .iter()
            .any(|n| n.as_deref() == Some(rc.port_name.as_str()))
        {
            e.add(
                format!("{path}/portName"),
                "must reference a port name of the app",
            );
        }
        for (field, v) in [
            ("intervalSeconds", rc.interval_seconds),
            ("timeoutSeconds", rc.timeout_seconds),
        ] {
            if v < 1 {
                e.add(
                    format!("{path}/{field}"),
                    format!("got {v}, expected 1 or more"),
                );
            }
        }
        if rc.timeout_seconds >= rc.interval_seconds {
            e.add(
                format!("{path}/timeoutSeconds"),
                "must be smaller than intervalSeconds",
            );
        }
        if rc.http_status_codes_for_ready.is_empty() {
            e.add(
                format!("{path}/httpStatusCodesForReady"),
                "must not be empty",
            );
        }
        if !matches!(rc.protocol.as_str(), "HTTP" | "HTTPS") {
            e.add(format!("{path}/protocol"), "is not one of (HTTP,HTTPS)");
        }
    }

    // Roles.
    e.check(role_ok(&app.role), "/role", "must be a valid Mesos role");
    let top_group = app
        .id
        .segments()
        .next()
        .filter(|_| app.id.segments().count() > 1);
    if app.role != ctx.default_role && Some(app.role.as_str()) != top_group {
        e.add(
            "/role",
            format!(
                "got {}, expected one of: [{}]",
                app.role,
                [Some(ctx.default_role), top_group]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if let Some(roles) = &app.accepted_resource_roles {
        if roles.is_empty() {
            e.add("/acceptedResourceRoles", "must not be empty");
        }
        let unique: BTreeSet<_> = roles.iter().collect();
        if unique.len() != roles.len() {
            e.add("/acceptedResourceRoles", "must contain unique roles");
        }
        for (i, r) in roles.iter().enumerate() {
            if r != "*" && r != &app.role {
                e.add(
                    format!("/acceptedResourceRoles({i})"),
                    format!("acceptedResourceRoles can only contain * and {}", app.role),
                );
            }
        }
    }

    if let UnreachableStrategy::Enabled(u) = &app.unreachable_strategy {
        if u.inactive_after_seconds < 0 {
            e.add(
                "/unreachableStrategy/inactiveAfterSeconds",
                "got a negative value, expected 0 or more",
            );
        }
        if u.expunge_after_seconds < u.inactive_after_seconds {
            e.add(
                "/unreachableStrategy/expungeAfterSeconds",
                "expungeAfterSeconds must be greater than or equal to inactiveAfterSeconds",
            );
        }
    }

    for (i, d) in app.dependencies.iter().enumerate() {
        if d == &app.id {
            e.add(
                format!("/dependencies({i})"),
                "an app cannot depend on itself",
            );
        }
    }

    if !app.executor.is_empty() && app.executor != "//cmd" && app.executor.contains("//") {
        e.add(
            "/executor",
            "must fully match regular expression '^(//cmd)|(/?[^/]+(/[^/]+)*)|$'",
        );
    }

    e.violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PathId;
    use crate::normalize::{parse_app_patch, NormalizeContext};
    use crate::time::Timestamp;
    use serde_json::{json, Value};

    fn check(v: Value) -> Vec<(String, String)> {
        let root = PathId::root();
        let c = NormalizeContext {
            base: &root,
            default_role: "*",
            now: Timestamp::from_millis(1),
        };
        let p = parse_app_patch(v).unwrap();
        let id = p.resolve_id(&c).unwrap().unwrap();
        let app = match p.apply(id, None, &c) {
            Ok(a) => a,
            Err(v) => return v.into_iter().map(|v| (v.path, v.message)).collect(),
        };
        let features = BTreeSet::new();
        validate_app(
            &app,
            &ValidationContext {
                default_role: "*",
                features: &features,
                extensions: &Default::default(),
            },
        )
        .into_iter()
        .map(|v| (v.path, v.message))
        .collect()
    }

    fn has(errs: &[(String, String)], path: &str, msg: &str) -> bool {
        errs.iter().any(|(p, m)| p == path && m.contains(msg))
    }

    #[test]
    fn valid_basic_app() {
        assert_eq!(
            check(json!({"id": "/a", "cmd": "sleep 1", "cpus": 0.1, "mem": 10})),
            vec![]
        );
    }

    #[test]
    fn cmd_args_container_rule() {
        let e = check(json!({"id": "/a"}));
        assert!(has(&e, "/", "must either contain one of 'cmd' or 'args'"));
        let e = check(json!({"id": "/a", "cmd": "x", "args": ["y"]}));
        assert!(has(&e, "/", "must either contain one of 'cmd' or 'args'"));
        assert_eq!(
            check(
                json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "busybox"}}})
            ),
            vec![]
        );
    }

    #[test]
    fn upgrade_strategy_bounds() {
        let e = check(
            json!({"id": "/a", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": -0.1}}),
        );
        assert!(has(
            &e,
            "/upgradeStrategy/minimumHealthCapacity",
            "is greater than 1"
        ));
        assert!(has(
            &e,
            "/upgradeStrategy/maximumOverCapacity",
            "is less than 0"
        ));
    }

    #[test]
    fn resources_and_ports() {
        let e = check(
            json!({"id": "/a", "cmd": "x", "cpus": -1, "portDefinitions": [{"port": 70000}, {"port": 80, "name": "a"}, {"port": 80, "name": "a"}]}),
        );
        assert!(has(&e, "/cpus", "got -1.0, expected 0.0 or more"));
        assert!(has(
            &e,
            "/portDefinitions(0)/port",
            "expected between 0 and 65535"
        ));
        assert!(has(&e, "/portDefinitions", "Port names must be unique."));
        assert!(has(&e, "/portDefinitions", "Ports must be unique."));
    }

    #[test]
    fn constraints_shape_and_operator() {
        let e = check(
            json!({"id": "/a", "cmd": "x", "constraints": [["hostname"], ["rack", "NEAR"], ["rack", "unique"]]}),
        );
        assert!(has(
            &e,
            "/constraints(0)",
            "Each constraint must have either 2 or 3 fields"
        ));
        assert!(has(
            &e,
            "/constraints(1)",
            "operator must be one of the following"
        ));
        assert!(
            !e.iter().any(|(p, _)| p == "/constraints(2)"),
            "operators are case-insensitive"
        );
    }

    #[test]
    fn health_check_port_index_out_of_range() {
        let e = check(
            json!({"id": "/a", "cmd": "x", "healthChecks": [{"protocol": "HTTP", "portIndex": 3}]}),
        );
        assert!(has(
            &e,
            "/healthChecks(0)",
            "Health check port indices must address an element"
        ));
    }

    #[test]
    fn portmappings_with_host_networking() {
        let e = check(
            json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "i"}, "portMappings": [{"containerPort": 80}]}}),
        );
        assert!(has(
            &e,
            "/container/portMappings",
            "portMappings are not allowed with host-networking"
        ));
    }

    #[test]
    fn roles() {
        let e = check(json!({"id": "/a", "cmd": "x", "acceptedResourceRoles": ["prod"]}));
        assert!(has(
            &e,
            "/acceptedResourceRoles(0)",
            "acceptedResourceRoles can only contain * and *"
        ));
        assert_eq!(
            check(json!({"id": "/prod/a", "cmd": "x", "role": "prod"})),
            vec![]
        );
        assert!(has(
            &check(json!({"id": "/a", "cmd": "x", "role": "other"})),
            "/role",
            "got other"
        ));
    }
}
