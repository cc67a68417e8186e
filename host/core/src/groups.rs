//! Group commands: turn a GroupUpdate into a [`Change`] of the root group. The deployment engine
//! does the rest, exactly as for app commands.

use crate::deploy::{AppTarget, Change};
use crate::group_patch::GroupPatch;
use crate::id::PathId;
use crate::machine::{CommandError, Scheduler};
use crate::normalize::NormalizeContext;
use crate::state::{under, Group};
use crate::time::Timestamp;
use crate::validate::{validate_app, ValidationContext};
use crate::violation::Violation;
use std::collections::BTreeSet;

fn invalid(path: impl Into<String>, msg: impl Into<String>) -> CommandError {
    CommandError::Invalid(vec![Violation::new(path, msg)])
}

fn target_id(base: &PathId, patch: &GroupPatch) -> Result<PathId, CommandError> {
    patch
        .target_id(base)
        .map_err(|e| invalid("/id", e.to_string()))
}

impl Scheduler {
    /// `POST /v2/groups`: a new group with its apps and subgroups.
    pub(crate) fn create_group_change(
        &self,
        base: &PathId,
        patch: &GroupPatch,
        version: Timestamp,
    ) -> Result<Change, CommandError> {
        let gid = target_id(base, patch)?;
        if self.state.apps.contains_key(&gid) {
            return Err(CommandError::AlreadyExists(format!(
                "An app with the path {gid} already exists."
            )));
        }
        if self.state.group(&gid).is_some() {
            return Err(CommandError::AlreadyExists(format!(
                "Group {gid} is already created. Use PUT to change this group."
            )));
        }
        self.structural_change(&gid, patch, version)
    }

    /// `PUT /v2/groups`: rollback to a version, scale by a factor, or a structural update that
    /// creates the group if needed.
    pub(crate) fn update_group_change(
        &self,
        base: &PathId,
        patch: &GroupPatch,
        version: Timestamp,
    ) -> Result<Change, CommandError> {
        let gid = target_id(base, patch)?;
        if let Some(v) = &patch.version {
            return self.group_rollback_change(&gid, v);
        }
        if let Some(factor) = patch.scale_by {
            if !factor.is_finite() || factor < 0.0 {
                return Err(invalid(
                    "/scaleBy",
                    "must be a number greater than or equal to 0",
                ));
            }
            if self.state.group(&gid).is_none() {
                return Err(CommandError::NotFound(format!(
                    "Group '{gid}' does not exist"
                )));
            }
            let mut change = Change::default();
            for app in self.state.apps_under(&gid) {
                let mut a = (**app).clone();
                a.instances = (a.instances as f64 * factor).ceil().min(u32::MAX as f64) as u32;
                change.apps.insert(a.id.clone(), Some(AppTarget::new(a)));
            }
            return Ok(change);
        }
        if self.state.apps.contains_key(&gid) {
            return Err(CommandError::AlreadyExists(format!(
                "An app with the path {gid} already exists."
            )));
        }
        self.structural_change(&gid, patch, version)
    }

    /// `DELETE /v2/groups/{id}`: every app and group below (for the root: everything).
    pub(crate) fn delete_group_change(&self, gid: &PathId) -> Result<Change, CommandError> {
        if self.state.group(gid).is_none() {
            return Err(CommandError::NotFound(format!(
                "Group '{gid}' does not exist"
            )));
        }
        let mut change = Change::default();
        self.remove_subtree(gid, &mut change);
        Ok(change)
    }

    fn remove_subtree(&self, gid: &PathId, change: &mut Change) {
        for (id, _) in under(&self.state.apps, gid) {
            change.apps.insert(id.clone(), None);
        }
        for (id, _) in under(&self.state.groups, gid) {
            if !id.is_root() {
                change.groups.insert(id.clone(), None);
            }
        }
        if !gid.is_root() {
            change.groups.insert(gid.clone(), None);
        }
    }

    fn group_rollback_change(&self, gid: &PathId, raw: &str) -> Result<Change, CommandError> {
        let unavailable =
            || CommandError::Unprocessable(format!("Group {gid} not available in version {raw}"));
        let ts = Timestamp::parse(raw).ok_or_else(unavailable)?;
        let refs = self.state.root_versions.get(&ts).ok_or_else(unavailable)?;
        if !gid.is_root() && !refs.groups.contains_key(gid) {
            return Err(unavailable());
        }
        let mut change = Change::default();
        self.remove_subtree(gid, &mut change);
        for (id, g) in under(&refs.groups, gid) {
            change.groups.insert(id.clone(), Some((**g).clone()));
        }
        if let Some(g) = refs.groups.get(gid) {
            change.groups.insert(gid.clone(), Some((**g).clone()));
        }
        for (id, v) in under(&refs.apps, gid) {
            let app = self
                .state
                .versions
                .get(id)
                .and_then(|vs| vs.get(v))
                .ok_or_else(|| {
                    CommandError::Unprocessable(format!(
                        "Group {gid} not available in version {raw}: version {v} of app {id} is no longer stored"
                    ))
                })?;
            change.apps.insert(
                id.clone(),
                Some(AppTarget {
                    app: (**app).clone(),
                    restart: false,
                    keep_config: Some(app.version_info.last_config_change_at),
                }),
            );
        }
        Ok(change)
    }

