//! The agent's single actor: it owns the task table and the resource ledger, handles the calls of
//! the `Cluster` port and the reports of its helper tasks (process started, process exited, timer
//! fired) one at a time, and is the only place that emits events to the sink.

use crate::adopt::{self, TaskRecord};
use crate::agent::Ledger;
use crate::config::Settings;
use crate::docker::{self, DockerProbe};
use crate::process::{self, Exit};
use nix::sys::signal::Signal;
use pacer_core::cluster::{
    AgentCheckKind, ClusterEvent, ClusterEventSink, KillRequest, LaunchSpec, OfferId, TaskState,
    TaskStatus,
};
use pacer_core::id::TaskId;
use pacer_health::agent::{CheckedTask, Verdict};
use pacer_health::ProbeKinds;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Shortest decline filter, so that a `decline(_, 0)` cannot turn into an offer storm.
const MIN_REFUSE: Duration = Duration::from_millis(100);
/// `launch` with no tasks declines the offer for this long (Mesos's default filter).
const EMPTY_LAUNCH_REFUSE: Duration = Duration::from_secs(5);
/// Extra time `docker stop` gets to finish before the CLI and container are killed outright.
const DOCKER_STOP_MARGIN: Duration = Duration::from_secs(2);
/// How many ended tasks are remembered for reconciliation and repeated kills.
const RETAIN_ENDED: usize = 1000;

pub(crate) enum Msg {
    Launch {
        offer: OfferId,
        tasks: Vec<LaunchSpec>,
    },
    Decline {
        offer: OfferId,
        refuse: Duration,
    },
    Kill(KillRequest),
    Reconcile(Vec<TaskId>),
    Revive,
    Suppress,
    Started {
        task: TaskId,
        run: u64,
        result: Result<u32, String>,
    },
    Exited {
        task: TaskId,
        run: u64,
        exit: Exit,
        detail: Option<String>,
    },
    RefuseElapsed {
        generation: u64,
    },
    GraceElapsed {
        task: TaskId,
        run: u64,
    },
    /// A result of the checks the agent runs for a task.
    Health {
        task: TaskId,
        run: u64,
        verdict: Verdict,
    },
}

struct Task {
    /// Tells this incarnation's helper reports apart from those of an earlier task with the same id.
    run: u64,
    spec: LaunchSpec,
    pid: Option<u32>,
    docker_name: Option<String>,
    /// The latest status, as sent (or, for `unreported`, still to be sent).
    status: TaskStatus,
    /// Set once a kill was requested: the grace before SIGKILL.
    kill_grace: Option<Duration>,
    adopted: bool,
    /// A task found dead at start whose terminal status the core has not been told yet.
    unreported: bool,
    /// The agent-side health checks running for it.
    checks: Vec<tokio::task::AbortHandle>,
}

pub(crate) struct Supervisor {
    settings: Arc<Settings>,
    probe: Arc<DockerProbe>,
    sink: ClusterEventSink,
    tx: UnboundedSender<Msg>,
    ledger: Ledger,
    tasks: BTreeMap<TaskId, Task>,
    ended: VecDeque<(TaskId, u64)>,
    next_run: u64,
    reconciled: bool,
    check_kinds: ProbeKinds,
}

impl Supervisor {
    pub fn new(
        settings: Arc<Settings>,
        probe: Arc<DockerProbe>,
        sink: ClusterEventSink,
        tx: UnboundedSender<Msg>,
        ledger: Ledger,
    ) -> Self {
        Supervisor {
            settings,
            probe,
            sink,
            tx,
            ledger,
            tasks: BTreeMap::new(),
            ended: VecDeque::new(),
            next_run: 0,
            reconciled: false,
            check_kinds: ProbeKinds::builtin(),
        }
    }

    /// Handles messages until `stopped` is set (checked before each one, so that nothing is
    /// handled once the owner has gone, even before the abort of this task takes effect).
    pub async fn run(mut self, mut rx: UnboundedReceiver<Msg>, stopped: Arc<AtomicBool>) {
        while let Some(msg) = rx.recv().await {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Launch { offer, tasks } => self.on_launch(offer, tasks),
            Msg::Decline { offer, refuse } => self.on_decline(offer, refuse),
            Msg::Kill(req) => self.on_kill(req),
            Msg::Health { task, run, verdict } => self.on_health(task, run, verdict),
            Msg::Reconcile(ids) => self.on_reconcile(ids),
            Msg::Revive => {
                self.ledger.revive();
                self.offer_if_due();
            }
            Msg::Suppress => self.ledger.suppress(),
            Msg::Started { task, run, result } => self.on_started(task, run, result),
            Msg::Exited {
                task,
                run,
                exit,
                detail,
            } => self.on_exited(task, run, exit, detail),
            Msg::RefuseElapsed { generation } => {
                self.ledger.refuse_elapsed(generation);
                self.offer_if_due();
            }
            Msg::GraceElapsed { task, run } => self.on_grace_elapsed(task, run),
        }
    }

