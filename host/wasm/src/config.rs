//! The plugin file (`--plugin_conf`): Marathon's plugin descriptor shape, keyed by plugin id,
//! with the fields a sandbox needs (digest, limits, failure policy, allowed hosts, batching).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Constraint,
    HealthCheck,
    EventSink,
}

impl Kind {
    /// The WIT interface a plugin of this kind exports.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::Constraint => "constraint",
            Kind::HealthCheck => "health-check",
            Kind::EventSink => "event-sink",
        }
    }

    /// The `pacer:plugin` interfaces a plugin of this kind may import.
    pub fn grants(self) -> &'static [&'static str] {
        match self {
            Kind::Constraint => &["types", "log"],
            Kind::HealthCheck => &["types", "log", "probe"],
            Kind::EventSink => &["types", "log", "outbound-http"],
        }
    }

    fn default_limits(self) -> Limits {
        match self {
            Kind::Constraint => Limits {
                fuel_per_call: 10_000_000,
                memory_mib: 64,
                timeout_ms: 100,
            },
            // The wall budget of a health check is its own timeout plus this.
            Kind::HealthCheck => Limits {
                fuel_per_call: 50_000_000,
                memory_mib: 64,
                timeout_ms: 2_000,
            },
            Kind::EventSink => Limits {
                fuel_per_call: 100_000_000,
                memory_mib: 64,
                timeout_ms: 30_000,
            },
        }
    }
}

/// What a failing constraint plugin means for the offers it was asked about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse the offers (fail closed).
    #[default]
    Reject,
    /// Behave as if the constraint were not there.
    Ignore,
}

/// Sandbox limits for every call into a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub fuel_per_call: u64,
    pub memory_mib: u32,
    /// Wall-clock budget per call (for health checks: added to the check's own timeout).
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitOverrides {
    fuel_per_call: Option<u64>,
    memory_mib: Option<u32>,
    timeout_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    #[serde(default = "default_max_delay_ms")]
    pub max_delay_ms: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_events: default_max_events(),
            max_delay_ms: default_max_delay_ms(),
        }
    }
}

