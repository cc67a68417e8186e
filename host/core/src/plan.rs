//! Deployment plans: which actions a change needs and in which order (Marathon §5.1).
//!
//! Apps are ordered by the length of their longest dependency chain: an app that depends on
//! nothing is started (or upgraded) in the first step, an app that depends on it in the next,
//! and so on. Stops run the other way round, dependents first.

use crate::app::AppDefinition;
use crate::id::PathId;
use crate::state::{under, ActionKind, DeploymentAction, Group};
use imbl::OrdMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A root group to plan against: its apps and its group records.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub apps: &'a OrdMap<PathId, Arc<AppDefinition>>,
    pub groups: &'a OrdMap<PathId, Arc<Group>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CyclicDependencies;

impl std::fmt::Display for CyclicDependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dependency graph has cyclic dependencies.")
    }
}

impl<'a> View<'a> {
    /// The apps `app` depends on: its own `dependencies` and those of its enclosing groups, where
    /// a group id stands for every app below it. Ids that name nothing are ignored, as Marathon
    /// does.
    pub fn dependencies(&self, app: &AppDefinition) -> BTreeSet<PathId> {
        let mut raw: Vec<&PathId> = app.dependencies.iter().collect();
        for g in app.id.ancestors() {
            if let Some(group) = self.groups.get(&g) {
                raw.extend(group.dependencies.iter());
            }
        }
        let mut out = BTreeSet::new();
        for d in raw {
            if self.apps.contains_key(d) {
                out.insert(d.clone());
            } else {
                // A group's own apps do not depend on themselves through it.
                out.extend(
                    under(self.apps, d)
                        .map(|(id, _)| id.clone())
                        .filter(|id| id != &app.id),
                );
            }
        }
        out
    }

    /// The longest dependency chain below each of `roots` (0 = depends on nothing), computed
    /// over everything reachable from them; a cycle anywhere on the way is an error.
    pub fn depths<'r>(
        &self,
        roots: impl IntoIterator<Item = &'r PathId>,
    ) -> Result<BTreeMap<PathId, usize>, CyclicDependencies> {
        let mut done: BTreeMap<PathId, usize> = BTreeMap::new();
        let mut on_path: BTreeSet<PathId> = BTreeSet::new();
        for root in roots {
            if done.contains_key(root) || !self.apps.contains_key(root) {
                continue;
            }
            // Iterative depth-first search: (node, its dependencies, next index to visit).
            let mut stack: Vec<(PathId, Vec<PathId>, usize)> = Vec::new();
            let deps = self.dependencies(&self.apps[root]).into_iter().collect();
            on_path.insert(root.clone());
            stack.push((root.clone(), deps, 0));
            while let Some((node, deps, next)) = stack.last_mut() {
                if let Some(dep) = deps.get(*next).cloned() {
                    *next += 1;
                    if done.contains_key(&dep) {
                        continue;
                    }
                    if on_path.contains(&dep) {
                        return Err(CyclicDependencies);
                    }
                    let sub = self.dependencies(&self.apps[&dep]).into_iter().collect();
                    on_path.insert(dep.clone());
                    stack.push((dep, sub, 0));
                } else {
                    let depth = deps
                        .iter()
                        .map(|d| done.get(d).copied().unwrap_or(0) + 1)
                        .max()
                        .unwrap_or(0);
                    let node = node.clone();
                    on_path.remove(&node);
                    done.insert(node, depth);
                    stack.pop();
                }
            }
        }
        Ok(done)
    }
}

