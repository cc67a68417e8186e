//! The deployment engine: one path for every change of the root group.
//!
//! A command describes the apps and groups it wants ([`Change`]); [`Scheduler::deploy`] diffs
//! that against the current root, validates the result (namespace, dependency cycles), checks
//! deployment locks, stores the new definitions, a root version and the plan, and starts the
//! plan's first step. Steps advance as their actions complete ([`Scheduler::finish_deployments`]).
//! Apps whose action lies in a later step are *held*: nothing touches their instances until the
//! plan gets to them.

use crate::app::{AppDefinition, VersionInfo};
use crate::events::Event;
use crate::id::PathId;
use crate::machine::{del, put, CommandError, Effect, Scheduler};
use crate::persist::{keys, StoreOp};
use crate::plan::{ordered_steps, View};
use crate::state::{ActionKind, Deployment, DeploymentAction, FailurePolicy, Group, RootRefs};
use crate::time::Timestamp;
use crate::violation::Violation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// An app as a change wants it.
#[derive(Clone, Debug)]
pub(crate) struct AppTarget {
    /// The definition; versions are filled in by [`Scheduler::deploy`].
    pub app: AppDefinition,
    /// Replace every instance even if the configuration did not change (`/restart`).
    pub restart: bool,
    /// The definition is a stored configuration coming back (rollback, revert): keep its
    /// `lastConfigChangeAt`, so instances still running that configuration are kept.
    pub keep_config: Option<Timestamp>,
}

impl AppTarget {
    pub fn new(app: AppDefinition) -> Self {
        AppTarget {
            app,
            restart: false,
            keep_config: None,
        }
    }
}

/// What a command wants the root group to become; `None` removes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Change {
    pub apps: BTreeMap<PathId, Option<AppTarget>>,
    pub groups: BTreeMap<PathId, Option<Group>>,
}

/// How one app takes part in running deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Not in any step that is running or still to come: only its instance count is kept.
    Free,
    /// In the current step: scaled and replaced as the action says.
    Active,
    /// Its action lies in a later step: left alone until the plan gets there.
    Held,
}

/// A planned change, before or after it was applied.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub id: String,
    pub steps: Vec<Vec<DeploymentAction>>,
    pub created: bool,
}

/// One entry of the stored root-group history: what changed at `version`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RootDelta {
    pub version: Timestamp,
    pub apps: BTreeMap<PathId, Option<Timestamp>>,
    pub groups: BTreeMap<PathId, Option<Group>>,
}

/// The oldest retained root version in full; deltas after it rebuild the rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct RootBase {
    pub version: Timestamp,
    pub apps: BTreeMap<PathId, Timestamp>,
    pub groups: BTreeMap<PathId, Group>,
}

pub(crate) const ROOT_BASE_KEY: &str = "meta/root-base";

/// App labels that opt a deployment into Pacer's failure policy (strict Marathon clients accept
/// any label, so this needs no new field).
pub const LABEL_PROGRESS_DEADLINE: &str = "PACER_DEPLOYMENT_PROGRESS_DEADLINE_SECONDS";
pub const LABEL_ROLLBACK_ON_FAILURE: &str = "PACER_DEPLOYMENT_ROLLBACK_ON_FAILURE";

/// The group a change is about: the deepest group containing everything it touches.
fn changed_group(change: &Change) -> PathId {
    let mut ids = change
        .apps
        .keys()
        .map(|a| a.parent())
        .chain(change.groups.keys().cloned());
    let Some(first) = ids.next() else {
        return PathId::root();
    };
    ids.fold(first, |acc, id| {
        let mut common = acc;
        while !(id == common || id.is_descendant_of(&common)) {
            common = common.parent();
        }
        common
    })
}

