//! The event bus: Marathon's events as one-line JSON, rendered once and fanned out to every
//! consumer (SSE clients, HTTP callbacks, later sink plugins).
//!
//! Publishing never blocks and never waits for a consumer: the bus is a ring of the last
//! `--event_stream_max_outstanding_messages` events; a consumer that falls further behind than
//! that is told it lagged (an SSE client is then disconnected).

use crate::render::steps_json;
use pacer_core::events::Event;
use pacer_core::state::Deployment;
use pacer_core::time::Timestamp;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// One event as consumers see it.
#[derive(Debug)]
pub struct BusEvent {
    pub event_type: &'static str,
    /// The event's JSON on one line, with `eventType` and `timestamp`.
    pub json: String,
    pub timestamp: Timestamp,
}

/// Counters per consumer (`sse` for all stream clients together, or a callback URL).
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsumerStats {
    pub delivered: u64,
    pub dropped: u64,
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<BusEvent>>,
    pub published: AtomicU64,
    pub sse_clients: AtomicU64,
    pub sse_delivered: AtomicU64,
    pub sse_dropped: AtomicU64,
    pub sse_disconnected_slow: AtomicU64,
    capacity: usize,
    consumers: Mutex<BTreeMap<String, ConsumerStats>>,
    /// Set at shutdown: streams end so the server can finish.
    closing: tokio::sync::watch::Sender<bool>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(EventBus {
            tx,
            published: AtomicU64::new(0),
            sse_clients: AtomicU64::new(0),
            sse_delivered: AtomicU64::new(0),
            sse_dropped: AtomicU64::new(0),
            sse_disconnected_slow: AtomicU64::new(0),
            capacity: capacity.max(1),
            consumers: Mutex::new(BTreeMap::new()),
            closing: tokio::sync::watch::channel(false).0,
        })
    }

    /// Ends every event stream (at shutdown); new streams end at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`EventBus::close`] was called.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Publishes an event: `fields` are its own fields; `eventType` and `timestamp` are added.
    /// Returns the event as consumers see it.
    pub fn publish(
        &self,
        event_type: &'static str,
        fields: Value,
        now: Timestamp,
    ) -> Arc<BusEvent> {
        let mut m = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        m.insert("eventType".into(), json!(event_type));
        m.insert("timestamp".into(), json!(now));
        let ev = BusEvent {
            event_type,
            json: Value::Object(m).to_string(),
            timestamp: now,
        };
        let ev = Arc::new(ev);
        self.published.fetch_add(1, Ordering::Relaxed);
        // No receiver is fine: nobody listens.
        let _ = self.tx.send(ev.clone());
        ev
    }

    /// Publishes one of the core's events.
    pub fn publish_core(&self, ev: &Event, now: Timestamp) {
        self.publish(ev.event_type(), core_event_json(ev), now);
    }

    /// How far a consumer may fall behind (`--event_stream_max_outstanding_messages`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.tx.subscribe()
    }

    pub fn count(&self, consumer: &str, delivered: u64, dropped: u64) {
        let mut c = self.consumers.lock().expect("consumer stats lock");
        if !c.contains_key(consumer) {
            c.insert(consumer.to_string(), ConsumerStats::default());
        }
        let s = c.get_mut(consumer).expect("inserted above");
        s.delivered += delivered;
        s.dropped += dropped;
    }

    pub fn consumer_stats(&self) -> BTreeMap<String, ConsumerStats> {
        self.consumers.lock().expect("consumer stats lock").clone()
    }
}

/// The bus's numbers on `/metrics`: events published, consumers, and what each got or missed.
pub(crate) fn write_metrics(
    w: &mut crate::metrics::MetricsWriter,
    bus: &EventBus,
    callbacks: usize,
) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    w.counter(
        "events_published_total",
        "Events published on the event bus.",
        load(&bus.published),
    );
    w.family(
        "event_consumers",
        "gauge",
        "Current event consumers by kind.",
        [
            ([("kind", "sse")], load(&bus.sse_clients)),
            ([("kind", "callback")], callbacks as u64),
        ],
    );
    let stats = bus.consumer_stats();
    type Pick = fn(&ConsumerStats) -> u64;
    let families: [(&str, &str, u64, Pick); 2] = [
        (
            "events_delivered_total",
            "Events delivered, by consumer (all SSE clients together, or a callback URL).",
            load(&bus.sse_delivered),
            |s| s.delivered,
        ),
        (
            "events_dropped_total",
            "Events a consumer missed (fell behind, or was backed off).",
            load(&bus.sse_dropped),
            |s| s.dropped,
        ),
    ];
    for (name, help, sse, pick) in families {
        let samples = std::iter::once(([("consumer", "sse")], sse)).chain(
            stats
                .iter()
                .map(|(url, s)| ([("consumer", url.as_str())], pick(s))),
        );
        w.family(name, "counter", help, samples);
    }
    w.counter(
        "event_stream_disconnects_total",
        "Event stream clients disconnected for falling behind.",
        load(&bus.sse_disconnected_slow),
    );
}

