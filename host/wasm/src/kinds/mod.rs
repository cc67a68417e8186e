//! One module per plugin kind: how its instances live (long-lived or fresh per call), how a
//! call is made and bounded, and what a failure means.

pub mod constraint;
pub mod health;
pub mod sink;

use crate::config::{Kind, PluginSpec};
use crate::error::{Cause, Phase, PluginError};
use crate::metrics::PluginMetrics;
use crate::state::CallState;
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::Engine;

/// A plugin that passed the load checks, ready to be instantiated.
pub struct Loaded {
    pub spec: PluginSpec,
    pub id: Arc<str>,
    pub engine: Engine,
    pub component: Component,
    pub metrics: Arc<PluginMetrics>,
}

impl Loaded {
    pub fn error(&self, phase: Phase, cause: Cause) -> PluginError {
        self.metrics.record_failure(cause.label());
        PluginError::new(&self.spec.id, phase, cause)
    }

    /// The kind's linker: its `pacer:plugin` imports, and every other import (WASI, pulled in
    /// by a guest's standard library) linked to a function that fails when called.
    pub fn linker(&self) -> Result<Linker<CallState>, PluginError> {
        let mut l = Linker::new(&self.engine);
        let added = match self.spec.kind {
            Kind::Constraint => crate::bindings::constraint::ConstraintPlugin::add_to_linker::<
                _,
                HasSelf<_>,
            >(&mut l, |s| s),
            Kind::HealthCheck => {
                crate::bindings::health::HealthPlugin::add_to_linker::<_, HasSelf<_>>(&mut l, |s| s)
            }
            Kind::EventSink => {
                crate::bindings::sink::EventSinkPlugin::add_to_linker::<_, HasSelf<_>>(
                    &mut l,
                    |s| s,
                )
            }
        };
        added
            .and_then(|_| l.define_unknown_imports_as_traps(&self.component))
            .map_err(|e| self.error(Phase::Load, Cause::Invalid(format!("cannot link: {e:#}"))))?;
        Ok(l)
    }
}
