//! Typed plugin failures: which plugin, in which phase, and why.

use std::fmt;

/// Where in a plugin's life a failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Load,
    Instantiate,
    Configure,
    Operators,
    Validate,
    Check,
    Deliver,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Load => "load",
            Phase::Instantiate => "instantiate",
            Phase::Configure => "configure",
            Phase::Operators => "operators",
            Phase::Validate => "validate",
            Phase::Check => "check",
            Phase::Deliver => "deliver",
        })
    }
}

/// Why a plugin call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Cause {
    #[error("ran out of fuel ({0} units per call)")]
    Fuel(u64),
    #[error("exceeded its deadline of {0} ms")]
    Deadline(u64),
    #[error("exceeded its memory limit of {0} MiB")]
    Memory(u32),
    /// The guest called an import it is not granted (a WASI call: files, sockets, clocks, ...).
    #[error("called {0}, which plugins are not granted")]
    Denied(String),
    /// A trap: a panic, an abort, a stack overflow, ...
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error.
    #[error("{0}")]
    Guest(String),
    /// The plugin cannot be used as configured (bad file, wrong kind, wrong interface version).
    #[error("{0}")]
    Invalid(String),
}

impl Cause {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Cause::Fuel(_) => "fuel",
            Cause::Deadline(_) => "deadline",
            Cause::Memory(_) => "memory",
            Cause::Denied(_) => "denied",
            Cause::Trap(_) => "trap",
            Cause::Guest(_) => "guest",
            Cause::Invalid(_) => "invalid",
        }
    }

    /// Whether the instance must be thrown away (a trap leaves it unusable).
    pub fn poisons(&self) -> bool {
        !matches!(self, Cause::Guest(_) | Cause::Invalid(_))
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("plugin {plugin:?} failed in {phase}: {cause}")]
pub struct PluginError {
    pub plugin: String,
    pub phase: Phase,
    pub cause: Cause,
}

impl PluginError {
    pub fn new(plugin: &str, phase: Phase, cause: Cause) -> Self {
        PluginError {
            plugin: plugin.to_string(),
            phase,
            cause,
        }
    }
}
