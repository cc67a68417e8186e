//! The connection to the Mesos master and the calls on it. One task (the driver) owns all
//! state; the [`Cluster`] methods only queue commands for it, so the runtime never waits on the
//! network. The SUBSCRIBE stream is read by its own task, which forwards decoded events.

use crate::convert::{self, Carver};
use crate::master::{self, MasterSource};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use pacer_core::cluster::{
    Cluster, ClusterEvent, ClusterEventSink, KillRequest, LaunchSpec, OfferId, TaskState,
    TaskStatus,
};
use pacer_core::id::TaskId;
use pacer_mesos_proto::{call, event, recordio, v1, Call, Event, PROTOBUF};
use prost::Message;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Stores the framework id the master assigned, so a restarted Pacer (or the next leader)
/// resubscribes as the same framework and keeps its tasks.
pub type FrameworkIdSink = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct MesosConfig {
    pub master: MasterSource,
    pub framework: crate::FrameworkSettings,
    /// The id stored by an earlier run, if any.
    pub framework_id: Option<String>,
    /// `--mesos_heartbeat_interval`: the master's heartbeat period Pacer expects (the one the
    /// master announces wins if it is longer).
    pub heartbeat_interval: Duration,
    /// `--mesos_heartbeat_failure_threshold`: missed heartbeats before the connection is dropped.
    pub heartbeat_failure_threshold: u32,
    /// `--min_revive_offers_interval`.
    pub min_revive_interval: Duration,
    /// `--reconciliation_interval`: implicit reconciliation this often.
    pub reconciliation_interval: Duration,
    /// `--kill_retry_timeout`: a kill not confirmed by a terminal update is sent again.
    pub kill_retry_timeout: Duration,
    /// `--kill_chunk_size`: kills in flight at once; more wait their turn.
    pub kill_chunk_size: usize,
    /// HTTP Basic credentials for the master (`--mesos_authentication`).
    pub credentials: Option<(String, String)>,
    /// ZooKeeper session timeout for master detection.
    pub zk_session_timeout: Duration,
    /// Timeout of one call (not of the stream).
    pub call_timeout: Duration,
}

enum Cmd {
    Launch(OfferId, Vec<LaunchSpec>),
    Decline(OfferId, Duration),
    Kill(KillRequest),
    Reconcile(Vec<TaskId>),
    Revive,
    Suppress,
    Ack(TaskId),
}

/// The [`Cluster`] port on Mesos.
pub struct MesosCluster {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl MesosCluster {
    /// Starts the driver; it connects (and reconnects) by itself. Events go to `sink`.
    pub fn start(
        config: MesosConfig,
        sink: ClusterEventSink,
        persist_id: FrameworkIdSink,
    ) -> Arc<MesosCluster> {
        let (tx, rx) = mpsc::unbounded_channel();
        let leader = master::detect(config.master.clone(), config.zk_session_timeout);
        let driver = Driver::new(config, sink, persist_id, leader);
        tokio::spawn(driver.run(rx).instrument(info_span!("mesos")));
        Arc::new(MesosCluster { tx })
    }

