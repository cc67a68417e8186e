//! The simulated master: agents, frameworks, offers, tasks and their status update queues, the
//! allocator, and one clock task that drives every time-based transition from a timer heap.

// `Resource.role` and `FrameworkInfo.role` are deprecated in Mesos but still part of the protocol.
#![allow(deprecated)]

use crate::process;
use crate::resources::{self, milli, Format, Needs, Pools, Ranges, Res};
use crate::{AgentState, LeaderMode, SimAgent, SimConfig, SimFramework, SimTask};
use bytes::Bytes;
use nix::sys::signal::Signal;
use pacer_mesos_proto::v1::{
    self, framework_info::capability::Type as Cap, task_status::Reason, task_status::Source,
    TaskState,
};
use pacer_mesos_proto::{call, event, recordio, Call, Event};
use prost::Message;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// Status update retries double up to this (Mesos's STATUS_UPDATE_RETRY_INTERVAL_MAX).
const RETRY_MAX: Duration = Duration::from_secs(600);
/// Default Filters.refuse_seconds, and its cap.
const DEFAULT_REFUSE: f64 = 5.0;
const MAX_REFUSE: f64 = 365.0 * 24.0 * 3600.0;
/// Kill grace of the command executor when neither the call nor the task says.
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);
/// Timers fired per turn of the clock before it lets others at the state.
const SWEEP_BUDGET: usize = 20_000;

const FATE_OUTSTANDING: u8 = 0;
const FATE_USED: u8 = 1;
const FATE_DECLINED: u8 = 2;
const FATE_RESCINDED: u8 = 3;

pub(crate) struct Shared {
    pub cfg: SimConfig,
    state: Mutex<State>,
    wake: Notify,
    shutdown: watch::Sender<bool>,
    pub listeners: Mutex<Vec<crate::http::Listener>>,
    driver: Mutex<Option<JoinHandle<()>>>,
    pub zk: tokio::sync::Mutex<Option<crate::zk::Registration>>,
}

impl Shared {
    /// Runs `f` on the state under its lock, then wakes the clock if `f` set an earlier timer.
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut g);
        let wake = std::mem::take(&mut g.wake);
        drop(g);
        if wake {
            self.wake.notify_one();
        }
        r
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

impl Drop for Shared {
    // A simulator dropped without `stop` (e.g. a panicking test) still leaves no processes behind.
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for pid in s.live_pids.drain() {
            process::signal_group(pid, Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Clone, Copy, Debug, PartialEq)]
enum AgentStatus {
    Active,
    /// Since when (for `unreachable_time`).
    Unreachable(SystemTime),
    Gone,
}

pub(crate) struct Agent {
    pub id: String,
    pub hostname: String,
    status: AgentStatus,
    total: Pools,
    /// Neither used by tasks nor offered.
    free: Pools,
    used: Pools,
    tasks: HashSet<u64>,
    attributes: Vec<v1::Attribute>,
    domain: v1::DomainInfo,
    /// Rotates which framework sees this agent's resources first.
    turn: usize,
}

struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    stream_id: String,
    json: bool,
    epoch: u64,
}

struct Filter {
    until: Instant,
    refused: Pools,
}

pub(crate) struct Framework {
    id: String,
    info: v1::FrameworkInfo,
    conn: Option<Conn>,
    last_stream_id: Option<String>,
    suppressed: HashSet<String>,
    /// Per (agent index, role).
    filters: HashMap<(usize, String), Filter>,
    offers: HashSet<String>,
    failover_epoch: u64,
}

fn has_cap(info: &v1::FrameworkInfo, cap: Cap) -> bool {
    info.capabilities
        .iter()
        .any(|c| c.r#type == Some(cap as i32))
}

fn roles_of(info: &v1::FrameworkInfo) -> Vec<String> {
    if has_cap(info, Cap::MultiRole) {
        info.roles.clone()
    } else {
        vec![info.role.clone().unwrap_or_else(|| "*".into())]
    }
}

impl Framework {
    fn partition_aware(&self) -> bool {
        has_cap(&self.info, Cap::PartitionAware)
    }
    fn roles(&self) -> Vec<String> {
        roles_of(&self.info)
    }
    fn fully_suppressed(&self) -> bool {
        self.roles().iter().all(|r| self.suppressed.contains(r))
    }
}

struct OutstandingOffer {
    fw: String,
    agent: usize,
    role: String,
    res: Pools,
    generation: usize,
    n: usize,
}

struct KillState {
    health_failed: bool,
}

struct Proc {
    pid: u32,
    sandbox: tempfile::TempDir,
    env: std::collections::BTreeMap<String, String>,
    health: Vec<AbortHandle>,
}

/// A reliable status update from a task's executor, kept compact until it is put on the wire
/// (the field names are TaskStatus's, so callers set them the same way).
pub(crate) struct Update {
    state: i32,
    uuid: [u8; 16],
    timestamp: f64,
    pub source: Option<i32>,
    pub reason: Option<i32>,
    pub message: Option<String>,
    pub healthy: Option<bool>,
}

/// What the master keeps of a TaskInfo after launch (kept small: there may be 100,000 tasks).
struct TaskSpec {
    name: String,
    has_executor: bool,
    kill_grace: Option<Duration>,
    health_check: Option<Box<v1::HealthCheck>>,
    /// The command, only for a task that runs as a real process (until it is started).
    command: Option<Box<v1::CommandInfo>>,
    container: Option<Box<v1::ContainerInfo>>,
}

pub(crate) struct Task {
    id: String,
    /// Shared by all the framework's tasks.
    fw: Arc<str>,
    agent: usize,
    spec: TaskSpec,
    executor_id: String,
    state: TaskState,
    terminal: bool,
    healthy: Option<bool>,
    res: Pools,
    /// Reliable updates not yet acknowledged; the head is the one on the wire.
    pending: VecDeque<Update>,
    retry: Duration,
    retry_due: Instant,
    /// Bumped to cancel this task's scheduled transitions.
    epoch: u64,
    kill: Option<KillState>,
    /// A kill that arrived while the agent was unreachable: done when it comes back.
    deferred_kill: Option<Duration>,
    killing_state: bool,
    reregistered: bool,
    proc: Option<Box<Proc>>,
    /// Status timestamps, for `/master/state`.
    history: Vec<(TaskState, f64)>,
}

/// The TaskStatus of a queued update, as the executor sends it.
fn executor_status(t: &Task, agent_id: &str, u: &Update) -> v1::TaskStatus {
    v1::TaskStatus {
        task_id: v1::TaskId {
            value: t.id.clone(),
        },
        state: u.state,
        message: u.message.clone(),
        source: u.source,
        reason: u.reason,
        agent_id: Some(v1::AgentId {
            value: agent_id.to_string(),
        }),
        executor_id: Some(v1::ExecutorId {
            value: t.executor_id.clone(),
        }),
        timestamp: Some(u.timestamp),
        uuid: Some(u.uuid.to_vec()),
        healthy: u.healthy,
        container_status: Some(container_status(t)),
        ..Default::default()
    }
}

/// What the executor reports about the task's container: the agent's (loopback) address.
fn container_status(t: &Task) -> v1::ContainerStatus {
    v1::ContainerStatus {
        container_id: Some(v1::ContainerId {
            value: format!("{}-container", t.executor_id),
            parent: None,
        }),
        network_infos: vec![v1::NetworkInfo {
            ip_addresses: vec![v1::network_info::IpAddress {
                protocol: Some(v1::network_info::Protocol::IPv4 as i32),
                ip_address: Some("127.0.0.1".into()),
            }],
            ..Default::default()
        }],
        executor_pid: t.proc.as_ref().map(|p| p.pid),
    }
}

fn is_terminal(s: TaskState) -> bool {
    matches!(
        s,
        TaskState::TaskFinished
            | TaskState::TaskFailed
            | TaskState::TaskKilled
            | TaskState::TaskError
            | TaskState::TaskLost
            | TaskState::TaskDropped
            | TaskState::TaskGone
            | TaskState::TaskGoneByOperator
    )
}

#[derive(Clone, Debug)]
enum Timer {
    Allocate { periodic: bool },
    Heartbeat { fw: String, epoch: u64 },
    Start { task: u64, epoch: u64 },
    Run { task: u64, epoch: u64 },
    Killed { task: u64, epoch: u64 },
    Retry { task: u64 },
    FailoverTimeout { fw: String, epoch: u64 },
    SigKill { pid: u32 },
}

struct Entry {
    at: Instant,
    seq: u64,
    timer: Timer,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and the earliest timer must come out first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}

/// What the scheduler endpoint answers to a call that passed the HTTP-level checks.
pub(crate) enum Answer {
    Status(u16, String),
    Stream {
        stream_id: String,
        rx: mpsc::UnboundedReceiver<Bytes>,
        fw: String,
        epoch: u64,
    },
    /// 200 with a single ERROR event, then the stream ends.
    ErrorStream {
        json: bool,
        message: String,
    },
}

pub(crate) enum Due {
    Again,
    At(Instant),
    Idle,
}

pub(crate) struct State {
    cfg: SimConfig,
    me: Weak<Shared>,
    probes: pacer_health::ProbeKinds,
    pub master_id: String,
    pub generation: usize,
    master_ids: Vec<String>,
    offer_fates: Vec<Vec<u8>>,
    pub leader: LeaderMode,
    pub port: u16,
    agents: Vec<Agent>,
    agent_index: HashMap<String, usize>,
    frameworks: HashMap<String, Framework>,
    last_framework: Option<String>,
    next_framework: u32,
    removed: HashSet<String>,
    offers: HashMap<String, OutstandingOffer>,
    tasks: HashMap<u64, Task>,
    task_index: HashMap<String, HashMap<String, u64>>,
    /// Interned framework ids for tasks.
    fw_names: HashMap<String, Arc<str>>,
    next_handle: u64,
    custom_executors: bool,
    timers: BinaryHeap<Entry>,
    timer_seq: u64,
    alloc_pending: bool,
    wake: bool,
    muted: bool,
    epoch: u64,
    rng: u64,
    acked: HashSet<[u8; 16]>,
    live_pids: HashSet<u32>,
    pub violations: Vec<String>,
    pub calls: Vec<crate::StoredCall>,
    pub subscriptions: usize,
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn time_info(t: SystemTime) -> v1::TimeInfo {
    v1::TimeInfo {
        nanoseconds: t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0),
    }
}

pub(crate) fn uuid_string(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn domain(region: &str, zone: &str) -> v1::DomainInfo {
    use v1::domain_info::{fault_domain, FaultDomain};
    v1::DomainInfo {
        fault_domain: Some(FaultDomain {
            region: fault_domain::RegionInfo {
                name: region.into(),
            },
            zone: fault_domain::ZoneInfo { name: zone.into() },
        }),
    }
}

/// pbjson writes 64-bit integers as strings (proto3 style); Mesos writes them as numbers.
fn int64_as_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if matches!(k.as_str(), "begin" | "end" | "nanoseconds") {
                    if let serde_json::Value::String(text) = child {
                        if let Ok(n) = text.parse::<i64>() {
                            *child = n.into();
                        } else if let Ok(n) = text.parse::<u64>() {
                            *child = n.into();
                        }
                        continue;
                    }
                }
                int64_as_numbers(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(int64_as_numbers),
        _ => {}
    }
}

pub(crate) fn encode_event(ev: &Event, json: bool) -> Bytes {
    let data = if json {
        let mut v = serde_json::to_value(ev).expect("events serialize");
        int64_as_numbers(&mut v);
        serde_json::to_vec(&v).expect("events serialize")
    } else {
        ev.encode_to_vec()
    };
    Bytes::from(recordio::encode(&data))
}

fn event_of(t: event::Type) -> Event {
    Event {
        r#type: Some(t as i32),
        ..Default::default()
    }
}

pub(crate) fn error_event(message: &str) -> Event {
    Event {
        error: Some(event::Error {
            message: message.into(),
        }),
        ..event_of(event::Type::Error)
    }
}

fn update_event(status: v1::TaskStatus) -> Event {
    Event {
        update: Some(event::Update { status }),
        ..event_of(event::Type::Update)
    }
}

fn refuse_duration(filters: Option<&v1::Filters>, min: Duration) -> Option<Duration> {
    let secs = filters
        .and_then(|f| f.refuse_seconds)
        .unwrap_or(DEFAULT_REFUSE);
    let secs = if secs.is_nan() || secs < 0.0 {
        DEFAULT_REFUSE
    } else {
        secs.min(MAX_REFUSE)
    };
    if secs == 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).max(min))
}

