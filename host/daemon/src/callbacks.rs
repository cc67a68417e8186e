//! HTTP callback delivery (`--event_subscriber http_callback`): every event is POSTed as JSON to
//! every subscribed URL. Each subscriber has its own worker and bounded queue, so a failing or
//! slow one never delays the others or the scheduler: after a failed delivery, or one slower than
//! `--http_event_callback_slow_consumer_timeout`, it is skipped for 2^n seconds (n = failures in a
//! row, capped), and events meanwhile are dropped for it and counted.

use pacer_api::events::{BusEvent, EventBus};
use pacer_api::ApiContext;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Events waiting for one subscriber; beyond this they are dropped for it.
const QUEUE: usize = 1024;
/// Longest backoff: 2^MAX_BACKOFF_EXP seconds.
const MAX_BACKOFF_EXP: u32 = 6;

#[derive(Clone, Copy, Debug)]
pub struct CallbackConfig {
    pub request_timeout: Duration,
    pub slow_consumer_timeout: Duration,
}

/// Runs for the life of the process: follows the bus and the subscriber set.
pub async fn run(ctx: Arc<ApiContext>, config: CallbackConfig) {
    let mut rx = ctx.events.subscribe();
    let mut workers: HashMap<String, mpsc::Sender<Arc<BusEvent>>> = HashMap::new();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                for url in workers.keys() {
                    ctx.events.count(url, 0, n);
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // The subscriber set is small and changes rarely; the snapshot is O(1) to take.
        let snap = ctx.snapshot();
        workers.retain(|url, _| snap.event_subscribers.contains(url));
        for url in snap.event_subscribers.iter() {
            let tx = workers.entry(url.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(deliver(url.clone(), rx, ctx.events.clone(), config));
                tx
            });
            if tx.try_send(ev.clone()).is_err() {
                ctx.events.count(url, 0, 1);
            }
        }
    }
}

/// POSTs one subscriber's events in order; ends when the subscriber is removed.
async fn deliver(
    url: String,
    mut rx: mpsc::Receiver<Arc<BusEvent>>,
    bus: Arc<EventBus>,
    config: CallbackConfig,
) {
    let Some(target) = Target::parse(&url) else {
        tracing::warn!(message = "Callback URL cannot be used.", url = %url);
        return;
    };
    let mut failures = 0u32;
    let mut skip_until: Option<Instant> = None;
    while let Some(ev) = rx.recv().await {
        if skip_until.is_some_and(|t| Instant::now() < t) {
            bus.count(&url, 0, 1);
            continue;
        }
        let started = Instant::now();
        let result = pacer_health::http::post_json(
            &target.host,
            target.port,
            &target.path,
            target.tls,
            config.request_timeout,
            ev.json.clone(),
        )
        .await;
        let took = started.elapsed();
        let ok = matches!(&result, Ok(r) if (200..300).contains(&r.status));
        if ok {
            bus.count(&url, 1, 0);
        } else {
            bus.count(&url, 0, 1);
        }
        if ok && took <= config.slow_consumer_timeout {
            failures = 0;
            skip_until = None;
            continue;
        }
        let backoff = Duration::from_secs(1 << failures.min(MAX_BACKOFF_EXP));
        failures += 1;
        skip_until = Some(Instant::now() + backoff);
        let why = match &result {
            Ok(r) if (200..300).contains(&r.status) => format!("slow: took {took:?}"),
            Ok(r) => format!("HTTP {}", r.status),
            Err(e) => e.to_string(),
        };
        tracing::warn!(message = "Event callback failed; backing off.", url = %url, reason = %why, backoff_secs = backoff.as_secs());
    }
}

struct Target {
    host: String,
    port: u32,
    path: String,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let uri: axum::http::Uri = url.parse().ok()?;
        let tls = uri.scheme_str()? == "https";
        let host = uri
            .host()?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri
            .port_u16()
            .map(u32::from)
            .unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Some(Target {
            host,
            port,
            path,
            tls,
        })
    }
}
