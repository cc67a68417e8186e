//! `pacer-core`: the pure heart of Pacer. A synchronous state machine, `(now, input) → effects`:
//! no IO, no async runtime, and it never reads the clock — the shell passes `now` in.

pub mod app;
pub mod cluster;
pub mod id;
pub mod instance;
pub mod machine;
#[cfg(test)]
mod machine_tests;
pub mod normalize;
pub mod persist;
pub mod placement;
pub mod state;
pub mod time;
pub mod validate;
pub mod violation;
