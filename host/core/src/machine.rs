//! The scheduler state machine. Inputs: API commands, offers, task status updates, the passage of
//! time. Outputs: effects (writes, launches, kills, declines, reconciliation) queued for the shell,
//! which executes them in order — a `Persist` always precedes the launches that depend on it.

use crate::app::{AppDefinition, EnvValue, NetworkMode};
use crate::cluster::*;
use crate::deploy::{AppTarget, Change, Mode, RootBase, RootDelta, ROOT_BASE_KEY};
use crate::events::Event;
use crate::group_patch::GroupPatch;
use crate::id::{IdSource, InstanceId, PathId, TaskId};
use crate::instance::{AgentInfo, Goal, Instance, Task, TaskFailure};
use crate::normalize::{AppPatch, NormalizeContext};
use crate::persist::{keys, StoreOp};
use crate::placement::{match_offer, Accepted, RoleDefault};
use crate::state::{Delay, Deployment, DeploymentAction, Group, State};
use crate::time::Timestamp;
use crate::validate::{validate_app, ValidationContext};
use crate::violation::{num, Violation};
use imbl::OrdSet;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Core settings, taken from flags by the daemon.
#[derive(Clone, Debug)]
pub struct Config {
    pub default_role: String,
    pub features: BTreeSet<String>,
    pub local_port_min: i64,
    pub local_port_max: i64,
    pub max_instances_per_offer: usize,
    pub decline_offer_duration: Duration,
    pub max_versions: usize,
    pub env_vars_prefix: Option<String>,
    /// `--max_running_deployments`: more are refused with 403.
    pub max_running_deployments: usize,
    /// `--task_launch_timeout`: a task not RUNNING this long after staging is killed.
    pub task_launch_timeout: Duration,
    /// Pacer's deployment failure policy (off by default, as in Marathon).
    pub deployment_progress_deadline: Option<Duration>,
    pub deployment_rollback_on_failure: bool,
    /// `--max_apps`: a change that would exceed it is refused with 422.
    pub max_apps: Option<usize>,
    /// What plugins add: constraint operators and health-check types.
    pub extensions: crate::plugins::Extensions,
    /// `--launch_tokens`: launches allowed until the next refill (`refill_launch_tokens`); each
    /// task reaching RUNNING gives one back. `None`: unlimited (the local backend).
    pub launch_tokens: Option<u32>,
    /// `--accepted_resource_roles_default_behavior`: the pools apps without
    /// `acceptedResourceRoles` draw from.
    pub accepted_roles_default: RoleDefault,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_role: "*".into(),
            features: BTreeSet::new(),
            local_port_min: 10000,
            local_port_max: 20000,
            max_instances_per_offer: 5,
            decline_offer_duration: Duration::from_secs(120),
            max_versions: 50,
            env_vars_prefix: None,
            max_running_deployments: 100,
            task_launch_timeout: Duration::from_secs(300),
            deployment_progress_deadline: None,
            deployment_rollback_on_failure: false,
            max_apps: None,
            extensions: Default::default(),
            launch_tokens: None,
            accepted_roles_default: RoleDefault::Any,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Make these writes durable, atomically, before executing anything queued after them.
    Persist(Vec<StoreOp>),
    Launch {
        offer: OfferId,
        tasks: Vec<LaunchSpec>,
    },
    Decline {
        offer: OfferId,
        refuse: Duration,
    },
    Kill(KillRequest),
    /// Ask the backend for the status of these tasks; an empty list means "all you know".
    Reconcile(Vec<TaskId>),
    /// Something happened that observers (logs, the event bus) should hear about.
    Event(Event),
    /// Start or stop scheduler-side health and readiness probes of a task.
    Watch(crate::health::Watch),
}

/// A command from the API. Ids are already resolved against the root. `force` overrides
/// deployment locks by cancelling the deployments that hold them.
#[derive(Clone, Debug)]
pub enum Command {
    /// `POST /v2/apps`.
    CreateApp {
        id: PathId,
        patch: Box<AppPatch>,
        force: bool,
    },
    /// `PUT`/`PATCH` of one or many apps. `create`: missing apps may be created.
    UpdateApps {
        updates: Vec<(PathId, AppPatch)>,
        partial: bool,
        create: bool,
        force: bool,
    },
    /// `PUT /v2/apps/{id}` with only `{"version": ..}`.
    RollbackApp {
        id: PathId,
        version: Timestamp,
        force: bool,
    },
    DeleteApp {
        id: PathId,
        force: bool,
    },
    RestartApp {
        id: PathId,
        force: bool,
    },
    /// Kill tasks. `scale`: also lower `instances`; `wipe`: expunge instead of relaunching.
    KillTasks {
        tasks: Vec<TaskId>,
        scale: bool,
        wipe: bool,
        force: bool,
    },
    /// `POST /v2/groups[/{id}]`: `id` is the path the body's id is relative to.
    CreateGroup {
        id: PathId,
        patch: Box<GroupPatch>,
        force: bool,
    },
    /// `PUT /v2/groups[/{id}]`: structural update, `scaleBy`, or rollback by `version`.
    UpdateGroup {
        id: PathId,
        patch: Box<GroupPatch>,
        force: bool,
        dry_run: bool,
    },
    DeleteGroup {
        id: PathId,
        force: bool,
    },
    /// `DELETE /v2/deployments/{id}`: revert (`force=false`) or just stop (`force=true`).
    CancelDeployment {
        id: String,
        force: bool,
    },
    /// `DELETE /v2/queue/{id}/delay`.
    ResetDelay {
        id: PathId,
    },
    /// `POST /v2/eventSubscriptions?callbackUrl=` (idempotent).
    Subscribe {
        url: String,
    },
    /// `DELETE /v2/eventSubscriptions?callbackUrl=` (idempotent).
    Unsubscribe {
        url: String,
    },
}

impl Command {
    /// A short name for logs and spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateApp { .. } => "create_app",
            Command::UpdateApps { .. } => "update_apps",
            Command::RollbackApp { .. } => "rollback_app",
            Command::DeleteApp { .. } => "delete_app",
            Command::RestartApp { .. } => "restart_app",
            Command::KillTasks { .. } => "kill_tasks",
            Command::CreateGroup { .. } => "create_group",
            Command::UpdateGroup { .. } => "update_group",
            Command::DeleteGroup { .. } => "delete_group",
            Command::CancelDeployment { .. } => "cancel_deployment",
            Command::ResetDelay { .. } => "reset_delay",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
        }
    }

    /// The group a change of the root is about (Marathon's `groupId` in `group_change_success`
    /// and `group_change_failed`); `None` for commands that do not change the root.
    pub fn changed_group(&self) -> Option<PathId> {
        match self {
            Command::CreateApp { id, .. }
            | Command::RollbackApp { id, .. }
            | Command::DeleteApp { id, .. }
            | Command::RestartApp { id, .. } => Some(id.parent()),
            Command::UpdateApps { updates, .. } => Some(match updates.as_slice() {
                [(id, _)] => id.parent(),
                _ => PathId::root(),
            }),
            Command::CreateGroup { id, .. }
            | Command::UpdateGroup { id, .. }
            | Command::DeleteGroup { id, .. } => Some(id.clone()),
            Command::KillTasks { scale: true, .. } => Some(PathId::root()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A change was accepted; `created` is true when an app was created by it.
    Deployment {
        id: String,
        version: Timestamp,
        created: bool,
    },
    /// Tasks were killed without scaling; the instances as they were before the kill.
    Killed(Vec<Arc<Instance>>),
    /// `dryRun`: the steps the change would take; nothing was applied.
    Plan(Vec<Vec<DeploymentAction>>),
    /// Done; nothing to report.
    Done,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("Object is not valid")]
    Invalid(Vec<Violation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    /// Apps of the change belong to running deployments (their ids).
    #[error("App is locked by one or more deployments.")]
    Locked(Vec<String>),
    /// `--max_running_deployments` reached.
    #[error("{0}")]
    Forbidden(String),
}

/// Everything a command can change, so that a failed write (or a dry run) leaves no trace.
struct Undo {
    state: State,
    progress: imbl::OrdMap<String, Timestamp>,
    root_deltas: imbl::OrdSet<Timestamp>,
}

pub struct Scheduler {
    pub(crate) state: State,
    pub(crate) config: Config,
    pub(crate) ids: IdSource,
    effects: VecDeque<Effect>,
    /// Versions must be unique per app; a change in the same millisecond moves one ahead.
    last_version: Timestamp,
    /// What the command in progress may change, restored if its write fails.
    undo: Option<Undo>,
    /// Effects of the step in progress that must wait for its writes.
    pub(crate) pending: Vec<Effect>,
    /// Instances waiting for a launch (goal Running, no live task), across all apps.
    launch_queue: BTreeSet<InstanceId>,
    /// Instances that entered the launch queue since start: new work the shell must ask offers
    /// for, even when it already wanted offers (a decline may have filtered them).
    queued_total: u64,
    /// Apps converged in the step in progress; their deployments may have advanced.
    pub(crate) touched: BTreeSet<PathId>,
    /// Where the search for the next free dynamic service port starts.
    next_service_port: i64,
    /// When each running deployment with a progress deadline last made progress (a step began,
    /// an instance came up). Deployments without a deadline are not tracked.
    /// (Persistent maps: the undo copy taken for every command must cost O(1).)
    pub(crate) progress: imbl::OrdMap<String, Timestamp>,
    /// Root-version deltas in the store (after the stored base).
    pub(crate) root_deltas: imbl::OrdSet<Timestamp>,
    /// Tasks launched but not yet RUNNING, by staging time (for `--task_launch_timeout`).
    launching: BTreeSet<(Timestamp, InstanceId)>,
    /// Instances whose task is unreachable, by the time it became so (for the apps'
    /// `unreachableStrategy`).
    unreachable: BTreeSet<(Timestamp, InstanceId)>,
    /// Launches left before the next refill (`Config::launch_tokens`).
    launch_tokens: Option<u64>,
    /// Apps of deployments cancelled in the step in progress, to converge at its end.
    pub(crate) freed: BTreeSet<PathId>,
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("core records always serialise")
}

pub(crate) fn put<T: Serialize>(prefix: &str, id: &str, v: &T) -> StoreOp {
    StoreOp::Put {
        key: format!("{prefix}{id}"),
        value: to_json(v),
    }
}

pub(crate) fn del(prefix: &str, id: &str) -> StoreOp {
    StoreOp::Delete {
        key: format!("{prefix}{id}"),
    }
}

/// Where the HTTP callback subscribers are stored.
pub(crate) const EVENT_SUBSCRIBERS_KEY: &str = "meta/event-subscribers";

fn version_key(app: &PathId, v: Timestamp) -> String {
    format!("{app}@{v}")
}

/// Task states that add launch backoff (Killed, e.g. by a health check, does not).
fn adds_backoff(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::Failed
            | TaskState::Error
            | TaskState::Finished
            | TaskState::Gone
            | TaskState::Dropped
    )
}

/// Terminal states recorded as the app's `lastTaskFailure`.
fn is_failure(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::Failed
            | TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::GoneByOperator
            | TaskState::Unknown
    )
}

