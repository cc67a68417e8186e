//! Group bodies as clients send them to `/v2/groups` (Marathon's GroupUpdate): ids relative to
//! the enclosing group, apps as full definitions, subgroups nested to any depth.

use crate::id::PathId;
use crate::normalize::{parse_app_patch, AppPatch};
use crate::violation::Violation;
use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct GroupPatch {
    pub id: Option<String>,
    pub apps: Option<Vec<AppPatch>>,
    pub groups: Option<Vec<GroupPatch>>,
    pub dependencies: Option<Vec<String>>,
    pub enforce_role: Option<bool>,
    /// Rollback of the whole group to a stored root version.
    pub version: Option<String>,
    /// Scale every app below the group by this factor.
    pub scale_by: Option<f64>,
}

impl GroupPatch {
    /// The group a request addresses: the body's id relative to the URL's path, else the path.
    pub fn target_id(&self, base: &PathId) -> Result<PathId, crate::id::PathError> {
        match &self.id {
            Some(raw) => PathId::resolve(raw, base),
            None => Ok(base.clone()),
        }
    }
}

/// Parses a GroupUpdate; type errors carry Marathon's paths (`/apps(0)/cmd`,
/// `/groups(1)/id`) and `error.expected.*` codes.
pub fn parse_group_patch(value: Value) -> Result<GroupPatch, Vec<Violation>> {
    parse_at(value, "")
}

fn at(prefix: &str, field: &str) -> String {
    format!("{prefix}/{field}")
}

fn parse_at(value: Value, prefix: &str) -> Result<GroupPatch, Vec<Violation>> {
    let Value::Object(obj) = value else {
        let path = if prefix.is_empty() { "/" } else { prefix };
        return Err(vec![Violation::new(path, "error.expected.jsobject")]);
    };
    let mut errs = Vec::new();
    let mut patch = GroupPatch::default();
    for (key, v) in obj {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "id" => match v {
                Value::String(s) => patch.id = Some(s),
                _ => errs.push(Violation::new(at(prefix, "id"), "error.expected.jsstring")),
            },
            "version" => match v {
                Value::String(s) => patch.version = Some(s),
                _ => errs.push(Violation::new(
                    at(prefix, "version"),
                    "error.expected.jsstring",
                )),
            },
            "scaleBy" => match v.as_f64() {
                Some(x) => patch.scale_by = Some(x),
                None => errs.push(Violation::new(
                    at(prefix, "scaleBy"),
                    "error.expected.jsnumber",
                )),
            },
            "enforceRole" => match v {
                Value::Bool(b) => patch.enforce_role = Some(b),
                _ => errs.push(Violation::new(
                    at(prefix, "enforceRole"),
                    "error.expected.jsboolean",
                )),
            },
            "dependencies" => match v {
                Value::Array(items) => {
                    let mut deps = Vec::new();
                    for (i, d) in items.into_iter().enumerate() {
                        match d {
                            Value::String(s) => deps.push(s),
                            _ => errs.push(Violation::new(
                                format!("{prefix}/dependencies({i})"),
                                "error.expected.jsstring",
                            )),
                        }
                    }
                    patch.dependencies = Some(deps);
                }
                _ => errs.push(Violation::new(
                    at(prefix, "dependencies"),
                    "error.expected.jsarray",
                )),
            },
            "apps" => match v {
                Value::Array(items) => {
                    let mut apps = Vec::new();
                    for (i, a) in items.into_iter().enumerate() {
                        let here = format!("{prefix}/apps({i})");
                        if !a.is_object() {
                            errs.push(Violation::new(here, "error.expected.jsobject"));
                            continue;
                        }
                        match parse_app_patch(a) {
                            Ok(p) => apps.push(p),
                            Err(vs) => errs.extend(vs.into_iter().map(|x| {
                                Violation::new(
                                    format!("{here}{}", x.path.trim_end_matches('/')),
                                    x.message,
                                )
                            })),
                        }
                    }
                    patch.apps = Some(apps);
                }
                _ => errs.push(Violation::new(at(prefix, "apps"), "error.expected.jsarray")),
            },
            "groups" => match v {
                Value::Array(items) => {
                    let mut groups = Vec::new();
                    for (i, g) in items.into_iter().enumerate() {
                        match parse_at(g, &format!("{prefix}/groups({i})")) {
                            Ok(p) => groups.push(p),
                            Err(vs) => errs.extend(vs),
                        }
                    }
                    patch.groups = Some(groups);
                }
                _ => errs.push(Violation::new(
                    at(prefix, "groups"),
                    "error.expected.jsarray",
                )),
            },
            // Pods are not supported yet; other unknown fields are ignored, as Marathon does.
            _ => {}
        }
    }
    if errs.is_empty() {
        Ok(patch)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_groups_and_apps() {
        let p = parse_group_patch(json!({
            "id": "prod",
            "dependencies": ["/db"],
            "apps": [{"id": "web", "cmd": "sleep 1", "instances": 2}],
            "groups": [{"id": "back", "apps": [{"id": "api"}]}]
        }))
        .unwrap();
        assert_eq!(p.id.as_deref(), Some("prod"));
        assert_eq!(p.apps.as_ref().unwrap()[0].instances, Some(2));
        let sub = &p.groups.as_ref().unwrap()[0];
        assert_eq!(sub.apps.as_ref().unwrap()[0].id.as_deref(), Some("api"));
    }

    #[test]
    fn type_errors_carry_nested_paths() {
        let errs = parse_group_patch(json!({
            "apps": [{"id": "a", "instances": "two"}],
            "groups": [{"id": 5}],
            "scaleBy": "x"
        }))
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"/apps(0)/instances"), "{paths:?}");
        assert!(paths.contains(&"/groups(0)/id"), "{paths:?}");
        assert!(paths.contains(&"/scaleBy"), "{paths:?}");
        assert!(parse_group_patch(json!([1])).is_err());
    }
}