/// Groups actions into steps by depth: ascending (dependencies first) or descending
/// (dependents first). Actions of equal depth run together.
pub fn ordered_steps(
    actions: Vec<(PathId, ActionKind)>,
    depths: &BTreeMap<PathId, usize>,
    dependents_first: bool,
) -> Vec<Vec<DeploymentAction>> {
    let mut by_depth: BTreeMap<usize, Vec<DeploymentAction>> = BTreeMap::new();
    for (app, action) in actions {
        let d = depths.get(&app).copied().unwrap_or(0);
        by_depth
            .entry(d)
            .or_default()
            .push(DeploymentAction { action, app });
    }
    let mut steps: Vec<Vec<DeploymentAction>> = by_depth.into_values().collect();
    if dependents_first {
        steps.reverse();
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn app(id: &str, deps: &[&str]) -> (PathId, Arc<AppDefinition>) {
        let pid = PathId::parse_app_id(id, &PathId::root()).unwrap();
        let mut a = AppDefinition::with_defaults(pid.clone(), "*", Timestamp::EPOCH);
        a.dependencies = deps
            .iter()
            .map(|d| PathId::resolve(d, &PathId::root()).unwrap())
            .collect();
        (pid, Arc::new(a))
    }

    fn group(id: &str, deps: &[&str]) -> (PathId, Arc<Group>) {
        let pid = PathId::resolve(id, &PathId::root()).unwrap();
        let g = Group {
            id: pid.clone(),
            dependencies: deps
                .iter()
                .map(|d| PathId::resolve(d, &PathId::root()).unwrap())
                .collect(),
            version: Timestamp::EPOCH,
            enforce_role: false,
        };
        (pid, Arc::new(g))
    }

    fn p(s: &str) -> PathId {
        PathId::resolve(s, &PathId::root()).unwrap()
    }

    #[test]
    fn chain_is_ordered_leaves_first_and_stops_reverse() {
        let apps: OrdMap<_, _> = [
            app("/s/db", &[]),
            app("/s/api", &["/s/db"]),
            app("/s/web", &["/s/api"]),
        ]
        .into_iter()
        .collect();
        let groups = OrdMap::new();
        let view = View {
            apps: &apps,
            groups: &groups,
        };
        let ids: Vec<PathId> = apps.keys().cloned().collect();
        let depths = view.depths(&ids).unwrap();
        assert_eq!(depths[&p("/s/db")], 0);
        assert_eq!(depths[&p("/s/api")], 1);
        assert_eq!(depths[&p("/s/web")], 2);
        let actions: Vec<_> = ids
            .iter()
            .map(|i| (i.clone(), ActionKind::ScaleApplication))
            .collect();
        let up = ordered_steps(actions.clone(), &depths, false);
        let order: Vec<&str> = up.iter().map(|s| s[0].app.as_str()).collect();
        assert_eq!(order, ["/s/db", "/s/api", "/s/web"]);
        let down = ordered_steps(actions, &depths, true);
        let order: Vec<&str> = down.iter().map(|s| s[0].app.as_str()).collect();
        assert_eq!(order, ["/s/web", "/s/api", "/s/db"]);
    }

    #[test]
    fn independent_apps_share_a_step() {
        let apps: OrdMap<_, _> = [app("/a", &[]), app("/b", &[]), app("/c", &["/a", "/b"])]
            .into_iter()
            .collect();
        let groups = OrdMap::new();
        let view = View {
            apps: &apps,
            groups: &groups,
        };
        let ids: Vec<PathId> = apps.keys().cloned().collect();
        let depths = view.depths(&ids).unwrap();
        let steps = ordered_steps(
            ids.iter()
                .map(|i| (i.clone(), ActionKind::RestartApplication))
                .collect(),
            &depths,
            false,
        );
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].len(), 2);
        assert_eq!(steps[1][0].app, p("/c"));
    }

    #[test]
    fn group_dependencies_expand_to_the_apps_below() {
        let apps: OrdMap<_, _> = [
            app("/db/pg", &[]),
            app("/db/redis", &[]),
            app("/web/ui", &[]),
        ]
        .into_iter()
        .collect();
        let groups: OrdMap<_, _> = [group("/db", &[]), group("/web", &["/db"])]
            .into_iter()
            .collect();
        let view = View {
            apps: &apps,
            groups: &groups,
        };
        let deps = view.dependencies(&apps[&p("/web/ui")]);
        assert_eq!(
            deps.into_iter().collect::<Vec<_>>(),
            vec![p("/db/pg"), p("/db/redis")]
        );
        let depths = view.depths([&p("/web/ui")]).unwrap();
        assert_eq!(depths[&p("/web/ui")], 1);
    }

    #[test]
    fn cycles_are_found_however_long() {
        let apps: OrdMap<_, _> = [app("/a", &["/c"]), app("/b", &["/a"]), app("/c", &["/b"])]
            .into_iter()
            .collect();
        let groups = OrdMap::new();
        let view = View {
            apps: &apps,
            groups: &groups,
        };
        assert_eq!(view.depths([&p("/a")]), Err(CyclicDependencies));
        let selfish: OrdMap<_, _> = [app("/x", &["/x"])].into_iter().collect();
        let view = View {
            apps: &selfish,
            groups: &groups,
        };
        assert_eq!(view.depths([&p("/x")]), Err(CyclicDependencies));
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 20_000;
        let apps: OrdMap<_, _> = (0..n)
            .map(|i| {
                let deps: Vec<String> = if i == 0 {
                    vec![]
                } else {
                    vec![format!("/a{}", i - 1)]
                };
                let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
                app(&format!("/a{i}"), &deps)
            })
            .collect();
        let groups = OrdMap::new();
        let view = View {
            apps: &apps,
            groups: &groups,
        };
        let depths = view.depths([&p(&format!("/a{}", n - 1))]).unwrap();
        assert_eq!(depths[&p(&format!("/a{}", n - 1))], n - 1);
    }
}
