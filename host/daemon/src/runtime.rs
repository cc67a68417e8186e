//! The runtime shell: one task owns the core and feeds it inputs — API commands, cluster events
//! and timer firings — and executes the effects it returns, in order. Writes are made durable
//! before anything that depends on them is done; API callers are answered only after that.

use pacer_api::leader::Role;
use pacer_api::{now, ApiContext, ApiPost, Request, SubmitError};
use pacer_core::cluster::{Cluster, ClusterEvent, TaskStatus};
use pacer_core::events::Event;
use pacer_core::machine::{Effect, Scheduler};
use pacer_core::persist::StoreOp;
use pacer_health::{ProbeResult, Prober};
use pacer_store::{Store, StoreError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, info_span, warn};

pub struct Runtime {
    pub core: Scheduler,
    pub store: Arc<dyn Store>,
    pub cluster: Arc<dyn Cluster>,
    pub api: Arc<ApiContext>,
    pub prober: Prober,
    /// With leader election: while the role is `Suspended` nothing is done (no writes, no
    /// launches or kills); inputs wait in their channels.
    pub role: Option<tokio::sync::watch::Receiver<Role>>,
    /// `--launch_token_refresh_interval` when launches are throttled by tokens (Mesos).
    pub launch_token_refresh: Option<Duration>,
    /// `--offer_matching_timeout` (Mesos): the time one offer may spend being matched.
    pub offer_matching_timeout: Option<Duration>,
    /// `--reconciliation_initial_delay` and `--reconciliation_interval` (Mesos): explicit
    /// reconciliation of every task Pacer believes alive, besides the one after each
    /// (re)subscription, so that a task whose answer was lost is asked about again.
    pub reconciliation: Option<(Duration, Duration)>,
}

/// `--offer_matching_timeout` on the wall clock, counting the offers it cut short.
struct OfferClock {
    timeout: Duration,
    started: std::time::Instant,
    cut_short: usize,
    counted: bool,
}

impl OfferClock {
    fn new(timeout: Duration) -> Self {
        OfferClock {
            timeout,
            started: std::time::Instant::now(),
            cut_short: 0,
            counted: false,
        }
    }
}

impl pacer_core::machine::MatchDeadline for OfferClock {
    fn start(&mut self) {
        self.started = std::time::Instant::now();
        self.counted = false;
    }

    fn expired(&mut self) -> bool {
        let expired = self.started.elapsed() >= self.timeout;
        if expired && !self.counted {
            self.counted = true;
            self.cut_short += 1;
        }
        expired
    }
}

