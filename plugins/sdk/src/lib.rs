//! # Pacer plugin SDK
//!
//! Write Pacer plugins — placement constraints, health checks and event sinks — as
//! WebAssembly components for `wasm32-wasip2`, without touching the component-model
//! bindings. A plugin is a type implementing one of three traits plus one macro call:
//!
//! | kind          | trait                            | macro                | may import            |
//! |---------------|----------------------------------|----------------------|-----------------------|
//! | constraint    | [`constraint::Constraint`]       | [`export_constraint!`] | [`log`]             |
//! | health check  | [`health::HealthCheck`]          | [`export_health!`]   | [`log`], [`probe`]    |
//! | event sink    | [`sink::EventSink`]              | [`export_sink!`]     | [`log`], [`http`]     |
//!
//! ```ignore
//! use pacer_plugin_sdk::constraint::{Constraint, Decision, Offer, Placed, Request};
//! use pacer_plugin_sdk::Error;
//!
//! #[derive(Default)]
//! struct OnlyEven;
//!
//! impl Constraint for OnlyEven {
//!     fn operators() -> Vec<String> {
//!         vec!["ONLY_EVEN".into()]
//!     }
//!     fn check(&mut self, _: &Request, _: &Placed, offers: &[Offer]) -> Result<Vec<Decision>, Error> {
//!         Ok(offers.iter().map(|o| Decision::accept_if(o.hostname.len() % 2 == 0, || "odd hostname".into())).collect())
//!     }
//! }
//!
//! pacer_plugin_sdk::export_constraint!(OnlyEven);
//! ```
//!
//! ## The sandbox
//!
//! The host grants **no WASI at all**: every `wasi:*` import the Rust standard library pulls in
//! traps when called. Never print (`println!`, `eprintln!`, `dbg!`), read the clock
//! (`std::time`), the environment (`std::env`), files or sockets, and never use
//! `std::collections::HashMap`/`HashSet` with the default hasher (its seed comes from WASI
//! randomness) — use `BTreeMap`/`BTreeSet`. Log with [`log`]. A panic is reported through
//! the log at level error, then the call traps (build with `panic = "abort"`).

// Lets paths in the generated bindings and macros name this crate the same way from inside
// and from plugin crates.
extern crate self as pacer_plugin_sdk;

#[cfg(all(target_family = "wasm", target_feature = "atomics"))]
compile_error!(
    "pacer-plugin-sdk assumes a single-threaded guest (build for wasm32-wasip2 without atomics)"
);

pub mod config;
pub mod constraint;
mod error;
pub mod health;
pub mod http;
pub mod log;
pub mod probe;
mod runtime;
pub mod sink;

pub use error::Error;
pub use serde;
pub use serde_json;

/// Types shared by every plugin kind (`pacer:plugin/types`).
pub mod types {
    pub use crate::__bindings::constraint::pacer::plugin::types::{
        AttrValue, Attribute, PluginError,
    };
}

/// The generated component-model bindings. Not part of the API.
#[doc(hidden)]
pub mod __bindings {
    // The constraint world's bindings also hold the shared `types` and the `log` import; the
    // other worlds reuse them (`with`), so all plugin kinds share one set of those types.
    pub mod constraint {
        wit_bindgen::generate!({
            world: "constraint-plugin",
            path: "../../wit",
            runtime_path: "::pacer_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "export_world",
            default_bindings_module: "::pacer_plugin_sdk::__bindings::constraint",
        });
    }

    pub mod health {
        wit_bindgen::generate!({
            world: "health-plugin",
            path: "../../wit",
            runtime_path: "::pacer_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            with: {
                "pacer:plugin/types@0.1.0": ::pacer_plugin_sdk::__bindings::constraint::pacer::plugin::types,
                "pacer:plugin/log@0.1.0": ::pacer_plugin_sdk::__bindings::constraint::pacer::plugin::log,
            },
            pub_export_macro: true,
            export_macro_name: "export_world",
            default_bindings_module: "::pacer_plugin_sdk::__bindings::health",
        });
    }

    pub mod sink {
        wit_bindgen::generate!({
            world: "event-sink-plugin",
            path: "../../wit",
            runtime_path: "::pacer_plugin_sdk::__private::wit_bindgen::rt",
            additional_derives: [PartialEq],
            with: {
                "pacer:plugin/types@0.1.0": ::pacer_plugin_sdk::__bindings::constraint::pacer::plugin::types,
                "pacer:plugin/log@0.1.0": ::pacer_plugin_sdk::__bindings::constraint::pacer::plugin::log,
            },
            pub_export_macro: true,
            export_macro_name: "export_world",
            default_bindings_module: "::pacer_plugin_sdk::__bindings::sink",
        });
    }
}

/// Used by the export macros. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
