//! Host bindings for the three plugin worlds. The shared `types` and `log` interfaces are
//! generated once (with the constraint world) and reused, so one `log` host serves every kind.

pub mod constraint {
    wasmtime::component::bindgen!({
        world: "constraint-plugin",
        path: "../../wit",
    });
}

pub mod health {
    wasmtime::component::bindgen!({
        world: "health-plugin",
        path: "../../wit",
        imports: { "pacer:plugin/probe": async },
        exports: { default: async },
        with: {
            "pacer:plugin/types": super::constraint::pacer::plugin::types,
            "pacer:plugin/log": super::constraint::pacer::plugin::log,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        world: "event-sink-plugin",
        path: "../../wit",
        imports: { "pacer:plugin/outbound-http": async },
        exports: { default: async },
        with: {
            "pacer:plugin/types": super::constraint::pacer::plugin::types,
            "pacer:plugin/log": super::constraint::pacer::plugin::log,
        },
    });
}

pub use constraint::pacer::plugin::types::PluginError as GuestError;

impl GuestError {
    pub fn text(&self) -> String {
        match self {
            GuestError::BadConfig(m) => format!("bad configuration: {m}"),
            GuestError::Failed(m) => m.clone(),
        }
    }
}
