//! The scheduler-side prober: Marathon-level checks (HTTP, HTTPS, TCP and plugin kinds) and
//! readiness checks, run off the core's path.
//!
//! Every watched task gets one timer per check. All probes share a global cap
//! (`--max_concurrent_marathon_health_checks`). A probe's timeout runs from when it is actually
//! sent, not from when it was due. When the prober falls behind — a probe waited a whole
//! interval for a slot, or the prober itself was stalled so long that its own timer fired late —
//! the result is `Late`: unknown, never a failure. An overloaded scheduler must not kill healthy
//! tasks because its probes were late (Marathon issue 3317).

use crate::http;
use crate::probe::{PluginTarget, ProbeKinds, Target};
use pacer_core::health::{
    HealthReport, ProbeCheck, ProbeOutcome, ProbeSpec, ReadinessProbe, ReadinessReport, Watch,
};
use pacer_core::id::{InstanceId, TaskId};
use pacer_core::state::HttpResponse;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A timer firing this much after its deadline means the prober itself was stalled.
const STALL_SLACK: Duration = Duration::from_millis(500);
/// How long past its own timeout a probe may run before the prober gives up on it.
const GUARD: Duration = Duration::from_secs(1);
/// The first probe of a task comes after `min(interval, FIRST_PROBE_MAX)` (Marathon: 5 s).
const FIRST_PROBE_MAX: Duration = Duration::from_secs(5);

/// What the prober tells the runtime.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeResult {
    Health(HealthReport),
    Readiness(ReadinessReport),
}

#[derive(Debug, Default)]
pub struct ProberStats {
    pub probes: AtomicU64,
    pub failed: AtomicU64,
    pub late: AtomicU64,
}

struct Shared {
    kinds: ProbeKinds,
    slots: Semaphore,
    results: mpsc::UnboundedSender<ProbeResult>,
    stats: Arc<ProberStats>,
}

pub struct Prober {
    shared: Arc<Shared>,
    watched: HashMap<InstanceId, (TaskId, Vec<AbortHandle>)>,
}

impl Prober {
    /// Must be created inside a tokio runtime; probes are spawned on it.
    pub fn new(
        kinds: ProbeKinds,
        max_concurrent: usize,
        results: mpsc::UnboundedSender<ProbeResult>,
    ) -> Self {
        Prober {
            shared: Arc::new(Shared {
                kinds,
                slots: Semaphore::new(max_concurrent.max(1)),
                results,
                stats: Arc::default(),
            }),
            watched: HashMap::new(),
        }
    }

    pub fn stats(&self) -> Arc<ProberStats> {
        self.shared.stats.clone()
    }

    /// Tasks being probed.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    pub fn apply(&mut self, watch: Watch) {
        match watch {
            Watch::Start(spec) => self.start(spec),
            Watch::Stop {
                instance_id,
                task_id,
            } => {
                if self
                    .watched
                    .get(&instance_id)
                    .is_some_and(|(t, _)| *t == task_id)
                {
                    self.stop(&instance_id);
                }
            }
        }
    }

    fn stop(&mut self, instance: &InstanceId) {
        if let Some((_, handles)) = self.watched.remove(instance) {
            for h in handles {
                h.abort();
            }
        }
    }

    fn start(&mut self, spec: Arc<ProbeSpec>) {
        self.stop(&spec.instance_id);
        let mut handles = Vec::new();
        for check in &spec.checks {
            let (shared, spec, check) = (self.shared.clone(), spec.clone(), check.clone());
            handles.push(tokio::spawn(health_loop(shared, spec, check)).abort_handle());
        }
        if let Some(r) = spec.readiness.clone() {
            let (shared, spec2) = (self.shared.clone(), spec.clone());
            handles.push(tokio::spawn(readiness_loop(shared, spec2, r)).abort_handle());
        }
        self.watched
            .insert(spec.instance_id.clone(), (spec.task_id.clone(), handles));
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        for (_, (_, handles)) in self.watched.drain() {
            for h in handles {
                h.abort();
            }
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(1) as u64)
}

async fn health_loop(shared: Arc<Shared>, spec: Arc<ProbeSpec>, check: ProbeCheck) {
    let hc = &check.check;
    let interval = secs(hc.interval_seconds);
    let target = Target {
        host: spec.host.clone(),
        port: check.port,
        path: hc.path.clone().unwrap_or_else(|| "/".into()),
        timeout: secs(hc.timeout_seconds),
        ignore_http1xx: hc.ignore_http1xx,
        command: None,
        plugin: (hc.protocol == "PLUGIN").then(|| PluginTarget {
            plugin: hc.plugin.clone().unwrap_or_default(),
            params: hc
                .params
                .as_ref()
                .map_or_else(|| "{}".to_string(), |p| p.to_string()),
            app_id: spec.app_id.to_string(),
            task_id: spec.task_id.to_string(),
            ports: spec.host_ports.clone(),
            path: hc.path.clone(),
        }),
    };
    let Some(kind) = shared.kinds.get(&hc.protocol) else {
        tracing::warn!(message = "No prober for this health check protocol.", protocol = %hc.protocol);
        return;
    };
    let mut due = Instant::now() + first_delay(&spec, check.index, interval);
    loop {
        tokio::time::sleep_until(due).await;
        let outcome = run_probe(&shared, due, interval, target.timeout, || {
            kind.probe(&target)
        })
        .await;
        let report = HealthReport {
            instance_id: spec.instance_id.clone(),
            task_id: spec.task_id.clone(),
            check_index: check.index,
            outcome,
        };
        if shared.results.send(ProbeResult::Health(report)).is_err() {
            return;
        }
        due = next_due(due, interval);
    }
}