impl Scheduler {
    /// Applies a change as one deployment. On error nothing is kept (the caller's `command`
    /// restores the state it saved).
    pub(crate) fn deploy(
        &mut self,
        now: Timestamp,
        version: Timestamp,
        change: Change,
        force: bool,
        is_revert: bool,
        ops: &mut Vec<StoreOp>,
    ) -> Result<Planned, CommandError> {
        let mut apps = self.state.apps.clone();
        let mut groups = self.state.groups.clone();
        let mut stops: Vec<PathId> = Vec::new();
        let mut starts: Vec<PathId> = Vec::new();
        let mut actions: Vec<(PathId, ActionKind)> = Vec::new();
        let mut staged: Vec<AppDefinition> = Vec::new();
        let mut original_apps = BTreeMap::new();
        let mut created = false;

        for (id, target) in &change.apps {
            let existing = self.state.apps.get(id).cloned();
            let Some(t) = target else {
                if let Some(old) = existing {
                    apps.remove(id);
                    stops.push(id.clone());
                    original_apps.insert(id.clone(), Some(old));
                }
                continue;
            };
            let mut app = t.app.clone();
            app.id = id.clone();
            app.version = version;
            let (config, action) = match &existing {
                None => (
                    t.keep_config.unwrap_or(version),
                    ActionKind::ScaleApplication,
                ),
                Some(old) if t.restart || old.is_config_change(&app) => (
                    t.keep_config.unwrap_or(version),
                    ActionKind::RestartApplication,
                ),
                Some(old) if old.instances != app.instances => (
                    old.version_info.last_config_change_at,
                    ActionKind::ScaleApplication,
                ),
                // No change at all: the app stays as it is (Marathon still answers with a plan id).
                Some(_) => continue,
            };
            app.version_info = VersionInfo {
                last_scaling_at: version,
                last_config_change_at: config,
            };
            if existing.is_none() {
                created = true;
                starts.push(id.clone());
            }
            original_apps.insert(id.clone(), existing);
            actions.push((id.clone(), action));
            apps.insert(id.clone(), Arc::new(app.clone()));
            staged.push(app);
        }

        // Groups: explicit changes, then the implicit parents of new apps.
        let mut original_groups = BTreeMap::new();
        for (gid, g) in &change.groups {
            let before = self.state.groups.get(gid).cloned();
            match g {
                Some(g) => {
                    let mut g = g.clone();
                    // Versions differ on every change; only the content decides.
                    g.version = before.as_ref().map_or(version, |b| b.version);
                    if before.as_deref() != Some(&g) {
                        original_groups.insert(gid.clone(), before);
                        groups.insert(gid.clone(), Arc::new(g));
                    }
                }
                None => {
                    if before.is_some() {
                        original_groups.insert(gid.clone(), before);
                        groups.remove(gid);
                    }
                }
            }
        }
        for app in &staged {
            for g in app.id.ancestors().into_iter().filter(|g| !g.is_root()) {
                if !groups.contains_key(&g) {
                    original_groups.insert(g.clone(), None);
                    groups.insert(
                        g.clone(),
                        Arc::new(Group {
                            id: g,
                            dependencies: Vec::new(),
                            version,
                            enforce_role: false,
                        }),
                    );
                }
            }
        }

        // The shared namespace: an id is an app or a group, and an app has no children.
        for app in staged
            .iter()
            .filter(|a| !self.state.apps.contains_key(&a.id))
        {
            if groups.contains_key(&app.id) {
                return Err(CommandError::Invalid(vec![Violation::new(
                    "/",
                    "Groups and Applications may not have the same identifier.",
                )]));
            }
            if let Some(anc) = app
                .id
                .ancestors()
                .into_iter()
                .find(|a| apps.contains_key(a))
            {
                return Err(CommandError::Invalid(vec![Violation::new(
                    "/id",
                    format!("The parent path {anc} of app {} is an app; apps and groups may not share an id", app.id),
                )]));
            }
        }
        for gid in change.groups.keys().filter(|g| groups.contains_key(*g)) {
            if apps.contains_key(gid) {
                return Err(CommandError::Invalid(vec![Violation::new(
                    "/",
                    "Groups and Applications may not have the same identifier.",
                )]));
            }
        }

        // `--max_apps`: only a change that adds apps beyond the limit is refused.
        if let Some(max) = self.config.max_apps {
            if apps.len() > max && apps.len() > self.state.apps.len() {
                return Err(CommandError::Invalid(vec![Violation::new(
                    "/",
                    format!("This Marathon instance may only handle up to {max} Apps!"),
                )]));
            }
        }

        // Dependency order over the target root; a cycle rejects the whole change.
        let target = View {
            apps: &apps,
            groups: &groups,
        };
        let mut roots: BTreeSet<PathId> = actions.iter().map(|(a, _)| a.clone()).collect();
        for (gid, g) in &change.groups {
            if g.is_some() {
                roots.extend(crate::state::under(&apps, gid).map(|(id, _)| id.clone()));
            }
        }
        let depths = target
            .depths(&roots)
            .map_err(|e| CommandError::Invalid(vec![Violation::new("/", e.to_string())]))?;
        let before = View {
            apps: &self.state.apps,
            groups: &self.state.groups,
        };
        let stop_depths = before.depths(&stops).unwrap_or_default();

        let mut steps = ordered_steps(
            stops
                .iter()
                .map(|a| (a.clone(), ActionKind::StopApplication))
                .collect(),
            &stop_depths,
            true,
        );
        if !starts.is_empty() {
            steps.push(
                starts
                    .iter()
                    .map(|a| DeploymentAction {
                        action: ActionKind::StartApplication,
                        app: a.clone(),
                    })
                    .collect(),
            );
        }
        steps.extend(ordered_steps(actions.clone(), &depths, false));
        let affected: Vec<PathId> = stops
            .iter()
            .chain(actions.iter().map(|(a, _)| a))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();

        // Locks: a running deployment owns its apps until it ends or is cancelled.
        let conflicts: BTreeSet<String> = affected
            .iter()
            .filter_map(|a| self.state.deployments_by_app.get(a))
            .flat_map(|ids| ids.iter().cloned())
            .collect();
        if !conflicts.is_empty() {
            if !force {
                return Err(CommandError::Locked(conflicts.into_iter().collect()));
            }
            for id in &conflicts {
                self.cancel(id, ops);
            }
        }
        if !steps.is_empty() && self.state.deployments.len() >= self.config.max_running_deployments
        {
            return Err(CommandError::Forbidden(format!(
                "Max number ({}) of running deployments is achieved. Wait for other deployments to finish or cancel them before starting a new one.",
                self.config.max_running_deployments
            )));
        }

        // Apply.
        let mut delta = RootDelta {
            version,
            apps: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        for id in &stops {
            if let Some(old) = self.state.apps.get(id).cloned() {
                self.remove_app(&old, ops);
                delta.apps.insert(id.clone(), None);
            }
        }
        for mut app in staged {
            self.allocate_service_ports(&mut app)?;
            self.release_service_ports(&app.id);
            for p in app.service_ports().into_iter().filter(|p| *p != 0) {
                self.state.service_ports.insert(p, app.id.clone());
            }
            delta.apps.insert(app.id.clone(), Some(version));
            self.store_app(&app, ops);
        }
        // Every group on the way to a change gets the change's version.
        let mut bumped: BTreeSet<PathId> = BTreeSet::new();
        for id in delta.apps.keys().chain(original_groups.keys()) {
            bumped.extend(id.ancestors());
        }
        bumped.extend(original_groups.keys().cloned());
        for gid in bumped {
            let g = if gid.is_root() {
                Some(
                    groups
                        .get(&gid)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Group::root())),
                )
            } else {
                groups.get(&gid).cloned()
            };
            match g {
                Some(g) => {
                    let mut g = (*g).clone();
                    g.version = version;
                    ops.push(put(keys::GROUP, gid.as_str(), &g));
                    delta.groups.insert(gid.clone(), Some(g.clone()));
                    self.state.groups.insert(gid, Arc::new(g));
                }
                None => {
                    if self.state.groups.remove(&gid).is_some() {
                        ops.push(del(keys::GROUP, gid.as_str()));
                    }
                    delta.groups.insert(gid, None);
                }
            }
        }
        self.record_root_version(delta, ops);
        self.pending.push(Effect::Event(Event::GroupChangeSuccess {
            group_id: changed_group(&change),
            version,
        }));