    fn structural_change(
        &self,
        gid: &PathId,
        patch: &GroupPatch,
        version: Timestamp,
    ) -> Result<Change, CommandError> {
        let mut change = Change::default();
        let mut errs = Vec::new();
        self.structural(gid, patch, version, &mut change, "", &mut errs);
        if errs.is_empty() {
            Ok(change)
        } else {
            Err(CommandError::Invalid(errs))
        }
    }

    /// Marathon's structural group update: given `apps` replace the group's apps, given
    /// `groups` replace its subgroups (recursively); omitted fields keep what is there.
    fn structural(
        &self,
        gid: &PathId,
        patch: &GroupPatch,
        version: Timestamp,
        change: &mut Change,
        prefix: &str,
        errs: &mut Vec<Violation>,
    ) {
        let mut group = self
            .state
            .group(gid)
            .map(|g| (*g).clone())
            .unwrap_or(Group {
                id: gid.clone(),
                dependencies: Vec::new(),
                version,
                enforce_role: false,
            });
        if let Some(deps) = &patch.dependencies {
            group.dependencies.clear();
            for (i, d) in deps.iter().enumerate() {
                match PathId::resolve(d, gid) {
                    Ok(p) if !p.is_root() => group.dependencies.push(p),
                    Ok(_) => errs.push(Violation::new(
                        format!("{prefix}/dependencies({i})"),
                        "Path must contain at least one path element",
                    )),
                    Err(e) => errs.push(Violation::new(
                        format!("{prefix}/dependencies({i})"),
                        e.to_string(),
                    )),
                }
            }
        }
        if let Some(e) = patch.enforce_role {
            group.enforce_role = e;
        }
        change.groups.insert(gid.clone(), Some(group));

        if let Some(apps) = &patch.apps {
            let mut listed = BTreeSet::new();
            let ctx = NormalizeContext {
                base: gid,
                default_role: &self.config.default_role,
                now: version,
            };
            let vctx = ValidationContext {
                default_role: &self.config.default_role,
                features: &self.config.features,
                extensions: &self.config.extensions,
            };
            for (i, ap) in apps.iter().enumerate() {
                let here = format!("{prefix}/apps({i})");
                let Some(raw) = &ap.id else {
                    errs.push(Violation::new(format!("{here}/id"), "error.path.missing"));
                    continue;
                };
                let id = match PathId::parse_app_id(raw, gid) {
                    Ok(id) => id,
                    Err(e) => {
                        errs.push(Violation::new(format!("{here}/id"), e.to_string()));
                        continue;
                    }
                };
                if &id.parent() != gid {
                    errs.push(Violation::new(
                        format!("{here}/id"),
                        format!("App {id} is not a direct child of group {gid}"),
                    ));
                    continue;
                }
                if !listed.insert(id.clone()) {
                    errs.push(Violation::new(
                        format!("{here}/id"),
                        format!("App {id} is listed more than once"),
                    ));
                    continue;
                }
                let prefixed = |vs: Vec<Violation>| {
                    vs.into_iter().map(|v| {
                        Violation::new(format!("{here}{}", v.path.trim_end_matches('/')), v.message)
                    })
                };
                let mut app = match ap.apply(id.clone(), None, &ctx) {
                    Ok(a) => a,
                    Err(vs) => {
                        errs.extend(prefixed(vs));
                        continue;
                    }
                };
                let vs = validate_app(&app, &vctx);
                if !vs.is_empty() {
                    errs.extend(prefixed(vs));
                    continue;
                }
                if let Some(old) = self.state.apps.get(&id) {
                    self.keep_service_ports(old, &mut app);
                }
                change.apps.insert(id, Some(AppTarget::new(app)));
            }
            for (id, _) in under(&self.state.apps, gid) {
                if &id.parent() == gid && !listed.contains(id) {
                    change.apps.insert(id.clone(), None);
                }
            }
        }

        if let Some(groups) = &patch.groups {
            let mut listed = BTreeSet::new();
            for (i, sub) in groups.iter().enumerate() {
                let here = format!("{prefix}/groups({i})");
                let Some(raw) = &sub.id else {
                    errs.push(Violation::new(format!("{here}/id"), "error.path.missing"));
                    continue;
                };
                let sid = match PathId::resolve(raw, gid) {
                    Ok(s) if &s.parent() == gid && !s.is_root() => s,
                    Ok(s) => {
                        errs.push(Violation::new(
                            format!("{here}/id"),
                            format!("Group {s} is not a direct child of group {gid}"),
                        ));
                        continue;
                    }
                    Err(e) => {
                        errs.push(Violation::new(format!("{here}/id"), e.to_string()));
                        continue;
                    }
                };
                if self.state.apps.contains_key(&sid) || change.apps.contains_key(&sid) {
                    errs.push(Violation::new(
                        format!("{here}/id"),
                        "Groups and Applications may not have the same identifier.",
                    ));
                    continue;
                }
                listed.insert(sid.clone());
                self.structural(&sid, sub, version, change, &here, errs);
            }
            let stale: Vec<PathId> = under(&self.state.groups, gid)
                .map(|(id, _)| id.clone())
                .filter(|id| !id.is_root() && &id.parent() == gid && !listed.contains(id))
                .collect();
            for id in stale {
                self.remove_subtree(&id, change);
            }
        }
    }
}
