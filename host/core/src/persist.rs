//! Writes the core asks the shell to make durable. The `Store` trait that executes them lives in
//! `pacer-store`; keys and values are defined here so that every store lays data out the same way.
//!
//! Keys are `<category>/<id>`: one entry per app, app version, group, instance and deployment —
//! never the whole state in one value.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl StoreOp {
    pub fn key(&self) -> &str {
        match self {
            StoreOp::Put { key, .. } | StoreOp::Delete { key } => key,
        }
    }
}

/// Key prefixes, one per category of record.
pub mod keys {
    pub const APP: &str = "app/";
    pub const APP_VERSION: &str = "app-version/";
    pub const GROUP: &str = "group/";
    pub const INSTANCE: &str = "instance/";
    pub const DEPLOYMENT: &str = "deployment/";
    pub const TASK_FAILURE: &str = "task-failure/";
    pub const ROOT_VERSION: &str = "root-version/";
    pub const META: &str = "meta/";
}
