//! The scheduler's state as persistent (structurally shared) maps, so a snapshot for API reads
//! costs O(1) and never blocks the core.

use crate::app::AppDefinition;
use crate::id::{InstanceId, PathId};
use crate::instance::{Instance, TaskFailure};
use crate::time::Timestamp;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: PathId,
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub version: Timestamp,
    #[serde(default)]
    pub enforce_role: bool,
}

impl Group {
    pub fn root() -> Self {
        Group {
            id: PathId::root(),
            dependencies: Vec::new(),
            version: Timestamp::EPOCH,
            enforce_role: false,
        }
    }
}

/// Entries of a path-keyed map strictly below `group` (all entries for the root).
pub fn under<'a, V>(
    map: &'a OrdMap<PathId, V>,
    group: &PathId,
) -> Box<dyn Iterator<Item = (&'a PathId, &'a V)> + 'a>
where
    V: Clone,
{
    if group.is_root() {
        return Box::new(map.iter());
    }
    // Ids sort as strings, so everything below `/g` lies in `[/g/, /g0)` ('0' follows '/').
    let lo = PathId::from_raw_unchecked(format!("{}/", group.as_str()));
    let hi = PathId::from_raw_unchecked(format!("{}0", group.as_str()));
    Box::new(map.range(lo..hi))
}

/// The kinds of deployment action, named as in Marathon's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionKind {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::StopApplication => "StopApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub action: ActionKind,
    pub app: PathId,
}

/// Pacer's opt-in answer to deployments that never finish (Marathon's most common complaint).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Fail the deployment when its current step makes no progress for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<u64>,
    /// After failing, start a forced deployment that reverts the change.
    #[serde(default)]
    pub rollback: bool,
}

/// A change being rolled out. Steps run in order; the actions of a step run together.
/// `original_*` hold what the change replaced, so that it can be reverted even after the
/// affected apps' old versions have been pruned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    pub affected_apps: Vec<PathId>,
    pub steps: Vec<Vec<DeploymentAction>>,
    /// 1-based index of the step in progress; `steps.len() + 1` once all are done.
    pub current_step: usize,
    #[serde(default)]
    pub original_apps: BTreeMap<PathId, Option<Arc<AppDefinition>>>,
    #[serde(default)]
    pub original_groups: BTreeMap<PathId, Option<Arc<Group>>>,
    #[serde(default)]
    pub policy: FailurePolicy,
    /// This deployment reverts another one (it is never reverted automatically itself).
    #[serde(default)]
    pub is_revert: bool,
}

impl Deployment {
    /// The 0-based index of the first step that has an action for `app`.
    pub fn step_of(&self, app: &PathId) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.iter().any(|a| &a.app == app))
    }

    pub fn current_actions(&self) -> &[DeploymentAction] {
        self.current_step
            .checked_sub(1)
            .and_then(|i| self.steps.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The root group at one version, by reference: which version of each app and which groups.
/// Persistent maps, so consecutive versions share almost everything in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RootRefs {
    pub apps: OrdMap<PathId, Timestamp>,
    pub groups: OrdMap<PathId, Arc<Group>>,
}

/// Offer statistics for one app's current launch attempt (for `/v2/queue`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_used_at: Option<Timestamp>,
    pub last_unused_at: Option<Timestamp>,
    /// Offers declined for each reason, in the order the reasons are checked.
    pub rejected: BTreeMap<crate::placement::RejectReason, u64>,
    /// The last few offers the app could not use, newest last.
    pub last_unused: std::collections::VecDeque<UnusedOffer>,
}

/// How many unused offers [`OfferStats::last_unused`] keeps per app.
pub const LAST_UNUSED_OFFERS: usize = 10;

/// An offer an app could not use, and why (`embed=lastUnusedOffers` in `/v2/queue`).
#[derive(Clone, Debug, PartialEq)]
pub struct UnusedOffer {
    pub offer: Arc<crate::cluster::Offer>,
    pub reason: crate::placement::RejectReason,
    /// What a constraint plugin said, if one refused the offer.
    pub detail: Option<String>,
    pub at: Timestamp,
}

/// Launch backoff for one app config (Marathon's RateLimiter entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delay {
    pub config_version: Timestamp,
    pub delay: Duration,
    pub deadline: Timestamp,
}

/// Everything the API may read. Cloning is cheap (persistent maps behind `Arc`s).
#[derive(Clone, Debug, Default)]
pub struct State {
    pub apps: OrdMap<PathId, Arc<AppDefinition>>,
    pub groups: OrdMap<PathId, Arc<Group>>,
    /// Stored versions per app, oldest first.
    pub versions: OrdMap<PathId, OrdMap<Timestamp, Arc<AppDefinition>>>,
    pub instances: OrdMap<InstanceId, Arc<Instance>>,
    pub by_app: OrdMap<PathId, OrdSet<InstanceId>>,
    pub deployments: OrdMap<String, Arc<Deployment>>,
    /// Index: app → ids of the running deployments that affect it.
    pub deployments_by_app: OrdMap<PathId, OrdSet<String>>,
    pub task_failures: OrdMap<PathId, Arc<TaskFailure>>,
    pub delays: OrdMap<PathId, Delay>,
    /// Service port → owning app, for uniqueness across apps.
    pub service_ports: OrdMap<i64, PathId>,
    /// The root group's history, oldest first (at most `--zk_max_versions` entries).
    pub root_versions: OrdMap<Timestamp, RootRefs>,
    pub offer_stats: OrdMap<PathId, OfferStats>,
    /// Removed apps whose versions are kept for the root history.
    pub orphans: OrdSet<PathId>,
    /// Health and readiness of running tasks, in memory only (as Marathon's: a restart probes
    /// again). Only instances whose task has a result are present.
    pub health: OrdMap<InstanceId, Arc<InstanceHealth>>,
    /// HTTP callback URLs (`/v2/eventSubscriptions`).
    pub event_subscribers: OrdSet<String>,
}

