//! Validation results as data: a list of `(path, message)` pairs rendered in Marathon's 422 shape.

use serde::Serialize;

/// One failed rule. `path` uses Marathon's notation: `/field/sub`, array indexes as `(n)`,
/// object-level rules at `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Violation {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One entry of the `details` array of Marathon's error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ViolationDetail {
    pub path: String,
    pub errors: Vec<String>,
}

/// Groups violations by path, keeping first-seen order, as Marathon's `details` does.
pub fn group_by_path(violations: &[Violation]) -> Vec<ViolationDetail> {
    let mut out: Vec<ViolationDetail> = Vec::new();
    for v in violations {
        match out.iter_mut().find(|d| d.path == v.path) {
            Some(d) => {
                if !d.errors.contains(&v.message) {
                    d.errors.push(v.message.clone())
                }
            }
            None => out.push(ViolationDetail {
                path: v.path.clone(),
                errors: vec![v.message.clone()],
            }),
        }
    }
    out
}

/// Collects violations under a path prefix while walking a nested object.
#[derive(Default)]
pub struct Collector {
    pub violations: Vec<Violation>,
}

impl Collector {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation::new(path, message));
    }

    pub fn check(&mut self, ok: bool, path: impl Into<String>, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Renders a number the way Marathon's messages do (`0.0`, `1.5`, `3`).
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        x.to_string()
    }
}