    fn send(&self, cmd: Cmd) {
        // The driver only stops with the process.
        let _ = self.tx.send(cmd);
    }
}

impl Cluster for MesosCluster {
    fn launch(&self, offer: OfferId, tasks: Vec<LaunchSpec>) {
        self.send(Cmd::Launch(offer, tasks));
    }
    fn decline(&self, offer: OfferId, refuse: Duration) {
        self.send(Cmd::Decline(offer, refuse));
    }
    fn kill(&self, kill: KillRequest) {
        self.send(Cmd::Kill(kill));
    }
    fn reconcile(&self, tasks: Vec<TaskId>) {
        self.send(Cmd::Reconcile(tasks));
    }
    fn revive(&self) {
        self.send(Cmd::Revive);
    }
    fn suppress(&self) {
        self.send(Cmd::Suppress);
    }
    fn acknowledge(&self, task: &TaskId) {
        self.send(Cmd::Ack(task.clone()));
    }
    fn name(&self) -> &'static str {
        "mesos"
    }
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// What the stream task reports, tagged with the connection attempt it belongs to.
enum StreamMsg {
    /// SUBSCRIBE answered 200 at `base` with this stream id.
    Open {
        base: String,
        stream_id: String,
    },
    Event(Box<Event>),
    /// The attempt failed or the stream ended.
    Ended(String),
}

/// A call that failed, for the driver to act on.
enum CallFailure {
    /// These tasks were not launched: report them dropped so the core relaunches them.
    Launch(Vec<TaskId>, String),
    /// The master no longer knows this stream: subscribe again.
    Stale(u64, String),
}

struct Conn {
    base: String,
    stream_id: String,
    framework_id: String,
    /// The detected leader this connection was made for.
    leader: Option<String>,
}

struct KillEntry {
    request: KillRequest,
    sent_at: Option<Instant>,
}

struct Driver {
    cfg: MesosConfig,
    sink: ClusterEventSink,
    persist_id: FrameworkIdSink,
    http: Http,
    leader: watch::Receiver<Option<String>>,
    framework_id: Option<String>,
    /// Registered at least once in this process.
    registered: bool,
    conn: Option<Conn>,
    /// The current connection attempt; messages of older ones are ignored.
    generation: u64,
    stream_task: Option<tokio::task::JoinHandle<()>>,
    stream_tx: mpsc::UnboundedSender<(u64, StreamMsg)>,
    stream_rx: mpsc::UnboundedReceiver<(u64, StreamMsg)>,
    failures_tx: mpsc::UnboundedSender<CallFailure>,
    failures_rx: mpsc::UnboundedReceiver<CallFailure>,
    /// Not connected and no attempt under way: the next attempt's time.
    next_attempt: Option<Instant>,
    backoff: Duration,
    /// Which of a `--master` URL list to try next (each failed attempt moves on).
    url_at: usize,
    /// The leader watch still has a sender (ZooKeeper detection); URL lists close it at once.
    leader_open: bool,
    /// Outstanding offers, for carving task resources out of them.
    offers: HashMap<String, v1::Offer>,
    /// The latest unacknowledged update per task: (agent id, uuid).
    acks: HashMap<String, (String, Vec<u8>)>,
    kills: HashMap<String, KillEntry>,
    /// Kills not sent on the current connection, in order.
    kill_queue: VecDeque<String>,
    /// Kills sent and not yet confirmed (`sent_at` set).
    kills_in_flight: usize,
    declines: BTreeMap<u64, Vec<v1::OfferId>>,
    wants_offers: bool,
    last_revive: Option<Instant>,
    revive_at: Option<Instant>,
    next_reconcile: Instant,
    next_kill_check: Instant,
    calls: Arc<Semaphore>,
}

const MAX_CALLS_IN_FLIGHT: usize = 64;
const RECONCILE_CHUNK: usize = 1000;

impl Driver {
    fn new(
        cfg: MesosConfig,
        sink: ClusterEventSink,
        persist_id: FrameworkIdSink,
        leader: watch::Receiver<Option<String>>,
    ) -> Self {
        let http: Http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        let (stream_tx, stream_rx) = mpsc::unbounded_channel();
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        Driver {
            framework_id: cfg.framework_id.clone(),
            next_reconcile: now + cfg.reconciliation_interval,
            next_kill_check: now + cfg.kill_retry_timeout,
            cfg,
            sink,
            persist_id,
            http,
            leader,
            registered: false,
            conn: None,
            generation: 0,
            stream_task: None,
            stream_tx,
            stream_rx,
            failures_tx,
            failures_rx,
            next_attempt: Some(now),
            backoff: Duration::from_millis(250),
            url_at: 0,
            leader_open: true,
            offers: HashMap::new(),
            acks: HashMap::new(),
            kills: HashMap::new(),
            kill_queue: VecDeque::new(),
            kills_in_flight: 0,
            declines: BTreeMap::new(),
            wants_offers: true,
            last_revive: None,
            revive_at: None,
            calls: Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT)),
        }
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            self.maybe_subscribe();
            let wake = [
                self.next_attempt,
                self.revive_at,
                Some(self.next_reconcile),
                (!self.kills.is_empty()).then_some(self.next_kill_check),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.command(cmd);
                    while let Ok(cmd) = cmds.try_recv() {
                        self.command(cmd);
                    }
                    self.flush_declines();
                }
                Some((generation, msg)) = self.stream_rx.recv() => {
                    if generation == self.generation {
                        self.stream_message(msg);
                    }
                }
                Some(f) = self.failures_rx.recv() => self.call_failed(f),
                changed = self.leader.changed(), if self.leader_open => {
                    if changed.is_err() {
                        // Detection stopped (at once for URL lists): keep the last value.
                        self.leader_open = false;
                        continue;
                    }
                    let leader = self.leader.borrow().clone();
                    let moved = match &self.conn {
                        Some(c) => c.leader != leader,
                        None => self.stream_task.is_some(),
                    };
                    if moved {
                        self.disconnect("the leading master changed".into());
                        self.next_attempt = Some(Instant::now());
                    } else if self.conn.is_none() && self.stream_task.is_none() {
                        // A master appeared while none was known.
                        self.next_attempt = Some(Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(wake) => self.timers(),
            }
        }
    }

