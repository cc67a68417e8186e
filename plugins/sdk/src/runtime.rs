//! Per-instance state shared by the export adapters: the configured plugin value and the
//! panic hook.

use std::any::Any;
use std::cell::Cell;
use std::sync::Once;

use crate::Error;

/// Holds the value `configure` produced.
struct Slot(Cell<Option<Box<dyn Any>>>);

// SAFETY: a component instance is single-threaded (wasm32-wasip2 without the atomics feature
// has no threads, see the `compile_error!` in lib.rs) and the component model never re-enters
// an instance while one of its exports runs, so the cell is never accessed concurrently.
unsafe impl Sync for Slot {}

static INSTANCE: Slot = Slot(Cell::new(None));

/// Stores the configured plugin, replacing any earlier one.
pub(crate) fn install<T: 'static>(plugin: T) {
    INSTANCE.0.set(Some(Box::new(plugin)));
}

/// Runs `f` on the configured plugin.
pub(crate) fn with<T: 'static, R>(f: impl FnOnce(&mut T) -> R) -> Result<R, Error> {
    let Some(mut plugin) = INSTANCE.0.take() else {
        return Err(Error::failed(
            "the plugin was called before it was configured",
        ));
    };
    let result = match plugin.downcast_mut::<T>() {
        Some(plugin) => Ok(f(plugin)),
        None => Err(Error::failed("internal error: unexpected plugin type")),
    };
    INSTANCE.0.set(Some(plugin));
    result
}

static PANIC_HOOK: Once = Once::new();

/// Called at the start of every export: installs (once) a panic hook that reports the panic
/// through the `log` import. The default hook writes to stderr, which the host does not
/// grant. After the hook the panic aborts (`panic = "abort"`), i.e. the call traps.
pub(crate) fn enter() {
    PANIC_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
            let text = match info.location() {
                Some(at) => format!(
                    "panicked at {}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("panicked: {message}"),
            };
            crate::log::error(text);
        }));
    });
}
