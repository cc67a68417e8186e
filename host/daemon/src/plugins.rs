//! Wires the Wasm plugins into the daemon: load them from --plugin_conf, hand constraint
//! operators to the core, health checks to the prober, events to the sinks, and numbers to
//! /metrics and /v2/plugins.

use crate::flags::Flags;
use pacer_api::metrics::{MetricsSource, MetricsWriter};
use pacer_core::health::ProbeOutcome;
use pacer_health::BoxFuture;
use pacer_health::{ProbeKind, Target};
use pacer_wasm::{HealthTarget, HealthVerdict, Plugins};
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Marathon exits with this code when a plugin cannot be initialised.
pub const EXIT_PLUGIN_FAILED: u8 = 102;

/// Loads every plugin of --plugin_conf (none without it). Compiled plugins are cached under
/// `<data_dir>/plugin-cache`.
pub async fn load(flags: &Flags) -> anyhow::Result<Arc<Plugins>> {
    let Some(conf) = &flags.plugin_conf else {
        return Ok(Arc::new(Plugins::default()));
    };
    let specs = pacer_wasm::config::load(conf, flags.plugin_dir.as_deref())?;
    let cache = flags.data_dir.join("plugin-cache");
    let plugins = Plugins::load(specs, Some(&cache)).await?;
    Ok(Arc::new(plugins))
}

/// `/v2/plugins` entries in Marathon's shape; `plugin` names the WIT interface implemented.
pub fn listing(plugins: &Plugins) -> Vec<Value> {
    plugins
        .info()
        .iter()
        .map(|p| {
            json!({
                "id": p.spec.id,
                "plugin": format!("pacer:plugin/{}", p.spec.kind.interface()),
                "implementation": p.spec.implementation,
                "tags": p.spec.tags,
                "info": p.spec.info,
            })
        })
        .collect()
}

/// The `PLUGIN` health-check protocol: runs the plugin the check names.
pub struct PluginProbes(pub Arc<Plugins>);

impl ProbeKind for PluginProbes {
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            let Some(p) = &target.plugin else {
                return ProbeOutcome::Unhealthy("not a plugin health check".into());
            };
            let Some(host) = self.0.health(&p.plugin) else {
                return ProbeOutcome::Unhealthy(format!(
                    "health-check plugin {:?} is not loaded",
                    p.plugin
                ));
            };
            let t = HealthTarget {
                app_id: p.app_id.clone(),
                task_id: p.task_id.clone(),
                host: target.host.clone(),
                ports: p
                    .ports
                    .iter()
                    .filter_map(|&x| u16::try_from(x).ok())
                    .collect(),
                port: target.port.and_then(|x| u16::try_from(x).ok()),
                path: p.path.clone(),
                params: p.params.clone(),
                timeout: target.timeout,
            };
            match host.check(t).await {
                Ok(HealthVerdict::Healthy) => ProbeOutcome::Healthy,
                Ok(HealthVerdict::Unhealthy(why)) => ProbeOutcome::Unhealthy(why),
                // A plugin that cannot judge the task fails the check, never the scheduler.
                Err(e) => ProbeOutcome::Unhealthy(e.to_string()),
            }
        })
    }
}

/// Forwards every published event to the event-sink plugins (never blocks the publisher).
pub fn feed_sinks(plugins: Arc<Plugins>, bus: &pacer_api::events::EventBus) {
    if plugins.sinks().is_empty() {
        return;
    }
    plugins.start_sinks();
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    for s in plugins.sinks() {
                        s.push(ev.event_type, &ev.json);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        message = "Event sinks fell behind the event bus; events dropped.",
                        dropped = n
                    );
                    for p in plugins.info() {
                        if p.spec.kind == pacer_wasm::Kind::EventSink {
                            p.metrics.events_dropped.fetch_add(n, Relaxed);
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// Per-plugin numbers on `/metrics`.
pub struct PluginMetricsSource(pub Arc<Plugins>);

impl MetricsSource for PluginMetricsSource {
    fn write(&self, w: &mut MetricsWriter) {
        let info = self.0.info();
        if info.is_empty() {
            return;
        }
        let per = |kind: Option<pacer_wasm::Kind>,
                   f: &dyn Fn(&pacer_wasm::PluginMetrics) -> u64| {
            info.iter()
                .filter(|p| kind.is_none_or(|k| p.spec.kind == k))
                .map(|p| ([("plugin", p.spec.id.as_str())], f(&p.metrics)))
                .collect::<Vec<_>>()
        };
        type Read = fn(&pacer_wasm::PluginMetrics) -> u64;
        let all: [(&str, &str, &str, Read); 4] = [
            (
                "plugin_calls_total",
                "counter",
                "Calls into each plugin.",
                |m| m.calls.load(Relaxed),
            ),
            (
                "plugin_fuel_used_total",
                "counter",
                "Wasm fuel each plugin used.",
                |m| m.fuel_used.load(Relaxed),
            ),
            (
                "plugin_busy_microseconds_total",
                "counter",
                "Wall time spent in calls into each plugin.",
                |m| m.busy_micros.load(Relaxed),
            ),
            (
                "plugin_instantiations_total",
                "counter",
                "Instances created per plugin (health checks get one per check).",
                |m| m.instantiations.load(Relaxed),
            ),
        ];
        for (name, kind, help, read) in all {
            w.family(name, kind, help, per(None, &read));
        }
        let failures: Vec<(String, &'static str, u64)> = info
            .iter()
            .flat_map(|p| {
                p.metrics
                    .failures()
                    .into_iter()
                    .map(|(cause, n)| (p.spec.id.clone(), cause, n))
                    .collect::<Vec<_>>()
            })
            .collect();
        w.family(
            "plugin_failures_total",
            "counter",
            "Failed plugin calls, by cause (fuel, deadline, memory, denied, trap, guest, invalid).",
            failures
                .iter()
                .map(|(id, cause, n)| ([("plugin", id.as_str()), ("cause", *cause)], *n)),
        );
        let sink = Some(pacer_wasm::Kind::EventSink);
        if info
            .iter()
            .any(|p| p.spec.kind == pacer_wasm::Kind::EventSink)
        {
            let sinks: [(&str, &str, &str, Read); 3] = [
                ("plugin_sink_events_delivered_total", "counter", "Events an event-sink plugin accepted.", |m| {
                    m.events_delivered.load(Relaxed)
                }),
                ("plugin_sink_events_dropped_total", "counter", "Events an event-sink plugin lost: queue overflow, failed or crashed deliveries, disabled sink.", |m| {
                    m.events_dropped.load(Relaxed)
                }),
                ("plugin_sink_disabled", "gauge", "1 when an event-sink plugin was disabled after repeated crashes.", |m| {
                    m.disabled.load(Relaxed)
                }),
            ];
            for (name, kind, help, read) in sinks {
                w.family(name, kind, help, per(sink, &read));
            }
        }
    }
}
