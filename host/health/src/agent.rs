//! Agent-side checks (`MESOS_HTTP`, `MESOS_HTTPS`, `MESOS_TCP`, `COMMAND`) with the semantics of
//! Mesos's health checker, for backends that run tasks themselves:
//!
//! - the first check runs `delay` after the task started, then every `interval`;
//! - failures are ignored until the check's first success or until `grace` has passed;
//! - a success is reported when the task's health turns healthy (all checks passing); every
//!   counted failure is reported;
//! - after `consecutive_failures` failures in a row (0: the first) the task is to be killed.

use crate::probe::{CommandTarget, ProbeKinds, Target};
use pacer_core::cluster::{AgentCheck, AgentCheckKind};
use pacer_core::health::ProbeOutcome;
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// What the agent reports about a task after a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    /// Why the task is unhealthy.
    pub message: Option<String>,
    /// The failure limit was reached: the task must be killed.
    pub kill: bool,
}

/// The task as its checks see it.
#[derive(Clone, Debug)]
pub struct CheckedTask {
    /// Where its ports listen (from the agent's point of view).
    pub host: String,
    /// Its environment and sandbox, for command checks.
    pub env: std::collections::BTreeMap<String, String>,
    pub cwd: Option<std::path::PathBuf>,
}

pub type VerdictSink = Arc<dyn Fn(Verdict) + Send + Sync>;

#[derive(Default)]
struct TaskChecks {
    /// Per check: its latest counted result.
    passing: Vec<Option<bool>>,
    reported_healthy: bool,
    killed: bool,
}

/// Starts checking a task that has just started; abort the returned handles when it ends.
pub fn spawn(
    kinds: &ProbeKinds,
    checks: &[AgentCheck],
    task: CheckedTask,
    sink: VerdictSink,
) -> Vec<AbortHandle> {
    let started = Instant::now();
    let state = Arc::new(Mutex::new(TaskChecks {
        passing: vec![None; checks.len()],
        ..Default::default()
    }));
    let mut handles = Vec::new();
    for (index, check) in checks.iter().enumerate() {
        let protocol = match check.kind {
            AgentCheckKind::Http { tls: false, .. } => "MESOS_HTTP",
            AgentCheckKind::Http { tls: true, .. } => "MESOS_HTTPS",
            AgentCheckKind::Tcp { .. } => "MESOS_TCP",
            AgentCheckKind::Command(_) => "COMMAND",
        };
        let Some(kind) = kinds.get(protocol) else {
            continue;
        };
        let target = target_of(check, &task);
        let (check, state, sink) = (check.clone(), state.clone(), sink.clone());
        let h = tokio::spawn(async move {
            tokio::time::sleep_until(started + check.delay).await;
            let mut first_success = false;
            let mut failures = 0u32;
            let mut ticker =
                tokio::time::interval(check.interval.max(std::time::Duration::from_millis(100)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                let outcome = match tokio::time::timeout(check.timeout, kind.probe(&target)).await {
                    Ok(o) => o,
                    Err(_) => {
                        ProbeOutcome::Unhealthy(format!("timed out after {:?}", check.timeout))
                    }
                };
                let mut s = state.lock().expect("check state lock");
                if s.killed {
                    return;
                }
                match outcome {
                    ProbeOutcome::Healthy => {
                        first_success = true;
                        failures = 0;
                        s.passing[index] = Some(true);
                        let all = s.passing.iter().all(|p| *p == Some(true));
                        if all && !s.reported_healthy {
                            s.reported_healthy = true;
                            sink(Verdict {
                                healthy: true,
                                message: None,
                                kill: false,
                            });
                        }
                    }
                    ProbeOutcome::Unhealthy(cause) => {
                        if !first_success && started.elapsed() < check.grace {
                            continue;
                        }
                        failures += 1;
                        s.passing[index] = Some(false);
                        s.reported_healthy = false;
                        let kill = failures >= check.consecutive_failures;
                        s.killed = kill;
                        sink(Verdict {
                            healthy: false,
                            message: Some(cause),
                            kill,
                        });
                        if kill {
                            return;
                        }
                    }
                    ProbeOutcome::Ignored | ProbeOutcome::Late => {}
                }
            }
        });
        handles.push(h.abort_handle());
    }
    handles
}

fn target_of(check: &AgentCheck, task: &CheckedTask) -> Target {
    let mut t = Target {
        host: task.host.clone(),
        timeout: check.timeout,
        ..Default::default()
    };
    match &check.kind {
        AgentCheckKind::Http { port, path, .. } => {
            t.port = Some(*port);
            t.path = path.clone();
        }
        AgentCheckKind::Tcp { port } => t.port = Some(*port),
        AgentCheckKind::Command(shell) => {
            t.command = Some(CommandTarget {
                shell: shell.clone(),
                env: task.env.clone(),
                cwd: task.cwd.clone(),
            })
        }
    }
    t
}