fn default_max_events() -> usize {
    100
}
fn default_max_delay_ms() -> u64 {
    1_000
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEntry {
    plugin: Kind,
    implementation: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    configuration: Option<Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    info: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    limits: LimitOverrides,
    #[serde(default)]
    on_error: Option<OnError>,
    #[serde(default)]
    allowed_hosts: Option<Vec<String>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    batch: Option<Batch>,
    #[serde(default)]
    queue_capacity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    plugins: BTreeMap<String, RawEntry>,
}

/// One plugin as configured, validated.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    pub id: String,
    pub kind: Kind,
    /// As written in the file (shown by `/v2/plugins`).
    pub implementation: String,
    pub path: PathBuf,
    pub sha256: Option<String>,
    /// The `configuration` object as JSON text (`{}` when absent).
    pub config_json: String,
    pub tags: Vec<String>,
    pub info: serde_json::Map<String, Value>,
    pub limits: Limits,
    pub on_error: OnError,
    /// `host:port` pairs an event sink may post to.
    pub allowed_hosts: Vec<(String, u16)>,
    /// Event types a sink receives; empty means all.
    pub event_types: Vec<String>,
    pub batch: Batch,
    pub queue_capacity: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("plugin configuration {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// Reads and checks the plugin file; paths are relative to `plugin_dir`.
pub fn load(file: &Path, plugin_dir: Option<&Path>) -> Result<Vec<PluginSpec>, ConfigError> {
    let fail = |message: String| ConfigError {
        file: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse(&text, plugin_dir).map_err(fail)
}

/// Parses the plugin file's text.
pub fn parse(text: &str, plugin_dir: Option<&Path>) -> Result<Vec<PluginSpec>, String> {
    let raw: RawFile = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let mut out = Vec::new();
    for (id, e) in raw.plugins {
        let here = |m: String| format!("plugin {id:?}: {m}");
        if !id_ok(&id) {
            return Err(here(
                "ids are lower-case letters, digits, '-', '_' and '.', starting with a letter or digit"
                    .into(),
            ));
        }
        if !e.enabled {
            continue;
        }
        let kind = e.plugin;
        let only = |present: bool, field: &str, allowed: Kind| -> Result<(), String> {
            if present && kind != allowed {
                return Err(here(format!(
                    "{field} applies only to {} plugins",
                    allowed.interface()
                )));
            }
            Ok(())
        };
        only(e.on_error.is_some(), "onError", Kind::Constraint)?;
        only(e.allowed_hosts.is_some(), "allowedHosts", Kind::EventSink)?;
        only(e.event_types.is_some(), "eventTypes", Kind::EventSink)?;
        only(e.batch.is_some(), "batch", Kind::EventSink)?;
        only(e.queue_capacity.is_some(), "queueCapacity", Kind::EventSink)?;
        let path = {
            let p = PathBuf::from(&e.implementation);
            match plugin_dir {
                Some(dir) if p.is_relative() => dir.join(p),
                _ => p,
            }
        };
        if let Some(d) = &e.sha256 {
            if d.len() != 64 || !d.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(here("sha256 must be 64 hexadecimal digits".into()));
            }
        }
        let defaults = kind.default_limits();
        let limits = Limits {
            fuel_per_call: e.limits.fuel_per_call.unwrap_or(defaults.fuel_per_call),
            memory_mib: e.limits.memory_mib.unwrap_or(defaults.memory_mib),
            timeout_ms: e.limits.timeout_ms.unwrap_or(defaults.timeout_ms),
        };
        if limits.fuel_per_call == 0 || limits.memory_mib == 0 || limits.timeout_ms == 0 {
            return Err(here("limits must be positive".into()));
        }
        if limits.memory_mib > 4096 {
            return Err(here("limits.memoryMib is at most 4096".into()));
        }
        let allowed_hosts = e
            .allowed_hosts
            .unwrap_or_default()
            .iter()
            .map(|h| {
                parse_host_port(h)
                    .ok_or_else(|| here(format!("allowedHosts: {h:?} is not host:port")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = e.batch.unwrap_or_default();
        if batch.max_events == 0 {
            return Err(here("batch.maxEvents must be positive".into()));
        }
        let queue_capacity = e.queue_capacity.unwrap_or(10_000);
        if queue_capacity == 0 {
            return Err(here("queueCapacity must be positive".into()));
        }
        let config_json = match &e.configuration {
            None => "{}".to_string(),
            Some(v) => v.to_string(),
        };
        out.push(PluginSpec {
            id,
            kind,
            implementation: e.implementation,
            path,
            sha256: e.sha256.map(|s| s.to_ascii_lowercase()),
            config_json,
            tags: e.tags,
            info: e.info.unwrap_or_default(),
            limits,
            on_error: e.on_error.unwrap_or_default(),
            allowed_hosts,
            event_types: e.event_types.unwrap_or_default(),
            batch,
            queue_capacity,
        });
    }
    Ok(out)
}

fn id_ok(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

/// `host:port` (IPv6 in brackets).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_misplaced_fields() {
        let specs = parse(
            r#"{"plugins": {
                "spread": {"plugin": "constraint", "implementation": "s.wasm",
                           "limits": {"timeoutMs": 50}, "onError": "ignore", "tags": ["x"]},
                "hook": {"plugin": "event-sink", "implementation": "/abs/w.wasm",
                         "allowedHosts": ["127.0.0.1:8080", "[::1]:9"], "configuration": {"url": "u"}},
                "off": {"plugin": "health-check", "implementation": "h.wasm", "enabled": false}
            }}"#,
            Some(Path::new("/plugins")),
        )
        .unwrap();
        assert_eq!(specs.len(), 2, "disabled plugins are skipped");
        let hook = &specs[0];
        assert_eq!(hook.id, "hook");
        assert_eq!(hook.path, PathBuf::from("/abs/w.wasm"));
        assert_eq!(
            hook.allowed_hosts,
            vec![("127.0.0.1".into(), 8080), ("::1".into(), 9)]
        );
        assert_eq!(hook.config_json, r#"{"url":"u"}"#);
        assert_eq!(hook.batch, Batch::default());
        let spread = &specs[1];
        assert_eq!(spread.path, PathBuf::from("/plugins/s.wasm"));
        assert_eq!(spread.config_json, "{}");
        assert_eq!(spread.on_error, OnError::Ignore);
        assert_eq!(
            spread.limits,
            Limits {
                fuel_per_call: 10_000_000,
                memory_mib: 64,
                timeout_ms: 50
            }
        );

        let err = |t: &str| parse(t, None).unwrap_err();
        assert!(err(r#"{"plugins": {"a": {"plugin": "constraint", "implementation": "a", "allowedHosts": []}}}"#)
            .contains("allowedHosts applies only to event-sink plugins"));
        assert!(
            err(r#"{"plugins": {"a": {"plugin": "policy", "implementation": "a"}}}"#)
                .contains("unknown variant")
        );
        assert!(err(
            r#"{"plugins": {"a": {"plugin": "constraint", "implementation": "a", "colour": 1}}}"#
        )
        .contains("unknown field"));
        assert!(
            err(r#"{"plugins": {"A b": {"plugin": "constraint", "implementation": "a"}}}"#)
                .contains("ids are")
        );
        assert!(err(r#"{"plugins": {"a": {"plugin": "constraint", "implementation": "a", "sha256": "xyz"}}}"#)
            .contains("sha256"));
    }
}
