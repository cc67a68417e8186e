//! Black-box tests: the real `pacer` binary, real processes, real HTTP.
//! One test binary for all of them (build time is the bottleneck).

mod harness;

mod api_errors;
mod deployments;
mod docker;
mod events;
mod ha;
mod health;
mod lifecycle;
mod mesos;
mod operating;
mod operations;
mod plugins;
mod recovery;
mod zk;
