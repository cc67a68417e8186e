//! Logging: `tracing` to stderr as text or JSON lines, with a filter that `POST /logging` can
//! change at run time (for a while, or until changed again).

use pacer_api::logging::{LogControl, ROOT};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Noisy dependencies stay at `warn` unless a logger is set for them explicitly.
const QUIET: &[&str] = &["tower_http", "hyper", "h2", "rustls"];

struct Levels {
    /// The directive for everything else: `--logging_level`, or RUST_LOG as given.
    root: String,
    /// Per-target levels set through `/logging`.
    targets: BTreeMap<String, String>,
    /// Bumped on every change, so an expiring change only reverts itself.
    generation: u64,
}

struct Inner {
    handle: reload::Handle<EnvFilter, Registry>,
    levels: Mutex<Levels>,
}

#[derive(Clone)]
pub struct Logs(Arc<Inner>);

impl Levels {
    /// Sets `logger` (`None`: back to having no level of its own); returns its previous level.
    fn set(&mut self, logger: &str, level: Option<String>) -> Option<String> {
        match (logger == ROOT, level) {
            (true, Some(l)) => Some(std::mem::replace(&mut self.root, l)),
            // ROOT always has a level; a change of it always has a previous one to go back to.
            (true, None) => None,
            (false, Some(l)) => self.targets.insert(logger.to_string(), l),
            (false, None) => self.targets.remove(logger),
        }
    }

    fn directives(&self) -> String {
        let mut d = vec![self.root.clone()];
        for q in QUIET {
            if !self.targets.contains_key(*q) {
                d.push(format!("{q}=warn"));
            }
        }
        d.extend(self.targets.iter().map(|(t, l)| format!("{t}={l}")));
        d.join(",")
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, replaces `--logging_level`.
pub fn init(level: &str, json: bool) -> Result<Logs, String> {
    let root = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    let levels = Levels {
        root,
        targets: BTreeMap::new(),
        generation: 0,
    };
    let filter = EnvFilter::try_new(levels.directives())
        .map_err(|e| format!("--logging_level {level}: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    Ok(Logs(Arc::new(Inner {
        handle,
        levels: Mutex::new(levels),
    })))
}

impl Inner {
    fn apply(&self, levels: &Levels) -> Result<(), String> {
        let filter = EnvFilter::try_new(levels.directives()).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

impl LogControl for Logs {
    fn levels(&self) -> BTreeMap<String, String> {
        let l = self.0.levels.lock().expect("log levels lock");
        let mut out = BTreeMap::new();
        out.insert(ROOT.to_string(), l.root.to_ascii_uppercase());
        for (t, v) in &l.targets {
            out.insert(t.clone(), v.to_ascii_uppercase());
        }
        out
    }

    fn set_level(
        &self,
        logger: &str,
        level: &str,
        duration: Option<Duration>,
    ) -> Result<(), String> {
        let mut l = self.0.levels.lock().expect("log levels lock");
        let previous = l.set(logger, Some(level.to_string()));
        if let Err(e) = self.0.apply(&l) {
            // Put the old level back; nothing changed.
            l.set(logger, previous);
            return Err(format!("invalid logger '{logger}': {e}"));
        }
        l.generation += 1;
        if let Some(d) = duration {
            let generation = l.generation;
            let inner = self.0.clone();
            let logger = logger.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let mut l = inner.levels.lock().expect("log levels lock");
                if l.generation != generation {
                    return; // changed again since; the newer change stands
                }
                l.set(&logger, previous);
                l.generation += 1;
                if inner.apply(&l).is_ok() {
                    tracing::info!(message = "Temporary log level expired.", logger = %logger);
                }
            });
        }
        Ok(())
    }
}
