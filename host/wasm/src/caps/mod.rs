//! Host capabilities, one module each: what a plugin may call, and the policy that limits it.

pub mod http;
pub mod log;
pub mod probe;