/// Mesos's rules for task, executor and framework-chosen ids.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("ID must not be empty".into());
    }
    if id.len() > 255 {
        return Err("ID must be at most 255 bytes long".into());
    }
    if id == "." || id == ".." {
        return Err("'.' and '..' are not allowed as IDs".into());
    }
    if id.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(format!(
            "ID '{}' contains '/', '\\' or a control character",
            id.escape_debug()
        ));
    }
    Ok(())
}

fn check_framework_info(info: &v1::FrameworkInfo, suppressed: &[String]) -> Result<(), String> {
    let multi = has_cap(info, Cap::MultiRole);
    if !info.roles.is_empty() && !multi {
        return Err(
            "'FrameworkInfo.roles' is set but the framework lacks the MULTI_ROLE capability".into(),
        );
    }
    if multi && info.role.is_some() {
        return Err("'FrameworkInfo.role' must not be set by a MULTI_ROLE framework".into());
    }
    let roles = roles_of(info);
    for r in &roles {
        let bad_char = r
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control());
        if r.is_empty() || r == "." || r == ".." || r.starts_with('-') || bad_char {
            return Err(format!("Role '{r}' is not a valid role name"));
        }
    }
    if let Some(t) = info.failover_timeout {
        if !t.is_finite() || t.abs() > 9.2e9 {
            return Err(format!("Invalid 'FrameworkInfo.failover_timeout': {t}"));
        }
    }
    if let Some(r) = suppressed.iter().find(|r| !roles.contains(r)) {
        return Err(format!(
            "Suppressed role '{r}' is not one of the framework's roles"
        ));
    }
    Ok(())
}

/// Checks `scheduler::Call` the way Mesos's call validation does (step 6 of the endpoint).
pub(crate) fn validate_call(call: &Call) -> Result<call::Type, String> {
    use call::Type as T;
    let ty = call
        .r#type
        .and_then(|t| T::try_from(t).ok())
        .ok_or("Expecting 'type' to be present")?;
    let need = |present: bool, name: &str| -> Result<(), String> {
        if present {
            Ok(())
        } else {
            Err(format!("Expecting '{name}' to be present"))
        }
    };
    if ty == T::Subscribe {
        need(call.subscribe.is_some(), "subscribe")?;
        let info_id = call
            .subscribe
            .as_ref()
            .and_then(|s| s.framework_info.id.as_ref());
        if call.framework_id.as_ref() != info_id {
            return Err("'framework_id' differs from 'subscribe.framework_info.id'".into());
        }
        return Ok(ty);
    }
    need(call.framework_id.is_some(), "framework_id")?;
    match ty {
        T::Accept => need(call.accept.is_some(), "accept")?,
        T::Decline => need(call.decline.is_some(), "decline")?,
        T::Kill => need(call.kill.is_some(), "kill")?,
        T::Shutdown => need(call.shutdown.is_some(), "shutdown")?,
        T::Acknowledge => {
            let ack = call.acknowledge.as_ref();
            need(ack.is_some(), "acknowledge")?;
            if ack.is_some_and(|a| a.uuid.len() != 16) {
                return Err("'acknowledge.uuid' is not a valid UUID".into());
            }
        }
        T::Reconcile => need(call.reconcile.is_some(), "reconcile")?,
        T::UpdateFramework => {
            let uf = call.update_framework.as_ref();
            need(uf.is_some(), "update_framework")?;
            if uf.and_then(|u| u.framework_info.id.as_ref()) != call.framework_id.as_ref() {
                return Err(
                    "'framework_id' differs from 'update_framework.framework_info.id'".into(),
                );
            }
        }
        _ => {}
    }
    Ok(ty)
}

// ---------------------------------------------------------------------------------------------
// Start, clock, failover, stop

pub(crate) async fn start(cfg: SimConfig) -> std::io::Result<Arc<Shared>> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port)).await?;
    let port = listener.local_addr()?.port();
    let (shutdown, _) = watch::channel(false);
    let shared = Arc::new_cyclic(|me| Shared {
        cfg: cfg.clone(),
        state: Mutex::new(State::new(cfg.clone(), me.clone(), port)),
        wake: Notify::new(),
        shutdown,
        listeners: Mutex::new(Vec::new()),
        driver: Mutex::new(None),
        zk: tokio::sync::Mutex::new(None),
    });
    shared.with(|s| {
        s.add_agents(cfg.agents);
        let at = Instant::now() + cfg.allocation_interval;
        s.push_timer(at, Timer::Allocate { periodic: true });
    });
    crate::http::serve(&shared, listener, 0);
    let driver = tokio::spawn(drive(shared.clone()));
    *shared.driver.lock().unwrap_or_else(|e| e.into_inner()) = Some(driver);
    if let Some(url) = &cfg.zk {
        let info = shared.with(|s| s.master_info());
        match crate::zk::register(url, &info).await {
            Ok(reg) => *shared.zk.lock().await = Some(reg),
            Err(e) => {
                stop(&shared).await;
                return Err(std::io::Error::other(e));
            }
        }
    }
    tracing::info!(port, "simulated Mesos master started");
    Ok(shared)
}

