//! `pacer-wasm`: Pacer's WebAssembly plugin host — the only crate that knows wasmtime.
//!
//! Plugins are WebAssembly components built against the WIT package `pacer:plugin` (in `wit/`).
//! Three kinds: placement constraint operators, health-check types and event sinks. Every call
//! is bounded by fuel, a wall-clock deadline (epochs) and a memory cap; a plugin is granted
//! only its kind's `pacer:plugin` imports, and every WASI import its standard library pulls in
//! is linked to a function that fails. Failures are [`PluginError`]s that name the plugin, the
//! phase and the cause.
//!
//! Code map: `config` (the plugin file), `engine` (engine, epoch ticker, artifact cache, shape
//! checks), `state` (store data, limits, failure classification), `caps` (one module per host
//! capability), `kinds` (one module per plugin kind), `metrics`.

mod bindings;
pub mod caps;
pub mod config;
pub mod engine;
pub mod error;
pub mod kinds;
pub mod metrics;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{Kind, PluginSpec};
pub use error::{Cause, Phase, PluginError};
pub use kinds::health::{HealthHost, HealthTarget, HealthVerdict};
pub use kinds::sink::SinkHost;
pub use metrics::PluginMetrics;

use kinds::constraint::{ConstraintHost, ConstraintSet};
use kinds::Loaded;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

/// A loaded plugin as `/v2/plugins` and `/metrics` show it.
pub struct PluginInfo {
    pub spec: PluginSpec,
    pub metrics: Arc<PluginMetrics>,
}

/// Everything loaded from the plugin file.
#[derive(Default)]
pub struct Plugins {
    constraints: Option<Arc<ConstraintSet>>,
    constraint_hosts: Vec<Arc<ConstraintHost>>,
    health: BTreeMap<String, Arc<HealthHost>>,
    sinks: Vec<Arc<SinkHost>>,
    pending_sinks: std::sync::Mutex<Vec<(Arc<SinkHost>, kinds::sink::LiveSink)>>,
    info: Vec<PluginInfo>,
}

/// Instances the pool holds at once, beyond the long-lived ones: concurrent health checks.
const POOL_HEADROOM: u32 = 256;

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.info.iter().map(|p| (&p.spec.id, p.spec.kind)))
            .finish()
    }
}

impl Plugins {
    /// Loads, checks and configures every plugin. Any invalid plugin fails the whole load, so
    /// the daemon refuses to start rather than run without a plugin its apps rely on.
    /// `cache_dir` keeps compiled artifacts between starts.
    pub async fn load(
        specs: Vec<PluginSpec>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, PluginError> {
        if specs.is_empty() {
            return Ok(Plugins::default());
        }
        let max_memory_bytes = specs
            .iter()
            .map(|s| s.limits.memory_mib as usize * 1024 * 1024)
            .max()
            .unwrap_or(64 << 20);
        let pool = engine::PoolSize {
            instances: specs.len() as u32 * 2 + POOL_HEADROOM,
            max_memory_bytes,
        };
        let engine = engine::engine(pool).map_err(|e| {
            PluginError::new(
                "*",
                Phase::Load,
                Cause::Invalid(format!("cannot start wasmtime: {e:#}")),
            )
        })?;
        engine::start_ticker(&engine);
        let mut out = Plugins::default();
        for spec in specs {
            let id = spec.id.clone();
            let invalid = |m: String| PluginError::new(&id, Phase::Load, Cause::Invalid(m));
            let bytes = std::fs::read(&spec.path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", spec.path.display())))?;
            if let Some(want) = &spec.sha256 {
                let got = hex::encode(Sha256::digest(&bytes));
                if &got != want {
                    return Err(invalid(format!(
                        "{} has sha256 {got}, but the configuration expects {want}",
                        spec.path.display()
                    )));
                }
            }
            let component = engine::compile(&engine, &bytes, cache_dir).map_err(|e| {
                invalid(format!(
                    "{} is not a WebAssembly component this Pacer can run: {e:#}",
                    spec.path.display()
                ))
            })?;
            engine::check_shape(&engine, &component, spec.kind).map_err(invalid)?;
            let metrics = Arc::new(PluginMetrics::default());
            let loaded = Arc::new(Loaded {
                id: Arc::from(spec.id.as_str()),
                spec: spec.clone(),
                engine: engine.clone(),
                component,
                metrics: metrics.clone(),
            });
            match spec.kind {
                Kind::Constraint => out
                    .constraint_hosts
                    .push(Arc::new(ConstraintHost::load(loaded)?)),
                Kind::HealthCheck => {
                    out.health
                        .insert(spec.id.clone(), Arc::new(HealthHost::load(loaded).await?));
                }
                Kind::EventSink => {
                    let (host, live) = SinkHost::load(loaded).await?;
                    out.sinks.push(host.clone());
                    out.pending_sinks.lock().unwrap().push((host, live));
                }
            }
            tracing::info!(plugin = %spec.id, kind = spec.kind.interface(), path = %spec.path.display(), message = "Plugin loaded.");
            out.info.push(PluginInfo { spec, metrics });
        }
        if !out.constraint_hosts.is_empty() {
            out.constraints = Some(Arc::new(ConstraintSet::new(out.constraint_hosts.clone())?));
        }
        Ok(out)
    }

    /// Starts the delivery task of every event sink (on the current tokio runtime).
    pub fn start_sinks(&self) {
        for (host, live) in self.pending_sinks.lock().unwrap().drain(..) {
            tokio::spawn(host.run(live));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// The constraint operators, for the core.
    pub fn constraints(&self) -> Option<Arc<dyn pacer_core::constraints::ConstraintPlugins>> {
        self.constraints
            .clone()
            .map(|c| c as Arc<dyn pacer_core::constraints::ConstraintPlugins>)
    }

    pub fn constraint_host(&self, id: &str) -> Option<&Arc<ConstraintHost>> {
        self.constraint_hosts.iter().find(|h| h.id() == id)
    }

    pub fn health_ids(&self) -> BTreeSet<String> {
        self.health.keys().cloned().collect()
    }

    pub fn health(&self, id: &str) -> Option<Arc<HealthHost>> {
        self.health.get(id).cloned()
    }

    pub fn sinks(&self) -> &[Arc<SinkHost>] {
        &self.sinks
    }

    pub fn info(&self) -> &[PluginInfo] {
        &self.info
    }
}