/// Marathon's light plan: ids, steps and version, without the root groups.
pub fn light_plan(d: &Deployment) -> Value {
    json!({"id": d.id, "steps": steps_json(&d.steps), "version": d.version})
}

fn current_step(d: &Deployment) -> Value {
    let actions: Vec<Value> = d
        .current_actions()
        .iter()
        .map(|a| json!({"action": a.action, "app": a.app}))
        .collect();
    json!({"actions": actions})
}

fn ip_addresses(host: &str) -> Value {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => json!([{"ipAddress": ip.to_string(),
            "protocol": if ip.is_ipv4() { "IPv4" } else { "IPv6" }}]),
        Err(_) => json!([]),
    }
}

/// The fields of a core event, with Marathon's names.
pub fn core_event_json(ev: &Event) -> Value {
    match ev {
        Event::DeploymentInfo { plan }
        | Event::DeploymentStepSuccess { plan }
        | Event::DeploymentStepFailure { plan } => {
            json!({"plan": light_plan(plan), "currentStep": current_step(plan)})
        }
        Event::DeploymentSuccess { plan } => json!({"id": plan.id, "plan": light_plan(plan)}),
        Event::DeploymentFailed { plan, reason } => {
            json!({"id": plan.id, "plan": light_plan(plan), "reason": reason})
        }
        Event::HealthStatusChanged {
            app_id,
            instance_id,
            version,
            alive,
        } => {
            json!({"appId": app_id, "instanceId": instance_id.as_str(), "version": version, "alive": alive})
        }
        Event::FailedHealthCheck {
            app_id,
            instance_id,
            health_check,
        } => json!({"appId": app_id, "taskId": instance_id.as_str(), "healthCheck": health_check}),
        Event::UnhealthyInstanceKill {
            app_id,
            task_id,
            instance_id,
            version,
            reason,
            host,
            slave_id,
        } => json!({"appId": app_id, "taskId": task_id, "instanceId": instance_id.as_str(),
            "version": version, "reason": reason, "host": host, "slaveId": slave_id}),
        Event::InstanceHealthChanged {
            instance_id,
            run_spec_id,
            run_spec_version,
            healthy,
        } => json!({"instanceId": instance_id.as_str(), "runSpecId": run_spec_id,
            "runSpecVersion": run_spec_version, "healthy": healthy}),
        Event::StatusUpdate {
            slave_id,
            task_id,
            task_status,
            message,
            app_id,
            host,
            ports,
            version,
        } => json!({"slaveId": slave_id, "taskId": task_id, "taskStatus": task_status.mesos_name(),
            "message": message, "appId": app_id, "host": host, "ipAddresses": ip_addresses(host),
            "ports": ports, "version": version}),
        Event::InstanceChanged {
            instance_id,
            condition,
            run_spec_id,
            agent_id,
            host,
            run_spec_version,
        } => json!({"instanceId": instance_id.as_str(), "condition": condition,
            "runSpecId": run_spec_id, "agentId": agent_id, "host": host,
            "runSpecVersion": run_spec_version}),
        Event::UnknownInstanceTerminated {
            instance_id,
            run_spec_id,
            condition,
        } => {
            json!({"instanceId": instance_id.as_str(), "runSpecId": run_spec_id, "condition": condition})
        }
        Event::AddHealthCheck {
            app_id,
            version,
            health_check,
        } => json!({"appId": app_id, "version": version, "healthCheck": health_check}),
        Event::RemoveHealthCheck { app_id } => json!({"appId": app_id}),
        Event::GroupChangeSuccess { group_id, version } => {
            json!({"groupId": group_id, "version": version})
        }
        Event::AppTerminated { app_id } => json!({"appId": app_id}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_carry_type_and_timestamp_and_lagging_receivers_are_told() {
        let bus = EventBus::new(2);
        let mut rx = bus.subscribe();
        let t = Timestamp::from_millis(1_443_194_030_343);
        bus.publish(
            "event_stream_attached",
            json!({"remoteAddress": "1.2.3.4"}),
            t,
        );
        let ev = rx.recv().await.unwrap();
        assert_eq!(ev.event_type, "event_stream_attached");
        let v: Value = serde_json::from_str(&ev.json).unwrap();
        assert_eq!(
            v,
            json!({"remoteAddress": "1.2.3.4", "eventType": "event_stream_attached",
                "timestamp": "2015-09-25T15:13:50.343Z"})
        );
        assert!(!ev.json.contains('\n'));
        for _ in 0..3 {
            bus.publish("x", json!({}), t);
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
        assert_eq!(bus.published.load(Ordering::Relaxed), 4);
    }
}
