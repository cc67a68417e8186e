//! Health and readiness (Marathon §6): what the results of probes mean. Probing itself is IO and
//! lives in the shell (`pacer-health`); the core says what to probe ([`Watch`] effects), takes
//! the results back ([`HealthReport`], [`ReadinessReport`], the `healthy` flag of agent status
//! updates) and decides: counts, events, kills, and whether deployments may go on.

use crate::app::{AppDefinition, HealthCheck, ReadinessCheck};
use crate::cluster::{AgentCheck, AgentCheckKind, KillRequest, TaskState};
use crate::events::Event;
use crate::id::{InstanceId, PathId, TaskId};
use crate::instance::{Goal, Instance};
use crate::machine::{effective_ports, Effect, Scheduler};
use crate::persist::StoreOp;
use crate::state::{HttpResponse, InstanceHealth, ReadinessResult};
use crate::time::Timestamp;
use std::sync::Arc;
use std::time::Duration;

/// Protocols the agent runs next to the task (Mesos-level checks); the rest are probed by the
/// scheduler.
pub fn runs_on_agent(protocol: &str) -> bool {
    matches!(
        protocol,
        "MESOS_HTTP" | "MESOS_HTTPS" | "MESOS_TCP" | "COMMAND"
    )
}

/// One scheduler-side health check of a task, with the port resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeCheck {
    /// Index into the app version's `healthChecks`.
    pub index: usize,
    pub check: HealthCheck,
    pub port: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReadinessProbe {
    pub check: ReadinessCheck,
    pub port: Option<u32>,
}

/// What the shell should probe for one running task.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub instance_id: InstanceId,
    pub task_id: TaskId,
    pub app_id: PathId,
    /// The app version the task runs; its checks are the ones probed.
    pub version: Timestamp,
    pub host: String,
    /// The task's host ports (a plugin health check may reach any of them).
    pub host_ports: Vec<u32>,
    pub checks: Vec<ProbeCheck>,
    pub readiness: Option<ReadinessProbe>,
}