        let id = self.ids.uuid_v4();
        if !steps.is_empty() {
            let policy = self.policy_for(&affected);
            let dep = Deployment {
                id: id.clone(),
                version,
                affected_apps: affected.clone(),
                steps: steps.clone(),
                current_step: 1,
                original_apps,
                original_groups,
                policy,
                is_revert,
            };
            ops.push(put(keys::DEPLOYMENT, &dep.id, &dep));
            if dep.policy.progress_deadline_seconds.is_some() {
                self.progress.insert(id.clone(), now);
            }
            self.pending.push(Effect::Event(Event::DeploymentInfo {
                plan: Arc::new(dep.clone()),
            }));
            self.state.add_deployment(dep);
        }
        for (app, action) in &actions {
            // A replacement starts without backoff (also when an older config comes back); a
            // scale keeps the config's delay, as Marathon's RateLimiter does.
            if *action == ActionKind::RestartApplication {
                self.state.delays.remove(app);
            }
        }
        for app in &affected {
            self.converge(app, now, ops);
        }
        Ok(Planned { id, steps, created })
    }

    /// The failure policy for a deployment of these apps: the server's flags, tightened by any
    /// app's labels.
    fn policy_for(&self, apps: &[PathId]) -> FailurePolicy {
        let mut policy = FailurePolicy {
            progress_deadline_seconds: self
                .config
                .deployment_progress_deadline
                .map(|d| d.as_secs()),
            rollback: self.config.deployment_rollback_on_failure,
        };
        for app in apps.iter().filter_map(|a| self.state.apps.get(a)) {
            if let Some(secs) = app
                .labels
                .get(LABEL_PROGRESS_DEADLINE)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|s| *s > 0)
            {
                policy.progress_deadline_seconds = Some(
                    policy
                        .progress_deadline_seconds
                        .map_or(secs, |p| p.min(secs)),
                );
            }
            if app
                .labels
                .get(LABEL_ROLLBACK_ON_FAILURE)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                policy.rollback = true;
            }
        }
        policy
    }

    /// `(deployment, deadline in seconds, when it runs out)` for the deployments that have a
    /// progress deadline — only those are in `progress`, so this costs nothing without them.
    pub(crate) fn progress_deadlines(&self) -> impl Iterator<Item = (&str, u64, Timestamp)> + '_ {
        self.progress.iter().filter_map(|(id, since)| {
            let secs = self
                .state
                .deployments
                .get(id)?
                .policy
                .progress_deadline_seconds?;
            Some((id.as_str(), secs, since.plus(Duration::from_secs(secs))))
        })
    }

    /// Converges the apps of deployments cancelled during this step.
    pub(crate) fn converge_freed(&mut self, now: Timestamp, ops: &mut Vec<StoreOp>) {
        for app in std::mem::take(&mut self.freed) {
            self.converge(&app, now, ops);
        }
    }

    /// How `app` takes part in the running deployments.
    pub(crate) fn mode_of(&self, app: &PathId) -> Mode {
        let mut mode = Mode::Free;
        for d in self.state.deployments_of(app) {
            let current = d.current_step.saturating_sub(1);
            let has = |s: &Vec<DeploymentAction>| s.iter().any(|a| &a.app == app);
            // A later action wins: a new app is "started" with no instances while it waits.
            if d.steps.iter().skip(current + 1).any(has) {
                return Mode::Held;
            }
            if d.steps.get(current).is_some_and(has) {
                mode = Mode::Active;
            }
        }
        mode
    }

    fn action_done(&self, a: &DeploymentAction) -> bool {
        match a.action {
            ActionKind::StartApplication => true,
            ActionKind::StopApplication => {
                !self.state.apps.contains_key(&a.app) && self.state.by_app.get(&a.app).is_none()
            }
            ActionKind::ScaleApplication | ActionKind::RestartApplication => self.converged(&a.app),
        }
    }

    /// Advances the deployments of apps converged since the last call, until none can move.
    /// Only those deployments are checked: the work per event grows with what changed, not with
    /// the number of deployments.
    pub(crate) fn finish_deployments(&mut self, now: Timestamp, ops: &mut Vec<StoreOp>) {
        loop {
            let touched = std::mem::take(&mut self.touched);
            if touched.is_empty() {
                return;
            }
            let candidates: BTreeSet<String> = touched
                .iter()
                .filter_map(|app| self.state.deployments_by_app.get(app))
                .flat_map(|ids| ids.iter().cloned())
                .collect();
            for id in candidates {
                self.advance(&id, now, ops);
            }
        }
    }

    fn advance(&mut self, id: &str, now: Timestamp, ops: &mut Vec<StoreOp>) {
        loop {
            let Some(dep) = self.state.deployments.get(id).cloned() else {
                return;
            };
            if !dep.current_actions().iter().all(|a| self.action_done(a)) {
                return;
            }
            let mut next = (*dep).clone();
            self.pending
                .push(Effect::Event(Event::DeploymentStepSuccess {
                    plan: dep.clone(),
                }));
            next.current_step += 1;
            if next.current_step > next.steps.len() {
                self.state.remove_deployment(id);
                self.progress.remove(id);
                ops.push(del(keys::DEPLOYMENT, id));
                self.pending
                    .push(Effect::Event(Event::DeploymentSuccess { plan: dep }));
                return;
            }
            ops.push(put(keys::DEPLOYMENT, id, &next));
            if self.progress.contains_key(id) {
                self.progress.insert(id.to_string(), now);
            }
            let apps: Vec<PathId> = next
                .current_actions()
                .iter()
                .map(|a| a.app.clone())
                .collect();
            let next = Arc::new(next);
            self.pending
                .push(Effect::Event(Event::DeploymentInfo { plan: next.clone() }));
            self.state.deployments.insert(id.to_string(), next);
            for app in apps {
                self.converge(&app, now, ops);
            }
        }
    }

    /// Stops a deployment where it is; its apps keep whatever instances they have. They are
    /// converged (as free apps) only at the end of the step, once whatever replaces the
    /// deployment is in place: converging in between would act on a transient state.
    pub(crate) fn cancel(&mut self, id: &str, ops: &mut Vec<StoreOp>) -> Option<Arc<Deployment>> {
        let dep = self.state.deployments.get(id).cloned()?;
        self.state.remove_deployment(id);
        self.progress.remove(id);
        ops.push(del(keys::DEPLOYMENT, id));
        self.freed.extend(dep.affected_apps.iter().cloned());
        Some(dep)
    }

    /// A forced deployment that puts back what `dep` changed, on top of the current root (so
    /// unrelated changes made since survive).
    pub(crate) fn revert(
        &mut self,
        now: Timestamp,
        version: Timestamp,
        dep: &Deployment,
        ops: &mut Vec<StoreOp>,
    ) -> Result<Planned, CommandError> {
        let mut change = Change::default();
        for (id, original) in &dep.original_apps {
            change.apps.insert(
                id.clone(),
                original.as_ref().map(|a| AppTarget {
                    app: (**a).clone(),
                    restart: false,
                    keep_config: Some(a.version_info.last_config_change_at),
                }),
            );
        }
        for (id, original) in &dep.original_groups {
            change
                .groups
                .insert(id.clone(), original.as_ref().map(|g| (**g).clone()));
        }
        // Groups the change created implicitly go only if nothing else lives in them now.
        change.groups.retain(|gid, g| {
            g.is_some()
                || !crate::state::under(&self.state.apps, gid).any(|(a, _)| {
                    a.is_descendant_of(gid)
                        && !dep.original_apps.get(a).is_some_and(|o| o.is_none())
                })
        });
        self.deploy(now, version, change, true, true, ops)
    }

    /// Fails deployments whose current step made no progress within their deadline, and kills
    /// tasks that did not reach RUNNING within `--task_launch_timeout`.
    pub fn tick(&mut self, now: Timestamp) {
        let mut ops = Vec::new();
        let overdue: Vec<(String, u64)> = self
            .progress_deadlines()
            .filter(|(_, _, deadline)| now >= *deadline)
            .map(|(id, secs, _)| (id.to_string(), secs))
            .collect();
        for (id, secs) in overdue {
            let Some(dep) = self.cancel(&id, &mut ops) else {
                continue;
            };
            let stuck: Vec<String> = dep
                .current_actions()
                .iter()
                .filter(|a| !self.action_done(a))
                .map(|a| format!("{} {}", a.action.name(), a.app))
                .collect();
            let reason = format!(
                "No progress for {secs} seconds in step {} of {} ({})",
                dep.current_step,
                dep.steps.len(),
                stuck.join(", ")
            );
            self.pending
                .push(Effect::Event(Event::DeploymentStepFailure {
                    plan: dep.clone(),
                }));
            self.pending.push(Effect::Event(Event::DeploymentFailed {
                plan: dep.clone(),
                reason,
            }));
            if dep.policy.rollback && !dep.is_revert {
                let version = self.next_version(now);
                // A revert is forced and cannot conflict; if it cannot be planned the apps
                // simply stay as they are.
                let _ = self.revert(now, version, &dep, &mut ops);
            }
        }
        self.kill_overdue_launches(now, &mut ops);
        self.handle_unreachable(now, &mut ops);
        self.converge_freed(now, &mut ops);
        self.finish_deployments(now, &mut ops);
        self.flush(ops);
    }

    /// Records a root version: the change in the store, the full references in memory.
    fn record_root_version(&mut self, delta: RootDelta, ops: &mut Vec<StoreOp>) {
        let max = self.config.max_versions.max(1);
        let refs = match self.state.root_versions.get_max() {
            Some((_, prev)) => {
                let mut r = prev.clone();
                for (id, v) in &delta.apps {
                    match v {
                        Some(v) => r.apps.insert(id.clone(), *v),
                        None => r.apps.remove(id),
                    };
                }
                for (id, g) in &delta.groups {
                    match g {
                        Some(g) => r.groups.insert(id.clone(), Arc::new(g.clone())),
                        None => r.groups.remove(id),
                    };
                }
                r
            }
            // No history yet: start it from the whole current root.
            None => RootRefs {
                apps: self
                    .state
                    .apps
                    .iter()
                    .map(|(id, a)| (id.clone(), a.version))
                    .collect(),
                groups: self
                    .state
                    .groups
                    .iter()
                    .map(|(id, g)| (id.clone(), g.clone()))
                    .collect(),
            },
        };
        let first = self.state.root_versions.is_empty();
        self.state.root_versions.insert(delta.version, refs);
        let mut forgot = false;
        while self.state.root_versions.len() > max {
            if let Some(oldest) = self.state.root_versions.get_min().map(|(v, _)| *v) {
                self.state.root_versions.remove(&oldest);
                forgot = true;
            }
        }
        // References to removed apps disappear only with the versions that held them.
        if forgot {
            self.collect_orphans(ops);
        }
        if !first {
            ops.push(put(keys::ROOT_VERSION, &delta.version.to_string(), &delta));
            self.root_deltas.insert(delta.version);
        }
        // Compact now and then: the oldest retained version becomes the new base.
        // The base costs O(apps) to write, so it is rewritten only every O(apps) changes.
        let compact_after = (2 * max).max(self.state.apps.len() / 4);
        if first || self.root_deltas.len() > compact_after {
            let (base_version, base) = self
                .state
                .root_versions
                .get_min()
                .map(|(v, r)| (*v, r.clone()))
                .expect("just inserted");
            let record = RootBase {
                version: base_version,
                apps: base.apps.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                groups: base
                    .groups
                    .iter()
                    .map(|(k, g)| (k.clone(), (**g).clone()))
                    .collect(),
            };
            ops.push(put(ROOT_BASE_KEY, "", &record));
            let stale: Vec<Timestamp> = self
                .root_deltas
                .iter()
                .copied()
                .filter(|v| *v <= base_version)
                .collect();
            for v in stale {
                self.root_deltas.remove(&v);
                ops.push(del(keys::ROOT_VERSION, &v.to_string()));
            }
        }
    }

    /// Rebuilds the root history from its stored base and deltas.
    pub(crate) fn restore_root_versions(
        &mut self,
        base: Option<RootBase>,
        mut deltas: Vec<RootDelta>,
    ) {
        let Some(base) = base else {
            return;
        };
        let mut refs = RootRefs {
            apps: base.apps.into_iter().collect(),
            groups: base
                .groups
                .into_iter()
                .map(|(k, g)| (k, Arc::new(g)))
                .collect(),
        };
        self.state.root_versions.insert(base.version, refs.clone());
        deltas.sort_by_key(|d| d.version);
        for d in deltas.into_iter().filter(|d| d.version > base.version) {
            for (id, v) in d.apps {
                match v {
                    Some(v) => refs.apps.insert(id, v),
                    None => refs.apps.remove(&id),
                };
            }
            for (id, g) in d.groups {
                match g {
                    Some(g) => refs.groups.insert(id, Arc::new(g)),
                    None => refs.groups.remove(&id),
                };
            }
            self.root_deltas.insert(d.version);
            self.state.root_versions.insert(d.version, refs.clone());
        }
        let max = self.config.max_versions.max(1);
        while self.state.root_versions.len() > max {
            if let Some(oldest) = self.state.root_versions.get_min().map(|(v, _)| *v) {
                self.state.root_versions.remove(&oldest);
            }
        }
    }
}