/// The core could not make a write durable outside a command: state in memory is ahead of the
/// store, so the process must stop and recover from the store.
#[derive(Debug, thiserror::Error)]
#[error("storage failed while applying a scheduler change: {0}")]
pub struct FatalStoreError(#[from] StoreError);

impl Runtime {
    /// Executes queued effects in order, writing consecutive writes as one: events and probe
    /// changes between them wait for that write, anything that acts on the cluster (launch,
    /// kill, decline, reconcile) is preceded by it. Cluster events and timers come in bursts
    /// (10,000 status updates); one commit per update would bound throughput by the disk.
    /// A failed write is fatal outside commands, so nothing needs to stay queued after one.
    fn execute(&mut self) -> Result<(), StoreError> {
        let mut ops: Vec<StoreOp> = Vec::new();
        let mut waiting: Vec<Effect> = Vec::new();
        let mut none = None;
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Persist(more) => {
                    ops.extend(more);
                    if ops.len() >= MERGED_WRITE_OPS {
                        self.write_merged(&mut ops, &mut waiting)?;
                    }
                }
                e @ (Effect::Event(_) | Effect::Watch(_)) if !ops.is_empty() => waiting.push(e),
                other => {
                    self.write_merged(&mut ops, &mut waiting)?;
                    self.run_effect(other, &mut none)?;
                }
            }
        }
        self.write_merged(&mut ops, &mut waiting)
    }

    /// Writes the collected operations (the last one per key), then runs what waited for them.
    fn write_merged(
        &mut self,
        ops: &mut Vec<StoreOp>,
        waiting: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let mut none = None;
        if !ops.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let mut merged: Vec<StoreOp> = std::mem::take(ops)
                .into_iter()
                .rev()
                .filter(|op| seen.insert(op.key().to_string()))
                .collect();
            merged.reverse();
            self.run_effect(Effect::Persist(merged), &mut none)?;
        }
        for e in waiting.drain(..) {
            self.run_effect(e, &mut none)?;
        }
        Ok(())
    }

    /// Executes queued effects one by one; `api_post` is published right after the first write
    /// (the command's own), so it precedes the events the change triggers. Stops at the first
    /// failed write, leaving the rest queued.
    fn execute_announcing(&mut self, mut api_post: Option<ApiPost>) -> Result<(), StoreError> {
        while let Some(effect) = self.core.poll_effect() {
            self.run_effect(effect, &mut api_post)?;
        }
        Ok(())
    }

    fn run_effect(
        &mut self,
        effect: Effect,
        api_post: &mut Option<ApiPost>,
    ) -> Result<(), StoreError> {
        match effect {
            Effect::Persist(ops) => {
                let store = self.store.clone();
                let started = std::time::Instant::now();
                let written = tokio::task::block_in_place(|| store.apply(&ops));
                let m = &self.api.scheduler_metrics;
                m.store_writes.observe(started.elapsed());
                if written.is_err() {
                    m.store_write_errors.fetch_add(1, Ordering::Relaxed);
                }
                written?;
                if let Some(post) = api_post.take() {
                    self.publish_api_post(post);
                }
            }
            Effect::Launch { offer, tasks } => {
                for t in &tasks {
                    info!(message = "Launching task.", task_id = %t.task_id, app_id = %t.app_id, host = %t.hostname, ports = ?t.host_ports);
                }
                let m = &self.api.scheduler_metrics;
                m.offers_used.fetch_add(1, Ordering::Relaxed);
                self.cluster.launch(offer, tasks);
            }
            Effect::Decline { offer, refuse } => {
                let m = &self.api.scheduler_metrics;
                m.offers_declined.fetch_add(1, Ordering::Relaxed);
                self.cluster.decline(offer, refuse)
            }
            Effect::Kill(k) => {
                info!(message = "Killing task.", task_id = %k.task_id);
                self.cluster.kill(k);
            }
            Effect::Reconcile(tasks) => self.cluster.reconcile(tasks),
            Effect::Event(ev) => {
                log_event(&ev);
                let m = &self.api.scheduler_metrics;
                match &ev {
                    Event::DeploymentSuccess { .. } => {
                        m.deployments_succeeded.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::DeploymentFailed { .. } => {
                        m.deployments_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                self.api.events.publish_core(&ev, now());
            }
            Effect::Watch(w) => self.prober.apply(w),
        }
        Ok(())
    }

    fn publish_api_post(&self, post: ApiPost) {
        let snap = self.core.snapshot();
        if let Some(app) = snap.apps.get(&post.app_id) {
            let fields = serde_json::json!({"clientIp": post.client_ip, "uri": post.uri,
                "appDefinition": app.as_ref()});
            self.api.events.publish("api_post_event", fields, now());
        }
    }

    fn publish(&self) {
        self.api.publish(self.core.snapshot());
    }

    fn handle_command(&mut self, req: Request) {
        let _span = info_span!("command", kind = req.cmd.kind()).entered();
        let group = req.cmd.changed_group();
        let result = self.core.command(now(), req.cmd);
        let reply = match result {
            Err(e) => {
                if let Some(group_id) = group {
                    let t = now();
                    let fields = serde_json::json!({"groupId": group_id, "version": t,
                        "reason": e.to_string()});
                    self.api.events.publish("group_change_failed", fields, t);
                }
                Err(SubmitError::Command(e))
            }
            Ok(outcome) => match self.execute_announcing(req.api_post) {
                Ok(()) => Ok(outcome),
                Err(e) => {
                    // The first effect of a command is its single write; nothing ran yet.
                    warn!(message = "A change could not be stored; it was not applied.", error = %e);
                    self.core.rollback();
                    Err(match e {
                        StoreError::TooLarge { .. } => SubmitError::TooLarge(e.to_string()),
                        e => SubmitError::Storage(e.to_string()),
                    })
                }
            },
        };
        self.publish();
        let _ = req.reply.send(reply);
    }

    /// Feeds one cluster event to the core; its effects run with the rest of the burst
    /// (`execute`). Consecutive status updates are applied together (`flush_statuses`); their
    /// tasks are added to `acks`, to acknowledge once durable.
    fn handle_event(
        &mut self,
        ev: ClusterEvent,
        statuses: &mut Vec<TaskStatus>,
        acks: &mut Vec<pacer_core::id::TaskId>,
    ) {
        if let ClusterEvent::Status(s) = ev {
            info!(message = "Task status.", task_id = %s.task_id, state = s.state.mesos_name(), detail = s.message.as_deref().unwrap_or(""));
            acks.push(s.task_id.clone());
            statuses.push(s);
            return;
        }
        self.flush_statuses(statuses);
        let now = now();
        match ev {
            ClusterEvent::Offer(o) => {
                let _span = info_span!("offer", offer_id = ?o.id, agent = %o.hostname).entered();
                self.core.handle_offer(now, o);
            }
            ClusterEvent::Offers(offers) => {
                let _span = info_span!("offers", count = offers.len()).entered();
                match self.offer_matching_timeout {
                    None => self.core.handle_offers(now, offers),
                    Some(timeout) => {
                        let mut clock = OfferClock::new(timeout);
                        self.core.handle_offers_within(now, offers, &mut clock);
                        if clock.cut_short > 0 {
                            warn!(
                                message = "Offer matching ran out of time; the rest of those offers was declined.",
                                offers = clock.cut_short,
                                timeout_ms = timeout.as_millis() as u64
                            );
                        }
                    }
                }
            }
            ClusterEvent::Status(_) => unreachable!("handled above"),
            ClusterEvent::OfferRescinded(_) => {}
            ClusterEvent::Registered {
                framework_id,
                master,
                reregistered,
            } => {
                *self
                    .api
                    .info
                    .framework_id
                    .write()
                    .expect("framework id lock") = Some(framework_id.clone());
                // Marathon's fields: registered carries the framework id, re-registered only
                // the master.
                if reregistered {
                    let fields = serde_json::json!({"master": master});
                    self.api
                        .events
                        .publish("scheduler_reregistered_event", fields, now);
                } else {
                    let fields = serde_json::json!({"frameworkId": framework_id, "master": master});
                    self.api
                        .events
                        .publish("scheduler_registered_event", fields, now);
                }
                // Every (re)subscription: ask about every task Pacer believes alive.
                self.core.reconcile_known();
            }
            ClusterEvent::Disconnected { master, reason } => {
                warn!(message = "Disconnected from the cluster manager.", master = %master, reason = %reason);
                // Marathon's event has no fields of its own.
                self.api
                    .events
                    .publish("scheduler_disconnected_event", serde_json::json!({}), now);
            }
        }
    }

    fn flush_statuses(&mut self, statuses: &mut Vec<TaskStatus>) {
        if !statuses.is_empty() {
            let _span = info_span!("status", count = statuses.len()).entered();
            self.core.handle_statuses(now(), std::mem::take(statuses));
        }
    }

    fn handle_probe(&mut self, r: ProbeResult) -> Result<(), FatalStoreError> {
        match r {
            ProbeResult::Health(h) => self.core.handle_health(now(), h),
            ProbeResult::Readiness(r) => self.core.handle_readiness(now(), r),
        }
        self.execute()?;
        Ok(())
    }

    /// Runs until the command channel closes (shutdown) or a write fails outside a command.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Request>,
        mut events: mpsc::UnboundedReceiver<ClusterEvent>,
        mut probes: mpsc::UnboundedReceiver<ProbeResult>,
    ) -> Result<(), FatalStoreError> {
        self.core.converge_all(now());
        self.execute()?;
        self.publish();
        // Offers are asked for (revive) only when new work may fit: when something becomes
        // launchable, after a command, or when a backoff delay runs out. Reviving on every turn
        // would lift the backend's decline filter and spin on an app that fits nowhere.
        let mut wanted = false;
        let mut revive_needed = true;
        let mut queued_seen = self.core.queued_total();
        let mut role = self.role.take();
        let mut refill = self.launch_token_refresh.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut reconcile = self.reconciliation.map(|(initial, every)| {
            let first = tokio::time::Instant::now() + initial;
            let mut t = tokio::time::interval_at(first, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            if let Some(rx) = &mut role {
                if *rx.borrow_and_update() == Role::Suspended {
                    warn!(
                        message = "Scheduler suspended: no state changes until ZooKeeper is back."
                    );
                    if rx.wait_for(|r| *r != Role::Suspended).await.is_err() {
                        return Ok(());
                    }
                    info!(message = "Scheduler resumed.");
                    revive_needed = true;
                }
            }
            let t = now();
            // New work (e.g. a replacement queued by a status update) revives even when offers
            // were already wanted: an offer declined just before may have filtered them.
            let queued = self.core.queued_total();
            revive_needed |= queued != queued_seen;
            queued_seen = queued;
            let wants = self.core.wants_offers(t);
            if wants && (!wanted || revive_needed) {
                self.cluster.revive();
            } else if !wants && wanted {
                self.cluster.suppress();
            }
            wanted = wants;
            revive_needed = false;
            let sleep = match self.core.next_deadline(t) {
                Some(d) => {
                    Duration::from_millis(d.as_millis().saturating_sub(t.as_millis()).max(1))
                }
                None => Duration::from_secs(3600),
            };
            let role_changed = async {
                match &mut role {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let refill_due = async {
                match &mut refill {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let reconcile_due = async {
                match &mut reconcile {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = role_changed => {}
                _ = refill_due => {
                    self.core.refill_launch_tokens();
                }
                _ = reconcile_due => {
                    self.core.reconcile_known();
                    self.execute()?;
                }
                req = commands.recv() => match req {
                    Some(req) => {
                        self.handle_command(req);
                        revive_needed = true;
                    }
                    None => return Ok(()),
                },
                ev = events.recv() => match ev {
                    Some(ev) => {
                        // Take what else is waiting (bounded, so commands are not starved),
                        // write once, then publish one snapshot.
                        let mut acks = Vec::new();
                        let mut statuses = Vec::new();
                        self.handle_event(ev, &mut statuses, &mut acks);
                        for _ in 0..EVENT_BURST {
                            let Ok(ev) = events.try_recv() else { break };
                            self.handle_event(ev, &mut statuses, &mut acks);
                        }
                        self.flush_statuses(&mut statuses);
                        self.execute()?;
                        // Durable now: the backend may acknowledge these updates.
                        for task in &acks {
                            self.cluster.acknowledge(task);
                        }
                        self.publish();
                    }
                    None => {
                        error!(message = "The cluster backend stopped.");
                        return Ok(());
                    }
                },
                Some(r) = probes.recv() => {
                    self.handle_probe(r)?;
                    while let Ok(r) = probes.try_recv() {
                        self.handle_probe(r)?;
                    }
                    self.publish();
                }
                _ = tokio::time::sleep(sleep) => {
                    self.core.tick(now());
                    self.execute()?;
                    self.publish();
                    revive_needed = true;
                }
            }
        }
    }
}

/// Writes merged by `execute` are capped so any store (ZooKeeper's 1 MB requests included) takes
/// them.
const MERGED_WRITE_OPS: usize = 256;

/// Cluster events handled before their effects run and a snapshot is published.
const EVENT_BURST: usize = 2048;

/// The core's events that an operator wants in the log (all of them also go to the event bus).
fn log_event(ev: &Event) {
    match ev {
        Event::DeploymentInfo { plan } => info!(
            message = "Deployment step started.",
            deployment_id = %plan.id,
            step = plan.current_step,
            steps = plan.steps.len()
        ),
        Event::DeploymentStepSuccess { plan } => info!(
            message = "Deployment step finished.",
            deployment_id = %plan.id,
            step = plan.current_step
        ),
        Event::DeploymentSuccess { plan } => {
            info!(message = "Deployment finished.", deployment_id = %plan.id)
        }
        Event::DeploymentFailed { plan, reason } => {
            warn!(message = "Deployment failed.", deployment_id = %plan.id, reason = %reason)
        }
        Event::HealthStatusChanged {
            instance_id, alive, ..
        } => info!(message = "Health check result changed.", instance_id = %instance_id, alive),
        Event::FailedHealthCheck {
            instance_id,
            health_check,
            ..
        } => {
            info!(message = "Health check failed.", instance_id = %instance_id, protocol = %health_check.protocol)
        }
        Event::UnhealthyInstanceKill {
            task_id, reason, ..
        } => warn!(message = "Killing unhealthy task.", task_id = %task_id, reason = %reason),
        Event::InstanceHealthChanged {
            instance_id,
            healthy,
            ..
        } => {
            info!(message = "Instance health changed.", instance_id = %instance_id, healthy = ?healthy)
        }
        // Status updates are logged where they arrive; the rest only go to the event bus.
        _ => {}
    }
}
