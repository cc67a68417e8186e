//! Constraint plugins: one long-lived instance per plugin, called synchronously in batches;
//! re-instantiated after a trap and recycled after many calls (linear memory never shrinks).

use super::Loaded;
use crate::bindings::constraint::exports::pacer::plugin::constraint as wit;
use crate::bindings::constraint::pacer::plugin::types::{AttrValue, Attribute};
use crate::bindings::constraint::{ConstraintPlugin, ConstraintPluginPre};
use crate::config::OnError;
use crate::error::{Cause, Phase, PluginError};
use crate::state::{arm, classify, fuel_used, new_store, CallState, Grant};
use pacer_core::cluster::{AttributeValue, Offer};
use pacer_core::constraints::{PlacedSummary, PluginDecision, PluginRequest};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Store;

/// Calls after which an instance is replaced by a fresh one.
const RECYCLE_AFTER_CALLS: u64 = 10_000;

struct Live {
    store: Store<CallState>,
    plugin: ConstraintPlugin,
    calls: u64,
}

pub struct ConstraintHost {
    loaded: Arc<Loaded>,
    pre: ConstraintPluginPre<CallState>,
    live: Mutex<Option<Live>>,
    operators: Vec<String>,
}

impl ConstraintHost {
    pub fn load(loaded: Arc<Loaded>) -> Result<Self, PluginError> {
        let linker = loaded.linker()?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .and_then(ConstraintPluginPre::new)
            .map_err(|e| loaded.error(Phase::Load, Cause::Invalid(format!("{e:#}"))))?;
        let mut host = ConstraintHost {
            loaded,
            pre,
            live: Mutex::new(None),
            operators: Vec::new(),
        };
        host.operators = host.call(Phase::Operators, |s, p| {
            p.pacer_plugin_constraint().call_operators(s).map(Ok)
        })?;
        for op in &host.operators {
            let ok = !op.is_empty()
                && op
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
            if !ok {
                return Err(host.loaded.error(
                    Phase::Operators,
                    Cause::Invalid(format!(
                        "operator {op:?} is not upper-case letters, digits and '_'"
                    )),
                ));
            }
        }
        Ok(host)
    }

    pub fn id(&self) -> &str {
        &self.loaded.spec.id
    }

    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    fn instantiate(&self) -> Result<Live, PluginError> {
        let l = &self.loaded;
        let state = CallState::new(l.id.clone(), l.spec.limits, Grant::None, l.metrics.clone());
        let mut store = new_store(&l.engine, state, false);
        let wall = self.wall();
        arm(&mut store, wall);
        let plugin = self.pre.instantiate(&mut store).map_err(|e| {
            let cause = classify(&e, store.data(), wall);
            l.error(Phase::Instantiate, cause)
        })?;
        l.metrics
            .instantiations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let configured = plugin
            .pacer_plugin_constraint()
            .call_configure(&mut store, &l.spec.config_json);
        match configured {
            Ok(Ok(())) => Ok(Live {
                store,
                plugin,
                calls: 0,
            }),
            Ok(Err(e)) => Err(l.error(Phase::Configure, Cause::Guest(e.text()))),
            Err(e) => {
                let cause = classify(&e, store.data(), wall);
                Err(l.error(Phase::Configure, cause))
            }
        }
    }

    fn wall(&self) -> Duration {
        Duration::from_millis(self.loaded.spec.limits.timeout_ms)
    }

