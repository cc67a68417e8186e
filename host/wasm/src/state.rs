//! What a store carries for one plugin instance: its limits, its grant, its log budget; and
//! how a call is bounded (fuel, wall-clock deadline, memory) and how its failure is classified.

use crate::config::Limits;
use crate::error::Cause;
use crate::metrics::PluginMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

/// Log lines a plugin may write per call, and their maximum length.
pub const LOG_LINES_PER_CALL: u32 = 20;
pub const LOG_LINE_BYTES: usize = 1024;

/// Network access granted to one instance.
#[derive(Clone, Debug, Default)]
pub enum Grant {
    #[default]
    None,
    /// A health check: the task's host and its ports.
    Probe { host: String, ports: Vec<u16> },
    /// An event sink: POSTs to these `host:port`s.
    Http { allowed: Arc<Vec<(String, u16)>> },
}

pub struct CallState {
    pub plugin: Arc<str>,
    pub limits: Limits,
    pub grant: Grant,
    pub metrics: Arc<PluginMetrics>,
    /// When the current call must end.
    pub deadline: Instant,
    /// Set when the limiter refused to grow a memory (the guest then aborts: tell it apart).
    pub memory_refused: bool,
    pub log_lines: u32,
    /// The last error-level log line, kept to explain a trap (the SDK logs panics).
    pub last_error: Option<String>,
}

impl CallState {
    pub fn new(
        plugin: Arc<str>,
        limits: Limits,
        grant: Grant,
        metrics: Arc<PluginMetrics>,
    ) -> Self {
        CallState {
            plugin,
            limits,
            grant,
            metrics,
            deadline: Instant::now(),
            memory_refused: false,
            log_lines: 0,
            last_error: None,
        }
    }

    fn memory_cap(&self) -> usize {
        self.limits.memory_mib as usize * 1024 * 1024
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_cap();
        if !ok {
            self.memory_refused = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

/// A fresh store for one instance, with the limiter and the deadline check installed.
/// `yields`: async stores hand the thread back to tokio every tick.
pub fn new_store(engine: &wasmtime::Engine, state: CallState, yields: bool) -> Store<CallState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.epoch_deadline_callback(move |ctx| {
        if Instant::now() >= ctx.data().deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(if yields {
            UpdateDeadline::Yield(1)
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    store
}

/// Arms a store for one call: fuel, deadline, a fresh log budget.
pub fn arm(store: &mut Store<CallState>, wall: Duration) {
    let fuel = store.data().limits.fuel_per_call;
    store.set_fuel(fuel).expect("fuel is enabled");
    store.set_epoch_deadline(1);
    let s = store.data_mut();
    s.deadline = Instant::now() + wall;
    s.log_lines = 0;
    s.memory_refused = false;
}

/// Fuel used since [`arm`].
pub fn fuel_used(store: &Store<CallState>) -> u64 {
    let left = store.get_fuel().unwrap_or(0);
    store.data().limits.fuel_per_call.saturating_sub(left)
}

/// Explains why a call into the guest failed.
pub fn classify(err: &wasmtime::Error, state: &CallState, wall: Duration) -> Cause {
    if state.memory_refused {
        return Cause::Memory(state.limits.memory_mib);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return Cause::Fuel(state.limits.fuel_per_call),
        Some(Trap::Interrupt) => return Cause::Deadline(wall.as_millis() as u64),
        _ => {}
    }
    let text = format!("{err:#}");
    // Imports a guest is not granted are linked to functions that fail with this text.
    if let Some(rest) = text.split("unknown import: `").nth(1) {
        let name = rest.split('`').next().unwrap_or(rest);
        return Cause::Denied(name.to_string());
    }
    let trap = match err.downcast_ref::<Trap>() {
        Some(t) => t.to_string(),
        None => text,
    };
    match &state.last_error {
        Some(said) => Cause::Trap(format!("{trap} (the plugin logged: {said})")),
        None => Cause::Trap(trap),
    }
}
