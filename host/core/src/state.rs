//! The scheduler's state as persistent (structurally shared) maps, so a snapshot for API reads
//! costs O(1) and never blocks the core.

use crate::app::AppDefinition;
use crate::id::{InstanceId, PathId};
use crate::instance::{Instance, TaskFailure};
use crate::time::Timestamp;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: PathId,
    #[serde(default)]
    pub dependencies: Vec<PathId>,
    pub version: Timestamp,
    #[serde(default)]
    pub enforce_role: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub action: String,
    pub app: PathId,
}

/// A change being rolled out. Steps run in order; the actions of a step run together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: Timestamp,
    pub affected_apps: Vec<PathId>,
    pub steps: Vec<Vec<DeploymentAction>>,
    /// 1-based index of the step in progress.
    pub current_step: usize,
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
}

impl State {
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

    /// Apps in `group` and all its subgroups.
    pub fn apps_under<'a>(
        &'a self,
        group: &'a PathId,
    ) -> impl Iterator<Item = &'a Arc<AppDefinition>> + 'a {
        self.apps
            .values()
            .filter(move |a| a.id.is_descendant_of(group))
    }

    /// The backoff delay in force for an app at `now`, if any.
    pub fn delay_of(&self, app: &AppDefinition, now: Timestamp) -> Option<&Delay> {
        self.delays.get(&app.id).filter(|d| {
            d.config_version == app.version_info.last_config_change_at && d.deadline > now
        })
    }
}