async fn readiness_loop(shared: Arc<Shared>, spec: Arc<ProbeSpec>, r: ReadinessProbe) {
    let rc = &r.check;
    let interval = secs(rc.interval_seconds);
    let timeout = secs(rc.timeout_seconds);
    let tls = rc.protocol == "HTTPS";
    let mut due = Instant::now() + first_delay(&spec, usize::MAX, interval);
    loop {
        tokio::time::sleep_until(due).await;
        let mut response = None;
        let outcome = match r.port {
            None => None,
            Some(port) => run_probe(&shared, due, interval, timeout, || {
                Box::pin(async {
                    match http::get(&spec.host, port, &rc.path, tls, timeout, true).await {
                        Ok(reply) => {
                            let ready = rc
                                .http_status_codes_for_ready
                                .contains(&i64::from(reply.status));
                            response = Some(HttpResponse {
                                status: reply.status,
                                content_type: reply.content_type,
                                body: reply.body,
                            });
                            if ready {
                                ProbeOutcome::Healthy
                            } else {
                                ProbeOutcome::Unhealthy(String::new())
                            }
                        }
                        Err(e) => ProbeOutcome::Unhealthy(e.to_string()),
                    }
                })
            })
            .await
            .into(),
        };
        let ready = match outcome {
            Some(ProbeOutcome::Healthy) => true,
            Some(ProbeOutcome::Late) => {
                due = next_due(due, interval);
                continue;
            }
            _ => false,
        };
        let report = ReadinessReport {
            instance_id: spec.instance_id.clone(),
            task_id: spec.task_id.clone(),
            ready,
            response,
        };
        if shared.results.send(ProbeResult::Readiness(report)).is_err() || ready {
            // Readiness is only awaited once per task.
            return;
        }
        due = next_due(due, interval);
    }
}

/// When a task's first probe comes: between half and all of `min(interval, 5 s)` after it
/// started, spread by a hash of the task and check. Tasks started together (a deployment) then
/// do not probe in lockstep, so a burst never hits the global cap or one host at once.
fn first_delay(spec: &ProbeSpec, check: usize, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let base = interval.min(FIRST_PROBE_MAX);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (spec.task_id.as_str(), check).hash(&mut h);
    let frac = (h.finish() % 1000) as f64 / 1000.0;
    base / 2 + base.mul_f64(frac / 2.0)
}

/// The next tick; ticks missed while a probe ran long are skipped, not bunched up.
fn next_due(due: Instant, interval: Duration) -> Instant {
    let next = due + interval;
    let now = Instant::now();
    if next < now {
        now + interval
    } else {
        next
    }
}

/// Runs one probe under the global cap, deciding whether its result can be trusted.
async fn run_probe<'a, F>(
    shared: &Shared,
    due: Instant,
    interval: Duration,
    timeout: Duration,
    probe: F,
) -> ProbeOutcome
where
    F: FnOnce() -> crate::probe::BoxFuture<'a, ProbeOutcome>,
{
    let Ok(_slot) = shared.slots.acquire().await else {
        return ProbeOutcome::Late;
    };
    let sent = Instant::now();
    if sent.duration_since(due) >= interval {
        // Waited a whole interval for a slot: the next probe is already due.
        shared.stats.late.fetch_add(1, Ordering::Relaxed);
        return ProbeOutcome::Late;
    }
    shared.stats.probes.fetch_add(1, Ordering::Relaxed);
    // A guard beyond the probe's own timeout, for kinds that overrun it.
    let guarded = tokio::time::timeout(timeout + GUARD, probe()).await;
    let took = sent.elapsed();
    let (outcome, expected) = match guarded {
        Ok(o) => (o, timeout),
        Err(_) => (
            ProbeOutcome::Unhealthy(format!("timed out after {timeout:?}")),
            timeout + GUARD,
        ),
    };
    if matches!(outcome, ProbeOutcome::Unhealthy(_)) && took > expected + STALL_SLACK {
        // A timer fired far later than it was set for: the prober was stalled, so a timeout
        // says nothing about the task.
        shared.stats.late.fetch_add(1, Ordering::Relaxed);
        return ProbeOutcome::Late;
    }
    if matches!(outcome, ProbeOutcome::Unhealthy(_)) {
        shared.stats.failed.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}