/// Start or stop probing a task.
#[derive(Clone, Debug, PartialEq)]
pub enum Watch {
    Start(Arc<ProbeSpec>),
    Stop {
        instance_id: InstanceId,
        task_id: TaskId,
    },
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Healthy,
    Unhealthy(String),
    /// An informational (1xx) answer with `ignoreHttp1xx`: health unchanged.
    Ignored,
    /// The prober fell behind (waited too long for a slot, or was itself stalled while the
    /// probe ran): nothing is known, and nothing is counted.
    Late,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    pub instance_id: InstanceId,
    pub task_id: TaskId,
    pub check_index: usize,
    pub outcome: ProbeOutcome,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReadinessReport {
    pub instance_id: InstanceId,
    pub task_id: TaskId,
    pub ready: bool,
    pub response: Option<HttpResponse>,
}

/// The checks the agent runs itself, for the launch of a task (Mesos's `TaskInfo.health_check`).
pub fn agent_checks(app: &AppDefinition, host_ports: &[u32]) -> Vec<AgentCheck> {
    let ports = effective_ports(app, host_ports);
    app.health_checks
        .iter()
        .filter(|hc| runs_on_agent(&hc.protocol))
        .filter_map(|hc| {
            let port = check_port(hc, &ports);
            let kind = match hc.protocol.as_str() {
                "COMMAND" => AgentCheckKind::Command(hc.command.as_ref()?.value.clone()),
                "MESOS_TCP" => AgentCheckKind::Tcp { port: port? },
                p => AgentCheckKind::Http {
                    tls: p == "MESOS_HTTPS",
                    port: port?,
                    path: hc.path.clone().unwrap_or_else(|| "/".into()),
                },
            };
            Some(AgentCheck {
                kind,
                grace: secs(hc.grace_period_seconds),
                interval: secs(hc.interval_seconds),
                timeout: secs(hc.timeout_seconds),
                delay: secs(hc.delay_seconds),
                consecutive_failures: hc.max_consecutive_failures.max(0) as u32,
            })
        })
        .collect()
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

fn check_port(hc: &HealthCheck, ports: &[(u32, i64, Option<String>)]) -> Option<u32> {
    match (hc.port, hc.port_index) {
        (Some(p), _) => u32::try_from(p).ok(),
        (None, Some(i)) => ports.get(usize::try_from(i).ok()?).map(|p| p.0),
        (None, None) => None,
    }
}

/// The probe key of an instance: its task while it should be probed (running, wanted, not
/// being killed).
fn probed_task(i: &Instance) -> Option<&TaskId> {
    let t = i.task.as_ref()?;
    (i.goal == Goal::Running && t.state == TaskState::Running && !t.kill_sent).then_some(&t.task_id)
}

impl Scheduler {
    /// The definition an instance's task runs (its own version, or the app if that is gone).
    pub(crate) fn version_of(&self, inst: &Instance) -> Option<&Arc<AppDefinition>> {
        self.state
            .versions
            .get(&inst.app_id)
            .and_then(|v| v.get(&inst.run_spec_version))
            .or_else(|| self.state.apps.get(&inst.app_id))
    }

    /// What to probe for an instance's running task; `None` when nothing is scheduler-side.
    fn probe_spec(&self, inst: &Instance) -> Option<ProbeSpec> {
        let task = inst.task.as_ref()?;
        let app = self.version_of(inst)?;
        let ports = effective_ports(app, &task.host_ports);
        let checks: Vec<ProbeCheck> = app
            .health_checks
            .iter()
            .enumerate()
            .filter(|(_, hc)| !runs_on_agent(&hc.protocol))
            .map(|(index, hc)| ProbeCheck {
                index,
                check: hc.clone(),
                port: check_port(hc, &ports),
            })
            .collect();
        let readiness = app.readiness_checks.first().map(|rc| ReadinessProbe {
            check: rc.clone(),
            port: ports
                .iter()
                .find(|p| p.2.as_deref() == Some(rc.port_name.as_str()))
                .map(|p| p.0),
        });
        if checks.is_empty() && readiness.is_none() {
            return None;
        }
        Some(ProbeSpec {
            instance_id: inst.id.clone(),
            task_id: task.task_id.clone(),
            app_id: inst.app_id.clone(),
            version: inst.run_spec_version,
            host: inst.agent.as_ref().map(|a| a.host.clone())?,
            host_ports: task.host_ports.clone(),
            checks,
            readiness,
        })
    }

    /// Keeps probing and health records in step with an instance's change (called wherever an
    /// instance is stored or expunged).
    pub(crate) fn track_health(&mut self, before: Option<&Instance>, after: Option<&Instance>) {
        let old = before.and_then(probed_task);
        let new = after.and_then(probed_task);
        if old != new {
            if let (Some(b), Some(task_id)) = (before, old) {
                self.pending.push(Effect::Watch(Watch::Stop {
                    instance_id: b.id.clone(),
                    task_id: task_id.clone(),
                }));
            }
            if let Some(spec) = after
                .filter(|_| new.is_some())
                .and_then(|a| self.probe_spec(a))
            {
                self.pending
                    .push(Effect::Watch(Watch::Start(Arc::new(spec))));
            }
        }
        // Results belong to one task and last while it is alive.
        let Some(id) = before.or(after).map(|i| &i.id) else {
            return;
        };
        let keep = after.is_some_and(|a| {
            a.is_active()
                && self
                    .state
                    .health
                    .get(id)
                    .is_some_and(|h| a.task.as_ref().map(|t| &t.task_id) == Some(&h.task_id))
        });
        if !keep && self.state.health.contains_key(id) {
            self.state.health.remove(id);
        }
    }

    /// Asks the shell to probe every running task again (after a restart: results are not
    /// stored).
    pub(crate) fn watch_all(&mut self) {
        let specs: Vec<ProbeSpec> = self
            .state
            .instances
            .values()
            .filter(|i| probed_task(i).is_some())
            .filter_map(|i| self.probe_spec(i))
            .collect();
        for spec in specs {
            self.pending
                .push(Effect::Watch(Watch::Start(Arc::new(spec))));
        }
    }

    /// Whether an instance counts as healthy for deployments and the upgrade arithmetic:
    /// running, wanted, not being killed and — if its version has health checks — every check
    /// alive.
    pub(crate) fn counts_as_healthy(&self, inst: &Instance) -> bool {
        if probed_task(inst).is_none() {
            return false;
        }
        let has_checks = self
            .version_of(inst)
            .is_some_and(|a| !a.health_checks.is_empty());
        !has_checks || self.state.health.get(&inst.id).and_then(|h| h.healthy()) == Some(true)
    }

    /// Healthy and — if its version has a readiness check — ready.
    pub(crate) fn counts_as_ready(&self, inst: &Instance) -> bool {
        if !self.counts_as_healthy(inst) {
            return false;
        }
        let has_readiness = self
            .version_of(inst)
            .is_some_and(|a| !a.readiness_checks.is_empty());
        !has_readiness
            || self
                .state
                .health
                .get(&inst.id)
                .and_then(|h| h.readiness.as_ref())
                .is_some_and(|r| r.ready)
    }

    /// The instance and its health record, if `task_id` is its current, probed task.
    fn probed(
        &self,
        instance_id: &InstanceId,
        task_id: &TaskId,
    ) -> Option<(Arc<Instance>, Arc<AppDefinition>, InstanceHealth)> {
        let inst = self.state.instances.get(instance_id)?;
        if probed_task(inst) != Some(task_id) {
            return None;
        }
        let app = self.version_of(inst)?.clone();
        let health = match self.state.health.get(instance_id) {
            Some(h) => (**h).clone(),
            None => InstanceHealth {
                task_id: task_id.clone(),
                checks: vec![None; app.health_checks.len()],
                readiness: None,
            },
        };
        Some((inst.clone(), app, health))
    }

    /// A scheduler-side probe result (Marathon's HealthCheckActor, §6.3).
    pub fn handle_health(&mut self, now: Timestamp, report: HealthReport) {
        let Some((inst, app, mut health)) = self.probed(&report.instance_id, &report.task_id)
        else {
            return;
        };
        let Some(hc) = app.health_checks.get(report.check_index) else {
            return;
        };
        if runs_on_agent(&hc.protocol) {
            return;
        }
        let mut ops = Vec::new();
        let changed = self.apply_result(
            now,
            &inst,
            hc,
            report.check_index,
            &report.outcome,
            false,
            &mut health,
            &mut ops,
        );
        if changed {
            self.store_health(now, &inst, health, &mut ops);
        }
        self.flush(ops);
    }

    /// The `healthy` flag of an agent's status update: the result of the checks the agent runs.
    /// The agent applies the grace period and kills the task itself.
    pub(crate) fn handle_agent_health(
        &mut self,
        now: Timestamp,
        inst: &InstanceId,
        task_id: &TaskId,
        healthy: bool,
        message: Option<&str>,
        ops: &mut Vec<StoreOp>,
    ) {
        let Some((inst, app, mut health)) = self.probed(inst, task_id) else {
            return;
        };
        let outcome = if healthy {
            ProbeOutcome::Healthy
        } else {
            ProbeOutcome::Unhealthy(message.unwrap_or("health check failed").to_string())
        };
        let mut changed = false;
        for (index, hc) in app.health_checks.iter().enumerate() {
            if runs_on_agent(&hc.protocol) {
                changed |=
                    self.apply_result(now, &inst, hc, index, &outcome, true, &mut health, ops);
            }
        }
        if changed {
            self.store_health(now, &inst, health, ops);
        }
    }

    /// Applies one result to one check's record. Returns whether the record changed.
    #[allow(clippy::too_many_arguments)]
    fn apply_result(
        &mut self,
        now: Timestamp,
        inst: &Instance,
        hc: &HealthCheck,
        index: usize,
        outcome: &ProbeOutcome,
        on_agent: bool,
        health: &mut InstanceHealth,
        ops: &mut Vec<StoreOp>,
    ) -> bool {
        let Some(slot) = health.checks.get_mut(index) else {
            return false;
        };
        let before = slot.clone().unwrap_or_default();
        let mut r = before.clone();
        match outcome {
            ProbeOutcome::Ignored | ProbeOutcome::Late => return false,
            ProbeOutcome::Healthy => {
                r.consecutive_failures = 0;
                r.first_success.get_or_insert(now);
                r.last_success = Some(now);
            }
            ProbeOutcome::Unhealthy(cause) => {
                let task = inst.task.as_ref().expect("probed instances have a task");
                let started = task.started_at.unwrap_or(task.since);
                let grace = secs(hc.grace_period_seconds);
                // Failures before the first success are forgiven during the grace period.
                if !on_agent && before.first_success.is_none() && now < started.plus(grace) {
                    return false;
                }
                self.pending.push(Effect::Event(Event::FailedHealthCheck {
                    app_id: inst.app_id.clone(),
                    instance_id: inst.id.clone(),
                    health_check: Box::new(hc.clone()),
                }));
                // Marathon decides on the count *before* this failure; 0 never kills.
                let max = hc.max_consecutive_failures.max(0) as u32;
                if !on_agent && max > 0 && before.consecutive_failures >= max {
                    self.kill_unhealthy(now, inst, cause, ops);
                }
                r.consecutive_failures += 1;
                r.last_failure = Some(now);
                r.last_failure_cause = Some(cause.clone());
            }
        }
        if r.alive() != before.alive() {
            self.pending.push(Effect::Event(Event::HealthStatusChanged {
                app_id: inst.app_id.clone(),
                instance_id: inst.id.clone(),
                version: inst.run_spec_version,
                alive: r.alive(),
            }));
        }
        *slot = Some(r);
        true
    }

    fn kill_unhealthy(
        &mut self,
        now: Timestamp,
        inst: &Instance,
        cause: &str,
        ops: &mut Vec<StoreOp>,
    ) {
        let Some(task) = inst.task.as_ref() else {
            return;
        };
        self.pending
            .push(Effect::Event(Event::UnhealthyInstanceKill {
                app_id: inst.app_id.clone(),
                task_id: task.task_id.clone(),
                instance_id: inst.id.clone(),
                version: inst.run_spec_version,
                reason: cause.to_string(),
                host: inst
                    .agent
                    .as_ref()
                    .map(|a| a.host.clone())
                    .unwrap_or_default(),
                slave_id: inst.agent.as_ref().map(|a| a.agent_id.clone()),
            }));
        let grace = self.grace_of(&inst.app_id);
        self.kill_task(
            now,
            inst,
            format!("FailedHealthChecks: {cause}"),
            grace,
            ops,
        );
    }

    /// Stores a changed health record; when the instance's overall health flipped, tells
    /// observers and lets the app and its deployments move on.
    fn store_health(
        &mut self,
        now: Timestamp,
        inst: &Instance,
        health: InstanceHealth,
        ops: &mut Vec<StoreOp>,
    ) {
        let before = self.state.health.get(&inst.id).and_then(|h| h.healthy());
        let after = health.healthy();
        // Only while the task is still the instance's (a result may race with a relaunch).
        let current = self
            .state
            .instances
            .get(&inst.id)
            .and_then(|i| i.task.as_ref())
            .is_some_and(|t| t.task_id == health.task_id);
        if current {
            self.state.health.insert(inst.id.clone(), Arc::new(health));
        }
        if before != after {
            self.pending
                .push(Effect::Event(Event::InstanceHealthChanged {
                    instance_id: inst.id.clone(),
                    run_spec_id: inst.app_id.clone(),
                    run_spec_version: inst.run_spec_version,
                    healthy: after,
                }));
            if after == Some(true) {
                self.note_progress(&inst.app_id, now);
            }
            self.converge(&inst.app_id, now, ops);
            self.finish_deployments(now, ops);
        }
    }

    /// A readiness probe result (§6.6). Readiness only ever moves deployments forward.
    pub fn handle_readiness(&mut self, now: Timestamp, report: ReadinessReport) {
        let Some((inst, app, mut health)) = self.probed(&report.instance_id, &report.task_id)
        else {
            return;
        };
        let Some(rc) = app.readiness_checks.first() else {
            return;
        };
        let was_ready = health.readiness.as_ref().is_some_and(|r| r.ready);
        let result = ReadinessResult {
            name: rc.name.clone(),
            ready: report.ready,
            last_response: report.response.filter(|_| rc.preserve_last_response),
        };
        if health.readiness.as_ref() == Some(&result) || was_ready {
            return;
        }
        health.readiness = Some(result);
        self.state.health.insert(inst.id.clone(), Arc::new(health));
        if report.ready {
            let mut ops = Vec::new();
            self.note_progress(&inst.app_id, now);
            self.converge(&inst.app_id, now, &mut ops);
            self.finish_deployments(now, &mut ops);
            self.flush(ops);
        }
    }

    /// Kills a task but keeps its instance: it is relaunched (a kill adds no backoff).
    pub(crate) fn kill_task(
        &mut self,
        now: Timestamp,
        inst: &Instance,
        message: String,
        grace: Option<Duration>,
        ops: &mut Vec<StoreOp>,
    ) {
        let mut i = inst.clone();
        let Some(task) = i.task.as_mut() else {
            return;
        };
        if task.kill_sent {
            return;
        }
        task.kill_sent = true;
        task.message = Some(message);
        self.pending.push(Effect::Kill(KillRequest {
            task_id: task.task_id.clone(),
            agent_id: i.agent.as_ref().map(|a| a.agent_id.clone()),
            grace,
        }));
        let app = i.app_id.clone();
        self.store_instance(i, ops);
        self.converge(&app, now, ops);
    }
}
