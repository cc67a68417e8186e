//! Event-sink plugins: one long-lived instance per sink, fed through a bounded queue and
//! called with batches (max events / max delay). Overflow drops the oldest events; a crashing
//! sink is re-instantiated with backoff and disabled after repeated crashes. Nothing here ever
//! waits on the scheduler's side: `push` only takes a short lock.

use super::Loaded;
use crate::bindings::sink::exports::pacer::plugin::event_sink as wit;
use crate::bindings::sink::{EventSinkPlugin, EventSinkPluginPre};
use crate::error::{Cause, Phase, PluginError};
use crate::state::{arm, classify, fuel_used, new_store, CallState, Grant};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use wasmtime::Store;

/// Crashes within [`CRASH_WINDOW`] after which a sink is disabled.
pub const MAX_CRASHES: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SinkEvent {
    pub event_type: String,
    pub json: String,
}

pub struct SinkHost {
    loaded: Arc<Loaded>,
    pre: EventSinkPluginPre<CallState>,
    queue: Mutex<VecDeque<SinkEvent>>,
    wake: Notify,
    disabled: std::sync::atomic::AtomicBool,
}

pub type LiveSink = (Store<CallState>, EventSinkPlugin);
type Live = LiveSink;

impl SinkHost {
    pub async fn load(loaded: Arc<Loaded>) -> Result<(Arc<Self>, Live), PluginError> {
        let linker = loaded.linker()?;
        let pre = linker
            .instantiate_pre(&loaded.component)
            .and_then(EventSinkPluginPre::new)
            .map_err(|e| loaded.error(Phase::Load, Cause::Invalid(format!("{e:#}"))))?;
        let host = Arc::new(SinkHost {
            loaded,
            pre,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            disabled: false.into(),
        });
        let live = host.instantiate().await?;
        Ok((host, live))
    }

    pub fn id(&self) -> &str {
        &self.loaded.spec.id
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    fn wall(&self) -> Duration {
        Duration::from_millis(self.loaded.spec.limits.timeout_ms)
    }

    /// Queues an event if the sink wants its type; drops the oldest when full.
    pub fn push(&self, event_type: &str, json: &str) {
        let spec = &self.loaded.spec;
        if !spec.event_types.is_empty() && !spec.event_types.iter().any(|t| t == event_type) {
            return;
        }
        if self.is_disabled() {
            self.loaded.metrics.events_dropped.fetch_add(1, Relaxed);
            return;
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= spec.queue_capacity {
                q.pop_front();
                self.loaded.metrics.events_dropped.fetch_add(1, Relaxed);
            }
            q.push_back(SinkEvent {
                event_type: event_type.to_string(),
                json: json.to_string(),
            });
        }
        self.wake.notify_one();
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn instantiate(&self) -> Result<Live, PluginError> {
        let l = &self.loaded;
        let grant = Grant::Http {
            allowed: Arc::new(l.spec.allowed_hosts.clone()),
        };
        let state = CallState::new(l.id.clone(), l.spec.limits, grant, l.metrics.clone());
        let mut store = new_store(&l.engine, state, true);
        let wall = self.wall();
        arm(&mut store, wall);
        let plugin = match self.pre.instantiate_async(&mut store).await {
            Ok(p) => p,
            Err(e) => return Err(l.error(Phase::Instantiate, classify(&e, store.data(), wall))),
        };
        l.metrics.instantiations.fetch_add(1, Relaxed);
        match plugin
            .pacer_plugin_event_sink()
            .call_configure(&mut store, &l.spec.config_json)
            .await
        {
            Ok(Ok(())) => Ok((store, plugin)),
            Ok(Err(e)) => Err(l.error(Phase::Configure, Cause::Guest(e.text()))),
            Err(e) => Err(l.error(Phase::Configure, classify(&e, store.data(), wall))),
        }
    }

    /// Takes the next batch: waits for a first event, then up to `maxDelayMs` for more.
    async fn next_batch(&self) -> Vec<SinkEvent> {
        let batch = self.loaded.spec.batch;
        loop {
            if self.queued() > 0 {
                break;
            }
            self.wake.notified().await;
        }
        let until = tokio::time::Instant::now() + Duration::from_millis(batch.max_delay_ms);
        while self.queued() < batch.max_events {
            if tokio::time::timeout_at(until, self.wake.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(batch.max_events);
        q.drain(..n).collect()
    }

    /// Delivers batches until the sink is disabled. `live` is the instance made at load.
    pub async fn run(self: Arc<Self>, live: Live) {
        let l = &self.loaded;
        let mut live = Some(live);
        let mut crashes: VecDeque<Instant> = VecDeque::new();
        loop {
            let batch = self.next_batch().await;
            let n = batch.len() as u64;
            if live.is_none() {
                match self.instantiate().await {
                    Ok(x) => live = Some(x),
                    Err(e) => {
                        tracing::warn!(plugin = %self.id(), message = "Event sink could not be started again.", error = %e);
                        l.metrics.events_dropped.fetch_add(n, Relaxed);
                        if self.crashed(&mut crashes).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let (store, plugin) = live.as_mut().expect("live");
            let wall = self.wall();
            arm(store, wall);
            let events: Vec<wit::Event> = batch
                .into_iter()
                .map(|e| wit::Event {
                    event_type: e.event_type,
                    json: e.json,
                })
                .collect();
            let started = Instant::now();
            let result = plugin
                .pacer_plugin_event_sink()
                .call_deliver(&mut *store, &events)
                .await;
            l.metrics.record_call(fuel_used(store), started.elapsed());
            match result {
                Ok(Ok(())) => {
                    l.metrics.events_delivered.fetch_add(n, Relaxed);
                }
                Ok(Err(e)) => {
                    let err = l.error(Phase::Deliver, Cause::Guest(e.text()));
                    tracing::warn!(plugin = %self.id(), message = "Event sink failed to deliver a batch.", events = n, error = %err);
                    l.metrics.events_dropped.fetch_add(n, Relaxed);
                }
                Err(e) => {
                    let err = l.error(Phase::Deliver, classify(&e, store.data(), wall));
                    tracing::warn!(plugin = %self.id(), message = "Event sink crashed; it will be started again.", events = n, error = %err);
                    l.metrics.events_dropped.fetch_add(n, Relaxed);
                    live = None;
                    if self.crashed(&mut crashes).await {
                        return;
                    }
                }
            }
        }
    }

    /// Counts a crash and waits out the backoff; true when the sink is now disabled.
    async fn crashed(&self, crashes: &mut VecDeque<Instant>) -> bool {
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            crashes.pop_front();
        }
        if crashes.len() >= MAX_CRASHES {
            self.disabled.store(true, Relaxed);
            self.loaded.metrics.disabled.store(1, Relaxed);
            let dropped = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let n = q.len() as u64;
                q.clear();
                n
            };
            self.loaded
                .metrics
                .events_dropped
                .fetch_add(dropped, Relaxed);
            tracing::error!(plugin = %self.id(), message = "Event sink disabled after repeated crashes; its events are dropped until Pacer restarts.", crashes = MAX_CRASHES, window_seconds = CRASH_WINDOW.as_secs());
            return true;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (crashes.len() - 1).min(16))
            .min(MAX_BACKOFF);
        tokio::time::sleep(backoff).await;
        false
    }
}
