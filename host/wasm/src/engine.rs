//! The wasmtime engine (pooling allocator, fuel, epochs), its epoch ticker, the on-disk cache of
//! compiled plugins, and the checks a component must pass before it is linked.

use crate::config::Kind;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The version of `pacer:plugin` this host implements.
pub const WIT_VERSION: (u64, u64, u64) = (0, 1, 0);

/// Sizing of the instance pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    /// Live component instances at once: long-lived plugins plus concurrent health checks.
    pub instances: u32,
    /// The largest memory cap of any plugin.
    pub max_memory_bytes: usize,
}

pub fn engine(pool: PoolSize) -> anyhow::Result<Engine> {
    let mut cfg = Config::new();
    cfg.consume_fuel(true);
    cfg.epoch_interruption(true);
    cfg.max_wasm_stack(1 << 20);
    let mut p = PoolingAllocationConfig::new();
    p.total_component_instances(pool.instances)
        .total_core_instances(pool.instances * 4)
        .total_memories(pool.instances * 2)
        .total_tables(pool.instances * 4)
        .total_stacks(pool.instances)
        .max_memory_size(pool.max_memory_bytes);
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    Ok(Engine::new(&cfg)?)
}

/// Advances the engine's epoch every tick until the engine is dropped.
pub fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("pacer-wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })
        .expect("spawn the epoch ticker");
}

/// Compiles a component, or loads it from the cache of precompiled artifacts in `cache_dir`
/// (keyed by the bytes' digest and the engine's compatibility hash).
pub fn compile(
    engine: &Engine,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let Some(dir) = cache_dir else {
        return Ok(Component::new(engine, bytes)?);
    };
    let path = cache_path(engine, bytes, dir);
    if path.exists() {
        // SAFETY: the cache directory belongs to Pacer and holds only what `precompile_component`
        // of this very engine configuration wrote (the file name carries its compatibility hash).
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(message = "Discarding an unusable cached plugin artifact.", path = %path.display(), error = %e)
            }
        }
    }
    let artifact = engine.precompile_component(bytes)?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &artifact)?;
    std::fs::rename(&tmp, &path)?;
    // SAFETY: as above; the artifact was produced by this engine a moment ago.
    Ok(unsafe { Component::deserialize(engine, &artifact)? })
}

fn cache_path(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let digest = hex::encode(Sha256::digest(bytes));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{digest}-{:016x}.cwasm", h.finish()))
}

/// A `pacer:plugin/<iface>@<version>` name, split.
fn pacer_name(name: &str) -> Option<(&str, (u64, u64, u64))> {
    let rest = name.strip_prefix("pacer:plugin/")?;
    let (iface, version) = rest.split_once('@')?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    Some((iface, v))
}

/// Semver compatibility with the host's version (0.x: same minor; from 1.0: same major).
fn compatible(v: (u64, u64, u64)) -> bool {
    let host = WIT_VERSION;
    if host.0 == 0 {
        v.0 == 0 && v.1 == host.1
    } else {
        v.0 == host.0
    }
}

fn version_text(v: (u64, u64, u64)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// Checks a component against a kind: it must export the kind's interface in a compatible
/// version and import nothing of `pacer:plugin` beyond the kind's grants. WASI imports are
/// allowed here because they are linked to traps.
pub fn check_shape(engine: &Engine, component: &Component, kind: Kind) -> Result<(), String> {
    let ty = component.component_type();
    let host = version_text(WIT_VERSION);
    let mut exported = Vec::new();
    for (name, _) in ty.exports(engine) {
        if let Some((iface, v)) = pacer_name(name) {
            if !compatible(v) {
                return Err(format!(
                    "it exports {name}, but this Pacer implements pacer:plugin@{host}; rebuild it against a compatible version"
                ));
            }
            exported.push(iface.to_string());
        }
    }
    if !exported.iter().any(|e| e == kind.interface()) {
        let what = match exported.first() {
            Some(other) => format!("it is a {other} plugin"),
            None => "it exports no pacer:plugin interface".to_string(),
        };
        return Err(format!(
            "{what}, but it is configured as a {} plugin (which exports pacer:plugin/{}@{host})",
            kind.interface(),
            kind.interface()
        ));
    }
    for (name, _) in ty.imports(engine) {
        if name.starts_with("wasi:") {
            continue;
        }
        match pacer_name(name) {
            Some((_, v)) if !compatible(v) => {
                return Err(format!(
                    "it imports {name}, but this Pacer implements pacer:plugin@{host}; rebuild it against a compatible version"
                ))
            }
            Some((iface, _)) if kind.grants().contains(&iface) => {}
            _ => {
                return Err(format!(
                    "it imports {name}, which a {} plugin is not granted",
                    kind.interface()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_semver_for_zero_majors() {
        assert_eq!(
            pacer_name("pacer:plugin/log@0.1.3"),
            Some(("log", (0, 1, 3)))
        );
        assert!(compatible((0, 1, 0)) && compatible((0, 1, 7)));
        assert!(!compatible((0, 2, 0)) && !compatible((1, 1, 0)));
        assert_eq!(pacer_name("wasi:cli/stdout@0.2.6"), None);
    }
}
