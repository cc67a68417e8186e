//! Event-sink plugins (world `event-sink-plugin`).
//!
//! One long-lived instance per sink: [`EventSink::configure`] once, then
//! [`EventSink::deliver`] for every batch of events. Send them on with
//! [`http::post`](crate::http::post) — only to the plugin's `allowedHosts`.
//!
//! An event sink may import [`log`](crate::log) and [`http`](crate::http).

use std::marker::PhantomData;

use crate::__bindings::sink::exports::pacer::plugin::event_sink as wit;
use crate::Error;
use crate::runtime;
use crate::types::PluginError;

pub use wit::Event;

/// A destination for Pacer's events.
pub trait EventSink: Default + 'static {
    /// Builds the plugin from its `configuration` (JSON text; `""` when the plugin file has
    /// none). The default ignores it and uses `Self::default()`.
    fn configure(config: &str) -> Result<Self, Error> {
        let _ = config;
        Ok(Self::default())
    }

    /// Delivers one batch. An `Err` counts as a failed delivery; the batch is not retried.
    fn deliver(&mut self, events: Vec<Event>) -> Result<(), Error>;
}

/// Exports an [`EventSink`] implementation as the plugin's `pacer:plugin/event-sink`.
///
/// ```ignore
/// pacer_plugin_sdk::export_sink!(MySink);
/// ```
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        const _: () = {
            type __PacerSinkExport = $crate::sink::__Adapter<$plugin>;
            $crate::__bindings::sink::export_world!(
                __PacerSinkExport with_types_in $crate::__bindings::sink
            );
        };
    };
}

#[doc(hidden)]
pub struct __Adapter<T>(PhantomData<T>);

impl<T: EventSink> wit::Guest for __Adapter<T> {
    fn configure(config: String) -> Result<(), PluginError> {
        runtime::enter();
        runtime::install(T::configure(&config)?);
        Ok(())
    }

    fn deliver(events: Vec<Event>) -> Result<(), PluginError> {
        runtime::enter();
        Ok(runtime::with(|plugin: &mut T| plugin.deliver(events))??)
    }
}