    /// One bounded call into the live instance (instantiated on demand). `f` returns the
    /// guest's own error as `Err` inside `Ok`.
    fn call<R>(
        &self,
        phase: Phase,
        f: impl FnOnce(&mut Store<CallState>, &ConstraintPlugin) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, PluginError> {
        let mut guard = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if guard
            .as_ref()
            .is_some_and(|l| l.calls >= RECYCLE_AFTER_CALLS)
        {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.instantiate()?);
        }
        let live = guard.as_mut().expect("instantiated");
        let wall = self.wall();
        arm(&mut live.store, wall);
        live.calls += 1;
        let started = Instant::now();
        let result = f(&mut live.store, &live.plugin);
        let m = &self.loaded.metrics;
        m.record_call(fuel_used(&live.store), started.elapsed());
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(msg)) => Err(self.loaded.error(phase, Cause::Guest(msg))),
            Err(e) => {
                let cause = classify(&e, live.store.data(), wall);
                *guard = None;
                Err(self.loaded.error(phase, cause))
            }
        }
    }

    pub fn validate(&self, operator: &str, field: &str, params: &str) -> Result<(), String> {
        let r = self.call(Phase::Validate, |s, p| {
            p.pacer_plugin_constraint()
                .call_validate(s, operator, field, params)
                .map(Ok)
        });
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(msg),
            Err(e) => Err(format!("could not be checked: {e}")),
        }
    }

    /// Decisions for every offer; a failure becomes decisions by the failure policy.
    pub fn check(
        &self,
        req: &PluginRequest<'_>,
        placed: &PlacedSummary,
        offers: &[&Offer],
    ) -> Vec<PluginDecision> {
        match self.check_batch(req, placed, offers) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(plugin = %self.id(), app_id = req.app_id, message = "Constraint plugin failed.", error = %e, policy = ?self.loaded.spec.on_error);
                let decision = match self.loaded.spec.on_error {
                    OnError::Reject => PluginDecision {
                        accept: false,
                        reason: Some(e.to_string()),
                    },
                    OnError::Ignore => PluginDecision {
                        accept: true,
                        reason: None,
                    },
                };
                vec![decision; offers.len()]
            }
        }
    }

    pub fn check_batch(
        &self,
        req: &PluginRequest<'_>,
        placed: &PlacedSummary,
        offers: &[&Offer],
    ) -> Result<Vec<PluginDecision>, PluginError> {
        let request = wit::Request {
            app_id: req.app_id.to_string(),
            operator: req.operator.to_string(),
            field: req.field.to_string(),
            params: req.params.to_string(),
            waiting: req.waiting,
        };
        let summary = wit::PlacedSummary {
            total: placed.total,
            counts: placed.counts.iter().map(|(v, n)| (v.clone(), *n)).collect(),
        };
        let wire: Vec<wit::Offer> = offers.iter().map(|o| offer_to_wit(o)).collect();
        let decisions = self.call(Phase::Check, |s, p| {
            p.pacer_plugin_constraint()
                .call_check_batch(s, &request, &summary, &wire)
                .map(|r| r.map_err(|e| e.text()))
        })?;
        if decisions.len() != offers.len() {
            return Err(self.loaded.error(
                Phase::Check,
                Cause::Guest(format!(
                    "returned {} decisions for {} offers",
                    decisions.len(),
                    offers.len()
                )),
            ));
        }
        Ok(decisions
            .into_iter()
            .map(|d| PluginDecision {
                accept: d.accept,
                reason: d.reason.map(|r| truncate(r, 512)),
            })
            .collect())
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

pub fn offer_to_wit(o: &Offer) -> wit::Offer {
    wit::Offer {
        id: o.id.0.clone(),
        agent_id: o.agent_id.0.clone(),
        hostname: o.hostname.clone(),
        region: o.region.clone(),
        zone: o.zone.clone(),
        attributes: o
            .attributes
            .iter()
            .map(|(name, v)| Attribute {
                name: name.clone(),
                value: match v {
                    AttributeValue::Text(t) => AttrValue::Text(t.clone()),
                    AttributeValue::Scalar(x) => AttrValue::Scalar(*x),
                },
            })
            .collect(),
    }
}

/// Every loaded constraint plugin, by operator: what the core consults.
pub struct ConstraintSet {
    by_operator: BTreeMap<String, Arc<ConstraintHost>>,
    operators: Vec<String>,
}

impl ConstraintSet {
    pub fn new(hosts: Vec<Arc<ConstraintHost>>) -> Result<Self, PluginError> {
        let mut by_operator = BTreeMap::new();
        let mut operators = Vec::new();
        for h in hosts {
            for op in h.operators() {
                if pacer_core::constraints::OPERATORS.contains(&op.as_str()) {
                    return Err(PluginError::new(
                        h.id(),
                        Phase::Operators,
                        Cause::Invalid(format!("operator {op} is built in")),
                    ));
                }
                if let Some(other) = by_operator.insert(op.clone(), h.clone()) {
                    return Err(PluginError::new(
                        h.id(),
                        Phase::Operators,
                        Cause::Invalid(format!(
                            "operator {op} is also provided by plugin {:?}",
                            other.id()
                        )),
                    ));
                }
                operators.push(op.clone());
            }
        }
        Ok(ConstraintSet {
            by_operator,
            operators,
        })
    }
}

impl pacer_core::constraints::ConstraintPlugins for ConstraintSet {
    fn operators(&self) -> &[String] {
        &self.operators
    }

    fn validate(&self, operator: &str, field: &str, params: &str) -> Result<(), String> {
        match self.by_operator.get(operator) {
            Some(h) => h.validate(operator, field, params),
            None => Err(format!("no plugin provides {operator}")),
        }
    }

    fn check(
        &self,
        req: &PluginRequest<'_>,
        placed: &PlacedSummary,
        offers: &[&Offer],
    ) -> Vec<PluginDecision> {
        match self.by_operator.get(req.operator) {
            Some(h) => h.check(req, placed, offers),
            None => vec![
                PluginDecision {
                    accept: false,
                    reason: Some(format!("no plugin provides {}", req.operator)),
                };
                offers.len()
            ],
        }
    }
}
