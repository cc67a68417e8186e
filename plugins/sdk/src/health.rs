//! Health-check plugins (world `health-plugin`).
//!
//! An app uses one as `{"protocol": "PLUGIN", "plugin": "<id>", ...}` in `healthChecks`. Every
//! check runs in a fresh instance: [`HealthCheck::configure`] then [`HealthCheck::check`].
//! Reach the task with [`probe`](crate::probe) — only its own host and ports are allowed.
//!
//! A health plugin may import [`log`](crate::log) and [`probe`](crate::probe).

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::__bindings::health::exports::pacer::plugin::health_check as wit;
use crate::Error;
use crate::runtime;
use crate::types::PluginError;

pub use wit::{Status, Target};

/// A health-check protocol.
pub trait HealthCheck: Default + 'static {
    /// Builds the plugin from its `configuration` (JSON text; `""` when the plugin file has
    /// none). The default ignores it and uses `Self::default()`.
    fn configure(config: &str) -> Result<Self, Error> {
        let _ = config;
        Ok(Self::default())
    }

    /// Checks one task. Return `Ok(Status::Unhealthy(..))` when the task answered badly or not
    /// at all; `Err` means the check itself could not be done (e.g. bad `params`).
    fn check(&mut self, target: &Target) -> Result<Status, Error>;
}

/// Exports a [`HealthCheck`] implementation as the plugin's `pacer:plugin/health-check`.
///
/// ```ignore
/// pacer_plugin_sdk::export_health!(MyCheck);
/// ```
#[macro_export]
macro_rules! export_health {
    ($plugin:ty) => {
        const _: () = {
            type __PacerHealthExport = $crate::health::__Adapter<$plugin>;
            $crate::__bindings::health::export_world!(
                __PacerHealthExport with_types_in $crate::__bindings::health
            );
        };
    };
}

#[doc(hidden)]
pub struct __Adapter<T>(PhantomData<T>);

impl<T: HealthCheck> wit::Guest for __Adapter<T> {
    fn configure(config: String) -> Result<(), PluginError> {
        runtime::enter();
        runtime::install(T::configure(&config)?);
        Ok(())
    }

    fn check(target: Target) -> Result<Status, PluginError> {
        runtime::enter();
        Ok(runtime::with(|plugin: &mut T| plugin.check(&target))??)
    }
}

impl Target {
    /// Parses the health check's `params` object into `T` (errors are
    /// [`Error::BadConfig`]).
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::config::parse_json(&self.params, "invalid params")
    }
}

impl Status {
    /// `Status::Unhealthy(reason)`.
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Status::Unhealthy(reason.into())
    }

    /// Whether this is `Status::Healthy`.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Status::Healthy)
    }
}
