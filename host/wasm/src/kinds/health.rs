//! Health-check plugins: a fresh instance per check (about 20 µs with the pool), granted only
//! the checked task's host and ports; any failure of the plugin is a failed check.

use super::Loaded;
use crate::bindings::health::exports::pacer::plugin::health_check as wit;
use crate::bindings::health::HealthPluginPre;
use crate::error::{Cause, Phase, PluginError};
use crate::state::{arm, classify, fuel_used, new_store, CallState, Grant};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one check is about.
#[derive(Clone, Debug)]
pub struct HealthTarget {
    pub app_id: String,
    pub task_id: String,
    pub host: String,
    pub ports: Vec<u16>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// The check's `params` object as JSON (`{}` when absent).
    pub params: String,
    /// The check's own timeout; the plugin's budget is this plus its `timeoutMs`.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HealthVerdict {
    Healthy,
    Unhealthy(String),
}

pub struct HealthHost {
    loaded: Arc<Loaded>,
    pre: HealthPluginPre<CallState>,
}

impl HealthHost {
    pub async fn load(loaded: Arc<Loaded>) -> Result<Self, PluginError> {
        let linker = loaded.linker()?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .and_then(HealthPluginPre::new)
            .map_err(|e| loaded.error(Phase::Load, Cause::Invalid(format!("{e:#}"))))?;
        let host = HealthHost { loaded, pre };
        // A trial instance, so that a bad configuration stops start-up.
        let (mut store, plugin) = host.fresh(Grant::None, host.budget(Duration::ZERO)).await?;
        host.configure(&mut store, &plugin, host.budget(Duration::ZERO))
            .await?;
        Ok(host)
    }

    pub fn id(&self) -> &str {
        &self.loaded.spec.id
    }

    fn budget(&self, check_timeout: Duration) -> Duration {
        check_timeout + Duration::from_millis(self.loaded.spec.limits.timeout_ms)
    }

    async fn fresh(
        &self,
        grant: Grant,
        wall: Duration,
    ) -> Result<
        (
            wasmtime::Store<CallState>,
            crate::bindings::health::HealthPlugin,
        ),
        PluginError,
    > {
        let l = &self.loaded;
        let state = CallState::new(l.id.clone(), l.spec.limits, grant, l.metrics.clone());
        let mut store = new_store(&l.engine, state, true);
        arm(&mut store, wall);
        match self.pre.instantiate_async(&mut store).await {
            Ok(p) => {
                l.metrics.instantiations.fetch_add(1, Relaxed);
                Ok((store, p))
            }
            Err(e) => {
                let cause = classify(&e, store.data(), wall);
                Err(l.error(Phase::Instantiate, cause))
            }
        }
    }

    async fn configure(
        &self,
        store: &mut wasmtime::Store<CallState>,
        plugin: &crate::bindings::health::HealthPlugin,
        wall: Duration,
    ) -> Result<(), PluginError> {
        let l = &self.loaded;
        match plugin
            .pacer_plugin_health_check()
            .call_configure(&mut *store, &l.spec.config_json)
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(l.error(Phase::Configure, Cause::Guest(e.text()))),
            Err(e) => Err(l.error(Phase::Configure, classify(&e, store.data(), wall))),
        }
    }

    /// Runs one check in a fresh instance.
    pub async fn check(&self, t: HealthTarget) -> Result<HealthVerdict, PluginError> {
        let l = &self.loaded;
        let wall = self.budget(t.timeout);
        let started = Instant::now();
        let grant = Grant::Probe {
            host: t.host.clone(),
            ports: t.ports.clone(),
        };
        let (mut store, plugin) = self.fresh(grant, wall).await?;
        let result = async {
            self.configure(&mut store, &plugin, wall).await?;
            let target = wit::Target {
                app_id: t.app_id,
                task_id: t.task_id,
                host: t.host,
                ports: t.ports,
                port: t.port,
                path: t.path,
                params: t.params,
                timeout_ms: t.timeout.as_millis().min(u32::MAX as u128) as u32,
            };
            match plugin
                .pacer_plugin_health_check()
                .call_check(&mut store, &target)
                .await
            {
                Ok(Ok(wit::Status::Healthy)) => Ok(HealthVerdict::Healthy),
                Ok(Ok(wit::Status::Unhealthy(why))) => Ok(HealthVerdict::Unhealthy(why)),
                Ok(Err(e)) => Err(l.error(Phase::Check, Cause::Guest(e.text()))),
                Err(e) => Err(l.error(Phase::Check, classify(&e, store.data(), wall))),
            }
        }
        .await;
        l.metrics.record_call(fuel_used(&store), started.elapsed());
        result
    }
}
