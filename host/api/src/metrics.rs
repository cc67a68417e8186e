//! `/metrics`: the Prometheus text format (version 0.0.4), written by hand.
//!
//! Counters that hot paths bump are plain atomics; state gauges are computed from the snapshot
//! at scrape time, so a scrape never waits for the scheduler. Other crates add their numbers
//! through [`MetricsSource`].

use crate::ApiContext;
use axum::extract::{MatchedPath, State as AxState};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket latency histogram.
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Builds the exposition text; every family gets its HELP and TYPE once.
pub struct MetricsWriter {
    prefix: String,
    out: String,
}

impl MetricsWriter {
    pub fn new(prefix: &str) -> Self {
        MetricsWriter {
            prefix: prefix.to_string(),
            out: String::new(),
        }
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {p}_{name} {help}\n# TYPE {p}_{name} {kind}",
            p = self.prefix
        );
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}_{name}", self.prefix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One family with any number of labelled samples.
    pub fn family<'a, L>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, labels.as_ref(), value);
        }
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help, [([], value)]);
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help, [([], value)]);
    }

    /// A histogram family: one labelled histogram per entry.
    pub fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        entries: impl IntoIterator<Item = (Vec<(&'h str, &'h str)>, &'h Histogram)>,
    ) {
        self.header(name, "histogram", help);
        for (labels, h) in entries {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let le = bound.to_string();
                let mut l = labels.clone();
                l.push(("le", &le));
                self.sample(&format!("{name}_bucket"), &l, cumulative);
            }
            let count = h.count.load(Ordering::Relaxed);
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            self.sample(&format!("{name}_bucket"), &l, count);
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            self.sample(&format!("{name}_sum"), &labels, sum);
            self.sample(&format!("{name}_count"), &labels, count);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Numbers another part of Pacer owns (the prober, the store, plugins) written into /metrics.
pub trait MetricsSource: Send + Sync {
    fn write(&self, out: &mut MetricsWriter);
}

/// Requests by route and method: counts by status, and a latency histogram.
#[derive(Default)]
pub struct HttpMetrics {
    /// Route → method → numbers; a known route and method are found without allocating.
    routes: Mutex<BTreeMap<String, BTreeMap<String, Arc<RouteMetrics>>>>,
}

#[derive(Default)]
struct RouteMetrics {
    route: String,
    method: String,
    by_status: Mutex<BTreeMap<u16, u64>>,
    latency: Histogram,
}

impl HttpMetrics {
    pub fn record(
        &self,
        method: &Method,
        route: Option<&MatchedPath>,
        status: StatusCode,
        d: Duration,
    ) {
        // Unmatched paths share one label, so scanners cannot grow the label set.
        let route = route.map_or("unmatched", |r| r.as_str());
        let entry = {
            let mut routes = self.routes.lock().expect("metrics lock");
            match routes.get(route).and_then(|m| m.get(method.as_str())) {
                Some(e) => e.clone(),
                None => routes
                    .entry(route.to_string())
                    .or_default()
                    .entry(method.as_str().to_string())
                    .or_insert_with(|| {
                        Arc::new(RouteMetrics {
                            route: route.to_string(),
                            method: method.as_str().to_string(),
                            ..Default::default()
                        })
                    })
                    .clone(),
            }
        };
        *entry
            .by_status
            .lock()
            .expect("metrics lock")
            .entry(status.as_u16())
            .or_default() += 1;
        entry.latency.observe(d);
    }

    fn write(&self, w: &mut MetricsWriter) {
        let routes: Vec<Arc<RouteMetrics>> = self
            .routes
            .lock()
            .expect("metrics lock")
            .values()
            .flat_map(|by_method| by_method.values().cloned())
            .collect();
        let mut counts = Vec::new();
        for m in &routes {
            for (status, n) in m.by_status.lock().expect("metrics lock").iter() {
                counts.push((m.route.as_str(), m.method.as_str(), status.to_string(), *n));
            }
        }
        w.family(
            "http_requests_total",
            "counter",
            "API requests served, by route template, method and status.",
            counts
                .iter()
                .map(|(r, m, s, n)| ([("route", *r), ("method", *m), ("status", s.as_str())], *n)),
        );
        w.histograms(
            "http_request_duration_seconds",
            "Time to answer an API request (to the response head for streams), by route and method.",
            routes.iter().map(|rm| {
                (
                    vec![("route", rm.route.as_str()), ("method", rm.method.as_str())],
                    &rm.latency,
                )
            }),
        );
    }
}

/// Counters the runtime bumps: offers, deployments, store writes.
#[derive(Default)]
pub struct SchedulerMetrics {
    pub offers_used: AtomicU64,
    pub offers_declined: AtomicU64,
    pub deployments_succeeded: AtomicU64,
    pub deployments_failed: AtomicU64,
    pub store_writes: Histogram,
    pub store_write_errors: AtomicU64,
}

pub(crate) async fn metrics(AxState(ctx): AxState<Arc<ApiContext>>) -> Response {
    if !ctx.options.metrics_enabled {
        return crate::error::ApiError::not_found("URI not found").into_response();
    }
    let snap = ctx.snapshot();
    let mut w = MetricsWriter::new(&ctx.options.metrics_prefix);
    w.gauge(
        "leader",
        "1 while this Pacer is the serving leader (a Pacer without election always is).",
        u64::from(ctx.role() == crate::leader::Role::Leader),
    );
    w.gauge("apps", "Apps.", snap.apps.len() as u64);
    let mut by_condition: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut queued = 0;
    for i in snap.instances.values() {
        *by_condition
            .entry(pacer_core::events::condition(i.state()))
            .or_default() += 1;
        queued += u64::from(i.is_scheduled());
    }
    w.family(
        "instances",
        "gauge",
        "Instances by Marathon condition.",
        by_condition.iter().map(|(c, n)| ([("condition", *c)], *n)),
    );
    w.gauge(
        "launch_queue_instances",
        "Instances waiting to be launched.",
        queued,
    );
    w.gauge(
        "deployments_running",
        "Deployments in progress.",
        snap.deployments.len() as u64,
    );
    let s = &ctx.scheduler_metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    w.family(
        "deployments_total",
        "counter",
        "Deployments finished since start, by result.",
        [
            ([("result", "succeeded")], load(&s.deployments_succeeded)),
            ([("result", "failed")], load(&s.deployments_failed)),
        ],
    );
    w.family(
        "offers_total",
        "counter",
        "Offers handled since start, by outcome.",
        [
            ([("outcome", "used")], load(&s.offers_used)),
            ([("outcome", "declined")], load(&s.offers_declined)),
        ],
    );
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for stats in snap.offer_stats.values() {
        for (reason, n) in &stats.rejected {
            *reasons.entry(format!("{reason:?}")).or_default() += n;
        }
    }
    w.family(
        "offer_rejections",
        "gauge",
        "Offers rejected for apps Pacer knows, by the first reason that ruled them out.",
        reasons.iter().map(|(r, n)| ([("reason", r.as_str())], *n)),
    );
    w.histograms(
        "store_write_duration_seconds",
        "Time to make one batch of state changes durable.",
        [(vec![], &s.store_writes)],
    );
    w.counter(
        "store_write_errors_total",
        "State writes that failed.",
        load(&s.store_write_errors),
    );
    ctx.http_metrics.write(&mut w);
    crate::events::write_metrics(&mut w, &ctx.events, snap.event_subscribers.len());
    for source in &ctx.metric_sources {
        source.write(&mut w);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        w.finish(),
    )
        .into_response()
}

/// `/metrics/prometheus`, Marathon 1.7's path for the same text (`--metrics_prometheus`).
pub(crate) async fn prometheus_path(ctx: AxState<Arc<ApiContext>>) -> Response {
    if !ctx.options.metrics_prometheus_path {
        return crate::error::ApiError::not_found("URI not found").into_response();
    }
    metrics(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(10));
        let mut w = MetricsWriter::new("p");
        w.histograms("lat", "Latency.", [(vec![("route", "/x")], &h)]);
        let text = w.finish();
        assert!(text.contains("p_lat_bucket{route=\"/x\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("p_lat_bucket{route=\"/x\",le=\"0.05\"} 2\n"));
        assert!(text.contains("p_lat_bucket{route=\"/x\",le=\"5\"} 2\n"));
        assert!(text.contains("p_lat_bucket{route=\"/x\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("p_lat_count{route=\"/x\"} 3\n"));
        assert!(text.contains("# TYPE p_lat histogram\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = MetricsWriter::new("p");
        w.family("x", "gauge", "X.", [([("url", "a\"b\\c\nd")], 1)]);
        assert!(w.finish().contains("p_x{url=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }
}
