//! Per-plugin numbers for `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct PluginMetrics {
    pub calls: AtomicU64,
    pub fuel_used: AtomicU64,
    pub busy_micros: AtomicU64,
    pub instantiations: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Event sinks: events delivered, dropped on overflow, and whether the sink was disabled.
    pub events_delivered: AtomicU64,
    pub events_dropped: AtomicU64,
    pub disabled: AtomicU64,
}

impl PluginMetrics {
    pub fn record_call(&self, fuel: u64, took: Duration) {
        self.calls.fetch_add(1, Relaxed);
        self.fuel_used.fetch_add(fuel, Relaxed);
        self.busy_micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    pub fn record_failure(&self, cause: &'static str) {
        *self.failures.lock().unwrap().entry(cause).or_default() += 1;
    }

    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().unwrap().clone()
    }
}