    fn status(&self, task: &TaskId, state: TaskState, message: Option<String>) -> TaskStatus {
        TaskStatus {
            task_id: task.clone(),
            state,
            message,
            agent_id: Some(self.settings.agent_id.clone()),
            healthy: None,
        }
    }

    fn emit(&self, status: TaskStatus) {
        (self.sink)(ClusterEvent::Status(status));
    }

    fn offer_if_due(&mut self) {
        if let Some(offer) = self.ledger.next_offer() {
            tracing::debug!(offer_id = %offer.id.0, cpus = offer.cpus, mem_mb = offer.mem_mb, "offering resources");
            (self.sink)(ClusterEvent::Offer(offer));
        }
    }

    fn after(&self, delay: Duration, msg: Msg) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(msg);
        });
    }

    fn new_run(&mut self) -> u64 {
        self.next_run += 1;
        self.next_run
    }

    /// Takes over the tasks recorded by an earlier run of the agent: live ones are watched again
    /// and hold their resources; dead ones are reported at the first reconciliation.
    pub fn adopt(&mut self, records: Vec<Result<TaskRecord, String>>) {
        let boot = adopt::boot_id();
        for record in records {
            let mut record = match record {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(reason = %why, "ignoring unreadable task record");
                    continue;
                }
            };
            let id = record.spec.task_id.clone();
            let run = self.new_run();
            let mut found_late = false;
            if record.pid.is_none() {
                if let Some((pid, start_time)) = adopt::find_by_sandbox(&record.sandbox) {
                    record.pid = Some(pid);
                    record.start_time = Some(start_time);
                    found_late = true;
                }
            }
            // Open the pidfd before checking the start time: then the fd surely is that process.
            let live = record.pid.and_then(|pid| {
                let fd = adopt::pidfd_open(pid);
                if let Err(e) = &fd {
                    if e.raw_os_error() == Some(nix::libc::ESRCH) {
                        return None;
                    }
                }
                adopt::is_same_live_process(&record, pid, boot.as_deref()).then(|| (pid, fd.ok()))
            });
            match live {
                Some((pid, fd)) => {
                    tracing::info!(task_id = %id, pid, "re-adopted running task");
                    self.ledger.claim_running(&record.spec);
                    let status = self.status(&id, TaskState::Running, None);
                    self.tasks.insert(
                        id.clone(),
                        Task {
                            run,
                            spec: record.spec.clone(),
                            pid: Some(pid),
                            docker_name: record.docker_name.clone(),
                            status,
                            kill_grace: None,
                            adopted: true,
                            unreported: false,
                            checks: Vec::new(),
                        },
                    );
                    self.start_checks(&id);
                    if found_late {
                        let (dir, rec) = (self.settings.tasks_dir(), record.clone());
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = adopt::write_record(&dir, &rec) {
                                tracing::warn!(task_id = %rec.spec.task_id, error = %e, "cannot update task record");
                            }
                        });
                    }
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let noticed = adopt::wait_gone(record, pid, fd).await;
                        tracing::debug!(task_id = %id, pid, ?noticed, "re-adopted task exited");
                        let _ = tx.send(Msg::Exited {
                            task: id,
                            run,
                            exit: Exit::Unknown,
                            detail: None,
                        });
                    });
                }
                None => {
                    tracing::warn!(task_id = %id, pid = ?record.pid, "task exited while Pacer was not running");
                    if let Some(name) = &record.docker_name {
                        docker::remove(&self.settings.docker_bin, name);
                    }
                    let message = "Task exited while Pacer was not running".to_string();
                    let status = self.status(&id, TaskState::Failed, Some(message));
                    self.tasks.insert(
                        id,
                        Task {
                            run,
                            spec: record.spec,
                            pid: None,
                            docker_name: record.docker_name,
                            status,
                            kill_grace: None,
                            adopted: true,
                            unreported: true,
                            checks: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    fn on_launch(&mut self, offer: OfferId, specs: Vec<LaunchSpec>) {
        if specs.is_empty() {
            self.on_decline(offer, EMPTY_LAUNCH_REFUSE);
            return;
        }
        if !self.ledger.take_offer(&offer) {
            tracing::warn!(offer_id = %offer.0, tasks = specs.len(), "launch on an offer that is not outstanding");
            for spec in specs {
                let message = format!(
                    "Offer {} is not outstanding on agent {} (already used, declined, or from an earlier run)",
                    offer.0, self.settings.agent_id.0
                );
                self.emit(self.status(&spec.task_id, TaskState::Dropped, Some(message)));
            }
            return;
        }
        for spec in specs {
            let id = spec.task_id.clone();
            if self
                .tasks
                .get(&id)
                .is_some_and(|t| !t.status.state.is_terminal())
            {
                let message = format!("Task id {id} is already in use on this agent");
                tracing::warn!(task_id = %id, "launch of a task id that is already running");
                self.emit(self.status(&id, TaskState::Error, Some(message)));
                continue;
            }
            if let Err(why) = self.ledger.reserve(&spec) {
                tracing::warn!(task_id = %id, reason = %why, "cannot launch task");
                self.emit(self.status(&id, TaskState::Error, Some(why)));
                continue;
            }
            let run = self.new_run();
            let status = self.status(&id, TaskState::Starting, None);
            tracing::info!(
                task_id = %id,
                app_id = %spec.app_id,
                cpus = spec.cpus,
                mem_mb = spec.mem_mb,
                ports = ?spec.host_ports,
                docker_image = spec.docker.as_ref().map(|d| d.image.as_str()),
                "launching task"
            );
            if !spec.fetch.is_empty() {
                tracing::warn!(task_id = %id, uris = ?spec.fetch, "the local agent does not fetch URIs; starting without them");
            }
            self.emit(status.clone());
            let docker_name = spec.docker.as_ref().map(|_| docker::container_name(&id));
            self.tasks.insert(
                id.clone(),
                Task {
                    run,
                    spec: spec.clone(),
                    pid: None,
                    docker_name,
                    status,
                    kill_grace: None,
                    adopted: false,
                    unreported: false,
                    checks: Vec::new(),
                },
            );
            let (settings, probe, tx) =
                (self.settings.clone(), self.probe.clone(), self.tx.clone());
            tokio::spawn(launch_and_wait(settings, probe, tx, spec, run));
        }
        self.offer_if_due();
    }

    fn on_decline(&mut self, offer: OfferId, refuse: Duration) {
        match self.ledger.decline(&offer) {
            Some(generation) => {
                self.after(refuse.max(MIN_REFUSE), Msg::RefuseElapsed { generation })
            }
            None => {
                tracing::debug!(offer_id = %offer.0, "decline of an offer that is not outstanding")
            }
        }
    }

    fn on_started(&mut self, id: TaskId, run: u64, result: Result<u32, String>) {
        let Some(task) = self.tasks.get_mut(&id).filter(|t| t.run == run) else {
            return;
        };
        let killed = task.kill_grace.is_some();
        match result {
            Ok(pid) => {
                task.pid = Some(pid);
                tracing::info!(task_id = %id, pid, "task process started");
                if killed {
                    // Killed while starting: it never counts as running.
                    self.terminate(&id);
                } else {
                    let running = self.status(&id, TaskState::Running, None);
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.status = running.clone();
                    }
                    self.emit(running);
                    self.start_checks(&id);
                }
            }
            Err(why) => {
                let state = if killed {
                    TaskState::Killed
                } else {
                    TaskState::Failed
                };
                tracing::warn!(task_id = %id, reason = %why, "task failed to start");
                self.finish(&id, state, why);
            }
        }
    }

    /// Starts the agent-side health checks of a task that is now running.
    fn start_checks(&mut self, id: &TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        if task.spec.health_checks.is_empty() {
            return;
        }
        let sandbox = self.settings.sandbox_of(id);
        let mut env: BTreeMap<String, String> = process::host_env(&task.spec, &sandbox, None)
            .into_iter()
            .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
            .collect();
        let mut checks = task.spec.health_checks.clone();
        if let Some(name) = &task.docker_name {
            // Command checks run inside the container, as Mesos runs them.
            for c in &mut checks {
                if let AgentCheckKind::Command(cmd) = &mut c.kind {
                    *cmd = docker::exec_shell(&self.settings.docker_bin, name, cmd);
                }
            }
            env.retain(|k, _| k == "PATH");
        }
        let checked = CheckedTask {
            // Ports of local tasks are reached on loopback, as Mesos's checks reach them.
            host: "127.0.0.1".into(),
            env,
            cwd: Some(sandbox),
        };
        let (tx, task_id, run) = (self.tx.clone(), id.clone(), task.run);
        let sink = Arc::new(move |verdict: Verdict| {
            let _ = tx.send(Msg::Health {
                task: task_id.clone(),
                run,
                verdict,
            });
        });
        let handles = pacer_health::agent::spawn(&self.check_kinds, &checks, checked, sink);
        if let Some(t) = self.tasks.get_mut(id) {
            t.checks = handles;
        }
    }

    /// Reports a check result with the task's status and kills the task when its checks say so.
    fn on_health(&mut self, id: TaskId, run: u64, verdict: Verdict) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if task.run != run || task.status.state != TaskState::Running || task.kill_grace.is_some() {
            return;
        }
        let mut status = self.status(&id, TaskState::Running, verdict.message.clone());
        status.healthy = Some(verdict.healthy);
        self.emit(status);
        if verdict.kill {
            tracing::warn!(task_id = %id, reason = verdict.message.as_deref().unwrap_or(""), "killing task after failed health checks");
            self.on_kill(KillRequest {
                task_id: id,
                agent_id: None,
                grace: None,
            });
        }
    }

    fn on_kill(&mut self, req: KillRequest) {
        let id = req.task_id.clone();
        let Some(task) = self.tasks.get_mut(&id) else {
            tracing::info!(task_id = %id, "kill of a task the agent does not know");
            let message = "Task is not known to the agent".to_string();
            self.emit(self.status(&id, TaskState::Killed, Some(message)));
            return;
        };
        if task.status.state.is_terminal() {
            let status = task.status.clone();
            self.emit(status);
            self.mark_reported(&id);
            return;
        }
        let grace = req
            .grace
            .or(task.spec.kill_grace)
            .unwrap_or(self.settings.default_kill_grace);
        let first = task.kill_grace.is_none();
        task.kill_grace = Some(match task.kill_grace {
            Some(earlier) => earlier.min(grace),
            None => grace,
        });
        let has_pid = task.pid.is_some();
        for h in task.checks.drain(..) {
            h.abort();
        }
        tracing::info!(task_id = %id, grace_ms = grace.as_millis() as u64, "killing task");
        if first {
            let killing = self.status(&id, TaskState::Killing, None);
            if let Some(t) = self.tasks.get_mut(&id) {
                t.status = killing.clone();
            }
            self.emit(killing);
        }
        if has_pid {
            if first {
                self.terminate(&id);
            } else {
                // A repeated kill may shorten the deadline; the earlier timer stays harmless.
                let run = self.tasks[&id].run;
                self.after(grace, Msg::GraceElapsed { task: id, run });
            }
        }
        // Without a pid yet, `on_started` terminates the task as soon as it exists.
    }

    /// Asks the task to stop (SIGTERM to its process group, or `docker stop`) and arms the
    /// SIGKILL deadline.
    fn terminate(&mut self, id: &TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let (Some(pid), Some(grace)) = (task.pid, task.kill_grace) else {
            return;
        };
        let run = task.run;
        let deadline = match &task.docker_name {
            Some(name) => {
                docker::stop(&self.settings.docker_bin, name, grace);
                grace + DOCKER_STOP_MARGIN
            }
            None => {
                process::signal_group(pid, Signal::SIGTERM);
                grace
            }
        };
        if deadline.is_zero() {
            self.hard_kill(id);
        } else {
            self.after(
                deadline,
                Msg::GraceElapsed {
                    task: id.clone(),
                    run,
                },
            );
        }
    }

    fn hard_kill(&self, id: &TaskId) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let Some(pid) = task.pid else { return };
        process::signal_group(pid, Signal::SIGKILL);
        if let Some(name) = &task.docker_name {
            docker::remove(&self.settings.docker_bin, name);
        }
    }

    fn on_grace_elapsed(&mut self, id: TaskId, run: u64) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if task.run != run || task.status.state.is_terminal() {
            return;
        }
        tracing::warn!(task_id = %id, pid = ?task.pid, "task did not stop within its grace period; sending SIGKILL");
        self.hard_kill(&id);
    }

    fn on_exited(&mut self, id: TaskId, run: u64, exit: Exit, detail: Option<String>) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        if task.run != run || task.status.state.is_terminal() {
            return;
        }
        // Whatever the leader left behind in its group goes with it, as a container would.
        if let Some(pid) = task.pid {
            process::signal_group(pid, Signal::SIGKILL);
        }
        if let Some(name) = &task.docker_name {
            docker::remove(&self.settings.docker_bin, name);
        }
        let (state, message) = exit.outcome(task.kill_grace.is_some(), detail.as_deref());
        self.finish(&id, state, message);
    }

    /// Records and reports a terminal state, frees the task's resources, and forgets its record.
    fn finish(&mut self, id: &TaskId, state: TaskState, message: String) {
        let status = self.status(id, state, Some(message.clone()));
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        task.status = status.clone();
        for h in task.checks.drain(..) {
            h.abort();
        }
        let (run, adopted) = (task.run, task.adopted);
        if state == TaskState::Failed {
            tracing::warn!(task_id = %id, state = state.mesos_name(), message = %message, adopted, "task ended");
        } else {
            tracing::info!(task_id = %id, state = state.mesos_name(), message = %message, adopted, "task ended");
        }
        self.emit(status);
        self.forget_record(id);
        self.ledger.release(id);
        self.retire(id.clone(), run);
        self.offer_if_due();
    }

    fn forget_record(&self, id: &TaskId) {
        let (dir, id) = (self.settings.tasks_dir(), id.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = adopt::remove_record(&dir, &id) {
                tracing::warn!(task_id = %id, error = %e, "cannot remove task record");
            }
        });
    }

    /// Keeps ended tasks around for a while, so reconciliation and repeated kills can answer
    /// with their real terminal state.
    fn retire(&mut self, id: TaskId, run: u64) {
        self.ended.push_back((id, run));
        while self.ended.len() > RETAIN_ENDED {
            let Some((old, old_run)) = self.ended.pop_front() else {
                break;
            };
            let drop = self
                .tasks
                .get(&old)
                .is_some_and(|t| t.run == old_run && t.status.state.is_terminal() && !t.unreported);
            if drop {
                self.tasks.remove(&old);
            }
        }
    }

    /// A dead-at-start task whose terminal status has now been sent: its record can go.
    fn mark_reported(&mut self, id: &TaskId) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if !task.unreported {
            return;
        }
        task.unreported = false;
        let run = task.run;
        self.forget_record(id);
        self.retire(id.clone(), run);
    }

    fn on_reconcile(&mut self, ids: Vec<TaskId>) {
        let mut sent = BTreeSet::new();
        if ids.is_empty() {
            for (id, t) in &self.tasks {
                if !t.status.state.is_terminal() || t.unreported {
                    self.emit(t.status.clone());
                    sent.insert(id.clone());
                }
            }
        } else {
            for id in ids {
                match self.tasks.get(&id) {
                    Some(t) => self.emit(t.status.clone()),
                    None => {
                        let message = "Task is unknown to the local agent".to_string();
                        self.emit(self.status(&id, TaskState::Gone, Some(message)));
                    }
                }
                sent.insert(id);
            }
        }
        let unreported: Vec<TaskId> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.unreported)
            .map(|(id, _)| id.clone())
            .collect();
        let first = !self.reconciled;
        self.reconciled = true;
        for id in unreported {
            if sent.contains(&id) {
                self.mark_reported(&id);
            } else if first {
                self.emit(self.tasks[&id].status.clone());
                self.mark_reported(&id);
            }
        }
    }
}

/// Starts one task and reports to the supervisor when it has started and when it has ended.
async fn launch_and_wait(
    settings: Arc<Settings>,
    probe: Arc<DockerProbe>,
    tx: UnboundedSender<Msg>,
    spec: LaunchSpec,
    run: u64,
) {
    let task = spec.task_id.clone();
    let mut started = match process::start(&settings, &probe, &spec).await {
        Ok(s) => s,
        Err(why) => {
            let _ = tx.send(Msg::Started {
                task,
                run,
                result: Err(why),
            });
            return;
        }
    };
    let _ = tx.send(Msg::Started {
        task: task.clone(),
        run,
        result: Ok(started.pid),
    });
    // Reap the child even if the supervisor is gone, so it does not linger as a zombie.
    let exit = match started.child.wait().await {
        Ok(status) => Exit::of(status),
        Err(e) => Exit::WaitFailed(e.to_string()),
    };
    let detail = if spec.docker.is_some() && process::is_docker_cli_failure(&exit) {
        let stderr = settings.sandbox_of(&task).join("stderr");
        tokio::task::spawn_blocking(move || process::last_line(&stderr))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let _ = tx.send(Msg::Exited {
        task,
        run,
        exit,
        detail,
    });
}