async fn drive(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown_signal();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let due = shared.with(|s| s.run_due(Instant::now()));
        match due {
            Due::Again => tokio::task::yield_now().await,
            Due::At(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
            }
            Due::Idle => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

pub(crate) async fn failover(shared: &Arc<Shared>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let (generation, info) = shared.with(|s| {
        s.master_failover(port);
        (s.generation, s.master_info())
    });
    crate::http::serve(shared, listener, generation);
    if let Some(url) = &shared.cfg.zk {
        let mut zk = shared.zk.lock().await;
        if let Some(old) = zk.take() {
            crate::zk::deregister(old).await;
        }
        match crate::zk::register(url, &info).await {
            Ok(reg) => *zk = Some(reg),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
    tracing::info!(port, master = %info.id, "simulated master failed over");
    Ok(())
}

pub(crate) async fn stop(shared: &Arc<Shared>) {
    let _ = shared.shutdown.send(true);
    shared.with(|s| s.shut_down());
    let listeners: Vec<crate::http::Listener> =
        std::mem::take(&mut *shared.listeners.lock().unwrap_or_else(|e| e.into_inner()));
    for l in listeners {
        l.stop().await;
    }
    let driver = shared
        .driver
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(d) = driver {
        let _ = d.await;
    }
    if let Some(reg) = shared.zk.lock().await.take() {
        crate::zk::deregister(reg).await;
    }
}

impl State {
    fn new(mut cfg: SimConfig, me: Weak<Shared>, port: u16) -> Self {
        // Periods of zero would make the clock spin.
        let min = Duration::from_millis(1);
        cfg.heartbeat_interval = cfg.heartbeat_interval.max(min);
        cfg.allocation_interval = cfg.allocation_interval.max(min);
        cfg.status_retry = cfg.status_retry.max(min);
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        let mut s = State {
            cfg,
            me,
            probes: pacer_health::ProbeKinds::builtin(),
            master_id: String::new(),
            generation: 0,
            master_ids: Vec::new(),
            offer_fates: vec![Vec::new()],
            leader: LeaderMode::Leader,
            port,
            agents: Vec::new(),
            agent_index: HashMap::new(),
            frameworks: HashMap::new(),
            last_framework: None,
            next_framework: 0,
            removed: HashSet::new(),
            offers: HashMap::new(),
            tasks: HashMap::new(),
            task_index: HashMap::new(),
            fw_names: HashMap::new(),
            next_handle: 0,
            custom_executors: false,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            alloc_pending: false,
            wake: false,
            muted: false,
            epoch: 0,
            rng: u64::from_le_bytes(seed),
            acked: HashSet::new(),
            live_pids: HashSet::new(),
            violations: Vec::new(),
            calls: Vec::new(),
            subscriptions: 0,
        };
        let id = s.new_uuid();
        s.master_id = uuid_string(&id);
        s.master_ids.push(s.master_id.clone());
        s
    }

    fn rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random (version 4) UUID.
    fn new_uuid(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.rand().to_le_bytes());
        b[8..].copy_from_slice(&self.rand().to_le_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        b
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    pub fn violation(&mut self, what: String) {
        tracing::warn!(violation = %what, "scheduler protocol violation");
        self.violations.push(what);
    }

    pub fn record(&mut self, call: crate::StoredCall) {
        if self.cfg.record_calls {
            self.calls.push(call);
        }
    }

    fn push_timer(&mut self, at: Instant, timer: Timer) {
        if self.timers.peek().is_none_or(|e| at < e.at) {
            self.wake = true;
        }
        self.timer_seq += 1;
        self.timers.push(Entry {
            at,
            seq: self.timer_seq,
            timer,
        });
    }

    fn allocate_soon(&mut self) {
        if !self.alloc_pending {
            self.alloc_pending = true;
            self.push_timer(Instant::now(), Timer::Allocate { periodic: false });
        }
    }

    pub fn run_due(&mut self, now: Instant) -> Due {
        let mut fired = 0;
        while let Some(top) = self.timers.peek() {
            if top.at > now {
                break;
            }
            if fired >= SWEEP_BUDGET {
                return Due::Again;
            }
            let e = self.timers.pop().expect("peeked");
            self.fire(e.timer, now);
            fired += 1;
        }
        self.wake = false;
        match self.timers.peek() {
            Some(e) => Due::At(e.at),
            None => Due::Idle,
        }
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Allocate { periodic } => {
                if periodic {
                    let at = now + self.cfg.allocation_interval;
                    self.push_timer(at, Timer::Allocate { periodic: true });
                } else {
                    self.alloc_pending = false;
                }
                self.allocate(now);
            }
            Timer::Heartbeat { fw, epoch } => {
                let live = self
                    .frameworks
                    .get(&fw)
                    .and_then(|f| f.conn.as_ref())
                    .is_some_and(|c| c.epoch == epoch);
                if live {
                    self.send(&fw, &event_of(event::Type::Heartbeat));
                    let at = now + self.cfg.heartbeat_interval;
                    self.push_timer(at, Timer::Heartbeat { fw, epoch });
                }
            }
            Timer::Start { task, epoch } => self.on_start(task, epoch, now),
            Timer::Run { task, epoch } => self.on_run(task, epoch, now),
            Timer::Killed { task, epoch } => {
                let Some(t) = self.tasks.get(&task) else {
                    return;
                };
                if t.epoch != epoch || t.terminal {
                    return;
                }
                let health_failed = t.kill.as_ref().is_some_and(|k| k.health_failed);
                self.emit(task, TaskState::TaskKilled, now, |s| {
                    s.message = Some("Command terminated with signal SIGTERM".into());
                    if health_failed {
                        s.healthy = Some(false);
                    }
                });
            }
            Timer::Retry { task } => {
                let Some(t) = self.tasks.get_mut(&task) else {
                    return;
                };
                if t.pending.is_empty() || now < t.retry_due {
                    return;
                }
                t.retry = (t.retry * 2).min(RETRY_MAX);
                self.send_head(task, now);
            }
            Timer::FailoverTimeout { fw, epoch } => {
                let expired = self
                    .frameworks
                    .get(&fw)
                    .is_some_and(|f| f.conn.is_none() && f.failover_epoch == epoch);
                if expired {
                    tracing::info!(framework = %fw, "failover timeout expired: removing the framework");
                    self.remove_framework(&fw);
                }
            }
            Timer::SigKill { pid } => {
                if self.live_pids.contains(&pid) {
                    process::signal_group(pid, Signal::SIGKILL);
                }
            }
        }
    }

    pub fn master_info(&self) -> v1::MasterInfo {
        v1::MasterInfo {
            id: self.master_id.clone(),
            ip: u32::from_le_bytes([127, 0, 0, 1]),
            port: u32::from(self.port),
            pid: Some(format!("master@127.0.0.1:{}", self.port)),
            hostname: Some("127.0.0.1".into()),
            version: Some("1.11.0".into()),
            address: Some(v1::Address {
                hostname: Some("127.0.0.1".into()),
                ip: Some("127.0.0.1".into()),
                port: i32::from(self.port),
            }),
            domain: Some(domain("region-1", "zone-0")),
        }
    }

    fn master_failover(&mut self, port: u16) {
        for fw in self.frameworks.values_mut() {
            fw.conn = None;
        }
        let offers: Vec<String> = self.offers.keys().cloned().collect();
        for id in offers {
            self.drop_offer(&id, FATE_RESCINDED);
        }
        self.frameworks.clear();
        let id = self.new_uuid();
        self.master_id = uuid_string(&id);
        self.master_ids.push(self.master_id.clone());
        self.offer_fates.push(Vec::new());
        self.generation += 1;
        self.next_framework = 0;
        self.port = port;
        self.leader = LeaderMode::Leader;
    }

    fn shut_down(&mut self) {
        for fw in self.frameworks.values_mut() {
            fw.conn = None;
        }
        for pid in self.live_pids.drain() {
            process::signal_group(pid, Signal::SIGKILL);
        }
        for t in self.tasks.values_mut() {
            if let Some(p) = t.proc.take() {
                for h in p.health {
                    h.abort();
                }
            }
        }
        self.timers.clear();
    }

    // -----------------------------------------------------------------------------------------
    // Sending

    /// Sends one event on the framework's stream; false when it has none (or is muted).
    fn send(&mut self, fw: &str, ev: &Event) -> bool {
        if self.muted {
            return false;
        }
        let Some(conn) = self.frameworks.get(fw).and_then(|f| f.conn.as_ref()) else {
            return false;
        };
        conn.tx.send(encode_event(ev, conn.json)).is_ok()
    }

    fn send_update(&mut self, fw: &str, status: v1::TaskStatus) {
        self.send(fw, &update_event(status));
    }

    fn fw_partition_aware(&self, fw: &str) -> bool {
        self.frameworks.get(fw).is_some_and(|f| f.partition_aware())
    }

    // -----------------------------------------------------------------------------------------
    // Agents

    pub fn add_agents(&mut self, n: usize) {
        let cfg = &self.cfg;
        for _ in 0..n {
            let idx = self.agents.len();
            let id = format!("{}-S{}", self.master_id, idx);
            let hostname = cfg
                .agent_hostname
                .clone()
                .unwrap_or_else(|| format!("agent-{idx}.sim"));
            let mut total = Pools {
                unreserved: Res {
                    cpus: milli(cfg.agent_cpus),
                    mem: milli(cfg.agent_mem_mb),
                    disk: milli(cfg.agent_disk_mb),
                    ports: Ranges::new(cfg.agent_ports.iter().copied()),
                },
                reserved: Res::default(),
            };
            if let Some((_, cpus, mem)) = &cfg.roles_reserved {
                let c = milli(*cpus).clamp(0, total.unreserved.cpus);
                let m = milli(*mem).clamp(0, total.unreserved.mem);
                total.reserved.cpus = c;
                total.reserved.mem = m;
                total.unreserved.cpus -= c;
                total.unreserved.mem -= m;
            }
            let attributes = vec![
                v1::Attribute {
                    name: "rack".into(),
                    r#type: v1::value::Type::Text as i32,
                    text: Some(v1::value::Text {
                        value: format!("rack-{}", idx % 3),
                    }),
                    ..Default::default()
                },
                v1::Attribute {
                    name: "index".into(),
                    r#type: v1::value::Type::Scalar as i32,
                    scalar: Some(v1::value::Scalar { value: idx as f64 }),
                    ..Default::default()
                },
            ];
            self.agent_index.insert(id.clone(), idx);
            self.agents.push(Agent {
                id,
                hostname,
                status: AgentStatus::Active,
                free: total.clone(),
                total,
                used: Pools::default(),
                tasks: HashSet::new(),
                attributes,
                domain: domain("region-1", &format!("zone-{}", idx % 3)),
                turn: 0,
            });
        }
        self.allocate_soon();
    }

    /// Rescinds every outstanding offer on the agent (RESCIND events).
    fn rescind_agent_offers(&mut self, agent: usize) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.agent == agent)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(fw) = self.drop_offer(&id, FATE_RESCINDED) {
                let ev = Event {
                    rescind: Some(event::Rescind {
                        offer_id: v1::OfferId { value: id.clone() },
                    }),
                    ..event_of(event::Type::Rescind)
                };
                self.send(&fw, &ev);
            }
        }
    }

    fn agent_failure_event(&mut self, agent: usize) {
        let ev = Event {
            failure: Some(event::Failure {
                agent_id: Some(v1::AgentId {
                    value: self.agents[agent].id.clone(),
                }),
                ..Default::default()
            }),
            ..event_of(event::Type::Failure)
        };
        let fws: Vec<String> = self.frameworks.keys().cloned().collect();
        for fw in fws {
            self.send(&fw, &ev);
        }
    }

    pub fn lose_agent(&mut self, agent_id: &str) {
        let Some(&a) = self.agent_index.get(agent_id) else {
            tracing::warn!(agent_id, "lose_agent: no such agent");
            return;
        };
        if self.agents[a].status != AgentStatus::Active {
            return;
        }
        let since = SystemTime::now();
        self.agents[a].status = AgentStatus::Unreachable(since);
        self.rescind_agent_offers(a);
        self.agent_failure_event(a);
        let mut handles: Vec<u64> = self.agents[a].tasks.iter().copied().collect();
        handles.sort_unstable();
        for h in handles {
            let Some(t) = self.tasks.get(&h) else {
                continue;
            };
            if t.terminal {
                continue;
            }
            let state = if self.fw_partition_aware(&t.fw) {
                TaskState::TaskUnreachable
            } else {
                TaskState::TaskLost
            };
            let message = format!("Agent {agent_id} is unreachable");
            let mut status = self.agent_loss_status(t, state, Reason::AgentRemoved, message);
            status.unreachable_time = Some(time_info(since));
            let fw = t.fw.clone();
            self.send_update(&fw, status);
        }
    }

    pub fn reregister_agent(&mut self, agent_id: &str) {
        let Some(&a) = self.agent_index.get(agent_id) else {
            tracing::warn!(agent_id, "reregister_agent: no such agent");
            return;
        };
        match self.agents[a].status {
            AgentStatus::Unreachable(_) => {}
            AgentStatus::Active => return,
            AgentStatus::Gone => {
                tracing::warn!(agent_id, "a removed agent cannot re-register");
                return;
            }
        }
        self.agents[a].status = AgentStatus::Active;
        let now = Instant::now();
        let mut handles: Vec<u64> = self.agents[a].tasks.iter().copied().collect();
        handles.sort_unstable();
        for h in handles {
            let Some(t) = self.tasks.get_mut(&h) else {
                continue;
            };
            t.reregistered = true;
            let deferred = t.deferred_kill.take();
            if !t.pending.is_empty() {
                self.send_head(h, now);
            }
            if let Some(grace) = deferred {
                self.start_kill(h, grace, false, now);
            }
        }
        self.allocate_soon();
    }

    pub fn remove_agent(&mut self, agent_id: &str) {
        let Some(&a) = self.agent_index.get(agent_id) else {
            tracing::warn!(agent_id, "remove_agent: no such agent");
            return;
        };
        if self.agents[a].status == AgentStatus::Gone {
            return;
        }
        self.agents[a].status = AgentStatus::Gone;
        self.rescind_agent_offers(a);
        self.agent_failure_event(a);
        let mut handles: Vec<u64> = self.agents[a].tasks.iter().copied().collect();
        handles.sort_unstable();
        for h in handles {
            let Some(t) = self.tasks.get(&h) else {
                continue;
            };
            if !t.terminal {
                let state = if self.fw_partition_aware(&t.fw) {
                    TaskState::TaskGoneByOperator
                } else {
                    TaskState::TaskLost
                };
                let message = format!("Agent {agent_id} was removed by the operator");
                let status =
                    self.agent_loss_status(t, state, Reason::AgentRemovedByOperator, message);
                let fw = t.fw.clone();
                self.send_update(&fw, status);
            }
            self.remove_task(h);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Offers and allocation

    fn offer_fate(&self, id: &str) -> Option<u8> {
        let (prefix, n) = id.rsplit_once("-O")?;
        let n: usize = n.parse().ok()?;
        let g = self.master_ids.iter().position(|m| m == prefix)?;
        self.offer_fates.get(g)?.get(n).copied()
    }

    /// Takes an outstanding offer out of the books (with its `fate` recorded); its resources
    /// are the caller's to return or use.
    fn take_offer(&mut self, id: &str, fate: u8) -> Option<OutstandingOffer> {
        let o = self.offers.remove(id)?;
        if let Some(f) = self
            .offer_fates
            .get_mut(o.generation)
            .and_then(|v| v.get_mut(o.n))
        {
            *f = fate;
        }
        if let Some(fw) = self.frameworks.get_mut(&o.fw) {
            fw.offers.remove(id);
        }
        Some(o)
    }

    /// Removes an outstanding offer, returning its resources to the agent. Returns its framework.
    fn drop_offer(&mut self, id: &str, fate: u8) -> Option<String> {
        let o = self.take_offer(id, fate)?;
        self.agents[o.agent].free.add(&o.res);
        Some(o.fw)
    }

    /// Forgets the framework's outstanding offers without telling it.
    fn discard_offers(&mut self, fw: &str) {
        let ids: Vec<String> = self
            .frameworks
            .get_mut(fw)
            .map(|f| f.offers.drain().collect())
            .unwrap_or_default();
        for id in ids {
            self.drop_offer(&id, FATE_RESCINDED);
        }
    }

    fn allocate(&mut self, now: Instant) {
        if self.muted {
            return;
        }
        let mut fws: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some() && !f.fully_suppressed())
            .map(|f| f.id.clone())
            .collect();
        if fws.is_empty() {
            return;
        }
        fws.sort();
        let reserved_role = self.cfg.roles_reserved.as_ref().map(|r| r.0.clone());
        let mut batches: HashMap<String, Vec<v1::Offer>> = HashMap::new();
        for a in 0..self.agents.len() {
            let agent = &self.agents[a];
            if agent.status != AgentStatus::Active || !agent.free.allocatable() {
                continue;
            }
            let start = agent.turn % fws.len();
            for k in 0..fws.len() {
                let fw_id = &fws[(start + k) % fws.len()];
                let Some(fw) = self.frameworks.get_mut(fw_id) else {
                    continue;
                };
                let roles = fw.roles();
                let mut made = false;
                for role in roles {
                    if fw.suppressed.contains(&role) {
                        continue;
                    }
                    let agent = &self.agents[a];
                    let mut cand = Pools {
                        unreserved: agent.free.unreserved.clone(),
                        reserved: Res::default(),
                    };
                    if reserved_role.as_deref() == Some(role.as_str()) {
                        cand.reserved = agent.free.reserved.clone();
                    }
                    if !cand.allocatable() {
                        continue;
                    }
                    let key = (a, role.clone());
                    let (blocked, expired) = match fw.filters.get(&key) {
                        Some(f) if now < f.until => (f.refused.contains(&cand), false),
                        Some(_) => (false, true),
                        None => (false, false),
                    };
                    if expired {
                        fw.filters.remove(&key);
                    }
                    if blocked {
                        continue;
                    }
                    // Make the offer.
                    let g = self.generation;
                    let n = self.offer_fates[g].len();
                    self.offer_fates[g].push(FATE_OUTSTANDING);
                    let id = format!("{}-O{}", self.master_id, n);
                    let multi = has_cap(&fw.info, Cap::MultiRole);
                    let fmt = Format {
                        refinement: has_cap(&fw.info, Cap::ReservationRefinement),
                        allocation_role: multi.then_some(role.as_str()),
                        reserved_role: reserved_role.as_deref(),
                    };
                    let agent = &self.agents[a];
                    let executor_ids = if self.custom_executors {
                        let mut ids: Vec<String> = agent
                            .tasks
                            .iter()
                            .filter_map(|h| self.tasks.get(h))
                            .filter(|t| *t.fw == **fw_id && !t.terminal && t.spec.has_executor)
                            .map(|t| t.executor_id.clone())
                            .collect();
                        ids.sort();
                        ids.dedup();
                        ids.into_iter()
                            .map(|value| v1::ExecutorId { value })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    let offer = v1::Offer {
                        id: v1::OfferId { value: id.clone() },
                        framework_id: v1::FrameworkId {
                            value: fw_id.clone(),
                        },
                        agent_id: v1::AgentId {
                            value: agent.id.clone(),
                        },
                        hostname: agent.hostname.clone(),
                        url: Some(v1::Url {
                            scheme: "http".into(),
                            address: v1::Address {
                                hostname: Some(agent.hostname.clone()),
                                ip: Some("127.0.0.1".into()),
                                port: 5051,
                            },
                            path: Some("/slave(1)".into()),
                            ..Default::default()
                        }),
                        domain: Some(agent.domain.clone()),
                        resources: resources::to_proto(&cand, fmt),
                        attributes: agent.attributes.clone(),
                        executor_ids,
                        allocation_info: multi.then(|| v1::resource::AllocationInfo {
                            role: Some(role.clone()),
                        }),
                    };
                    fw.offers.insert(id.clone());
                    let agent = &mut self.agents[a];
                    agent.free.sub(&cand);
                    self.offers.insert(
                        id,
                        OutstandingOffer {
                            fw: fw_id.clone(),
                            agent: a,
                            role,
                            res: cand,
                            generation: g,
                            n,
                        },
                    );
                    batches.entry(fw_id.clone()).or_default().push(offer);
                    made = true;
                }
                if made {
                    self.agents[a].turn = self.agents[a].turn.wrapping_add(1);
                    break;
                }
            }
        }
        let mut fws: Vec<String> = batches.keys().cloned().collect();
        fws.sort();
        for fw in fws {
            let offers = batches.remove(&fw).unwrap_or_default();
            let ev = Event {
                offers: Some(event::Offers { offers }),
                ..event_of(event::Type::Offers)
            };
            self.send(&fw, &ev);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Scheduler calls

    pub fn leader_answer(
        &self,
        generation: usize,
        path_and_query: &str,
    ) -> Option<(u16, Option<String>, String)> {
        let redirect_to = |hostport: &str| {
            Some((
                307,
                Some(format!("//{hostport}{path_and_query}")),
                String::new(),
            ))
        };
        match (&self.leader, generation == self.generation) {
            (LeaderMode::Leader, true) => None,
            (LeaderMode::Leader, false) => redirect_to(&format!("127.0.0.1:{}", self.port)),
            (LeaderMode::Redirect(to), _) => redirect_to(to),
            (LeaderMode::NoLeader, _) => Some((503, None, "No leader elected".into())),
        }
    }

    pub fn subscribe(&mut self, call: Call, json: bool) -> Answer {
        let sub = call.subscribe.expect("validated");
        let mut info = sub.framework_info;
        if let Err(message) = check_framework_info(&info, &sub.suppressed_roles) {
            return Answer::ErrorStream { json, message };
        }
        let requested = info.id.as_ref().map(|i| i.value.clone());
        if let Some(id) = &requested {
            if self.removed.contains(id) {
                return Answer::ErrorStream {
                    json,
                    message: "Framework has been removed".into(),
                };
            }
            if let Some(old) = self.frameworks.get(id) {
                if old.info.principal != info.principal {
                    return Answer::ErrorStream {
                        json,
                        message: "Changing framework's principal is not allowed".into(),
                    };
                }
            }
        }
        let id = match requested {
            Some(id) => id,
            None => {
                let id = format!("{}-{:04}", self.master_id, self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(v1::FrameworkId { value: id.clone() });
        let now = Instant::now();
        let (tx, rx) = mpsc::unbounded_channel();
        let epoch = self.next_epoch();
        let stream_uuid = self.new_uuid();
        let stream_id = uuid_string(&stream_uuid);
        let existing = self.frameworks.contains_key(&id);
        if existing {
            // The framework fails over to this connection.
            let old_conn = self.frameworks.get_mut(&id).and_then(|f| f.conn.take());
            if let Some(old) = old_conn {
                if !self.muted {
                    let _ = old.tx.send(encode_event(
                        &error_event("Framework failed over"),
                        old.json,
                    ));
                }
            }
            self.discard_offers(&id);
            let fw = self.frameworks.get_mut(&id).expect("exists");
            // user, principal and checkpoint cannot change.
            info.user = fw.info.user.clone();
            info.checkpoint = fw.info.checkpoint;
            fw.info = info;
            fw.failover_epoch += 1;
        } else {
            if self.task_index.contains_key(&id) {
                tracing::info!(framework = %id, "recovered framework re-subscribed");
            }
            self.frameworks.insert(
                id.clone(),
                Framework {
                    id: id.clone(),
                    info,
                    conn: None,
                    last_stream_id: None,
                    suppressed: HashSet::new(),
                    filters: HashMap::new(),
                    offers: HashSet::new(),
                    failover_epoch: 0,
                },
            );
        }
        let master_info = self.master_info();
        let fw = self.frameworks.get_mut(&id).expect("inserted");
        fw.suppressed = sub.suppressed_roles.into_iter().collect();
        fw.conn = Some(Conn {
            tx,
            stream_id: stream_id.clone(),
            json,
            epoch,
        });
        fw.last_stream_id = Some(stream_id.clone());
        self.subscriptions += 1;
        self.last_framework = Some(id.clone());
        let subscribed = Event {
            subscribed: Some(event::Subscribed {
                framework_id: v1::FrameworkId { value: id.clone() },
                heartbeat_interval_seconds: Some(self.cfg.heartbeat_interval.as_secs_f64()),
                master_info: Some(master_info),
            }),
            ..event_of(event::Type::Subscribed)
        };
        self.send(&id, &subscribed);
        self.send(&id, &event_of(event::Type::Heartbeat));
        let at = now + self.cfg.heartbeat_interval;
        self.push_timer(
            at,
            Timer::Heartbeat {
                fw: id.clone(),
                epoch,
            },
        );
        // Unacknowledged updates go out again on the new stream.
        let mut handles: Vec<u64> = self
            .task_index
            .get(&id)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        handles.sort_unstable();
        for h in handles {
            if self.tasks.get(&h).is_some_and(|t| !t.pending.is_empty()) {
                self.send_head(h, now);
            }
        }
        self.allocate_soon();
        Answer::Stream {
            stream_id,
            rx,
            fw: id,
            epoch,
        }
    }

    /// The SUBSCRIBE stream `epoch` of `fw` ended (client went away, or we closed it).
    pub fn stream_closed(&mut self, fw: &str, epoch: u64) {
        let current = self
            .frameworks
            .get(fw)
            .and_then(|f| f.conn.as_ref())
            .is_some_and(|c| c.epoch == epoch);
        if current {
            tracing::info!(framework = %fw, "scheduler closed its stream");
            self.disconnect(fw);
        }
    }

    fn disconnect(&mut self, fw_id: &str) {
        let Some(fw) = self.frameworks.get_mut(fw_id) else {
            return;
        };
        fw.conn = None;
        fw.filters.clear();
        fw.failover_epoch += 1;
        let epoch = fw.failover_epoch;
        let timeout = fw.info.failover_timeout.unwrap_or(0.0).clamp(0.0, 1e10);
        self.discard_offers(fw_id);
        let at = Instant::now().checked_add(Duration::from_secs_f64(timeout));
        if let Some(at) = at {
            self.push_timer(
                at,
                Timer::FailoverTimeout {
                    fw: fw_id.to_string(),
                    epoch,
                },
            );
        }
    }

    pub fn drop_streams(&mut self) {
        let ids: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some())
            .map(|f| f.id.clone())
            .collect();
        for id in ids {
            self.disconnect(&id);
        }
    }

    pub fn set_muted(&mut self, on: bool) {
        self.muted = on;
        if !on {
            self.allocate_soon();
        }
    }

    fn remove_framework(&mut self, fw_id: &str) {
        let Some(mut fw) = self.frameworks.remove(fw_id) else {
            return;
        };
        fw.conn = None;
        for id in fw.offers.drain() {
            self.drop_offer(&id, FATE_RESCINDED);
        }
        let handles: Vec<u64> = self
            .task_index
            .get(fw_id)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default();
        for h in handles {
            self.remove_task(h);
        }
        self.task_index.remove(fw_id);
        self.removed.insert(fw_id.to_string());
    }

    /// Non-SUBSCRIBE calls, after the HTTP-level checks (steps 9 and 10 of the endpoint).
    pub fn handle_call(&mut self, call: Call, ty: call::Type, stream: Option<&str>) -> Answer {
        use call::Type as T;
        let fw_id = call
            .framework_id
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or_default();
        let Some(fw) = self.frameworks.get(&fw_id) else {
            return Answer::Status(400, "Framework cannot be found".into());
        };
        let Some(conn) = &fw.conn else {
            return Answer::Status(403, "Framework is not subscribed".into());
        };
        let expected = conn.stream_id.clone();
        match stream {
            None => {
                self.violation(format!(
                    "{} call without the Mesos-Stream-Id header",
                    ty.as_str_name()
                ));
                return Answer::Status(
                    400,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header".into(),
                );
            }
            Some(s) if s != expected => {
                self.violation(format!(
                    "{} call with stream id '{s}' while the framework's stream is '{expected}'",
                    ty.as_str_name()
                ));
                return Answer::Status(
                    400,
                    format!(
                        "The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {fw_id}"
                    ),
                );
            }
            Some(_) => {}
        }
        let accepted = Answer::Status(202, String::new());
        match ty {
            T::Unknown => Answer::Status(501, "Received an unexpected 'UNKNOWN' call".into()),
            T::Subscribe => unreachable!("handled by subscribe()"),
            T::Teardown => {
                tracing::info!(framework = %fw_id, "framework tore itself down");
                self.remove_framework(&fw_id);
                accepted
            }
            T::Accept => {
                self.accept(&fw_id, call.accept.expect("validated"));
                accepted
            }
            T::Decline => {
                self.decline(&fw_id, call.decline.expect("validated"));
                accepted
            }
            T::Revive => {
                let roles = call.revive.map(|r| r.roles).unwrap_or_default();
                self.revive(&fw_id, roles);
                accepted
            }
            T::Suppress => {
                let roles = call.suppress.map(|r| r.roles).unwrap_or_default();
                self.suppress(&fw_id, roles);
                accepted
            }
            T::Kill => {
                self.kill(&fw_id, call.kill.expect("validated"));
                accepted
            }
            T::Shutdown => {
                self.shutdown_executor(&fw_id, call.shutdown.expect("validated"));
                accepted
            }
            T::Acknowledge => {
                self.acknowledge(&fw_id, call.acknowledge.expect("validated"));
                accepted
            }
            T::Reconcile => {
                self.reconcile(&fw_id, call.reconcile.expect("validated"));
                accepted
            }
            T::UpdateFramework => {
                match self.update_framework(&fw_id, call.update_framework.expect("validated")) {
                    Ok(()) => Answer::Status(200, String::new()),
                    Err(e) => Answer::Status(400, e),
                }
            }
            T::Message
            | T::Request
            | T::AcceptInverseOffers
            | T::DeclineInverseOffers
            | T::AcknowledgeOperationStatus
            | T::ReconcileOperations => accepted,
        }
    }

    fn roles_in_call(&self, fw_id: &str, roles: Vec<String>, what: &str) -> Option<Vec<String>> {
        let all = self.frameworks.get(fw_id)?.roles();
        if roles.is_empty() {
            return Some(all);
        }
        if let Some(bad) = roles.iter().find(|r| !all.contains(r)) {
            tracing::warn!(framework = %fw_id, role = %bad, "{what} names a role the framework is not subscribed to; ignored");
            return None;
        }
        Some(roles)
    }

    fn revive(&mut self, fw_id: &str, roles: Vec<String>) {
        let Some(roles) = self.roles_in_call(fw_id, roles, "REVIVE") else {
            return;
        };
        let Some(fw) = self.frameworks.get_mut(fw_id) else {
            return;
        };
        for r in &roles {
            fw.suppressed.remove(r);
        }
        fw.filters.retain(|(_, role), _| !roles.contains(role));
        self.allocate_soon();
    }

    fn suppress(&mut self, fw_id: &str, roles: Vec<String>) {
        let Some(roles) = self.roles_in_call(fw_id, roles, "SUPPRESS") else {
            return;
        };
        if let Some(fw) = self.frameworks.get_mut(fw_id) {
            fw.suppressed.extend(roles);
        }
    }

    fn update_framework(&mut self, fw_id: &str, uf: call::UpdateFramework) -> Result<(), String> {
        let mut info = uf.framework_info;
        check_framework_info(&info, &uf.suppressed_roles)?;
        let fw = self
            .frameworks
            .get(fw_id)
            .ok_or("Framework cannot be found")?;
        if info.user != fw.info.user {
            return Err("Updating 'FrameworkInfo.user' is unsupported".into());
        }
        if info.principal != fw.info.principal {
            return Err("Changing framework's principal is not allowed".into());
        }
        if info.checkpoint.unwrap_or(false) != fw.info.checkpoint.unwrap_or(false) {
            return Err("Updating 'FrameworkInfo.checkpoint' is unsupported".into());
        }
        info.id = Some(v1::FrameworkId {
            value: fw_id.to_string(),
        });
        let new_roles = roles_of(&info);
        let stale: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.fw == fw_id && !new_roles.contains(&o.role))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.drop_offer(&id, FATE_RESCINDED);
            let ev = Event {
                rescind: Some(event::Rescind {
                    offer_id: v1::OfferId { value: id },
                }),
                ..event_of(event::Type::Rescind)
            };
            self.send(fw_id, &ev);
        }
        let fw = self.frameworks.get_mut(fw_id).expect("checked");
        let unsuppressed: Vec<String> = fw
            .suppressed
            .iter()
            .filter(|r| !uf.suppressed_roles.contains(r))
            .cloned()
            .collect();
        fw.filters
            .retain(|(_, role), _| !unsuppressed.contains(role));
        fw.suppressed = uf.suppressed_roles.into_iter().collect();
        fw.info = info;
        self.allocate_soon();
        Ok(())
    }

    fn decline(&mut self, fw_id: &str, d: call::Decline) {
        let now = Instant::now();
        let min = self.cfg.allocation_interval;
        let refuse = refuse_duration(d.filters.as_ref(), min);
        for oid in d.offer_ids {
            let id = oid.value;
            match self.offers.get(&id) {
                Some(o) if o.fw == fw_id => {
                    let (agent, role, res) = (o.agent, o.role.clone(), o.res.clone());
                    self.drop_offer(&id, FATE_DECLINED);
                    if let (Some(refuse), Some(fw)) = (refuse, self.frameworks.get_mut(fw_id)) {
                        fw.filters.insert(
                            (agent, role),
                            Filter {
                                until: now + refuse,
                                refused: res,
                            },
                        );
                    }
                }
                Some(_) => self.violation(format!(
                    "DECLINE names offer {id}, which was made to another framework"
                )),
                None => match self.offer_fate(&id) {
                    None => self.violation(format!(
                        "DECLINE names offer {id}, which this master never made"
                    )),
                    Some(FATE_USED) | Some(FATE_DECLINED) => self.violation(format!(
                        "DECLINE names offer {id}, which was already accepted or declined"
                    )),
                    _ => {}
                },
            }
        }
    }

    /// The master's update for a task on an agent that was lost or removed (no uuid).
    fn agent_loss_status(
        &self,
        t: &Task,
        state: TaskState,
        reason: Reason,
        message: String,
    ) -> v1::TaskStatus {
        let agent = self.agents[t.agent].id.clone();
        let mut status = self.master_status(&t.id, state, reason, message, Some(agent));
        status.executor_id = Some(v1::ExecutorId {
            value: t.executor_id.clone(),
        });
        status
    }

    fn master_status(
        &self,
        task_id: &str,
        state: TaskState,
        reason: Reason,
        message: String,
        agent_id: Option<String>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: v1::TaskId {
                value: task_id.into(),
            },
            state: state as i32,
            message: Some(message),
            source: Some(Source::Master as i32),
            reason: Some(reason as i32),
            agent_id: agent_id.map(|value| v1::AgentId { value }),
            timestamp: Some(now_secs()),
            ..Default::default()
        }
    }

    fn accept(&mut self, fw_id: &str, acc: call::Accept) {
        let now = Instant::now();
        let pa = self.fw_partition_aware(fw_id);
        // Offers first: all must be valid, for this framework, on one agent and one role.
        let mut error: Option<String> = None;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut agent: Option<usize> = None;
        let mut role: Option<String> = None;
        let mut notes = Vec::new();
        if acc.offer_ids.is_empty() {
            error = Some("No offers specified".into());
        }
        for oid in &acc.offer_ids {
            let id = oid.value.as_str();
            if !seen.insert(id) {
                error.get_or_insert(format!("Duplicate offer {id} in the same ACCEPT"));
                continue;
            }
            match self.offers.get(id) {
                None => {
                    match self.offer_fate(id) {
                        None => notes.push(format!(
                            "ACCEPT names offer {id}, which this master never made"
                        )),
                        Some(FATE_USED) | Some(FATE_DECLINED) => notes.push(format!(
                            "ACCEPT names offer {id}, which was already accepted or declined"
                        )),
                        _ => {}
                    }
                    error.get_or_insert(format!("Offer {id} is no longer valid"));
                }
                Some(o) => {
                    if o.fw != fw_id {
                        notes.push(format!(
                            "ACCEPT names offer {id}, which was made to another framework"
                        ));
                        error.get_or_insert(format!("Offer {id} has invalid framework"));
                    } else if agent.is_some_and(|a| a != o.agent) {
                        error.get_or_insert(
                            "Aggregated offers must belong to one single agent".into(),
                        );
                    } else if role.as_ref().is_some_and(|r| r != &o.role) {
                        error.get_or_insert(
                            "Aggregated offers must be allocated to the same role".into(),
                        );
                    }
                    agent = Some(o.agent);
                    role = Some(o.role.clone());
                }
            }
        }
        for n in notes {
            self.violation(n);
        }
        let mut tasks = Vec::new();
        for op in acc.operations {
            use v1::offer::operation::Type as Op;
            match (op.r#type.and_then(|t| Op::try_from(t).ok()), op.launch) {
                (Some(Op::Launch), Some(l)) => tasks.extend(l.task_infos),
                (Some(Op::Launch), None) => {
                    error.get_or_insert("LAUNCH operation without 'launch'".into());
                }
                (t, _) => {
                    tracing::warn!(framework = %fw_id, operation = ?t, "ACCEPT with an operation the simulator does not implement; ignored")
                }
            }
        }
        if let Some(err) = error {
            let state = if pa {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            for t in &tasks {
                let st = self.master_status(
                    &t.task_id.value,
                    state,
                    Reason::InvalidOffers,
                    format!("Task launched with invalid offers: {err}"),
                    Some(t.agent_id.value.clone()),
                );
                self.send_update(fw_id, st);
            }
            for oid in &acc.offer_ids {
                if self.offers.get(&oid.value).is_some_and(|o| o.fw == fw_id) {
                    self.drop_offer(&oid.value, FATE_USED);
                }
            }
            return;
        }
        let (Some(a), Some(role)) = (agent, role) else {
            return;
        };
        let mut avail = Pools::default();
        for oid in &acc.offer_ids {
            if let Some(o) = self.take_offer(&oid.value, FATE_USED) {
                avail.add(&o.res);
            }
        }
        for t in tasks {
            match self.validate_task(fw_id, &t, a, &role, &avail) {
                Err((message, violation)) => {
                    if let Some(v) = violation {
                        self.violation(format!("ACCEPT: {v}"));
                    }
                    let st = self.master_status(
                        &t.task_id.value,
                        TaskState::TaskError,
                        Reason::TaskInvalid,
                        message,
                        Some(t.agent_id.value.clone()),
                    );
                    self.send_update(fw_id, st);
                }
                Ok(needs) => {
                    avail.sub(&needs.pools);
                    self.launch(fw_id, t, a, needs.pools, now);
                }
            }
        }
        self.agents[a].free.add(&avail);
        let refuse = refuse_duration(acc.filters.as_ref(), self.cfg.allocation_interval);
        if let (Some(refuse), false) = (refuse, avail.is_empty()) {
            if let Some(fw) = self.frameworks.get_mut(fw_id) {
                fw.filters.insert(
                    (a, role),
                    Filter {
                        until: now + refuse,
                        refused: avail,
                    },
                );
            }
        }
    }

    /// Mesos's per-task checks. `Err((message for TASK_ERROR, violation to record))`.
    fn validate_task(
        &self,
        fw_id: &str,
        t: &v1::TaskInfo,
        agent: usize,
        role: &str,
        avail: &Pools,
    ) -> Result<Needs, (String, Option<String>)> {
        let id = &t.task_id.value;
        check_id(id).map_err(|e| (format!("Task ID is invalid: {e}"), None))?;
        if self
            .task_index
            .get(fw_id)
            .is_some_and(|m| m.contains_key(id))
        {
            return Err((
                format!("Task has duplicate ID: {id}"),
                Some(format!(
                    "task '{id}' reuses the ID of a task the master still knows"
                )),
            ));
        }
        let agent_id = &self.agents[agent].id;
        if &t.agent_id.value != agent_id {
            return Err((
                format!("Task uses invalid agent: {}", t.agent_id.value),
                Some(format!(
                    "task '{id}' names agent '{}' but the offer is for agent '{agent_id}'",
                    t.agent_id.value
                )),
            ));
        }
        if t.command.is_some() == t.executor.is_some() {
            return Err((
                "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present".into(),
                None,
            ));
        }
        if let Some(ex) = &t.executor {
            check_id(&ex.executor_id.value)
                .map_err(|e| (format!("Executor ID is invalid: {e}"), None))?;
        }
        let fw = self.frameworks.get(fw_id);
        let multi = fw.is_some_and(|f| has_cap(&f.info, Cap::MultiRole));
        let reserved_role = self.cfg.roles_reserved.as_ref().map(|r| r.0.as_str());
        let alloc_role = multi.then_some(role);
        let mut needs = Needs::default();
        resources::parse_needs(&t.resources, reserved_role, alloc_role, &mut needs)
            .map_err(|e| (format!("Task uses invalid resources: {e}"), None))?;
        if let Some(ex) = &t.executor {
            let running = self.agents[agent].tasks.iter().any(|h| {
                self.tasks.get(h).is_some_and(|o| {
                    &*o.fw == fw_id && !o.terminal && o.executor_id == ex.executor_id.value
                })
            });
            if !running {
                resources::parse_needs(&ex.resources, reserved_role, alloc_role, &mut needs)
                    .map_err(|e| (format!("Executor uses invalid resources: {e}"), None))?;
            }
        }
        if needs.pools.is_empty() && needs.unmatched.is_empty() {
            return Err(("Task and its executor use no resources".into(), None));
        }
        if !needs.unmatched.is_empty() || !avail.contains(&needs.pools) {
            let shown = needs.pools.display(reserved_role).to_string();
            let left = avail.display(reserved_role).to_string();
            let mut message = format!(
                "Total resources {shown} required by task and its executor is more than available {left}"
            );
            let violation = if !needs.unmatched.is_empty() {
                message.push_str(&format!(" (not offered: {})", needs.unmatched.join(", ")));
                format!(
                    "task '{id}' uses resources that are not in the offer: {}",
                    needs.unmatched.join(", ")
                )
            } else if !avail
                .unreserved
                .ports
                .contains(&needs.pools.unreserved.ports)
                || !avail.reserved.ports.contains(&needs.pools.reserved.ports)
            {
                format!(
                    "task '{id}' uses ports {} that are not (or no longer) in the offer {}",
                    needs.pools.ports(),
                    avail.ports()
                )
            } else {
                format!("task '{id}' needs {shown} but the offer has only {left} left")
            };
            return Err((message, Some(violation)));
        }
        Ok(needs)
    }

    fn launch(&mut self, fw_id: &str, info: v1::TaskInfo, agent: usize, res: Pools, now: Instant) {
        let h = self.next_handle;
        self.next_handle += 1;
        let id = info.task_id.value.clone();
        let executor_id = info
            .executor
            .as_ref()
            .map(|e| e.executor_id.value.clone())
            .unwrap_or_else(|| id.clone());
        if info.executor.is_some() {
            self.custom_executors = true;
        }
        let killing_state = self
            .frameworks
            .get(fw_id)
            .is_some_and(|f| has_cap(&f.info, Cap::TaskKillingState));
        let docker = info
            .container
            .as_ref()
            .is_some_and(|c| c.r#type == v1::container_info::Type::Docker as i32);
        let as_process = self.cfg.run_commands && info.executor.is_none() && !docker;
        let spec = TaskSpec {
            name: info.name,
            has_executor: info.executor.is_some(),
            kill_grace: info
                .kill_policy
                .and_then(|p| p.grace_period)
                .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64)),
            health_check: info.health_check.map(Box::new),
            command: info.command.filter(|_| as_process).map(Box::new),
            container: info.container.map(Box::new),
        };
        let fw_arc = self
            .fw_names
            .entry(fw_id.to_string())
            .or_insert_with(|| Arc::from(fw_id))
            .clone();
        let a = &mut self.agents[agent];
        a.used.add(&res);
        a.tasks.insert(h);
        self.task_index
            .entry(fw_id.to_string())
            .or_default()
            .insert(id.clone(), h);
        let epoch = self.epoch + 1;
        self.epoch = epoch;
        self.tasks.insert(
            h,
            Task {
                id,
                fw: fw_arc,
                agent,
                spec,
                executor_id,
                state: TaskState::TaskStaging,
                terminal: false,
                healthy: None,
                res,
                pending: VecDeque::new(),
                retry: self.cfg.status_retry,
                retry_due: now,
                epoch,
                kill: None,
                deferred_kill: None,
                killing_state,
                reregistered: false,
                proc: None,
                history: vec![(TaskState::TaskStaging, now_secs())],
            },
        );
        let at = now + self.cfg.starting_after;
        self.push_timer(at, Timer::Start { task: h, epoch });
    }

    // -----------------------------------------------------------------------------------------
    // Task lifecycle

    fn on_start(&mut self, h: u64, epoch: u64, now: Instant) {
        let Some(t) = self.tasks.get(&h) else { return };
        if t.epoch != epoch || t.state != TaskState::TaskStaging {
            return;
        }
        if let Some(cmd) = t.spec.command.clone() {
            let agent_id = self.agents[t.agent].id.clone();
            let ids = process::TaskIds {
                task: &t.id,
                framework: &t.fw,
                agent: &agent_id,
                executor: &t.executor_id,
            };
            match process::spawn(&cmd, &ids) {
                Ok(sp) => {
                    let pid = sp.pid;
                    self.live_pids.insert(pid);
                    let t = self.tasks.get_mut(&h).expect("present");
                    t.spec.command = None;
                    t.proc = Some(Box::new(Proc {
                        pid,
                        sandbox: sp.sandbox,
                        env: sp.env,
                        health: Vec::new(),
                    }));
                    let me = self.me.clone();
                    let mut child = sp.child;
                    tokio::spawn(async move {
                        let status = child.wait().await;
                        if let Some(shared) = me.upgrade() {
                            shared.with(|s| s.process_exited(h, pid, status));
                        }
                    });
                }
                Err(msg) => {
                    self.emit(h, TaskState::TaskStarting, now, |_| {});
                    self.emit(h, TaskState::TaskFailed, now, |s| {
                        s.message = Some(msg);
                        s.source = Some(Source::Agent as i32);
                        s.reason = Some(Reason::ContainerLaunchFailed as i32);
                    });
                    return;
                }
            }
        }
        self.emit(h, TaskState::TaskStarting, now, |_| {});
        let at = now + self.cfg.running_after;
        self.push_timer(at, Timer::Run { task: h, epoch });
    }

    fn on_run(&mut self, h: u64, epoch: u64, now: Instant) {
        let Some(t) = self.tasks.get(&h) else { return };
        if t.epoch != epoch || t.state != TaskState::TaskStarting {
            return;
        }
        self.emit(h, TaskState::TaskRunning, now, |_| {});
        self.start_health_checks(h);
    }

    fn start_health_checks(&mut self, h: u64) {
        let Some(t) = self.tasks.get(&h) else { return };
        let (Some(p), Some(hc)) = (&t.proc, &t.spec.health_check) else {
            return;
        };
        let Some(check) = process::agent_check(hc) else {
            tracing::warn!(task = %t.id, "health check of an unsupported type; not run");
            return;
        };
        let me = self.me.clone();
        let sink: pacer_health::agent::VerdictSink = Arc::new(move |v| {
            if let Some(shared) = me.upgrade() {
                shared.with(|s| s.health_verdict(h, v));
            }
        });
        let checked = pacer_health::agent::CheckedTask {
            host: "127.0.0.1".into(),
            env: p.env.clone(),
            cwd: Some(p.sandbox.path().to_path_buf()),
        };
        let handles = pacer_health::agent::spawn(&self.probes, &[check], checked, sink);
        if let Some(p) = self.tasks.get_mut(&h).and_then(|t| t.proc.as_mut()) {
            p.health = handles;
        }
    }

    fn health_verdict(&mut self, h: u64, v: pacer_health::agent::Verdict) {
        let Some(t) = self.tasks.get(&h) else { return };
        if t.terminal || t.kill.is_some() || t.state != TaskState::TaskRunning {
            return;
        }
        let grace = self.kill_grace(h, None);
        let now = Instant::now();
        self.emit(h, TaskState::TaskRunning, now, |s| {
            s.healthy = Some(v.healthy);
            s.reason = Some(Reason::TaskHealthCheckStatusUpdated as i32);
            s.message = v.message.clone();
        });
        if v.kill {
            self.start_kill(h, grace, true, now);
        }
    }

    fn process_exited(
        &mut self,
        h: u64,
        pid: u32,
        status: std::io::Result<std::process::ExitStatus>,
    ) {
        self.live_pids.remove(&pid);
        let Some(t) = self.tasks.get_mut(&h) else {
            return;
        };
        if t.proc.as_ref().map(|p| p.pid) != Some(pid) {
            return;
        }
        if let Some(p) = t.proc.as_mut() {
            for a in p.health.drain(..) {
                a.abort();
            }
        }
        if t.terminal {
            return;
        }
        let now = Instant::now();
        let (success, message) = process::describe_exit(status);
        if t.state == TaskState::TaskStarting {
            self.emit(h, TaskState::TaskRunning, now, |_| {});
        }
        let t = self.tasks.get(&h).expect("present");
        let killed = t.kill.as_ref().map(|k| k.health_failed);
        let state = match (killed, success) {
            (Some(_), _) => TaskState::TaskKilled,
            (None, true) => TaskState::TaskFinished,
            (None, false) => TaskState::TaskFailed,
        };
        self.emit(h, state, now, |s| {
            s.message = Some(message);
            if killed == Some(true) {
                s.healthy = Some(false);
            }
        });
    }

    /// Queues a reliable update from the task's executor and puts it on the wire if it is the
    /// oldest unacknowledged one.
    fn emit(&mut self, h: u64, state: TaskState, now: Instant, extra: impl FnOnce(&mut Update)) {
        let uuid = self.new_uuid();
        let Some(t) = self.tasks.get_mut(&h) else {
            return;
        };
        let agent = &mut self.agents[t.agent];
        let mut status = Update {
            state: state as i32,
            uuid,
            timestamp: now_secs(),
            source: Some(Source::Executor as i32),
            reason: None,
            message: None,
            healthy: None,
        };
        extra(&mut status);
        t.state = state;
        t.reregistered = false;
        if let Some(hl) = status.healthy {
            t.healthy = Some(hl);
        }
        t.history.push((state, status.timestamp));
        if is_terminal(state) && !t.terminal {
            t.terminal = true;
            agent.used.sub(&t.res);
            agent.free.add(&t.res);
            if let Some(p) = t.proc.as_mut() {
                for a in p.health.drain(..) {
                    a.abort();
                }
            }
        }
        t.pending.push_back(status);
        if t.pending.len() == 1 {
            self.send_head(h, now);
        }
    }

    /// (Re)sends the task's oldest unacknowledged update and schedules its retry.
    fn send_head(&mut self, h: u64, now: Instant) {
        let Some(t) = self.tasks.get_mut(&h) else {
            return;
        };
        let Some(head) = t.pending.front() else {
            return;
        };
        let head = executor_status(t, &self.agents[t.agent].id, head);
        t.retry_due = now + t.retry;
        let at = t.retry_due;
        let reachable = self.agents[t.agent].status == AgentStatus::Active;
        let fw = t.fw.clone();
        if reachable {
            self.send_update(&fw, head);
        }
        self.push_timer(at, Timer::Retry { task: h });
    }

    fn remove_task(&mut self, h: u64) {
        let Some(t) = self.tasks.remove(&h) else {
            return;
        };
        let agent = &mut self.agents[t.agent];
        if !t.terminal {
            agent.used.sub(&t.res);
            agent.free.add(&t.res);
        }
        agent.tasks.remove(&h);
        if let Some(m) = self.task_index.get_mut(&*t.fw) {
            m.remove(&t.id);
        }
        if let Some(p) = t.proc {
            for a in p.health {
                a.abort();
            }
            if self.live_pids.contains(&p.pid) {
                process::signal_group(p.pid, Signal::SIGTERM);
                let at = Instant::now() + DEFAULT_KILL_GRACE;
                self.push_timer(at, Timer::SigKill { pid: p.pid });
            }
        }
    }

    fn find_task(&self, task_id: &str) -> Option<u64> {
        // Prefer the most recently subscribed framework.
        if let Some(h) = self
            .last_framework
            .as_ref()
            .and_then(|fw| self.task_index.get(fw))
            .and_then(|m| m.get(task_id))
        {
            return Some(*h);
        }
        self.task_index
            .values()
            .find_map(|m| m.get(task_id).copied())
    }

    fn kill_grace(&self, h: u64, call_policy: Option<&v1::KillPolicy>) -> Duration {
        let of = |p: Option<&v1::KillPolicy>| {
            p.and_then(|p| p.grace_period.as_ref())
                .map(|d| Duration::from_nanos(d.nanoseconds.max(0) as u64))
        };
        of(call_policy)
            .or_else(|| self.tasks.get(&h).and_then(|t| t.spec.kill_grace))
            .unwrap_or(DEFAULT_KILL_GRACE)
    }

    fn start_kill(&mut self, h: u64, grace: Duration, health_failed: bool, now: Instant) {
        let Some(t) = self.tasks.get_mut(&h) else {
            return;
        };
        if t.terminal || t.kill.is_some() {
            return;
        }
        t.kill = Some(KillState { health_failed });
        t.epoch += 1;
        let epoch = t.epoch;
        if t.state == TaskState::TaskStaging {
            self.emit(h, TaskState::TaskKilled, now, |s| {
                s.source = Some(Source::Agent as i32);
                s.reason = Some(Reason::TaskKilledDuringLaunch as i32);
                s.message = Some("Killed before the task was launched".into());
            });
            return;
        }
        if t.killing_state {
            self.emit(h, TaskState::TaskKilling, now, |_| {});
        }
        let t = self.tasks.get(&h).expect("present");
        match t.proc.as_ref().map(|p| p.pid) {
            Some(pid) if self.live_pids.contains(&pid) => {
                process::signal_group(pid, Signal::SIGTERM);
                self.push_timer(now + grace, Timer::SigKill { pid });
            }
            _ => {
                let at = now + self.cfg.kill_after;
                self.push_timer(at, Timer::Killed { task: h, epoch });
            }
        }
    }

    fn kill(&mut self, fw_id: &str, k: call::Kill) {
        let task_id = &k.task_id.value;
        let Some(h) = self
            .task_index
            .get(fw_id)
            .and_then(|m| m.get(task_id))
            .copied()
        else {
            let agent = k.agent_id.as_ref().map(|a| a.value.as_str());
            let st = self.reconcile_unknown(fw_id, task_id, agent);
            self.send_update(fw_id, st);
            return;
        };
        let t = &self.tasks[&h];
        if let Some(a) = &k.agent_id {
            if a.value != self.agents[t.agent].id {
                tracing::info!(task = %task_id, agent = %a.value, "KILL names another agent than the task's; ignored");
                return;
            }
        }
        let grace = self.kill_grace(h, k.kill_policy.as_ref());
        if matches!(self.agents[t.agent].status, AgentStatus::Unreachable(_)) {
            let t = self.tasks.get_mut(&h).expect("present");
            t.deferred_kill = Some(grace);
            return;
        }
        self.start_kill(h, grace, false, Instant::now());
    }

    fn shutdown_executor(&mut self, fw_id: &str, s: call::Shutdown) {
        let Some(&a) = self.agent_index.get(&s.agent_id.value) else {
            return;
        };
        let mut handles: Vec<u64> = self.agents[a]
            .tasks
            .iter()
            .copied()
            .filter(|h| {
                self.tasks
                    .get(h)
                    .is_some_and(|t| &*t.fw == fw_id && t.executor_id == s.executor_id.value)
            })
            .collect();
        handles.sort_unstable();
        let now = Instant::now();
        for h in handles {
            let grace = self.kill_grace(h, None);
            self.start_kill(h, grace, false, now);
        }
    }

    fn acknowledge(&mut self, fw_id: &str, ack: call::Acknowledge) {
        let uuid: [u8; 16] = ack.uuid.as_slice().try_into().expect("validated length");
        let task_id = &ack.task_id.value;
        let h = self
            .task_index
            .get(fw_id)
            .and_then(|m| m.get(task_id))
            .copied();
        let Some(h) = h else {
            if !self.acked.contains(&uuid) {
                self.violation(format!(
                    "ACKNOWLEDGE of uuid {} for task '{task_id}', which the master does not know (no such update was sent)",
                    uuid_string(&uuid)
                ));
            }
            return;
        };
        let t = self.tasks.get_mut(&h).expect("indexed");
        let agent_id = &self.agents[t.agent].id;
        if &ack.agent_id.value != agent_id {
            let msg = format!(
                "ACKNOWLEDGE for task '{task_id}' names agent '{}' but the task is on '{agent_id}'",
                ack.agent_id.value
            );
            self.violation(msg);
            return;
        }
        let head = t.pending.front().map(|u| u.uuid);
        if head == Some(uuid) {
            t.pending.pop_front();
            if t.pending.is_empty() {
                // Give the queue's memory back: most tasks sit with nothing pending.
                t.pending = VecDeque::new();
            }
            t.retry = self.cfg.status_retry;
            self.acked.insert(uuid);
            let now = Instant::now();
            if !t.pending.is_empty() {
                self.send_head(h, now);
            } else if t.terminal {
                self.remove_task(h);
            }
        } else if self.acked.contains(&uuid) {
            // A duplicate (the update was re-sent before the first ACK arrived): fine.
        } else if t.pending.iter().any(|u| u.uuid == uuid) {
            let msg = format!(
                "ACKNOWLEDGE of uuid {} for task '{task_id}', an update that was never sent (it is queued behind an unacknowledged one)",
                uuid_string(&uuid)
            );
            self.violation(msg);
        } else {
            let msg = format!(
                "ACKNOWLEDGE of unknown uuid {} for task '{task_id}' (master-generated updates carry no uuid and must not be acknowledged)",
                uuid_string(&uuid)
            );
            self.violation(msg);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reconciliation

    fn reconcile_known(&self, h: u64) -> v1::TaskStatus {
        let t = &self.tasks[&h];
        let agent = &self.agents[t.agent];
        let pa = self.fw_partition_aware(&t.fw);
        let state = t
            .pending
            .front()
            .and_then(|s| TaskState::try_from(s.state).ok())
            .unwrap_or(t.state);
        let mut st = self.master_status(
            &t.id,
            state,
            if t.reregistered {
                Reason::AgentReregistered
            } else {
                Reason::Reconciliation
            },
            "Reconciliation: Latest task state".into(),
            Some(agent.id.clone()),
        );
        st.executor_id = Some(v1::ExecutorId {
            value: t.executor_id.clone(),
        });
        st.healthy = t.healthy;
        st.container_status = Some(container_status(t));
        if let AgentStatus::Unreachable(since) = agent.status {
            if !is_terminal(state) {
                st.state = if pa {
                    TaskState::TaskUnreachable
                } else {
                    TaskState::TaskLost
                } as i32;
                st.message = Some("Reconciliation: Task is unreachable".into());
                st.unreachable_time = Some(time_info(since));
            }
        }
        st
    }

    fn reconcile_unknown(
        &self,
        fw_id: &str,
        task_id: &str,
        agent_id: Option<&str>,
    ) -> v1::TaskStatus {
        let pa = self.fw_partition_aware(fw_id);
        let pick = |aware: TaskState| if pa { aware } else { TaskState::TaskLost };
        let agent = agent_id
            .and_then(|a| self.agent_index.get(a))
            .map(|&i| &self.agents[i]);
        let (state, message, since) = match agent.map(|a| a.status) {
            Some(AgentStatus::Active) => (
                pick(TaskState::TaskGone),
                "Reconciliation: Task is unknown to the agent",
                None,
            ),
            Some(AgentStatus::Unreachable(t)) => (
                pick(TaskState::TaskUnreachable),
                "Reconciliation: Task is unreachable",
                Some(t),
            ),
            Some(AgentStatus::Gone) => (
                pick(TaskState::TaskGoneByOperator),
                "Reconciliation: Task is gone",
                None,
            ),
            None => (
                pick(TaskState::TaskUnknown),
                "Reconciliation: Task is unknown",
                None,
            ),
        };
        let mut st = self.master_status(
            task_id,
            state,
            Reason::Reconciliation,
            message.into(),
            agent_id.map(String::from),
        );
        st.unreachable_time = since.map(time_info);
        st
    }

    fn reconcile(&mut self, fw_id: &str, r: call::Reconcile) {
        let answers: Vec<v1::TaskStatus> = if r.tasks.is_empty() {
            let mut handles: Vec<u64> = self
                .task_index
                .get(fw_id)
                .map(|m| m.values().copied().collect())
                .unwrap_or_default();
            handles.sort_unstable();
            handles
                .into_iter()
                .map(|h| self.reconcile_known(h))
                .collect()
        } else {
            r.tasks
                .iter()
                .map(|rt| {
                    let known = self
                        .task_index
                        .get(fw_id)
                        .and_then(|m| m.get(&rt.task_id.value))
                        .copied();
                    match known {
                        Some(h) => self.reconcile_known(h),
                        None => self.reconcile_unknown(
                            fw_id,
                            &rt.task_id.value,
                            rt.agent_id.as_ref().map(|a| a.value.as_str()),
                        ),
                    }
                })
                .collect()
        };
        for st in answers {
            self.send_update(fw_id, st);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fault injection on tasks

    pub fn fail_task(&mut self, task_id: &str, message: &str) {
        self.end_task(task_id, TaskState::TaskFailed, Some(message.to_string()));
    }

    pub fn finish_task(&mut self, task_id: &str) {
        self.end_task(task_id, TaskState::TaskFinished, None);
    }

    fn end_task(&mut self, task_id: &str, state: TaskState, message: Option<String>) {
        let Some(h) = self.find_task(task_id) else {
            tracing::warn!(task_id, "no such task");
            return;
        };
        let now = Instant::now();
        let t = self.tasks.get_mut(&h).expect("indexed");
        if t.terminal {
            return;
        }
        t.epoch += 1;
        if let Some(p) = &t.proc {
            if self.live_pids.contains(&p.pid) {
                process::signal_group(p.pid, Signal::SIGKILL);
            }
        }
        if t.state == TaskState::TaskStaging {
            self.emit(h, TaskState::TaskStarting, now, |_| {});
        }
        self.emit(h, state, now, |s| s.message = message);
    }

    pub fn set_task_health(&mut self, task_id: &str, healthy: bool) {
        let Some(h) = self.find_task(task_id) else {
            tracing::warn!(task_id, "no such task");
            return;
        };
        if self.tasks[&h].state != TaskState::TaskRunning {
            tracing::warn!(task_id, "only a running task's health can change");
            return;
        }
        self.emit(h, TaskState::TaskRunning, Instant::now(), |s| {
            s.healthy = Some(healthy);
            s.reason = Some(Reason::TaskHealthCheckStatusUpdated as i32);
        });
    }

    // -----------------------------------------------------------------------------------------
    // Inspection

    /// The task's state as the master reports it (unreachable agents' tasks included).
    fn sim_task_state(&self, t: &Task) -> TaskState {
        match self.agents[t.agent].status {
            AgentStatus::Unreachable(_) if !t.terminal => {
                if self.fw_partition_aware(&t.fw) {
                    TaskState::TaskUnreachable
                } else {
                    TaskState::TaskLost
                }
            }
            _ => t.state,
        }
    }

    fn sim_task_of(&self, t: &Task) -> SimTask {
        let agent = &self.agents[t.agent];
        let state = self.sim_task_state(t);
        SimTask {
            task_id: t.id.clone(),
            name: t.spec.name.clone(),
            framework_id: t.fw.to_string(),
            agent_id: agent.id.clone(),
            hostname: agent.hostname.clone(),
            state,
            healthy: t.healthy,
            pid: t.proc.as_ref().map(|p| p.pid),
            host_ports: t.res.ports().values().collect(),
            cpus: t.res.cpus(),
            mem_mb: t.res.mem(),
            disk_mb: t.res.disk(),
            reserved_cpus: crate::resources::unmilli(t.res.reserved.cpus),
            reserved_mem_mb: crate::resources::unmilli(t.res.reserved.mem),
            unacknowledged: t.pending.len(),
        }
    }

    pub fn sim_tasks(&self) -> Vec<SimTask> {
        let mut hs: Vec<&u64> = self.tasks.keys().collect();
        hs.sort_unstable();
        hs.into_iter()
            .map(|h| self.sim_task_of(&self.tasks[h]))
            .collect()
    }

    pub fn sim_task(&self, task_id: &str) -> Option<SimTask> {
        self.find_task(task_id)
            .map(|h| self.sim_task_of(&self.tasks[&h]))
    }

    pub fn sim_agents(&self) -> Vec<SimAgent> {
        self.agents
            .iter()
            .map(|a| {
                let mut free = a.total.clone();
                free.sub(&a.used);
                let mut offered = a.total.clone();
                offered.sub(&a.used);
                offered.sub(&a.free);
                SimAgent {
                    id: a.id.clone(),
                    hostname: a.hostname.clone(),
                    state: match a.status {
                        AgentStatus::Active => AgentState::Active,
                        AgentStatus::Unreachable(_) => AgentState::Unreachable,
                        AgentStatus::Gone => AgentState::Gone,
                    },
                    free_cpus: free.cpus(),
                    free_mem_mb: free.mem(),
                    free_disk_mb: free.disk(),
                    offered_cpus: offered.cpus(),
                    offered_mem_mb: offered.mem(),
                    tasks: a.tasks.len(),
                }
            })
            .collect()
    }

    fn sim_framework_of(&self, f: &Framework) -> SimFramework {
        let mut suppressed_roles: Vec<String> = f.suppressed.iter().cloned().collect();
        suppressed_roles.sort();
        SimFramework {
            id: f.id.clone(),
            connected: f.conn.is_some(),
            stream_id: f.last_stream_id.clone(),
            info: f.info.clone(),
            suppressed: f.fully_suppressed(),
            suppressed_roles,
            outstanding_offers: f.offers.len(),
        }
    }

    pub fn sim_framework(&self) -> Option<SimFramework> {
        let id = self.last_framework.as_ref()?;
        self.frameworks.get(id).map(|f| self.sim_framework_of(f))
    }

    pub fn sim_frameworks(&self) -> Vec<SimFramework> {
        let mut v: Vec<SimFramework> = self
            .frameworks
            .values()
            .map(|f| self.sim_framework_of(f))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn task_doc<'a>(&'a self, t: &'a Task) -> crate::state_doc::TaskDoc<'a> {
        use crate::state_doc::*;
        let agent = &self.agents[t.agent];
        TaskDoc {
            id: &t.id,
            name: &t.spec.name,
            framework_id: &t.fw,
            executor_id: if t.spec.has_executor {
                &t.executor_id
            } else {
                ""
            },
            slave_id: &agent.id,
            state: self.sim_task_state(t).as_str_name(),
            resources: ResDoc::of(&t.res),
            statuses: t
                .history
                .iter()
                .map(|(s, ts)| StatusDoc {
                    state: s.as_str_name(),
                    timestamp: *ts,
                })
                .collect(),
            healthy: t.healthy,
            container: t.spec.container.as_deref(),
        }
    }

    /// A subset of Mesos's `/master/state` document, serialized (typed, so that it stays cheap
    /// with 100,000 tasks).
    pub fn state_json(&self) -> Vec<u8> {
        use crate::state_doc::*;
        let mut used_by: HashMap<&str, Pools> = HashMap::new();
        for t in self.tasks.values().filter(|t| !t.terminal) {
            used_by.entry(&*t.fw).or_default().add(&t.res);
        }
        let mut ids: Vec<&String> = self.frameworks.keys().collect();
        ids.sort();
        let frameworks = ids
            .into_iter()
            .map(|id| {
                let f = &self.frameworks[id];
                let mut handles: Vec<u64> = self
                    .task_index
                    .get(id)
                    .map(|m| m.values().copied().collect())
                    .unwrap_or_default();
                handles.sort_unstable();
                let (mut tasks, mut unreachable_tasks) = (Vec::new(), Vec::new());
                for h in handles {
                    let t = &self.tasks[&h];
                    if matches!(self.agents[t.agent].status, AgentStatus::Unreachable(_)) {
                        unreachable_tasks.push(self.task_doc(t));
                    } else {
                        tasks.push(self.task_doc(t));
                    }
                }
                let mut offers: Vec<OfferDoc> = f
                    .offers
                    .iter()
                    .filter_map(|oid| self.offers.get(oid).map(|o| (oid, o)))
                    .map(|(oid, o)| OfferDoc {
                        id: oid,
                        framework_id: &o.fw,
                        slave_id: &self.agents[o.agent].id,
                        resources: ResDoc::of(&o.res),
                        allocation_info: RoleDoc { role: &o.role },
                    })
                    .collect();
                offers.sort_by(|a, b| a.id.cmp(b.id));
                let mut suppressed_roles: Vec<&str> =
                    f.suppressed.iter().map(String::as_str).collect();
                suppressed_roles.sort_unstable();
                FrameworkDoc {
                    id: &f.id,
                    name: &f.info.name,
                    user: &f.info.user,
                    principal: f.info.principal.as_deref(),
                    roles: f.roles(),
                    active: f.conn.is_some(),
                    connected: f.conn.is_some(),
                    failover_timeout: f.info.failover_timeout.unwrap_or(0.0),
                    checkpoint: f.info.checkpoint.unwrap_or(false),
                    capabilities: f
                        .info
                        .capabilities
                        .iter()
                        .filter_map(|c| c.r#type.and_then(|t| Cap::try_from(t).ok()))
                        .map(|c| c.as_str_name())
                        .collect(),
                    suppressed_roles,
                    used_resources: ResDoc::of(
                        &used_by.get(f.id.as_str()).cloned().unwrap_or_default(),
                    ),
                    tasks,
                    unreachable_tasks,
                    offers,
                }
            })
            .collect();
        let mut hs: Vec<&u64> = self.tasks.keys().collect();
        hs.sort_unstable();
        let orphan_tasks = hs
            .into_iter()
            .map(|h| &self.tasks[h])
            .filter(|t| !self.frameworks.contains_key(&*t.fw))
            .map(|t| self.task_doc(t))
            .collect();
        let reserved_role = self.cfg.roles_reserved.as_ref().map(|r| r.0.as_str());
        let slaves = self
            .agents
            .iter()
            .filter(|a| a.status != AgentStatus::Gone)
            .map(|a| {
                let mut offered = a.total.clone();
                offered.sub(&a.used);
                offered.sub(&a.free);
                let mut unreserved = a.total.clone();
                unreserved.reserved = Res::default();
                let reserved = Pools {
                    unreserved: Res::default(),
                    reserved: a.total.reserved.clone(),
                };
                SlaveDoc {
                    id: &a.id,
                    hostname: &a.hostname,
                    port: 5051,
                    pid: "slave(1)@127.0.0.1:5051",
                    active: a.status == AgentStatus::Active,
                    resources: ResDoc::of(&a.total),
                    used_resources: ResDoc::of(&a.used),
                    offered_resources: ResDoc::of(&offered),
                    unreserved_resources: ResDoc::of(&unreserved),
                    reserved_resources: reserved_role
                        .map(|r| (r, ResDoc::of(&reserved)))
                        .into_iter()
                        .collect(),
                    attributes: AttributesDoc {
                        rack: a.attributes[0].text.as_ref().map(|t| t.value.as_str()),
                        index: a.attributes[1].scalar.as_ref().map(|s| s.value),
                    },
                    domain: &a.domain,
                }
            })
            .collect();
        let unreachable_slaves = self
            .agents
            .iter()
            .filter_map(|a| match a.status {
                AgentStatus::Unreachable(t) => Some(UnreachableDoc {
                    id: &a.id,
                    timestamp: time_info(t).nanoseconds,
                }),
                _ => None,
            })
            .collect();
        let info = self.master_info();
        let doc = StateDoc {
            version: "1.11.0",
            id: &self.master_id,
            pid: info.pid.clone().unwrap_or_default(),
            hostname: "127.0.0.1",
            leader: info.pid.clone().unwrap_or_default(),
            leader_info: &info,
            activated_slaves: self
                .agents
                .iter()
                .filter(|a| a.status == AgentStatus::Active)
                .count(),
            deactivated_slaves: 0,
            unreachable_slaves,
            frameworks,
            completed_frameworks: Vec::new(),
            orphan_tasks,
            slaves,
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}
