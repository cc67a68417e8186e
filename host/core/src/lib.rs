//! `pacer-core`: the pure heart of Pacer. A synchronous state machine, `(now, input) → effects`:
//! no IO, no async runtime, and it never reads the clock — the shell passes `now` in.

/// Re-exported so that readers of [`state::State`] name the same map types.
pub use imbl;

pub mod app;
pub mod cluster;
pub mod constraints;
pub mod deploy;
pub mod events;
pub mod group_patch;
mod groups;
pub mod health;
#[cfg(test)]
mod health_tests;
pub mod id;
pub mod instance;
pub mod machine;
#[cfg(test)]
mod machine_tests;
pub mod normalize;
pub mod persist;
pub mod placement;
pub mod plan;
pub mod plugins;
pub mod state;
pub mod time;
pub mod validate;
pub mod violation;