impl Scheduler {
    pub fn new(config: Config, seed: u64) -> Self {
        Scheduler {
            state: State::default(),
            ids: IdSource::new(seed),
            effects: VecDeque::new(),
            last_version: Timestamp::EPOCH,
            undo: None,
            pending: Vec::new(),
            launch_queue: BTreeSet::new(),
            queued_total: 0,
            touched: BTreeSet::new(),
            next_service_port: 0,
            progress: imbl::OrdMap::new(),
            root_deltas: imbl::OrdSet::new(),
            launching: BTreeSet::new(),
            unreachable: BTreeSet::new(),
            launch_tokens: config_tokens(&config),
            freed: BTreeSet::new(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A consistent, cheap copy of the whole state for readers.
    pub fn snapshot(&self) -> State {
        self.state.clone()
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    // ---------------------------------------------------------------------------------------
    // Recovery

    /// Rebuilds the state from stored records (`(key, value)` pairs from every category) and
    /// asks the backend to reconcile every task it might still run.
    pub fn restore(&mut self, entries: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        fn parse<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, String> {
            serde_json::from_slice(v).map_err(|e| format!("stored record {key} is unreadable: {e}"))
        }
        let mut s = State::default();
        let mut root_base: Option<RootBase> = None;
        let mut root_deltas: Vec<RootDelta> = Vec::new();
        for (key, value) in &entries {
            if key.starts_with(keys::APP_VERSION) {
                let app: AppDefinition = parse(key, value)?;
                let mut versions = s.versions.get(&app.id).cloned().unwrap_or_default();
                versions.insert(app.version, Arc::new(app.clone()));
                s.versions.insert(app.id.clone(), versions);
            } else if key.starts_with(keys::APP) {
                let app: AppDefinition = parse(key, value)?;
                self.last_version = self.last_version.max(app.version);
                for p in app.service_ports() {
                    if p != 0 {
                        s.service_ports.insert(p, app.id.clone());
                    }
                }
                s.apps.insert(app.id.clone(), Arc::new(app));
            } else if key.starts_with(keys::GROUP) {
                let g: Group = parse(key, value)?;
                s.groups.insert(g.id.clone(), Arc::new(g));
            } else if key.starts_with(keys::INSTANCE) {
                let i: Instance = parse(key, value)?;
                let mut set = s.by_app.get(&i.app_id).cloned().unwrap_or_default();
                set.insert(i.id.clone());
                s.by_app.insert(i.app_id.clone(), set);
                s.instances.insert(i.id.clone(), Arc::new(i));
            } else if key.starts_with(keys::DEPLOYMENT) {
                let d: Deployment = parse(key, value)?;
                s.add_deployment(d);
            } else if key.starts_with(keys::TASK_FAILURE) {
                let f: TaskFailure = parse(key, value)?;
                s.task_failures.insert(f.app_id.clone(), Arc::new(f));
            } else if key.starts_with(keys::ROOT_VERSION) {
                root_deltas.push(parse(key, value)?);
            } else if key == ROOT_BASE_KEY {
                root_base = Some(parse(key, value)?);
            } else if key == EVENT_SUBSCRIBERS_KEY {
                let urls: Vec<String> = parse(key, value)?;
                s.event_subscribers = urls.into_iter().collect();
            }
        }
        s.orphans = s
            .versions
            .keys()
            .filter(|id| !s.apps.contains_key(*id))
            .cloned()
            .collect();
        self.state = s;
        self.restore_root_versions(root_base, root_deltas);
        self.rebuild_indexes();
        // Explicit reconciliation for what we know, implicit for what the backend knows.
        self.reconcile_known();
        self.effects.push_back(Effect::Reconcile(Vec::new()));
        Ok(())
    }

    /// At start-up, after recovery: converges every app once and asks for every running task to
    /// be probed again (health results are not stored). Not meant to run periodically.
    pub fn converge_all(&mut self, now: Timestamp) {
        let mut ops = Vec::new();
        let ids: Vec<PathId> = self
            .state
            .apps
            .keys()
            .cloned()
            .chain(self.state.by_app.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Progress deadlines of deployments restored from the store count from now.
        for d in self.state.deployments.values() {
            if d.policy.progress_deadline_seconds.is_some() {
                self.progress.entry(d.id.clone()).or_insert(now);
            }
        }
        self.watch_all();
        // A kill is stored before it is sent; a crash in between must not leave the task alive
        // with nobody to kill it (a rollout would wait for it forever). Kills are idempotent.
        let stored_kills: Vec<KillRequest> = self
            .state
            .instances
            .values()
            .filter(|i| i.is_active())
            .filter_map(|i| {
                let t = i.task.as_ref().filter(|t| t.kill_sent)?;
                Some(KillRequest {
                    task_id: t.task_id.clone(),
                    agent_id: i.agent.as_ref().map(|a| a.agent_id.clone()),
                    grace: self.grace_of(&i.app_id),
                })
            })
            .collect();
        self.pending
            .extend(stored_kills.into_iter().map(Effect::Kill));
        for id in ids {
            self.converge(&id, now, &mut ops);
        }
        self.finish_deployments(now, &mut ops);
        self.flush(ops);
    }

    // ---------------------------------------------------------------------------------------
    // Commands

    /// Applies a command. Its writes are queued as one `Persist` effect ahead of everything it
    /// triggers; if the shell cannot make them durable it calls [`Scheduler::rollback`].
    pub fn command(&mut self, now: Timestamp, cmd: Command) -> Result<Outcome, CommandError> {
        self.undo = Some(Undo {
            state: self.state.clone(),
            progress: self.progress.clone(),
            root_deltas: self.root_deltas.clone(),
        });
        let queued = self.effects.len();
        let result = self.command_inner(now, cmd);
        if result.is_err() {
            self.rollback_to(queued);
        }
        result
    }

    /// Forgets the last command: its writes failed, so nothing of it may stay.
    pub fn rollback(&mut self) {
        self.rollback_to(0);
    }

    fn rollback_to(&mut self, queued: usize) {
        if let Some(prev) = self.undo.take() {
            self.state = prev.state;
            self.progress = prev.progress;
            self.root_deltas = prev.root_deltas;
            self.rebuild_indexes();
        }
        self.touched.clear();
        self.freed.clear();
        self.pending.clear();
        self.effects.truncate(queued);
    }

    /// Recomputes the launch queue and the launch-timeout index from the instances.
    fn rebuild_indexes(&mut self) {
        self.launch_queue = self
            .state
            .instances
            .values()
            .filter(|i| i.is_scheduled())
            .map(|i| i.id.clone())
            .collect();
        self.launching = self
            .state
            .instances
            .values()
            .filter_map(|i| launching_key(i))
            .collect();
        self.unreachable = self
            .state
            .instances
            .values()
            .filter_map(|i| unreachable_key(i))
            .collect();
    }

    fn existing_app(&self, id: &PathId) -> Result<Arc<AppDefinition>, CommandError> {
        self.state
            .apps
            .get(id)
            .cloned()
            .ok_or_else(|| CommandError::NotFound(format!("App '{id}' does not exist")))
    }

    pub(crate) fn next_version(&mut self, now: Timestamp) -> Timestamp {
        let v = if now > self.last_version {
            now
        } else {
            Timestamp::from_millis(self.last_version.as_millis() + 1)
        };
        self.last_version = v;
        v
    }

    fn command_inner(&mut self, now: Timestamp, cmd: Command) -> Result<Outcome, CommandError> {
        let mut ops = Vec::new();
        let outcome = match cmd {
            Command::CreateApp { id, patch, force } => {
                if self.state.apps.contains_key(&id) {
                    return Err(CommandError::AlreadyExists(format!(
                        "An app with id [{id}] already exists."
                    )));
                }
                let version = self.next_version(now);
                let app = self.build_app(&id, &patch, None, version)?;
                let mut change = Change::default();
                change.apps.insert(id, Some(AppTarget::new(app)));
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::UpdateApps {
                updates,
                partial,
                create,
                force,
            } => {
                let version = self.next_version(now);
                let mut change = Change::default();
                for (id, patch) in &updates {
                    let existing = self.state.apps.get(id).cloned();
                    if existing.is_none() && !create {
                        return Err(CommandError::NotFound(format!("App '{id}' does not exist")));
                    }
                    let base = if partial { existing.as_deref() } else { None };
                    let mut app = self.build_app(id, patch, base, version)?;
                    if let Some(old) = &existing {
                        // A full replacement keeps the app's dynamic service ports where it asks for 0.
                        self.keep_service_ports(old, &mut app);
                    }
                    change.apps.insert(id.clone(), Some(AppTarget::new(app)));
                }
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::RollbackApp {
                id,
                version: target,
                force,
            } => {
                self.existing_app(&id)?;
                let stored = self
                    .state
                    .versions
                    .get(&id)
                    .and_then(|v| v.get(&target))
                    .cloned()
                    .ok_or_else(|| {
                        CommandError::NotFound(format!(
                            "App '{id}' does not exist in version {target}"
                        ))
                    })?;
                let version = self.next_version(now);
                let mut change = Change::default();
                change.apps.insert(
                    id,
                    Some(AppTarget {
                        app: (*stored).clone(),
                        restart: false,
                        keep_config: Some(stored.version_info.last_config_change_at),
                    }),
                );
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::DeleteApp { id, force } => {
                self.existing_app(&id)?;
                let version = self.next_version(now);
                let mut change = Change::default();
                change.apps.insert(id, None);
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::RestartApp { id, force } => {
                let existing = self.existing_app(&id)?;
                let version = self.next_version(now);
                // Pacer follows Marathon 1.11 here: a restart is a config change, so every
                // instance is replaced and any backoff starts fresh.
                let mut change = Change::default();
                change.apps.insert(
                    id,
                    Some(AppTarget {
                        app: (*existing).clone(),
                        restart: true,
                        keep_config: None,
                    }),
                );
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::KillTasks {
                tasks,
                scale,
                wipe,
                force,
            } => self.kill_tasks(now, tasks, scale, wipe, force, &mut ops)?,
            Command::CreateGroup { id, patch, force } => {
                let version = self.next_version(now);
                let change = self.create_group_change(&id, &patch, version)?;
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::UpdateGroup {
                id,
                patch,
                force,
                dry_run,
            } => {
                let version = self.next_version(now);
                let change = self.update_group_change(&id, &patch, version)?;
                if dry_run {
                    let planned = self.deploy(now, version, change, true, false, &mut ops)?;
                    // Nothing of a dry run may stay: undo it as a failed write would be.
                    self.rollback_to(self.effects.len());
                    return Ok(Outcome::Plan(planned.steps));
                }
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::DeleteGroup { id, force } => {
                let version = self.next_version(now);
                let change = self.delete_group_change(&id)?;
                self.deploy_outcome(now, version, change, force, &mut ops)?
            }
            Command::CancelDeployment { id, force } => {
                let not_found =
                    || CommandError::NotFound(format!("DeploymentPlan {id} does not exist"));
                let dep = self
                    .state
                    .deployments
                    .get(&id)
                    .cloned()
                    .ok_or_else(not_found)?;
                if force {
                    self.cancel(&id, &mut ops);
                    self.pending.push(Effect::Event(Event::DeploymentFailed {
                        plan: dep,
                        reason: "The deployment was cancelled.".into(),
                    }));
                    Outcome::Done
                } else {
                    let version = self.next_version(now);
                    // The reverted deployment ends as failed; the revert replaces it (forced).
                    self.pending.push(Effect::Event(Event::DeploymentFailed {
                        plan: dep.clone(),
                        reason: "The deployment was rolled back.".into(),
                    }));
                    let planned = self.revert(now, version, &dep, &mut ops)?;
                    Outcome::Deployment {
                        id: planned.id,
                        version,
                        created: false,
                    }
                }
            }
            Command::ResetDelay { id } => {
                let queued = self.state.instances_of(&id).any(|i| i.is_scheduled());
                if !queued {
                    return Err(CommandError::NotFound(format!(
                        "Application {id} not found in tasks queue."
                    )));
                }
                self.state.delays.remove(&id);
                Outcome::Done
            }
            Command::Subscribe { url } => {
                if !self.state.event_subscribers.contains(&url) {
                    self.state.event_subscribers.insert(url);
                    ops.push(self.subscribers_record());
                }
                Outcome::Done
            }
            Command::Unsubscribe { url } => {
                if self.state.event_subscribers.remove(&url).is_some() {
                    ops.push(self.subscribers_record());
                }
                Outcome::Done
            }
        };
        self.converge_freed(now, &mut ops);
        self.finish_deployments(now, &mut ops);
        self.flush(ops);
        Ok(outcome)
    }

    fn deploy_outcome(
        &mut self,
        now: Timestamp,
        version: Timestamp,
        change: Change,
        force: bool,
        ops: &mut Vec<StoreOp>,
    ) -> Result<Outcome, CommandError> {
        let planned = self.deploy(now, version, change, force, false, ops)?;
        Ok(Outcome::Deployment {
            id: planned.id,
            version,
            created: planned.created,
        })
    }

    fn kill_tasks(
        &mut self,
        now: Timestamp,
        tasks: Vec<TaskId>,
        scale: bool,
        wipe: bool,
        force: bool,
        ops: &mut Vec<StoreOp>,
    ) -> Result<Outcome, CommandError> {
        if scale && wipe {
            return Err(CommandError::BadRequest(
                "You cannot use scale and wipe at the same time.".into(),
            ));
        }
        let mut found = Vec::new();
        for t in &tasks {
            // Any id of the instance (an older incarnation, a pre-1.8 form) addresses its
            // current task, as Marathon's id parsing does.
            let inst = t
                .instance_id()
                .and_then(|iid| self.state.instances.get(&iid).cloned())
                .ok_or_else(|| CommandError::NotFound(format!("Task '{t}' does not exist")))?;
            if !found.iter().any(|i: &Arc<Instance>| i.id == inst.id) {
                found.push(inst);
            }
        }
        if scale {
            let version = self.next_version(now);
            let mut per_app: BTreeMap<PathId, u32> = BTreeMap::new();
            for inst in &found {
                if inst.goal == Goal::Running {
                    *per_app.entry(inst.app_id.clone()).or_default() += 1;
                }
                self.decommission(inst, ops);
            }
            let mut change = Change::default();
            for (app_id, n) in per_app {
                if let Some(existing) = self.state.apps.get(&app_id) {
                    let mut app = (**existing).clone();
                    app.instances = app.instances.saturating_sub(n);
                    change.apps.insert(app_id, Some(AppTarget::new(app)));
                }
            }
            return self.deploy_outcome(now, version, change, force, ops);
        }
        for inst in &found {
            if wipe {
                self.decommission(inst, ops);
            } else if let Some(task) = inst.task.as_ref().filter(|t| !t.state.is_terminal()) {
                let grace = self.grace_of(&inst.app_id);
                let mut i = (**inst).clone();
                if let Some(t) = i.task.as_mut() {
                    t.kill_sent = true;
                }
                self.store_instance(i, ops);
                self.pending.push(Effect::Kill(KillRequest {
                    task_id: task.task_id.clone(),
                    agent_id: inst.agent.as_ref().map(|a| a.agent_id.clone()),
                    grace,
                }));
            }
        }
        for inst in &found {
            self.converge(&inst.app_id, now, ops);
        }
        Ok(Outcome::Killed(found))
    }
}

// -------------------------------------------------------------------------------------------
// App changes

impl Scheduler {
    fn build_app(
        &self,
        id: &PathId,
        patch: &AppPatch,
        base: Option<&AppDefinition>,
        version: Timestamp,
    ) -> Result<AppDefinition, CommandError> {
        let root = PathId::root();
        let ctx = NormalizeContext {
            base: &root,
            default_role: &self.config.default_role,
            now: version,
        };
        let app = patch
            .apply(id.clone(), base, &ctx)
            .map_err(CommandError::Invalid)?;
        let vctx = ValidationContext {
            default_role: &self.config.default_role,
            features: &self.config.features,
            extensions: &self.config.extensions,
        };
        let violations = validate_app(&app, &vctx);
        if !violations.is_empty() {
            return Err(CommandError::Invalid(violations));
        }
        Ok(app)
    }

    /// Where the new definition asks for a dynamic service port (0) at an index the old one had
    /// assigned, keep the old port: a full PUT should not reshuffle load-balancer ports.
    pub(crate) fn keep_service_ports(&self, old: &AppDefinition, app: &mut AppDefinition) {
        let old_ports = old.service_ports();
        if let Some(defs) = app.port_definitions.as_mut() {
            for (i, d) in defs.iter_mut().enumerate() {
                if d.port == 0 {
                    d.port = old_ports.get(i).copied().unwrap_or(0);
                }
            }
        }
        if let Some(ms) = app
            .container
            .as_mut()
            .and_then(|c| c.port_mappings.as_mut())
        {
            for (i, m) in ms.iter_mut().enumerate() {
                if m.service_port == 0 {
                    m.service_port = old_ports.get(i).copied().unwrap_or(0);
                }
            }
        }
    }

    pub(crate) fn allocate_service_ports(
        &mut self,
        app: &mut AppDefinition,
    ) -> Result<(), CommandError> {
        let own: BTreeSet<i64> = app
            .service_ports()
            .into_iter()
            .filter(|p| *p != 0)
            .collect();
        let (min, max) = (self.config.local_port_min, self.config.local_port_max);
        // A cursor that moves round the range keeps allocation O(1) amortised instead of
        // rescanning every port in use for each new app.
        let mut next = self.next_service_port.clamp(min, max);
        let state = &self.state;
        let range = (max - min + 1).max(0);
        let mut take = |taken: &BTreeSet<i64>| -> Option<i64> {
            for _ in 0..range {
                let p = next;
                next = if next >= max { min } else { next + 1 };
                if state.service_ports.get(&p).is_none() && !taken.contains(&p) {
                    return Some(p);
                }
            }
            None
        };
        let mut taken = own;
        let exhausted = || {
            CommandError::Unprocessable(format!(
                "All service ports in the range {min}-{max} are in use"
            ))
        };
        if let Some(defs) = app.port_definitions.as_mut() {
            for d in defs.iter_mut().filter(|d| d.port == 0) {
                d.port = take(&taken).ok_or_else(exhausted)?;
                taken.insert(d.port);
            }
        }
        if let Some(ms) = app
            .container
            .as_mut()
            .and_then(|c| c.port_mappings.as_mut())
        {
            for m in ms.iter_mut().filter(|m| m.service_port == 0) {
                m.service_port = take(&taken).ok_or_else(exhausted)?;
                taken.insert(m.service_port);
            }
        }
        self.next_service_port = next;
        Ok(())
    }

    pub(crate) fn release_service_ports(&mut self, id: &PathId) {
        if let Some(old) = self.state.apps.get(id) {
            for p in old.service_ports() {
                if self.state.service_ports.get(&p) == Some(id) {
                    self.state.service_ports.remove(&p);
                }
            }
        }
    }

    pub(crate) fn store_app(&mut self, app: &AppDefinition, ops: &mut Vec<StoreOp>) {
        ops.push(put(keys::APP, app.id.as_str(), app));
        ops.push(put(
            keys::APP_VERSION,
            &version_key(&app.id, app.version),
            app,
        ));
        let mut versions = self
            .state
            .versions
            .get(&app.id)
            .cloned()
            .unwrap_or_default();
        versions.insert(app.version, Arc::new(app.clone()));
        while versions.len() > self.config.max_versions.max(1) {
            if let Some(oldest) = versions.get_min().map(|(v, _)| *v) {
                versions.remove(&oldest);
                ops.push(del(keys::APP_VERSION, &version_key(&app.id, oldest)));
            }
        }
        self.state.versions.insert(app.id.clone(), versions);
        self.state.orphans.remove(&app.id);
        let checks_changed = self
            .state
            .apps
            .get(&app.id)
            .is_none_or(|old| old.health_checks != app.health_checks);
        if checks_changed {
            for hc in &app.health_checks {
                self.pending.push(Effect::Event(Event::AddHealthCheck {
                    app_id: app.id.clone(),
                    version: app.version,
                    health_check: Box::new(hc.clone()),
                }));
            }
        }
        self.state
            .apps
            .insert(app.id.clone(), Arc::new(app.clone()));
    }

    pub(crate) fn remove_app(&mut self, app: &AppDefinition, ops: &mut Vec<StoreOp>) {
        self.release_service_ports(&app.id);
        ops.push(del(keys::APP, app.id.as_str()));
        // Its versions stay while the root history refers to them (a group rollback may bring
        // the app back); `collect_orphans` drops them after.
        self.state.orphans.insert(app.id.clone());
        if self.state.task_failures.remove(&app.id).is_some() {
            ops.push(del(keys::TASK_FAILURE, app.id.as_str()));
        }
        self.state.delays.remove(&app.id);
        self.state.apps.remove(&app.id);
        if !app.health_checks.is_empty() {
            self.pending.push(Effect::Event(Event::RemoveHealthCheck {
                app_id: app.id.clone(),
            }));
        }
        if !self.state.by_app.contains_key(&app.id) {
            self.pending.push(Effect::Event(Event::AppTerminated {
                app_id: app.id.clone(),
            }));
        }
    }

    /// Deletes the stored versions of removed apps that no retained root version refers to.
    pub(crate) fn collect_orphans(&mut self, ops: &mut Vec<StoreOp>) {
        let gone: Vec<PathId> = self
            .state
            .orphans
            .iter()
            .filter(|id| {
                !self
                    .state
                    .root_versions
                    .values()
                    .any(|r| r.apps.contains_key(*id))
            })
            .cloned()
            .collect();
        for id in gone {
            self.state.orphans.remove(&id);
            if let Some(versions) = self.state.versions.remove(&id) {
                for v in versions.keys() {
                    ops.push(del(keys::APP_VERSION, &version_key(&id, *v)));
                }
            }
        }
    }

    /// The HTTP callback subscribers, as one small record.
    fn subscribers_record(&self) -> StoreOp {
        let urls: Vec<&String> = self.state.event_subscribers.iter().collect();
        StoreOp::Put {
            key: EVENT_SUBSCRIBERS_KEY.to_string(),
            value: to_json(&urls),
        }
    }

    pub(crate) fn grace_of(&self, app: &PathId) -> Option<Duration> {
        self.state
            .apps
            .get(app)
            .and_then(|a| a.task_kill_grace_period_seconds)
            .map(Duration::from_secs)
    }
}

// -------------------------------------------------------------------------------------------
// Instances

impl Scheduler {
    pub(crate) fn store_instance(&mut self, inst: Instance, ops: &mut Vec<StoreOp>) {
        ops.push(put(keys::INSTANCE, inst.id.as_str(), &inst));
        let before = self.state.instances.get(&inst.id).cloned();
        self.index_launching(before.as_deref(), Some(&inst));
        self.track_health(before.as_deref(), Some(&inst));
        if inst.is_scheduled() {
            if self.launch_queue.insert(inst.id.clone()) {
                self.queued_total += 1;
            }
        } else {
            self.launch_queue.remove(&inst.id);
        }
        let mut set = self
            .state
            .by_app
            .get(&inst.app_id)
            .cloned()
            .unwrap_or_default();
        set.insert(inst.id.clone());
        self.state.by_app.insert(inst.app_id.clone(), set);
        self.state.instances.insert(inst.id.clone(), Arc::new(inst));
    }

    fn expunge(&mut self, inst: &Instance, ops: &mut Vec<StoreOp>) {
        ops.push(del(keys::INSTANCE, inst.id.as_str()));
        let before = self.state.instances.get(&inst.id).cloned();
        self.index_launching(before.as_deref(), None);
        self.track_health(before.as_deref(), None);
        self.launch_queue.remove(&inst.id);
        self.state.instances.remove(&inst.id);
        if let Some(set) = self.state.by_app.get(&inst.app_id) {
            let mut set: OrdSet<InstanceId> = set.clone();
            set.remove(&inst.id);
            if set.is_empty() {
                self.state.by_app.remove(&inst.app_id);
                if !self.state.apps.contains_key(&inst.app_id) {
                    // The last instance of a removed app is gone.
                    self.pending.push(Effect::Event(Event::AppTerminated {
                        app_id: inst.app_id.clone(),
                    }));
                }
            } else {
                self.state.by_app.insert(inst.app_id.clone(), set);
            }
        }
    }

    /// Keeps the launch-timeout index in step with an instance's change.
    pub(crate) fn index_launching(&mut self, before: Option<&Instance>, after: Option<&Instance>) {
        if let Some(k) = before.and_then(launching_key) {
            self.launching.remove(&k);
        }
        if let Some(k) = after.and_then(launching_key) {
            self.launching.insert(k);
        }
        if let Some(k) = before.and_then(unreachable_key) {
            self.unreachable.remove(&k);
        }
        if let Some(k) = after.and_then(unreachable_key) {
            self.unreachable.insert(k);
        }
    }

    /// Marathon's `unreachableStrategy`: an instance unreachable for `inactiveAfterSeconds` is
    /// given up (its kill is sent, for when the agent comes back) and replaced; after
    /// `expungeAfterSeconds` its record goes. `disabled` gives up at once.
    pub(crate) fn handle_unreachable(&mut self, now: Timestamp, ops: &mut Vec<StoreOp>) {
        let due: Vec<(Timestamp, InstanceId)> = self
            .unreachable
            .iter()
            .filter(|(since, iid)| {
                self.unreachable_deadline(iid, *since)
                    .is_some_and(|d| d <= now)
            })
            .cloned()
            .collect();
        for (since, iid) in due {
            let Some(inst) = self.state.instances.get(&iid).cloned() else {
                continue;
            };
            let (inactive, expunge) = self.unreachable_timeouts(&inst.app_id);
            if now >= since.plus(expunge) {
                self.expunge(&inst, ops);
                let app_id = inst.app_id.clone();
                self.converge(&app_id, now, ops);
            } else if now >= since.plus(inactive) && inst.goal != Goal::Decommissioned {
                let app_id = inst.app_id.clone();
                self.decommission(&inst, ops);
                self.converge(&app_id, now, ops);
            }
        }
    }

    /// (inactive after, expunge after) for an app's unreachable instances.
    fn unreachable_timeouts(&self, app_id: &PathId) -> (Duration, Duration) {
        use crate::app::UnreachableStrategy;
        match self.state.apps.get(app_id).map(|a| &a.unreachable_strategy) {
            Some(UnreachableStrategy::Enabled(u)) => {
                let secs = |s: i64| Duration::from_secs(s.max(0) as u64);
                let inactive = secs(u.inactive_after_seconds);
                (inactive, secs(u.expunge_after_seconds).max(inactive))
            }
            // Disabled, or the app is gone: give the instance up at once.
            _ => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// When an unreachable instance next changes: given up, then expunged.
    fn unreachable_deadline(&self, iid: &InstanceId, since: Timestamp) -> Option<Timestamp> {
        let inst = self.state.instances.get(iid)?;
        let (inactive, expunge) = self.unreachable_timeouts(&inst.app_id);
        Some(if inst.goal == Goal::Decommissioned {
            since.plus(expunge)
        } else {
            since.plus(inactive)
        })
    }

    /// Kills tasks that did not reach RUNNING within `--task_launch_timeout`; their instances
    /// are relaunched (a kill adds no backoff).
    pub(crate) fn kill_overdue_launches(&mut self, now: Timestamp, ops: &mut Vec<StoreOp>) {
        let timeout = self.config.task_launch_timeout;
        let overdue: Vec<InstanceId> = self
            .launching
            .iter()
            .take_while(|(staged, _)| staged.plus(timeout) <= now)
            .map(|(_, iid)| iid.clone())
            .collect();
        for iid in overdue {
            let Some(inst) = self.state.instances.get(&iid).cloned() else {
                continue;
            };
            let message = format!(
                "Task did not reach TASK_RUNNING within the launch timeout of {} seconds",
                timeout.as_secs()
            );
            self.kill_task(now, &inst, message, None, ops);
        }
    }

    /// Goal Decommissioned: kill the task if it lives, expunge once it is terminal.
    fn decommission(&mut self, inst: &Instance, ops: &mut Vec<StoreOp>) {
        if !inst.is_active() {
            self.expunge(inst, ops);
            return;
        }
        let mut i = inst.clone();
        i.goal = Goal::Decommissioned;
        let task = i.task.as_mut().expect("active instances have a task");
        if !task.kill_sent {
            task.kill_sent = true;
            self.pending.push(Effect::Kill(KillRequest {
                task_id: task.task_id.clone(),
                agent_id: i.agent.as_ref().map(|a| a.agent_id.clone()),
                grace: self.grace_of(&i.app_id),
            }));
        }
        self.store_instance(i, ops);
    }

    fn new_instance(&mut self, app: &AppDefinition, now: Timestamp, ops: &mut Vec<StoreOp>) {
        let uuid = self.ids.uuid_v1(now);
        let inst = Instance {
            id: InstanceId::new(&app.id, &uuid),
            app_id: app.id.clone(),
            run_spec_version: app.version,
            config_version: app.version_info.last_config_change_at,
            goal: Goal::Running,
            created_at: now,
            agent: None,
            task: None,
            incarnation: 0,
        };
        self.store_instance(inst, ops);
    }

    /// Whether an instance runs the app's current configuration.
    fn is_current(inst: &Instance, app: &AppDefinition) -> bool {
        inst.config_version == app.version_info.last_config_change_at
    }

    /// Brings one app's instances towards its definition, as far as its deployments allow:
    /// a held app is left alone; an active one is scaled and, during a config change, replaced
    /// within the upgrade strategy's bounds (Marathon §5.3); a free one only keeps its count.
    pub(crate) fn converge(&mut self, app_id: &PathId, now: Timestamp, ops: &mut Vec<StoreOp>) {
        self.touched.insert(app_id.clone());
        let mode = self.mode_of(app_id);
        if mode == Mode::Held {
            return;
        }
        let instances: Vec<Arc<Instance>> = self.state.instances_of(app_id).cloned().collect();
        let Some(app) = self.state.apps.get(app_id).cloned() else {
            for i in instances.iter().filter(|i| {
                i.goal != Goal::Decommissioned
                    || (i.is_active() && !i.task.as_ref().is_some_and(|t| t.kill_sent))
            }) {
                self.decommission(i, ops);
            }
            return;
        };
        let n = app.instances as usize;
        let running_goal: Vec<&Arc<Instance>> = instances
            .iter()
            .filter(|i| i.goal == Goal::Running)
            .collect();
        let (fresh, old): (Vec<&Arc<Instance>>, Vec<&Arc<Instance>>) =
            running_goal.iter().partition(|i| Self::is_current(i, &app));
        // Old instances whose task is gone are not relaunched: the new version replaces them.
        let (old_dead, old): (Vec<&Arc<Instance>>, Vec<&Arc<Instance>>) =
            old.into_iter().partition(|i| !i.is_active());
        for i in old_dead {
            self.expunge(i, ops);
        }

        // Decommissioned-but-alive instances still occupy capacity until they are gone.
        let dying = instances
            .iter()
            .filter(|i| i.goal == Goal::Decommissioned && i.is_active())
            .count();
        if mode == Mode::Free || (old.is_empty() && dying == 0) || fresh.len() > n {
            // Keep the count. Outside a deployment, live old instances stay (a cancelled
            // rollout leaves them, as in Marathon) but are the first to go when scaling down.
            let total = fresh.len() + old.len();
            if total < n {
                for _ in total..n {
                    self.new_instance(&app, now, ops);
                }
            } else if total > n {
                // Marathon's ScalingProposition: instances not running yet go first; among
                // equals, old configurations before current ones.
                let all: Vec<&Arc<Instance>> = old.iter().chain(fresh.iter()).copied().collect();
                let mut victims = kill_order(&all, app.kill_selection);
                victims.sort_by_key(|i| (i.kill_weight(), Self::is_current(i, &app)));
                for i in victims.into_iter().take(total - n) {
                    self.decommission(i, ops);
                }
            }
            return;
        }

        // Rolling replacement (Marathon's TaskReplaceActor arithmetic), which also paces
        // launches while replaced instances are still dying. Must be idempotent: it is called
        // again whenever anything about the app changes.
        let min_healthy = (n as f64 * app.upgrade_strategy.minimum_health_capacity).ceil() as usize;
        let mut max_capacity =
            (n as f64 * (1.0 + app.upgrade_strategy.maximum_over_capacity)).floor() as usize;
        let mut h = running_goal
            .iter()
            .filter(|i| self.counts_as_healthy(i))
            .count();
        if min_healthy == max_capacity && max_capacity <= h {
            // Neither a kill nor a launch would be allowed: permit one extra instance.
            max_capacity += 1;
        }
        let fresh_ready = fresh
            .iter()
            .filter(|i| self.counts_as_healthy(i) && self.counts_as_ready(i))
            .count();
        let mut old_left: Vec<&Arc<Instance>> = Vec::new();
        // Unhealthy old instances go first: killing them costs no healthy capacity.
        for i in &old {
            if !self.counts_as_healthy(i) {
                self.decommission(i, ops);
            } else {
                old_left.push(i);
            }
        }
        let mut old_count = old_left.len();
        // Healthy old instances go while more than the minimum stay healthy, and all of them
        // once the new version is complete.
        for i in kill_order(&old_left, app.kill_selection) {
            if fresh_ready >= n || h > min_healthy {
                self.decommission(i, ops);
                h -= 1;
                old_count -= 1;
            }
        }
        let dying = self
            .state
            .instances_of(app_id)
            .filter(|i| i.goal == Goal::Decommissioned && i.is_active())
            .count();
        let occupied = old_count + fresh.len() + dying;
        let start = n
            .saturating_sub(fresh.len())
            .min(max_capacity.saturating_sub(occupied));
        for _ in 0..start {
            self.new_instance(&app, now, ops);
        }
    }

    /// An app is converged when exactly `instances` instances of its current configuration are
    /// healthy and ready, and nothing else is left.
    pub(crate) fn converged(&self, app_id: &PathId) -> bool {
        let mut instances = self.state.instances_of(app_id);
        match self.state.apps.get(app_id) {
            None => instances.next().is_none(),
            Some(app) => {
                let mut ready = 0;
                for i in instances {
                    if !Self::is_current(i, app)
                        || !self.counts_as_healthy(i)
                        || !self.counts_as_ready(i)
                    {
                        return false;
                    }
                    ready += 1;
                }
                ready == app.instances as usize
            }
        }
    }

    pub(crate) fn flush(&mut self, ops: Vec<StoreOp>) {
        if !ops.is_empty() {
            self.effects.push_back(Effect::Persist(ops));
        }
        self.effects.extend(self.pending.drain(..));
    }
}

/// The launch-timeout index key of an instance whose task has not reached RUNNING yet.
fn unreachable_key(i: &Instance) -> Option<(Timestamp, InstanceId)> {
    let t = i.task.as_ref()?;
    (t.state == TaskState::Unreachable).then(|| (t.since, i.id.clone()))
}

fn config_tokens(config: &Config) -> Option<u64> {
    config.launch_tokens.map(u64::from)
}

fn launching_key(i: &Instance) -> Option<(Timestamp, InstanceId)> {
    let t = i.task.as_ref()?;
    let launching = matches!(t.state, TaskState::Staging | TaskState::Starting) && !t.kill_sent;
    launching.then(|| (t.staged_at, i.id.clone()))
}

/// Instances in the order they should be killed when scaling down (first = first to go).
fn kill_order<'a>(
    instances: &[&'a Arc<Instance>],
    selection: crate::app::KillSelection,
) -> Vec<&'a Arc<Instance>> {
    let mut v: Vec<&Arc<Instance>> = instances.to_vec();
    let youngest_first = selection == crate::app::KillSelection::YoungestFirst;
    v.sort_by(|a, b| {
        let age = |i: &Instance| {
            i.task
                .as_ref()
                .map(|t| t.started_at.unwrap_or(t.staged_at))
                .unwrap_or(i.created_at)
        };
        a.kill_weight().cmp(&b.kill_weight()).then_with(|| {
            let (x, y) = (age(a), age(b));
            if youngest_first {
                y.cmp(&x)
            } else {
                x.cmp(&y)
            }
        })
    });
    v
}

// -------------------------------------------------------------------------------------------
// Offers, status updates, time

impl Scheduler {
    /// True when an instance is waiting to launch and its app is not backed off at `now`.
    /// How many times an instance has entered the launch queue. When it grows, new work waits
    /// and offers must be revived, even if an earlier offer was declined.
    pub fn queued_total(&self) -> u64 {
        self.queued_total
    }

    pub fn wants_offers(&self, now: Timestamp) -> bool {
        self.launch_tokens != Some(0) && self.launchable(now).next().is_some()
    }

    /// Starts a new `--launch_token_refresh_interval`: the full `--launch_tokens` again.
    pub fn refill_launch_tokens(&mut self) {
        self.launch_tokens = config_tokens(&self.config);
    }

    /// Asks the backend for the state of every task Pacer believes alive (explicit
    /// reconciliation), e.g. after (re)subscribing to a Mesos master.
    pub fn reconcile_known(&mut self) {
        let known: Vec<TaskId> = self
            .state
            .instances
            .values()
            .filter(|i| i.is_active())
            .filter_map(|i| i.task.as_ref().map(|t| t.task_id.clone()))
            .collect();
        self.effects.push_back(Effect::Reconcile(known));
    }

    /// The first queued instance after `after` (exclusive), or the first of all.
    fn next_queued(&self, after: Option<&InstanceId>) -> Option<&InstanceId> {
        match after {
            None => self.launch_queue.iter().next(),
            Some(c) => self
                .launch_queue
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .next(),
        }
    }

    /// The first queued instance of each app, in queue order. An app's instances are next to
    /// each other in the queue, so per-app questions (is it delayed?) skip the rest of them.
    fn queued_apps(&self) -> impl Iterator<Item = &InstanceId> + '_ {
        std::iter::successors(self.next_queued(None), |iid| {
            self.next_queued(Some(&iid.app_block_end()))
        })
    }

    /// Queued instances that may launch now, in queue order. The instances of a delayed (or
    /// removed) app are skipped as a block, not one by one.
    fn launchable(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (Arc<AppDefinition>, Arc<Instance>)> + '_ {
        let mut cursor: Option<InstanceId> = None;
        std::iter::from_fn(move || loop {
            let iid = self.next_queued(cursor.as_ref())?.clone();
            let Some(inst) = self.state.instances.get(&iid) else {
                cursor = Some(iid);
                continue;
            };
            let app = self.state.apps.get(&inst.app_id);
            let Some(app) = app.filter(|a| self.state.delay_of(a, now).is_none()) else {
                cursor = Some(iid.app_block_end());
                continue;
            };
            cursor = Some(iid);
            if let Some(spec) = self.spec_for(inst, app) {
                return Some((spec, inst.clone()));
            }
        })
    }

    /// The definition an instance launches with: the app's, or — while a deployment holds the
    /// app back — the older version the instance was running.
    fn spec_for(&self, inst: &Instance, app: &Arc<AppDefinition>) -> Option<Arc<AppDefinition>> {
        if Self::is_current(inst, app) {
            return Some(app.clone());
        }
        if self.mode_of(&app.id) != Mode::Held {
            return None;
        }
        self.state
            .versions
            .get(&app.id)?
            .get(&inst.run_spec_version)
            .cloned()
    }

    /// The next moment something changes without an input: a backoff delay running out, a
    /// launch timing out, a deployment reaching its progress deadline.
    pub fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let backoff = self
            .queued_apps()
            .filter_map(|iid| self.state.instances.get(iid))
            .filter_map(|i| self.state.apps.get(&i.app_id))
            .filter_map(|app| self.state.delay_of(app, now).map(|d| d.deadline))
            .min();
        let launch = self
            .launching
            .first()
            .map(|(staged, _)| staged.plus(self.config.task_launch_timeout));
        let progress = self.progress_deadlines().map(|(_, _, at)| at).min();
        let unreachable = self
            .unreachable
            .iter()
            .filter_map(|(since, iid)| self.unreachable_deadline(iid, *since))
            .min();
        [backoff, launch, progress, unreachable]
            .into_iter()
            .flatten()
            .min()
    }

    /// Places waiting instances on an offer, or declines it.
    pub fn handle_offer(&mut self, now: Timestamp, offer: Offer) {
        self.handle_offers(now, vec![offer]);
    }

    /// Places waiting instances on a batch of offers, offer by offer, declining those left
    /// unused. Constraint plugins are asked once per app and constraint about every offer still
    /// to be handled, and asked again only after the app placed an instance, which changes what
    /// they see.
    pub fn handle_offers(&mut self, now: Timestamp, offers: Vec<Offer>) {
        self.handle_offers_within(now, offers, &mut NoDeadline);
    }

    /// As [`Scheduler::handle_offers`], stopping an offer's matching once `deadline` says its
    /// time is up (`--offer_matching_timeout`): what was matched launches, the rest of the
    /// offer goes back. Slow constraint plugins cannot hold offers indefinitely.
    pub fn handle_offers_within(
        &mut self,
        now: Timestamp,
        offers: Vec<Offer>,
        deadline: &mut dyn MatchDeadline,
    ) {
        let offers: Vec<Arc<Offer>> = offers.into_iter().map(Arc::new).collect();
        let mut verdicts = PluginVerdicts::default();
        let mut parsed = BTreeMap::new();
        // Plugins are told how many instances of the app wait; nothing else needs the count.
        let mut waiting: BTreeMap<PathId, u32> = BTreeMap::new();
        if self.config.extensions.constraints.is_some() {
            for (app, _) in self.launchable(now) {
                *waiting.entry(app.id.clone()).or_default() += 1;
            }
        }
        let mut ops = Vec::new();
        for at in 0..offers.len() {
            let mut batch = Batch {
                verdicts: &mut verdicts,
                parsed: &mut parsed,
                waiting: &mut waiting,
                ops: &mut ops,
            };
            deadline.start();
            self.place_on(now, &offers, at, &mut batch, deadline);
            // One write per several offers (fewer commits), small enough for any store.
            if ops.len() >= FLUSH_OPS {
                self.flush(std::mem::take(&mut ops));
            }
        }
        self.flush(ops);
    }

    /// Places waiting instances on one offer of a batch. The launch queue is walked lazily
    /// (a cursor, not a copy): an offer usually takes a few instances out of many waiting.
    /// Launches and declines wait in `pending` for the batch's writes.
    fn place_on(
        &mut self,
        now: Timestamp,
        offers: &[Arc<Offer>],
        at: usize,
        b: &mut Batch,
        deadline: &mut dyn MatchDeadline,
    ) {
        let Batch {
            verdicts,
            parsed: parsed_constraints,
            waiting,
            ops,
        } = b;
        let offer = &offers[at];
        let mut budget = crate::placement::OfferBudget::of(offer);
        let mut launches = Vec::new();
        let mut rejected_apps: BTreeSet<PathId> = BTreeSet::new();
        let mut used_apps: BTreeSet<PathId> = BTreeSet::new();
        let mut cursor: Option<InstanceId> = None;
        loop {
            if launches.len() >= self.config.max_instances_per_offer {
                break;
            }
            if self.launch_tokens == Some(0) {
                break;
            }
            if deadline.expired() {
                break;
            }
            let Some(iid) = self.next_queued(cursor.as_ref()).cloned() else {
                break;
            };
            cursor = Some(iid.clone());
            let Some(inst) = self.state.instances.get(&iid).cloned() else {
                continue;
            };
            // An app refused by this offer, removed or delayed: skip all its instances at
            // once (walking them cost O(queue) per offer).
            let current = self
                .state
                .apps
                .get(&inst.app_id)
                .filter(|a| !rejected_apps.contains(&a.id))
                .filter(|a| self.state.delay_of(a, now).is_none())
                .cloned();
            let Some(current) = current else {
                cursor = Some(iid.app_block_end());
                continue;
            };
            let Some(app) = self.spec_for(&inst, &current) else {
                continue;
            };
            // Constraints see the instances placed so far, this offer's included.
            let mut detail = None;
            let fits = app.constraints.is_empty() || {
                let plugins = self.config.extensions.constraints.as_deref();
                let parsed = parsed_constraints
                    .entry((app.id.clone(), app.version))
                    .or_insert_with(|| crate::constraints::parse_all(&app.constraints, plugins));
                let placed: Vec<&crate::instance::AgentInfo> = self
                    .state
                    .instances_of(&app.id)
                    .filter(|i| i.is_active())
                    .filter_map(|i| i.agent.as_ref())
                    .collect();
                parsed
                    .iter()
                    .all(|c| c.admits(offer, placed.iter().copied()))
                    && match plugins {
                        None => true,
                        Some(p) => {
                            let ask = PluginAsk {
                                app: &app,
                                waiting: waiting.get(&app.id).copied().unwrap_or(0),
                                constraints: parsed,
                                placed: &placed,
                            };
                            match verdicts.refusal(p, &ask, offers, at) {
                                None => true,
                                Some(why) => {
                                    detail = Some(why);
                                    false
                                }
                            }
                        }
                    }
            };
            let matched = if fits {
                let accepted = Accepted::of(&app, self.config.accepted_roles_default);
                match_offer(&app, accepted, &mut budget)
            } else {
                Err(crate::placement::RejectReason::UnfulfilledConstraint)
            };
            match matched {
                Ok(placement) => {
                    if let Some(t) = self.launch_tokens.as_mut() {
                        *t = t.saturating_sub(1);
                    }
                    let spec = self.start_task(now, &app, &inst, offer, placement, ops);
                    launches.push(spec);
                    used_apps.insert(app.id.clone());
                    if let Some(n) = waiting.get_mut(&app.id) {
                        *n = n.saturating_sub(1);
                    }
                    verdicts.forget(&app.id);
                }
                Err(reason) => {
                    let mut stats = self
                        .state
                        .offer_stats
                        .get(&app.id)
                        .cloned()
                        .unwrap_or_default();
                    stats.processed += 1;
                    stats.unused += 1;
                    stats.last_unused_at = Some(now);
                    *stats.rejected.entry(reason).or_default() += 1;
                    if stats.last_unused.len() >= crate::state::LAST_UNUSED_OFFERS {
                        stats.last_unused.pop_front();
                    }
                    stats.last_unused.push_back(crate::state::UnusedOffer {
                        offer: offer.clone(),
                        reason,
                        detail,
                        at: now,
                    });
                    self.state.offer_stats.insert(app.id.clone(), stats);
                    rejected_apps.insert(app.id.clone());
                }
            }
        }
        for app in used_apps.into_iter().filter(|a| !rejected_apps.contains(a)) {
            let mut stats = self
                .state
                .offer_stats
                .get(&app)
                .cloned()
                .unwrap_or_default();
            stats.processed += 1;
            stats.last_used_at = Some(now);
            self.state.offer_stats.insert(app, stats);
        }
        if launches.is_empty() {
            self.pending.push(Effect::Decline {
                offer: offer.id.clone(),
                refuse: self.config.decline_offer_duration,
            });
        } else {
            self.pending.push(Effect::Launch {
                offer: offer.id.clone(),
                tasks: launches,
            });
        }
    }

    fn start_task(
        &mut self,
        now: Timestamp,
        app: &AppDefinition,
        inst: &Instance,
        offer: &Offer,
        placement: crate::placement::Placement,
        ops: &mut Vec<StoreOp>,
    ) -> LaunchSpec {
        let mut i = inst.clone();
        i.incarnation += 1;
        let task_id = TaskId::new(&i.id, i.incarnation);
        i.run_spec_version = app.version;
        i.agent = Some(AgentInfo {
            agent_id: offer.agent_id.clone(),
            host: offer.hostname.clone(),
            region: offer.region.clone(),
            zone: offer.zone.clone(),
            attributes: offer.attributes.clone(),
        });
        i.task = Some(Task {
            task_id: task_id.clone(),
            state: TaskState::Staging,
            staged_at: now,
            started_at: None,
            since: now,
            host_ports: placement.host_ports.clone(),
            message: None,
            kill_sent: false,
        });
        let spec = build_launch(
            app,
            &task_id,
            &i.id,
            offer,
            placement,
            self.config.env_vars_prefix.as_deref(),
        );
        self.store_instance(i, ops);
        spec
    }

    /// A task changed state on its agent.
    pub fn handle_status(&mut self, now: Timestamp, status: TaskStatus) {
        self.handle_statuses(now, vec![status]);
    }

    /// A burst of status updates: each is applied in order, then every app they touched is
    /// converged once and the deployments are checked once. (Converging after every update
    /// costs O(instances) each: quadratic while 10,000 tasks start.)
    pub fn handle_statuses(&mut self, now: Timestamp, statuses: Vec<TaskStatus>) {
        let mut ops = Vec::new();
        let mut apps: BTreeSet<PathId> = BTreeSet::new();
        for status in statuses {
            if let Some(app) = self.apply_status(now, status, &mut ops) {
                apps.insert(app);
            }
            if ops.len() >= FLUSH_OPS {
                self.flush(std::mem::take(&mut ops));
            }
        }
        for app in &apps {
            self.converge(app, now, &mut ops);
        }
        if !apps.is_empty() {
            self.finish_deployments(now, &mut ops);
        }
        self.flush(ops);
    }

    /// Applies one status update; returns the app to converge, if it changed.
    fn apply_status(
        &mut self,
        now: Timestamp,
        mut status: TaskStatus,
        ops: &mut Vec<StoreOp>,
    ) -> Option<PathId> {
        // Marathon never reports TASK_LOST; Pacer treats it as gone.
        if status.state == TaskState::Lost {
            status.state = TaskState::Gone;
        }
        let inst = status
            .task_id
            .instance_id()
            .and_then(|iid| self.state.instances.get(&iid).cloned());
        let current = inst
            .as_ref()
            .filter(|i| i.task.as_ref().is_some_and(|t| t.task_id == status.task_id));
        let Some(inst) = current.cloned() else {
            // A task Pacer does not know (or an older incarnation): it must not keep running.
            if status.state.is_terminal() {
                if let Some(iid) = status.task_id.instance_id().filter(|_| inst.is_none()) {
                    self.effects
                        .push_back(Effect::Event(Event::UnknownInstanceTerminated {
                            run_spec_id: iid.app_id(),
                            instance_id: iid,
                            condition: crate::events::condition(Some(status.state)),
                        }));
                }
            } else {
                self.effects.push_back(Effect::Kill(KillRequest {
                    task_id: status.task_id,
                    agent_id: status.agent_id,
                    grace: None,
                }));
            }
            return None;
        };
        let mut i = (*inst).clone();
        let task = i.task.as_mut().expect("matched above");
        if task.state.is_terminal() {
            // Terminal is final; a late update (e.g. a re-sent status) changes nothing.
            return None;
        }
        if task.state == status.state {
            // Same state: at most news from the checks the agent runs.
            if let Some(healthy) = status.healthy {
                let task_id = task.task_id.clone();
                self.handle_agent_health(
                    now,
                    &i.id,
                    &task_id,
                    healthy,
                    status.message.as_deref(),
                    ops,
                );
            }
            return None;
        }
        task.state = status.state;
        task.since = now;
        task.message = status.message.clone();
        if status.state == TaskState::Running && task.started_at.is_none() {
            task.started_at = Some(now);
            if let Some(t) = self.launch_tokens.as_mut() {
                *t += 1;
            }
        }
        let task_id = task.task_id.clone();
        let host = i.agent.as_ref().map(|a| a.host.clone()).unwrap_or_default();
        let agent_id = i.agent.as_ref().map(|a| a.agent_id.clone());
        self.pending.push(Effect::Event(Event::StatusUpdate {
            slave_id: status.agent_id.clone().or_else(|| agent_id.clone()),
            task_id: task_id.clone(),
            task_status: status.state,
            message: status.message.clone().unwrap_or_default(),
            app_id: i.app_id.clone(),
            host: host.clone(),
            ports: task.host_ports.clone(),
            version: i.run_spec_version,
        }));
        self.pending.push(Effect::Event(Event::InstanceChanged {
            instance_id: i.id.clone(),
            condition: crate::events::condition(Some(status.state)),
            run_spec_id: i.app_id.clone(),
            agent_id,
            host,
            run_spec_version: i.run_spec_version,
        }));
        if status.state.is_terminal() {
            if let Some(app) = self.state.apps.get(&i.app_id).cloned() {
                if is_failure(status.state) {
                    let failure = TaskFailure {
                        app_id: i.app_id.clone(),
                        host: i.agent.as_ref().map(|a| a.host.clone()).unwrap_or_default(),
                        message: status.message.clone().unwrap_or_default(),
                        state: status.state,
                        task_id: task_id.clone(),
                        timestamp: now,
                        version: i.run_spec_version,
                        slave_id: i.agent.as_ref().map(|a| a.agent_id.clone()),
                    };
                    ops.push(put(keys::TASK_FAILURE, i.app_id.as_str(), &failure));
                    self.state
                        .task_failures
                        .insert(i.app_id.clone(), Arc::new(failure));
                }
                if adds_backoff(status.state) && i.goal == Goal::Running {
                    self.back_off(&app, now);
                }
            }
            if i.goal != Goal::Running {
                self.expunge(&i, ops);
            } else {
                self.store_instance(i.clone(), ops);
            }
        } else {
            self.store_instance(i.clone(), ops);
        }
        if status.state == TaskState::Running {
            // A new instance coming up is progress for the deployments waiting on it.
            self.note_progress(&i.app_id, now);
            if let Some(healthy) = status.healthy {
                let message = status.message.as_deref();
                self.handle_agent_health(now, &i.id, &task_id, healthy, message, ops);
            }
        }
        Some(i.app_id.clone())
    }

    /// Something an app's deployments wait for happened (an instance came up, became healthy
    /// or ready): their progress deadlines start over.
    pub(crate) fn note_progress(&mut self, app: &PathId, now: Timestamp) {
        let ids: Vec<String> = self
            .state
            .deployments_of(app)
            .map(|d| d.id.clone())
            .filter(|id| self.progress.contains_key(id))
            .collect();
        for id in ids {
            self.progress.insert(id, now);
        }
    }

    /// Marathon's RateLimiter: the n-th consecutive failure of a config waits
    /// `min(backoff × factor^(n-1), maxLaunchDelay)`.
    fn back_off(&mut self, app: &AppDefinition, now: Timestamp) {
        let max = Duration::from_secs(app.max_launch_delay_seconds);
        let config = app.version_info.last_config_change_at;
        let prev = self
            .state
            .delays
            .get(&app.id)
            .filter(|d| d.config_version == config);
        // A config that ran without failing for longer than the maximum delay starts over.
        let prev = prev.filter(|d| now < d.deadline.plus(max));
        let delay = match prev {
            None => Duration::from_secs(app.backoff_seconds).min(max),
            Some(d) => d.delay.mul_f64(app.backoff_factor).min(max),
        };
        self.state.delays.insert(
            app.id.clone(),
            Delay {
                config_version: config,
                delay,
                deadline: now.plus(delay),
            },
        );
    }
}

/// Builds the task for one instance: command, container and the environment of Marathon §14.5.
pub fn build_launch(
    app: &AppDefinition,
    task_id: &TaskId,
    instance_id: &InstanceId,
    offer: &Offer,
    placement: crate::placement::Placement,
    prefix: Option<&str>,
) -> LaunchSpec {
    let host_ports = placement.host_ports;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &app.env {
        if let EnvValue::Plain(s) = v {
            env.insert(k.clone(), s.clone());
        }
    }
    let p = prefix.unwrap_or("");
    let ports = effective_ports(app, &host_ports);
    for (i, (port, requested, name)) in ports.iter().enumerate() {
        env.insert(format!("{p}PORT{i}"), port.to_string());
        if *requested != 0 {
            env.insert(format!("{p}PORT_{requested}"), port.to_string());
        }
        if let Some(n) = name {
            env.insert(
                format!("{p}PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                port.to_string(),
            );
        }
    }
    if let Some((first, _, _)) = ports.first() {
        env.insert(format!("{p}PORT"), first.to_string());
        env.insert(
            format!("{p}PORTS"),
            ports
                .iter()
                .map(|(x, _, _)| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    env.insert(format!("{p}HOST"), offer.hostname.clone());
    env.insert("MESOS_TASK_ID".into(), task_id.to_string());
    env.insert("MARATHON_APP_ID".into(), app.id.to_string());
    env.insert("MARATHON_APP_VERSION".into(), app.version.to_string());
    if let Some(img) = app.docker_image() {
        env.insert("MARATHON_APP_DOCKER_IMAGE".into(), img.to_string());
    }
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), num(app.cpus));
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), num(app.mem));
    env.insert("MARATHON_APP_RESOURCE_DISK".into(), num(app.disk));
    env.insert("MARATHON_APP_RESOURCE_GPUS".into(), app.gpus.to_string());
    let sanitize = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let mut label_names = Vec::new();
    for (k, v) in &app.labels {
        if k.len() > 512 || v.len() > 512 {
            continue;
        }
        let name = sanitize(k).to_ascii_uppercase();
        env.insert(format!("MARATHON_APP_LABEL_{name}"), v.clone());
        label_names.push(name);
    }
    env.insert("MARATHON_APP_LABELS".into(), label_names.join(" "));

    let command = match (&app.cmd, app.args.is_empty()) {
        (Some(c), _) => CommandSpec::Shell(c.clone()),
        (None, false) => CommandSpec::Args(app.args.clone()),
        (None, true) => CommandSpec::ImageDefault,
    };
    let docker = app
        .container
        .as_ref()
        .filter(|c| c.kind == crate::app::ContainerType::Docker)
        .and_then(|c| {
            let d = c.docker.as_ref()?;
            let network = match app.networks.first().map(|n| (n.mode, n.name.clone())) {
                Some((NetworkMode::ContainerBridge, _)) => NetworkSpec::Bridge,
                Some((NetworkMode::Container, name)) => NetworkSpec::Container(name),
                _ => NetworkSpec::Host,
            };
            let mut hp = host_ports.iter();
            let bridge = network == NetworkSpec::Bridge;
            let port_mappings = c
                .port_mappings
                .iter()
                .flatten()
                .map(|m| PortMappingSpec {
                    container_port: m.container_port as u32,
                    host_port: if m.host_port.is_some() || bridge {
                        hp.next().copied()
                    } else {
                        None
                    },
                    protocol: m.protocol.clone(),
                })
                .collect();
            let volumes = c
                .volumes
                .iter()
                .filter_map(|v| {
                    Some(VolumeSpec {
                        container_path: v.get("containerPath")?.as_str()?.to_string(),
                        host_path: v.get("hostPath")?.as_str()?.to_string(),
                        read_only: v.get("mode").and_then(|m| m.as_str()) == Some("RO"),
                    })
                })
                .collect();
            Some(DockerSpec {
                image: d.image.clone(),
                force_pull: d.force_pull_image,
                privileged: d.privileged,
                parameters: d
                    .parameters
                    .iter()
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect(),
                network,
                port_mappings,
                volumes,
            })
        });
    LaunchSpec {
        task_id: task_id.clone(),
        instance_id: instance_id.clone(),
        app_id: app.id.clone(),
        offer_id: offer.id.clone(),
        agent_id: offer.agent_id.clone(),
        hostname: offer.hostname.clone(),
        command,
        user: app.user.clone(),
        env,
        cpus: app.cpus,
        mem_mb: app.mem,
        disk_mb: app.disk,
        docker,
        kill_grace: app.task_kill_grace_period_seconds.map(Duration::from_secs),
        fetch: app.fetch.iter().map(|f| f.uri.clone()).collect(),
        health_checks: crate::health::agent_checks(app, &host_ports),
        host_ports,
        resource_roles: placement.roles,
        labels: app.labels.clone(),
    }
}

/// Each declared port as the task sees it from the host: (port, requested port, name), in
/// port-definition / port-mapping order. Mappings without a host port keep their container port.
pub fn effective_ports(app: &AppDefinition, host_ports: &[u32]) -> Vec<(u32, i64, Option<String>)> {
    let mut ports = Vec::new();
    if app.is_host_networking() {
        for (i, d) in app.port_definitions.iter().flatten().enumerate() {
            ports.push((
                host_ports.get(i).copied().unwrap_or(0),
                d.port,
                d.name.clone(),
            ));
        }
    } else {
        let mut hp = host_ports.iter();
        let bridge = app
            .networks
            .iter()
            .any(|n| n.mode == NetworkMode::ContainerBridge);
        for m in app.port_mappings() {
            let host = if m.host_port.is_some() || bridge {
                hp.next().copied()
            } else {
                None
            };
            ports.push((
                host.unwrap_or(m.container_port as u32),
                m.container_port,
                m.name.clone(),
            ));
        }
    }
    ports
}

/// One app's constraints as plugins need them for a batch.
struct PluginAsk<'a> {
    app: &'a AppDefinition,
    waiting: u32,
    constraints: &'a [crate::constraints::Constraint],
    placed: &'a [&'a crate::instance::AgentInfo],
}

/// Store operations collected over several offers before they are written as one.
const FLUSH_OPS: usize = 256;

/// The shell's clock for `--offer_matching_timeout` (the core never reads the clock itself).
pub trait MatchDeadline {
    /// Matching of the next offer starts.
    fn start(&mut self);
    /// The current offer's time is up; asked before each instance is matched.
    fn expired(&mut self) -> bool;
}

/// No time limit.
pub struct NoDeadline;

impl MatchDeadline for NoDeadline {
    fn start(&mut self) {}
    fn expired(&mut self) -> bool {
        false
    }
}

/// What the offers of one batch share.
struct Batch<'a> {
    verdicts: &'a mut PluginVerdicts,
    parsed: &'a mut ParsedConstraints,
    waiting: &'a mut BTreeMap<PathId, u32>,
    ops: &'a mut Vec<StoreOp>,
}

/// Each app version's constraints, parsed once per batch of offers.
type ParsedConstraints = BTreeMap<(PathId, Timestamp), Vec<crate::constraints::Constraint>>;

/// Per plugin constraint (by operator), its decisions for the offers asked about.
type Decisions = Vec<(String, Vec<crate::constraints::PluginDecision>)>;

/// Plugin decisions for the offers of one batch, per app: asked for all remaining offers at
/// once, forgotten when the app places an instance.
#[derive(Default)]
struct PluginVerdicts {
    /// App → (index of the first offer asked about, the decisions from there on).
    by_app: BTreeMap<PathId, (usize, Decisions)>,
}

impl PluginVerdicts {
    /// Why a plugin constraint refuses offer `at`, or `None` if all accept it.
    fn refusal(
        &mut self,
        plugins: &dyn crate::constraints::ConstraintPlugins,
        ask: &PluginAsk<'_>,
        offers: &[Arc<Offer>],
        at: usize,
    ) -> Option<String> {
        use crate::constraints::{field_name, Operator, PlacedSummary, PluginRequest};
        let (first, decisions) = self.by_app.entry(ask.app.id.clone()).or_insert_with(|| {
            let rest: Vec<&Offer> = offers[at..].iter().map(|o| o.as_ref()).collect();
            let app_id = ask.app.id.to_string();
            let decisions = ask
                .constraints
                .iter()
                .filter_map(|c| match &c.op {
                    Operator::Plugin { name, params } => {
                        let req = PluginRequest {
                            app_id: &app_id,
                            operator: name,
                            field: field_name(&c.field),
                            params,
                            waiting: ask.waiting,
                        };
                        let summary = PlacedSummary::of(&c.field, ask.placed.iter().copied());
                        Some((name.clone(), plugins.check(&req, &summary, &rest)))
                    }
                    _ => None,
                })
                .collect();
            (at, decisions)
        });
        decisions.iter().find_map(|(op, ds)| {
            let d = ds.get(at - *first)?;
            (!d.accept).then(|| match &d.reason {
                Some(r) => format!("{op}: {r}"),
                None => format!("{op}: refused"),
            })
        })
    }

    fn forget(&mut self, app: &PathId) {
        self.by_app.remove(app);
    }
}
