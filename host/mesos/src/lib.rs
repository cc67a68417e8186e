//! Pacer on a Mesos cluster: the v1 scheduler HTTP API client and the [`Cluster`] port on it.
//!
//! - `master` finds the leading master (URLs, or ZooKeeper's `json.info_*` group).
//! - `framework` builds the `FrameworkInfo` from Pacer's settings.
//! - `convert` translates offers, tasks and status updates between Mesos and the core.
//! - `driver` owns the connection: SUBSCRIBE with its RecordIO stream, heartbeat loss, 307
//!   redirects, reconnection with the stored framework id, and the calls (ACCEPT, DECLINE,
//!   KILL with retries, ACKNOWLEDGE, RECONCILE, REVIVE/SUPPRESS).
//!
//! [`Cluster`]: pacer_core::cluster::Cluster

pub mod convert;
mod driver;
pub mod framework;
pub mod master;

pub use driver::{FrameworkIdSink, MesosCluster, MesosConfig};
pub use framework::{framework_info, FrameworkSettings};
pub use master::MasterSource;
