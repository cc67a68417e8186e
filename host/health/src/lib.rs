//! `pacer-health`: the IO half of health and readiness checks. The core decides what results
//! mean (`pacer_core::health`); this crate gets them.
//!
//! - [`probe`]: health-check kinds behind one interface, by protocol name (HTTP, HTTPS, TCP,
//!   COMMAND and the `MESOS_` variants built in; plugins register more).
//! - [`prober`]: the scheduler-side prober with its global concurrency cap and late detection.
//! - [`agent`]: the agent-side checker with Mesos's semantics, for the local backend.
//! - [`http`]: one HTTP(S) GET, without certificate verification.

pub mod agent;
pub mod http;
pub mod probe;
pub mod prober;

pub use probe::{BoxFuture, PluginTarget, ProbeKind, ProbeKinds, Target};
pub use prober::{ProbeResult, Prober, ProberStats};

#[cfg(test)]
mod tests;