    // ---- connection ---------------------------------------------------------------------

    fn maybe_subscribe(&mut self) {
        if self.conn.is_some() || self.stream_task.is_some() {
            return;
        }
        let Some(at) = self.next_attempt else { return };
        if Instant::now() < at {
            return;
        }
        let leader = match &self.cfg.master {
            MasterSource::Urls(urls) if !urls.is_empty() => {
                Some(urls[self.url_at % urls.len()].clone())
            }
            _ => self.leader.borrow().clone(),
        };
        let Some(leader) = leader else {
            // No master known yet: the leader watch wakes us.
            self.next_attempt = None;
            return;
        };
        self.next_attempt = None;
        self.generation += 1;
        let generation = self.generation;
        let info = crate::framework_info(&self.cfg.framework, self.framework_id.as_deref());
        let call = Call {
            framework_id: self
                .framework_id
                .as_ref()
                .map(|v| v1::FrameworkId { value: v.clone() }),
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: info,
                // Suppression lives in the master's memory only: state it on every subscribe.
                suppressed_roles: if self.wants_offers {
                    Vec::new()
                } else {
                    vec![self.cfg.framework.role.clone()]
                },
            }),
            ..Default::default()
        };
        let tx = self.stream_tx.clone();
        let http = self.http.clone();
        let auth = self.auth_header();
        let heartbeat = self.cfg.heartbeat_interval;
        let threshold = self.cfg.heartbeat_failure_threshold.max(1);
        let timeout = self.cfg.call_timeout;
        debug!(message = "Subscribing.", master = %leader, generation);
        self.stream_task = Some(tokio::spawn(async move {
            let ended = subscribe_and_read(
                &http,
                &leader,
                call,
                auth,
                timeout,
                (heartbeat, threshold),
                |m| {
                    let _ = tx.send((generation, m));
                },
            )
            .await;
            let _ = tx.send((generation, StreamMsg::Ended(ended)));
        }));
    }

    fn stream_message(&mut self, msg: StreamMsg) {
        match msg {
            StreamMsg::Open { base, stream_id } => {
                debug!(message = "Event stream open.", master = %base, stream_id = %stream_id);
                // Fully connected once SUBSCRIBED arrives.
                self.conn = Some(Conn {
                    base,
                    stream_id,
                    framework_id: String::new(),
                    leader: self.leader.borrow().clone(),
                });
            }
            StreamMsg::Event(ev) => self.event(*ev),
            StreamMsg::Ended(reason) => {
                let was_connected = self
                    .conn
                    .as_ref()
                    .is_some_and(|c| !c.framework_id.is_empty());
                self.disconnect(reason.clone());
                if was_connected {
                    self.backoff = Duration::from_millis(250);
                } else {
                    // The attempt failed: with a list of masters, try the next one.
                    self.url_at += 1;
                }
                warn!(message = "No connection to the Mesos master; trying again.", reason = %reason, retry_ms = self.backoff.as_millis() as u64);
                self.retry_later();
            }
        }
    }

    /// The next SUBSCRIBE after the current backoff, which doubles (up to 15 s) until a
    /// SUBSCRIBED resets it: a master that refuses every attempt (an ERROR event, a stale
    /// stream) is not called four times a second.
    fn retry_later(&mut self) {
        self.next_attempt = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(15));
    }

    /// Forgets the connection (and aborts its stream); offers die with it.
    fn disconnect(&mut self, reason: String) {
        if let Some(t) = self.stream_task.take() {
            t.abort();
        }
        self.generation += 1;
        if let Some(c) = self.conn.take() {
            if !c.framework_id.is_empty() {
                (self.sink)(ClusterEvent::Disconnected {
                    master: c.base,
                    reason,
                });
            }
        }
        self.offers.clear();
        // Updates not yet acknowledged are sent again on the next stream.
        self.acks.clear();
        // Kills sent on this connection go first on the next one.
        let mut unsent: Vec<&String> = self
            .kills
            .iter()
            .filter(|(_, k)| k.sent_at.is_some())
            .map(|(id, _)| id)
            .collect();
        unsent.sort();
        for id in unsent.into_iter().rev() {
            self.kill_queue.push_front(id.clone());
        }
        for k in self.kills.values_mut() {
            k.sent_at = None;
        }
        self.kills_in_flight = 0;
    }

    fn connected(&self) -> Option<&Conn> {
        self.conn.as_ref().filter(|c| !c.framework_id.is_empty())
    }

    fn event(&mut self, ev: Event) {
        let kind = ev.r#type.and_then(|t| event::Type::try_from(t).ok());
        match kind {
            Some(event::Type::Subscribed) => {
                let Some(s) = ev.subscribed else { return };
                let id = s.framework_id.value;
                let reregistered = self.registered || self.framework_id.as_deref() == Some(&id);
                if self.framework_id.as_deref() != Some(&id) {
                    (self.persist_id)(&id);
                    self.framework_id = Some(id.clone());
                }
                self.registered = true;
                self.backoff = Duration::from_millis(250);
                let Some(conn) = self.conn.as_mut() else {
                    return;
                };
                conn.framework_id = id.clone();
                let master = conn.base.clone();
                info!(message = "Subscribed to the Mesos master.", framework_id = %id, master = %master, reregistered);
                (self.sink)(ClusterEvent::Registered {
                    framework_id: id,
                    master,
                    reregistered,
                });
                // Implicit reconciliation: tasks the master knows and Pacer does not get killed.
                // (The shell asks for explicit reconciliation of what it knows.)
                self.send_reconcile(Vec::new());
                self.next_reconcile = Instant::now() + self.cfg.reconciliation_interval;
                self.pump_kills();
            }
            Some(event::Type::Offers) => {
                let Some(o) = ev.offers else { return };
                let mut batch = Vec::with_capacity(o.offers.len());
                for offer in o.offers {
                    batch.push(convert::offer_in(&offer, &self.cfg.framework.role));
                    self.offers.insert(offer.id.value.clone(), offer);
                }
                if !batch.is_empty() {
                    (self.sink)(ClusterEvent::Offers(batch));
                }
            }
            Some(event::Type::Rescind) => {
                let Some(r) = ev.rescind else { return };
                self.offers.remove(&r.offer_id.value);
                (self.sink)(ClusterEvent::OfferRescinded(OfferId(r.offer_id.value)));
            }
            Some(event::Type::Update) => {
                let Some(u) = ev.update else { return };
                self.update(u.status);
            }
            Some(event::Type::Failure) => {
                if let Some(f) = ev.failure {
                    let agent = f.agent_id.map(|a| a.value).unwrap_or_default();
                    match f.executor_id {
                        Some(e) => {
                            info!(message = "Executor exited.", agent = %agent, executor = %e.value, status = ?f.status)
                        }
                        None => warn!(message = "Agent lost.", agent = %agent),
                    }
                }
            }
            Some(event::Type::Error) => {
                let message = ev.error.map(|e| e.message).unwrap_or_default();
                error!(message = "The Mesos master reported an error.", error = %message);
                self.disconnect(format!("master error: {message}"));
                self.retry_later();
            }
            Some(event::Type::Heartbeat) => {}
            _ => debug!(message = "Ignored event.", kind = ?ev.r#type),
        }
    }

    fn update(&mut self, s: v1::TaskStatus) {
        let Some(status) = convert::status_in(&s) else {
            warn!(message = "Status update with an unknown task state.", task_id = %s.task_id.value, state = s.state);
            return;
        };
        if let (Some(uuid), Some(agent)) = (&s.uuid, &s.agent_id) {
            self.acks
                .insert(s.task_id.value.clone(), (agent.value.clone(), uuid.clone()));
        }
        if status.state.is_terminal() {
            if let Some(k) = self.kills.remove(&s.task_id.value) {
                if k.sent_at.is_some() {
                    self.kills_in_flight -= 1;
                }
                // A queued id whose entry is gone is skipped when its turn comes.
                self.pump_kills();
            }
        }
        (self.sink)(ClusterEvent::Status(status));
    }

    // ---- commands -----------------------------------------------------------------------

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Launch(offer, tasks) => self.launch(offer, tasks),
            Cmd::Decline(offer, refuse) => {
                if self.offers.remove(&offer.0).is_some() {
                    self.declines
                        .entry(refuse.as_millis() as u64)
                        .or_default()
                        .push(v1::OfferId { value: offer.0 });
                }
            }
            Cmd::Kill(k) => {
                let id = k.task_id.as_str().to_string();
                match self.kills.get_mut(&id) {
                    // Already queued or in flight: it keeps its place, with the newer request.
                    Some(entry) => entry.request = k,
                    None => {
                        self.kills.insert(
                            id.clone(),
                            KillEntry {
                                request: k,
                                sent_at: None,
                            },
                        );
                        self.kill_queue.push_back(id);
                    }
                }
                self.pump_kills();
            }
            Cmd::Reconcile(tasks) => {
                // Before the first SUBSCRIBED nothing can be asked; registering triggers a full
                // reconciliation anyway.
                if self.connected().is_some() {
                    self.send_reconcile(tasks);
                }
            }
            Cmd::Revive => {
                self.wants_offers = true;
                self.revive();
            }
            Cmd::Suppress => {
                self.wants_offers = false;
                self.revive_at = None;
                self.simple_call(call::Type::Suppress, |c| {
                    c.suppress = Some(call::Suppress { roles: Vec::new() })
                });
            }
            Cmd::Ack(task) => {
                if self.connected().is_none() {
                    return;
                }
                if let Some((agent, uuid)) = self.acks.remove(task.as_str()) {
                    let ack = call::Acknowledge {
                        agent_id: v1::AgentId { value: agent },
                        task_id: v1::TaskId {
                            value: task.as_str().to_string(),
                        },
                        uuid,
                    };
                    self.simple_call(call::Type::Acknowledge, |c| c.acknowledge = Some(ack));
                }
            }
        }
    }

    /// REVIVE at most once per `--min_revive_offers_interval`; a later one is deferred.
    fn revive(&mut self) {
        let now = Instant::now();
        match self.last_revive {
            Some(last) if now < last + self.cfg.min_revive_interval => {
                self.revive_at
                    .get_or_insert(last + self.cfg.min_revive_interval);
            }
            _ => {
                if self.connected().is_none() {
                    // The next SUBSCRIBE states that offers are wanted.
                    return;
                }
                self.last_revive = Some(now);
                self.revive_at = None;
                self.simple_call(call::Type::Revive, |c| {
                    c.revive = Some(call::Revive { roles: Vec::new() })
                });
            }
        }
    }

    fn launch(&mut self, offer: OfferId, tasks: Vec<LaunchSpec>) {
        let ids: Vec<TaskId> = tasks.iter().map(|t| t.task_id.clone()).collect();
        if self.connected().is_none() {
            self.dropped(ids, "not connected to a Mesos master");
            return;
        }
        let Some(o) = self.offers.remove(&offer.0) else {
            self.dropped(ids, &format!("offer {} is no longer valid", offer.0));
            return;
        };
        let mut carver = Carver::new(&o, &self.cfg.framework.role);
        let mut infos = Vec::with_capacity(tasks.len());
        let mut sent = Vec::with_capacity(tasks.len());
        for t in &tasks {
            match carver.take(t) {
                Some(resources) => {
                    infos.push(convert::task_info(t, resources));
                    sent.push(t.task_id.clone());
                }
                None => self.dropped(
                    vec![t.task_id.clone()],
                    &format!("offer {} cannot hold the task", offer.0),
                ),
            }
        }
        let accept = call::Accept {
            offer_ids: vec![o.id.clone()],
            operations: vec![v1::offer::Operation {
                r#type: Some(v1::offer::operation::Type::Launch as i32),
                launch: Some(v1::offer::operation::Launch { task_infos: infos }),
            }],
            // What the tasks leave of the offer may come back at once.
            filters: Some(v1::Filters {
                refuse_seconds: Some(0.0),
            }),
        };
        let on_fail = CallFailure::Launch(sent, String::new());
        self.call(
            call::Type::Accept,
            |c| c.accept = Some(accept),
            Some(on_fail),
        );
    }

    /// Reports tasks that never reached the master, so the core launches them again.
    fn dropped(&self, ids: Vec<TaskId>, why: &str) {
        for id in ids {
            warn!(message = "Task not launched.", task_id = %id, reason = %why);
            (self.sink)(ClusterEvent::Status(TaskStatus {
                task_id: id,
                state: TaskState::Dropped,
                message: Some(format!("Task not launched: {why}")),
                agent_id: None,
                healthy: None,
            }));
        }
    }

    fn flush_declines(&mut self) {
        let declines = std::mem::take(&mut self.declines);
        if self.connected().is_none() {
            return;
        }
        for (refuse_ms, offer_ids) in declines {
            let decline = call::Decline {
                offer_ids,
                filters: Some(v1::Filters {
                    refuse_seconds: Some(refuse_ms as f64 / 1000.0),
                }),
            };
            self.simple_call(call::Type::Decline, |c| c.decline = Some(decline));
        }
    }

    fn send_reconcile(&mut self, tasks: Vec<TaskId>) {
        let mut batches: Vec<Vec<call::reconcile::Task>> = Vec::new();
        if tasks.is_empty() {
            batches.push(Vec::new());
        }
        for chunk in tasks.chunks(RECONCILE_CHUNK) {
            batches.push(
                chunk
                    .iter()
                    .map(|t| call::reconcile::Task {
                        task_id: v1::TaskId {
                            value: t.as_str().to_string(),
                        },
                        agent_id: None,
                    })
                    .collect(),
            );
        }
        for tasks in batches {
            self.simple_call(call::Type::Reconcile, |c| {
                c.reconcile = Some(call::Reconcile { tasks })
            });
        }
    }

    /// Sends waiting kills while fewer than `--kill_chunk_size` are unconfirmed.
    fn pump_kills(&mut self) {
        if self.connected().is_none() {
            return;
        }
        let chunk = self.cfg.kill_chunk_size.max(1);
        while self.kills_in_flight < chunk {
            let Some(id) = self.kill_queue.pop_front() else {
                break;
            };
            let Some(entry) = self.kills.get_mut(&id).filter(|e| e.sent_at.is_none()) else {
                continue;
            };
            entry.sent_at = Some(Instant::now());
            let k = entry.request.clone();
            self.kills_in_flight += 1;
            self.send_kill(k);
        }
    }

    fn send_kill(&self, k: KillRequest) {
        let kill = call::Kill {
            task_id: v1::TaskId {
                value: k.task_id.as_str().to_string(),
            },
            agent_id: k.agent_id.map(|a| v1::AgentId { value: a.0 }),
            kill_policy: k.grace.map(|g| v1::KillPolicy {
                grace_period: Some(convert::duration_info(g)),
            }),
        };
        self.simple_call(call::Type::Kill, |c| c.kill = Some(kill));
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.revive_at.is_some_and(|t| t <= now) {
            self.revive_at = None;
            self.last_revive = None;
            if self.wants_offers {
                self.revive();
            }
        }
        if self.next_reconcile <= now {
            self.next_reconcile = now + self.cfg.reconciliation_interval;
            if self.connected().is_some() {
                self.send_reconcile(Vec::new());
            }
        }
        if self.next_kill_check <= now {
            self.next_kill_check = now + self.cfg.kill_retry_timeout / 2;
            let overdue: Vec<KillRequest> = self
                .kills
                .values_mut()
                .filter(|k| {
                    k.sent_at
                        .is_some_and(|t| t + self.cfg.kill_retry_timeout <= now)
                })
                .map(|k| {
                    k.sent_at = Some(now);
                    k.request.clone()
                })
                .collect();
            if self.connected().is_some() {
                for k in overdue {
                    info!(message = "Kill not confirmed; sending it again.", task_id = %k.task_id);
                    self.send_kill(k);
                }
            }
        }
    }

    fn call_failed(&mut self, f: CallFailure) {
        match f {
            CallFailure::Launch(ids, why) => self.dropped(ids, &why),
            CallFailure::Stale(generation, why) => {
                if generation == self.generation && self.conn.is_some() {
                    self.disconnect(why);
                    self.retry_later();
                }
            }
        }
    }

    // ---- calls --------------------------------------------------------------------------

    fn auth_header(&self) -> Option<String> {
        use base64::Engine;
        self.cfg.credentials.as_ref().map(|(user, secret)| {
            let raw = format!("{user}:{secret}");
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    fn simple_call(&self, kind: call::Type, fill: impl FnOnce(&mut Call)) {
        self.call(kind, fill, None);
    }

    /// Sends one call on its own connection (the stream's stays busy), without waiting.
    fn call(&self, kind: call::Type, fill: impl FnOnce(&mut Call), on_fail: Option<CallFailure>) {
        let Some(conn) = self.connected() else {
            if let Some(CallFailure::Launch(ids, _)) = on_fail {
                self.dropped(ids, "not connected to a Mesos master");
            }
            return;
        };
        let mut c = Call {
            framework_id: Some(v1::FrameworkId {
                value: conn.framework_id.clone(),
            }),
            r#type: Some(kind as i32),
            ..Default::default()
        };
        fill(&mut c);
        let body = Bytes::from(c.encode_to_vec());
        let url = format!("{}/api/v1/scheduler", conn.base);
        let stream_id = conn.stream_id.clone();
        let http = self.http.clone();
        let auth = self.auth_header();
        let timeout = self.cfg.call_timeout;
        let permits = self.calls.clone();
        let failures = self.failures_tx.clone();
        let generation = self.generation;
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut req = Request::post(&url)
                .header("Content-Type", PROTOBUF)
                .header("Accept", PROTOBUF)
                .header("Mesos-Stream-Id", &stream_id);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let req = req.body(Full::new(body)).expect("valid request");
            let outcome = tokio::time::timeout(timeout, async {
                let resp = http.request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let text = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                Ok::<_, String>((status, text))
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            let why = match outcome {
                Ok((s, _)) if s.is_success() => return,
                Ok((s, text)) => {
                    // The subscription is gone (a 403 is also an authorization refusal, which
                    // resubscribing does not cure).
                    let stale = (s == StatusCode::FORBIDDEN
                        && (text.contains("not subscribed") || text.contains("not connected")))
                        || (s == StatusCode::BAD_REQUEST
                            && (text.contains("stream ID") || text.contains("cannot be found")));
                    if stale {
                        let _ = failures.send(CallFailure::Stale(
                            generation,
                            format!("{} answered {s}: {text}", kind.as_str_name()),
                        ));
                    }
                    format!("{} answered {s}: {text}", kind.as_str_name())
                }
                Err(e) => format!("{} failed: {e}", kind.as_str_name()),
            };
            warn!(message = "Mesos call failed.", reason = %why);
            if let Some(CallFailure::Launch(ids, _)) = on_fail {
                let _ = failures.send(CallFailure::Launch(ids, why));
            }
        });
    }
}

/// SUBSCRIBE at `leader` (following 307 redirects to the leading master), then read the event
/// stream until it ends or stays silent for `threshold` heartbeats. Returns why it ended.
async fn subscribe_and_read(
    http: &Http,
    leader: &str,
    call: Call,
    auth: Option<String>,
    timeout: Duration,
    (heartbeat, threshold): (Duration, u32),
    emit: impl Fn(StreamMsg),
) -> String {
    let body = Bytes::from(call.encode_to_vec());
    let mut base = leader.trim_end_matches('/').to_string();
    let mut redirects = 0;
    let resp = loop {
        let mut req = Request::post(format!("{base}/api/v1/scheduler"))
            .header("Content-Type", PROTOBUF)
            .header("Accept", PROTOBUF);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let req = req.body(Full::new(body.clone())).expect("valid request");
        let resp = match tokio::time::timeout(timeout, http.request(req)).await {
            Err(_) => return format!("SUBSCRIBE to {base} got no answer"),
            Ok(Err(e)) => return format!("SUBSCRIBE to {base} failed: {e}"),
            Ok(Ok(r)) => r,
        };
        if resp.status() == StatusCode::TEMPORARY_REDIRECT && redirects < 5 {
            redirects += 1;
            let Some(location) = resp.headers().get("Location").and_then(|v| v.to_str().ok())
            else {
                return format!("{base} redirected without a Location");
            };
            base = redirect_base(location);
            debug!(message = "Redirected to the leading master.", master = %base);
            continue;
        }
        break resp;
    };
    let status = resp.status();
    if status != StatusCode::OK {
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return format!("SUBSCRIBE to {base} answered {status}: {}", text.trim());
    }
    let Some(stream_id) = resp
        .headers()
        .get("Mesos-Stream-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return format!("SUBSCRIBE to {base} answered without a Mesos-Stream-Id");
    };
    emit(StreamMsg::Open {
        base: base.clone(),
        stream_id,
    });
    let mut body = resp.into_body();
    let mut decoder = recordio::Decoder::default();
    let mut silence = heartbeat * threshold;
    loop {
        let frame = match tokio::time::timeout(silence, body.frame()).await {
            Err(_) => {
                return format!(
                    "no event from {base} for {} ms ({threshold} heartbeats)",
                    silence.as_millis()
                )
            }
            Ok(None) => return format!("{base} closed the event stream"),
            Ok(Some(Err(e))) => return format!("event stream from {base} broke: {e}"),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        decoder.feed(&data);
        loop {
            let record = match decoder.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return format!("event stream from {base} is corrupt: {e}"),
            };
            let ev = match Event::decode(record) {
                Ok(ev) => ev,
                Err(e) => return format!("undecodable event from {base}: {e}"),
            };
            if let Some(s) = &ev.subscribed {
                if let Some(secs) = s.heartbeat_interval_seconds.filter(|s| *s > 0.0) {
                    let announced = Duration::from_secs_f64(secs);
                    silence = heartbeat.max(announced) * threshold;
                }
            }
            emit(StreamMsg::Event(Box::new(ev)));
        }
    }
}

/// A master's `Location` is protocol-relative (`//host:port/api/v1/scheduler`).
fn redirect_base(location: &str) -> String {
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))
        .unwrap_or(location);
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("http://{authority}")
}

#[cfg(test)]
mod tests {
    use super::redirect_base;

    #[test]
    fn protocol_relative_redirects_become_http() {
        assert_eq!(
            redirect_base("//10.0.0.2:5050/api/v1/scheduler"),
            "http://10.0.0.2:5050"
        );
        assert_eq!(
            redirect_base("http://m2:5050/master/api/v1/scheduler"),
            "http://m2:5050"
        );
    }
}