/// The result of one health check for one task (Marathon's `Health`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthResult {
    pub consecutive_failures: u32,
    pub first_success: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_failure: Option<Timestamp>,
    pub last_failure_cause: Option<String>,
}

impl HealthResult {
    /// Alive: the last success is newer than the last failure.
    pub fn alive(&self) -> bool {
        match (self.last_success, self.last_failure) {
            (Some(s), Some(f)) => s > f,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// What the last readiness probe of a task answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessResult {
    /// The readiness check's `name`.
    pub name: String,
    pub ready: bool,
    /// Kept only with `preserveLastResponse`.
    pub last_response: Option<HttpResponse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Health of one instance's current task: one slot per health check of the version it runs
/// (`None` until that check has a result), and its readiness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHealth {
    pub task_id: crate::id::TaskId,
    pub checks: Vec<Option<HealthResult>>,
    pub readiness: Option<ReadinessResult>,
}

impl InstanceHealth {
    /// Marathon's instance health: `Some(true)` when every check has a result and all are
    /// alive, `Some(false)` when any result is not alive, `None` while results are missing.
    pub fn healthy(&self) -> Option<bool> {
        if self.checks.iter().flatten().any(|r| !r.alive()) {
            Some(false)
        } else if !self.checks.is_empty() && self.checks.iter().all(Option::is_some) {
            Some(true)
        } else {
            None
        }
    }
}

impl State {
    /// True if `other` is this state, unchanged: every map is the very same tree (O(1)). A
    /// change, even one that puts back an equal value, makes it false.
    pub fn same_as(&self, other: &State) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let State {
            apps,
            groups,
            versions,
            instances,
            by_app,
            deployments,
            deployments_by_app,
            task_failures,
            delays,
            service_ports,
            root_versions,
            offer_stats,
            orphans,
            health,
            event_subscribers,
        } = self;
        apps.ptr_eq(&other.apps)
            && groups.ptr_eq(&other.groups)
            && versions.ptr_eq(&other.versions)
            && instances.ptr_eq(&other.instances)
            && by_app.ptr_eq(&other.by_app)
            && deployments.ptr_eq(&other.deployments)
            && deployments_by_app.ptr_eq(&other.deployments_by_app)
            && task_failures.ptr_eq(&other.task_failures)
            && delays.ptr_eq(&other.delays)
            && service_ports.ptr_eq(&other.service_ports)
            && root_versions.ptr_eq(&other.root_versions)
            && offer_stats.ptr_eq(&other.offer_stats)
            && orphans.ptr_eq(&other.orphans)
            && health.ptr_eq(&other.health)
            && event_subscribers.ptr_eq(&other.event_subscribers)
    }

    pub fn app(&self, id: &PathId) -> Option<&Arc<AppDefinition>> {
        self.apps.get(id)
    }

    pub fn instances_of<'a>(
        &'a self,
        app: &PathId,
    ) -> impl Iterator<Item = &'a Arc<Instance>> + 'a {
        self.by_app
            .get(app)
            .into_iter()
            .flat_map(|set| set.iter())
            .filter_map(|iid| self.instances.get(iid))
    }

    /// Running deployments that affect `app`.
    pub fn deployments_of<'a>(
        &'a self,
        app: &'a PathId,
    ) -> impl Iterator<Item = &'a Arc<Deployment>> + 'a {
        self.deployments_by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.deployments.get(id))
    }

    pub fn add_deployment(&mut self, dep: Deployment) {
        for app in &dep.affected_apps {
            let mut ids = self
                .deployments_by_app
                .get(app)
                .cloned()
                .unwrap_or_default();
            ids.insert(dep.id.clone());
            self.deployments_by_app.insert(app.clone(), ids);
        }
        self.deployments.insert(dep.id.clone(), Arc::new(dep));
    }

    pub fn remove_deployment(&mut self, id: &str) {
        let Some(dep) = self.deployments.remove(id) else {
            return;
        };
        for app in &dep.affected_apps {
            if let Some(ids) = self.deployments_by_app.get(app) {
                let mut ids = ids.clone();
                ids.remove(id);
                if ids.is_empty() {
                    self.deployments_by_app.remove(app);
                } else {
                    self.deployments_by_app.insert(app.clone(), ids);
                }
            }
        }
    }

    /// Apps in `group` and all its subgroups (a range scan: ids sort by path).
    pub fn apps_under<'a>(
        &'a self,
        group: &'a PathId,
    ) -> impl Iterator<Item = &'a Arc<AppDefinition>> + 'a {
        under(&self.apps, group).map(|(_, a)| a)
    }

    /// A group record; the root always exists.
    pub fn group(&self, id: &PathId) -> Option<Arc<Group>> {
        match self.groups.get(id) {
            Some(g) => Some(g.clone()),
            None if id.is_root() => Some(Arc::new(Group::root())),
            None => None,
        }
    }

    /// The backoff delay in force for an app at `now`, if any.
    pub fn delay_of(&self, app: &AppDefinition, now: Timestamp) -> Option<&Delay> {
        self.delays.get(&app.id).filter(|d| {
            d.config_version == app.version_info.last_config_change_at && d.deadline > now
        })
    }
}
