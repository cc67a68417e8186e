//! Scenario tests of the state machine with a simulated agent: no IO, time passed in by hand.

use crate::cluster::*;
use crate::id::{PathId, TaskId};
use crate::machine::*;
use crate::normalize::parse_app_patch;
use crate::persist::StoreOp;
use crate::time::Timestamp;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A scheduler plus a fake agent and a fake store, stepping effects synchronously.
pub(crate) struct Sim {
    pub(crate) core: Scheduler,
    pub(crate) now: Timestamp,
    pub(crate) store: BTreeMap<String, Vec<u8>>,
    /// Live tasks on the fake agent.
    pub(crate) running: BTreeMap<TaskId, TaskState>,
    pub(crate) launched: Vec<LaunchSpec>,
    pub(crate) killed: Vec<TaskId>,
    /// Auto-report RUNNING for launches and KILLED for kills.
    pub(crate) auto: bool,
    pub(crate) events: Vec<crate::events::Event>,
    pub(crate) offer_seq: u32,
    /// Tasks the shell is asked to probe.
    pub(crate) watched: BTreeMap<crate::id::InstanceId, std::sync::Arc<crate::health::ProbeSpec>>,
}

impl Sim {
    pub(crate) fn new() -> Self {
        Sim {
            core: Scheduler::new(Config::default(), 42),
            now: Timestamp::from_millis(1_700_000_000_000),
            store: BTreeMap::new(),
            running: BTreeMap::new(),
            launched: Vec::new(),
            killed: Vec::new(),
            auto: true,
            events: Vec::new(),
            offer_seq: 0,
            watched: BTreeMap::new(),
        }
    }

    pub(crate) fn id(s: &str) -> PathId {
        PathId::parse_app_id(s, &PathId::root()).unwrap()
    }

    pub(crate) fn cmd(&mut self, c: Command) -> Result<Outcome, CommandError> {
        let r = self.core.command(self.now, c);
        self.drain();
        r
    }

    pub(crate) fn create(&mut self, v: Value) -> Outcome {
        let p = parse_app_patch(v).unwrap();
        let id = Self::id(p.id.as_deref().unwrap());
        self.cmd(Command::CreateApp {
            force: false,
            id,
            patch: Box::new(p),
        })
        .unwrap()
    }

    pub(crate) fn update(&mut self, id: &str, v: Value) -> Outcome {
        let p = parse_app_patch(v).unwrap();
        self.cmd(Command::UpdateApps {
            force: false,
            updates: vec![(Self::id(id), p)],
            partial: true,
            create: false,
        })
        .unwrap()
    }

    pub(crate) fn offer(&self) -> Offer {
        Offer {
            id: OfferId(format!("o{}", self.offer_seq)),
            agent_id: AgentId("agent-1".into()),
            hostname: "host-1".into(),
            cpus: 100.0,
            mem_mb: 100_000.0,
            disk_mb: 100_000.0,
            gpus: 0.0,
            ports: vec![PortRange {
                begin: 31000,
                end: 32000,
            }],
            attributes: BTreeMap::new(),
            region: None,
            zone: None,
            reserved: None,
            allocation_role: None,
        }
    }

    pub(crate) fn status(&mut self, task: &TaskId, state: TaskState) {
        if state.is_terminal() {
            self.running.remove(task);
        } else {
            self.running.insert(task.clone(), state);
        }
        let s = TaskStatus {
            task_id: task.clone(),
            state,
            message: Some(format!("{state:?}")),
            agent_id: None,
            healthy: None,
        };
        self.core.handle_status(self.now, s);
        self.drain();
    }

    /// Executes queued effects like a shell would, in order.
    pub(crate) fn drain(&mut self) {
        let mut follow_up = Vec::new();
        while let Some(e) = self.core.poll_effect() {
            match e {
                Effect::Persist(ops) => {
                    for op in ops {
                        match op {
                            StoreOp::Put { key, value } => {
                                self.store.insert(key, value);
                            }
                            StoreOp::Delete { key } => {
                                self.store.remove(&key);
                            }
                        }
                    }
                }
                Effect::Launch { tasks, .. } => {
                    for t in tasks {
                        // Persist-before-launch: the instance record must already be stored.
                        let key = format!("instance/{}", t.instance_id);
                        let stored: Value = serde_json::from_slice(&self.store[&key]).unwrap();
                        assert_eq!(
                            stored["task"]["task_id"],
                            json!(t.task_id.as_str()),
                            "instance persisted before launch"
                        );
                        self.running.insert(t.task_id.clone(), TaskState::Staging);
                        if self.auto {
                            follow_up.push((t.task_id.clone(), TaskState::Running));
                        }
                        self.launched.push(t);
                    }
                }
                Effect::Kill(k) => {
                    self.killed.push(k.task_id.clone());
                    if self.auto && self.running.contains_key(&k.task_id) {
                        follow_up.push((k.task_id, TaskState::Killed));
                    }
                }
                Effect::Event(ev) => self.events.push(ev),
                Effect::Watch(crate::health::Watch::Start(spec)) => {
                    self.watched.insert(spec.instance_id.clone(), spec);
                }
                Effect::Watch(crate::health::Watch::Stop {
                    instance_id,
                    task_id,
                }) => {
                    if self
                        .watched
                        .get(&instance_id)
                        .is_some_and(|s| s.task_id == task_id)
                    {
                        self.watched.remove(&instance_id);
                    }
                }
                Effect::Decline { .. } | Effect::Reconcile(_) => {}
            }
        }
        for (t, s) in follow_up {
            self.status(&t, s);
        }
    }

    /// Offers until nothing more launches.
    pub(crate) fn settle(&mut self) {
        for _ in 0..100 {
            if !self.core.wants_offers(self.now) {
                return;
            }
            self.offer_seq += 1;
            let o = self.offer();
            self.core.handle_offer(self.now, o);
            self.drain();
        }
        panic!("did not settle");
    }

    pub(crate) fn count(&self, app: &str) -> (usize, usize) {
        let snap = self.core.snapshot();
        let id = Self::id(app);
        let insts: Vec<_> = snap.instances_of(&id).collect();
        (insts.len(), insts.iter().filter(|i| i.is_running()).count())
    }
}

#[test]
fn create_launches_and_completes_deployment() {
    let mut sim = Sim::new();
    let out = sim.create(json!({"id": "/web", "cmd": "serve", "instances": 2, "cpus": 0.1, "mem": 16, "env": {"A": "1"}, "labels": {"team": "x"}}));
    let Outcome::Deployment { created: true, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(sim.core.snapshot().deployments.len(), 1);
    assert!(sim.core.wants_offers(sim.now));
    sim.settle();
    assert_eq!(sim.count("/web"), (2, 2));
    assert!(
        sim.core.snapshot().deployments.is_empty(),
        "deployment finishes when all run"
    );
    let spec = &sim.launched[0];
    assert_eq!(spec.env["A"], "1");
    assert_eq!(spec.env["MARATHON_APP_ID"], "/web");
    assert_eq!(spec.env["MARATHON_APP_LABEL_TEAM"], "x");
    assert_eq!(spec.env["PORT0"], spec.host_ports[0].to_string());
    assert_eq!(
        spec.env["PORT_10000"],
        spec.host_ports[0].to_string(),
        "service port 10000 assigned"
    );
    assert_eq!(spec.env["MARATHON_APP_RESOURCE_MEM"], "16.0");
    assert!(
        spec.task_id.as_str().starts_with("web.instance-")
            && spec.task_id.as_str().ends_with("._app.1")
    );
    assert_ne!(sim.launched[0].host_ports, sim.launched[1].host_ports);
    // The app, its version and both instances are stored.
    assert!(sim.store.contains_key("app//web"));
    assert_eq!(
        sim.store
            .keys()
            .filter(|k| k.starts_with("instance/"))
            .count(),
        2
    );
}

#[test]
fn service_ports_are_unique_across_apps() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/a", "cmd": "x", "portDefinitions": [{"port": 0}, {"port": 0}]}));
    sim.create(json!({"id": "/b", "cmd": "x"}));
    let snap = sim.core.snapshot();
    assert_eq!(
        snap.apps[&Sim::id("/a")].service_ports(),
        vec![10000, 10001]
    );
    assert_eq!(snap.apps[&Sim::id("/b")].service_ports(), vec![10002]);
    sim.settle();
    // A full PUT asking for 0 again keeps the assigned port.
    let p = parse_app_patch(json!({"cmd": "y"})).unwrap();
    sim.cmd(Command::UpdateApps {
        force: false,
        updates: vec![(Sim::id("/b"), p)],
        partial: false,
        create: false,
    })
    .unwrap();
    assert_eq!(
        sim.core.snapshot().apps[&Sim::id("/b")].service_ports(),
        vec![10002]
    );
}

#[test]
fn scale_up_and_down_kills_youngest_first() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/s", "cmd": "x", "instances": 1, "cpus": 0.1, "mem": 1}));
    sim.settle();
    let first = sim.launched[0].task_id.clone();
    sim.now = sim.now.plus(Duration::from_secs(10));
    sim.update("/s", json!({"instances": 3}));
    sim.settle();
    assert_eq!(sim.count("/s"), (3, 3));
    sim.now = sim.now.plus(Duration::from_secs(10));
    sim.update("/s", json!({"instances": 1}));
    assert_eq!(sim.count("/s"), (1, 1));
    assert!(
        !sim.killed.contains(&first),
        "the oldest survives YOUNGEST_FIRST"
    );
    sim.update("/s", json!({"instances": 0}));
    assert_eq!(sim.count("/s"), (0, 0));
    assert!(sim.core.snapshot().deployments.is_empty());
}

#[test]
fn failing_task_backs_off_and_relaunches_same_instance() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/f", "cmd": "false", "cpus": 0.1, "mem": 1, "backoffSeconds": 2, "backoffFactor": 2.0}));
    sim.settle();
    let t1 = sim.launched[0].task_id.clone();
    sim.status(&t1, TaskState::Failed);
    assert!(!sim.core.wants_offers(sim.now), "backed off");
    let deadline = sim.core.next_deadline(sim.now).unwrap();
    assert_eq!(deadline, sim.now.plus(Duration::from_secs(2)));
    assert_eq!(
        sim.core.snapshot().task_failures[&Sim::id("/f")].task_id,
        t1
    );
    sim.now = deadline;
    sim.settle();
    let t2 = sim.launched[1].task_id.clone();
    assert_eq!(t2.instance_id(), t1.instance_id(), "stable instance id");
    assert_eq!(t2.incarnation(), 2);
    sim.status(&t2, TaskState::Finished);
    assert_eq!(
        sim.core.next_deadline(sim.now),
        Some(sim.now.plus(Duration::from_secs(4))),
        "delay grows by the factor"
    );
    // A kill (e.g. by the user) does not add backoff.
    sim.now = sim.now.plus(Duration::from_secs(4));
    sim.settle();
    let t3 = sim.launched[2].task_id.clone();
    sim.status(&t3, TaskState::Killed);
    // Still within the previous delay window? No: the deadline passed, so it may launch at once.
    assert!(sim.core.wants_offers(sim.now));
}

#[test]
fn kill_without_scale_relaunches_with_scale_shrinks() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/k", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 1}));
    sim.settle();
    let t = sim.launched[0].task_id.clone();
    let out = sim
        .cmd(Command::KillTasks {
            force: false,
            tasks: vec![t.clone()],
            scale: false,
            wipe: false,
        })
        .unwrap();
    assert!(matches!(out, Outcome::Killed(ref v) if v.len() == 1));
    sim.settle();
    assert_eq!(sim.count("/k"), (2, 2));
    assert_eq!(
        sim.launched.last().unwrap().task_id.instance_id(),
        t.instance_id(),
        "same instance, next incarnation"
    );
    let t = sim.launched.last().unwrap().task_id.clone();
    sim.cmd(Command::KillTasks {
        force: false,
        tasks: vec![t],
        scale: true,
        wipe: false,
    })
    .unwrap();
    assert_eq!(sim.core.snapshot().apps[&Sim::id("/k")].instances, 1);
    assert_eq!(sim.count("/k"), (1, 1));
    let err = sim
        .cmd(Command::KillTasks {
            force: false,
            tasks: vec![TaskId::from_raw("nope")],
            scale: false,
            wipe: false,
        })
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::NotFound("Task 'nope' does not exist".into())
    );
}

#[test]
fn rolling_upgrade_respects_capacity_bounds() {
    let mut sim = Sim::new();
    sim.auto = false;
    sim.create(
        json!({"id": "/r", "cmd": "v1", "instances": 6, "cpus": 0.1, "mem": 1,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2}}),
    );
    sim.bring_up();
    assert_eq!(sim.count("/r"), (6, 6));
    sim.update("/r", json!({"cmd": "v2"}));
    // Step the world: start one staged task or finish one kill at a time, checking bounds.
    for _ in 0..200 {
        let alive = sim.running.len();
        let healthy = sim
            .running
            .values()
            .filter(|s| **s == TaskState::Running)
            .count();
        assert!(alive <= 7, "never more than 7 tasks alive, saw {alive}");
        assert!(healthy >= 3, "never fewer than 3 healthy, saw {healthy}");
        sim.settle();
        let pending_kill = sim
            .killed
            .iter()
            .find(|t| sim.running.contains_key(*t))
            .cloned();
        if let Some(t) = pending_kill {
            sim.status(&t, TaskState::Killed);
            continue;
        }
        let staged = sim
            .running
            .iter()
            .find(|(_, s)| **s == TaskState::Staging)
            .map(|(t, _)| t.clone());
        match staged {
            Some(t) => sim.status(&t, TaskState::Running),
            None => break,
        }
    }
    let snap = sim.core.snapshot();
    let app = &snap.apps[&Sim::id("/r")];
    let insts: Vec<_> = snap.instances_of(&app.id).collect();
    assert_eq!(insts.len(), 6);
    assert!(insts
        .iter()
        .all(|i| i.is_running() && i.config_version == app.version_info.last_config_change_at));
    assert!(snap.deployments.is_empty());
}

#[test]
fn restart_replaces_every_instance() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/x", "cmd": "a", "instances": 2, "cpus": 0.1, "mem": 1}));
    sim.settle();
    let before: Vec<_> = sim.core.snapshot().instances.keys().cloned().collect();
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.cmd(Command::RestartApp {
        id: Sim::id("/x"),
        force: false,
    })
    .unwrap();
    sim.settle();
    let after: Vec<_> = sim.core.snapshot().instances.keys().cloned().collect();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|i| !before.contains(i)));
}

#[test]
fn delete_kills_everything_and_forgets_the_app() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/g/d", "cmd": "a", "instances": 2, "cpus": 0.1, "mem": 1}));
    sim.settle();
    assert!(sim.store.contains_key("group//g"), "implicit group stored");
    sim.cmd(Command::DeleteApp {
        force: false,
        id: Sim::id("/g/d"),
    })
    .unwrap();
    assert!(sim.core.snapshot().instances.is_empty());
    assert!(sim.core.snapshot().deployments.is_empty());
    assert!(!sim
        .store
        .keys()
        .any(|k| k.starts_with("instance/") || k.starts_with("app/")));
    let err = sim
        .cmd(Command::DeleteApp {
            force: false,
            id: Sim::id("/g/d"),
        })
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::NotFound("App '/g/d' does not exist".into())
    );
}

#[test]
fn app_and_group_namespace_is_shared() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/a/b", "cmd": "x", "instances": 0}));
    let p = parse_app_patch(json!({"id": "/a", "cmd": "x"})).unwrap();
    let err = sim
        .cmd(Command::CreateApp {
            force: false,
            id: Sim::id("/a"),
            patch: Box::new(p),
        })
        .unwrap_err();
    assert!(matches!(err, CommandError::Invalid(_)));
    let p = parse_app_patch(json!({"id": "/a/b/c", "cmd": "x"})).unwrap();
    assert!(sim
        .cmd(Command::CreateApp {
            force: false,
            id: Sim::id("/a/b/c"),
            patch: Box::new(p)
        })
        .is_err());
    let p = parse_app_patch(json!({"id": "/a/b", "cmd": "x"})).unwrap();
    let err = sim
        .cmd(Command::CreateApp {
            force: false,
            id: Sim::id("/a/b"),
            patch: Box::new(p),
        })
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::AlreadyExists("An app with id [/a/b] already exists.".into())
    );
}

#[test]
fn failed_write_rolls_the_command_back() {
    let mut sim = Sim::new();
    let p = parse_app_patch(json!({"id": "/w", "cmd": "x"})).unwrap();
    sim.core
        .command(
            sim.now,
            Command::CreateApp {
                force: false,
                id: Sim::id("/w"),
                patch: Box::new(p),
            },
        )
        .unwrap();
    sim.core.rollback();
    assert!(sim.core.poll_effect().is_none());
    assert!(sim.core.snapshot().apps.is_empty());
    assert!(!sim.core.wants_offers(sim.now));
}

#[test]
fn restore_rebuilds_state_and_reconciles() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/p", "cmd": "x", "instances": 2, "cpus": 0.1, "mem": 1}));
    sim.settle();
    let mut fresh = Scheduler::new(Config::default(), 7);
    fresh
        .restore(sim.store.clone().into_iter().collect())
        .unwrap();
    let snap = fresh.snapshot();
    assert_eq!(snap.apps.len(), 1);
    assert_eq!(snap.instances.len(), 2);
    let Some(Effect::Reconcile(tasks)) = fresh.poll_effect() else {
        panic!()
    };
    assert_eq!(tasks.len(), 2);
    assert_eq!(fresh.poll_effect(), Some(Effect::Reconcile(vec![])));
    // Nothing to launch: both instances have live tasks.
    fresh.converge_all(sim.now);
    assert!(!fresh.wants_offers(sim.now));
    // The agent says one task is gone: it is relaunched as the same instance.
    let gone = sim.launched[0].task_id.clone();
    fresh.handle_status(
        sim.now,
        TaskStatus {
            task_id: gone,
            state: TaskState::Gone,
            message: None,
            agent_id: None,
            healthy: None,
        },
    );
    assert!(fresh.wants_offers(sim.now.plus(Duration::from_secs(5))));
}

#[test]
fn unknown_running_task_is_killed() {
    let mut sim = Sim::new();
    let t = TaskId::from_raw("ghost.instance-5a5b2c3d-1111-11e9-9e2b-0242ac110002._app.1");
    sim.core.handle_status(
        sim.now,
        TaskStatus {
            task_id: t.clone(),
            state: TaskState::Running,
            message: None,
            agent_id: None,
            healthy: None,
        },
    );
    assert!(matches!(sim.core.poll_effect(), Some(Effect::Kill(k)) if k.task_id == t));
}

#[test]
fn insufficient_resources_decline_with_reason() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/big", "cmd": "x", "cpus": 1000}));
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    let mut declined = false;
    while let Some(e) = sim.core.poll_effect() {
        declined |= matches!(e, Effect::Decline { .. });
    }
    assert!(declined);
    let stats = sim.core.snapshot().offer_stats[&Sim::id("/big")].clone();
    assert_eq!(stats.unused, 1);
    assert_eq!(
        stats.rejected.keys().copied().collect::<Vec<_>>(),
        vec![crate::placement::RejectReason::InsufficientCpus]
    );
}

#[test]
fn new_work_is_counted_but_a_decline_is_not() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/w", "cmd": "x", "cpus": 0.1, "mem": 1, "instances": 2}));
    let queued = sim.core.queued_total();
    assert_eq!(queued, 2);
    sim.settle();
    // Declining an offer (nothing to launch) is not new work: no reason to revive.
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    sim.drain();
    assert_eq!(sim.core.queued_total(), queued);
    // A failed task puts its instance back in the queue: new work, even if offers were wanted.
    let task = sim.launched[0].task_id.clone();
    sim.status(&task, TaskState::Failed);
    assert_eq!(sim.core.queued_total(), queued + 1);
}

#[test]
fn constraints_spread_instances_and_name_the_reason() {
    let mut sim = Sim::new();
    sim.create(
        json!({"id": "/spread", "cmd": "x", "cpus": 0.1, "mem": 1, "instances": 3,
        "constraints": [["hostname", "UNIQUE"], ["rack", "LIKE", "r[12]"]]}),
    );
    let offer_on = |sim: &mut Sim, host: &str, rack: &str| {
        sim.offer_seq += 1;
        let mut o = sim.offer();
        o.hostname = host.into();
        o.agent_id = AgentId(format!("agent-{host}"));
        o.attributes.insert(
            "rack".into(),
            crate::cluster::AttributeValue::Text(rack.into()),
        );
        sim.core.handle_offer(sim.now, o);
        sim.drain();
    };
    // One offer with room for all three places only one: UNIQUE counts this offer's own launches.
    offer_on(&mut sim, "h1", "r1");
    assert_eq!(sim.count("/spread"), (3, 1));
    offer_on(&mut sim, "h1", "r1");
    offer_on(&mut sim, "h3", "r3");
    assert_eq!(
        sim.count("/spread"),
        (3, 1),
        "same host, and a rack LIKE refuses"
    );
    let stats = sim.core.snapshot().offer_stats[&Sim::id("/spread")].clone();
    assert_eq!(
        stats.rejected.keys().copied().collect::<Vec<_>>(),
        vec![crate::placement::RejectReason::UnfulfilledConstraint]
    );
    offer_on(&mut sim, "h2", "r2");
    assert_eq!(sim.count("/spread"), (3, 2));
    let hosts: BTreeSet<String> = sim
        .core
        .snapshot()
        .instances_of(&Sim::id("/spread"))
        .filter_map(|i| i.agent.as_ref().map(|a| a.host.clone()))
        .collect();
    assert_eq!(hosts, BTreeSet::from(["h1".to_string(), "h2".to_string()]));
    // A killed instance frees its host for the replacement.
    let on_h1 = sim
        .core
        .snapshot()
        .instances_of(&Sim::id("/spread"))
        .find(|i| i.agent.as_ref().is_some_and(|a| a.host == "h1"))
        .and_then(|i| i.task.as_ref().map(|t| t.task_id.clone()))
        .unwrap();
    sim.status(&on_h1, TaskState::Failed);
    sim.now = sim.now.plus(std::time::Duration::from_secs(3600));
    offer_on(&mut sim, "h1", "r1");
    assert_eq!(
        sim.count("/spread"),
        (3, 2),
        "h1 runs one again, h2 the other"
    );
}

// ---------------------------------------------------------------------------------------------
// Deployment engine

/// A tiny deterministic generator for randomised scenarios (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl Sim {
    /// Reports RUNNING for every staged task, offering until nothing more launches.
    fn bring_up(&mut self) {
        loop {
            self.settle();
            let staging: Vec<TaskId> = self
                .running
                .iter()
                .filter(|(_, s)| **s == TaskState::Staging)
                .map(|(t, _)| t.clone())
                .collect();
            if staging.is_empty() {
                return;
            }
            for t in staging {
                self.status(&t, TaskState::Running);
            }
        }
    }

    fn group(&mut self, id: &str, v: Value, force: bool) -> Result<Outcome, CommandError> {
        let patch = crate::group_patch::parse_group_patch(v).unwrap();
        self.cmd(Command::UpdateGroup {
            id: PathId::resolve(id, &PathId::root()).unwrap(),
            patch: Box::new(patch),
            force,
            dry_run: false,
        })
    }

    fn app_of(task: &TaskId) -> String {
        task.instance_id().unwrap().safe_app_id().to_string()
    }
}

#[test]
fn randomised_rolling_restarts_keep_the_floor_and_the_ceiling() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let capacities = [0.0, 0.25, 0.5, 0.7, 1.0];
    let overs = [0.0, 0.2, 0.5, 1.0];
    for case in 0..150 {
        let n = 1 + rng.below(7);
        let min = capacities[rng.below(capacities.len())];
        let over = overs[rng.below(overs.len())];
        let min_healthy = (n as f64 * min).ceil() as usize;
        let mut cap = (n as f64 * (1.0 + over)).floor() as usize;
        if min_healthy == cap {
            cap += 1;
        }
        let mut sim = Sim::new();
        sim.auto = false;
        sim.create(
            json!({"id": "/r", "cmd": "v1", "instances": n, "cpus": 0.01, "mem": 1,
            "upgradeStrategy": {"minimumHealthCapacity": min, "maximumOverCapacity": over}}),
        );
        sim.bring_up();
        let old: Vec<TaskId> = sim.running.keys().cloned().collect();
        assert_eq!(old.len(), n);
        sim.update("/r", json!({"cmd": "v2"}));
        let ctx = format!("case {case}: n={n} min={min} over={over}");
        for _ in 0..500 {
            let alive = sim.running.len();
            let healthy = sim
                .running
                .iter()
                .filter(|(t, s)| **s == TaskState::Running && !sim.killed.contains(t))
                .count();
            assert!(alive <= cap, "{ctx}: {alive} alive > {cap}");
            assert!(
                healthy >= min_healthy,
                "{ctx}: {healthy} healthy < {min_healthy}"
            );
            sim.offer_seq += 1;
            let o = sim.offer();
            sim.core.handle_offer(sim.now, o);
            sim.drain();
            // Any one pending event happens next, in random order.
            let mut events: Vec<(TaskId, TaskState)> = sim
                .killed
                .iter()
                .filter(|t| sim.running.contains_key(*t))
                .map(|t| (t.clone(), TaskState::Killed))
                .collect();
            events.extend(
                sim.running
                    .iter()
                    .filter(|(_, s)| **s == TaskState::Staging)
                    .map(|(t, _)| (t.clone(), TaskState::Running)),
            );
            if events.is_empty() {
                break;
            }
            let (t, s) = events.swap_remove(rng.below(events.len()));
            sim.status(&t, s);
        }
        let snap = sim.core.snapshot();
        assert!(snap.deployments.is_empty(), "{ctx}: deployment finished");
        assert_eq!(sim.running.len(), n, "{ctx}: ends with N");
        assert!(
            sim.running.keys().all(|t| !old.contains(t)),
            "{ctx}: all replaced"
        );
    }
}

#[test]
fn the_documented_restart_examples() {
    // (N, minimumHealthCapacity, maximumOverCapacity) → tasks killed and started at once.
    for (min, over, kills, starts) in [(1.0, 1.0, 0, 3), (0.0, 0.0, 3, 3), (0.5, 0.0, 1, 1)] {
        let mut sim = Sim::new();
        sim.auto = false;
        sim.create(
            json!({"id": "/e", "cmd": "v1", "instances": 3, "cpus": 0.01, "mem": 1,
            "upgradeStrategy": {"minimumHealthCapacity": min, "maximumOverCapacity": over}}),
        );
        sim.bring_up();
        let launched = sim.launched.len();
        sim.update("/e", json!({"cmd": "v2"}));
        sim.settle();
        assert_eq!(sim.killed.len(), kills, "min={min} over={over}: kills");
        // Kills must complete before their capacity is reused.
        for t in sim.killed.clone() {
            sim.status(&t, TaskState::Killed);
        }
        sim.settle();
        let started = sim.launched.len() - launched;
        assert_eq!(
            started,
            starts.max(kills.min(3)),
            "min={min} over={over}: starts"
        );
    }
}

fn three_tier() -> Value {
    json!({"id": "/shop", "apps": [
        {"id": "web", "cmd": "w", "cpus": 0.01, "mem": 1, "dependencies": ["api"]},
        {"id": "api", "cmd": "a", "cpus": 0.01, "mem": 1, "dependencies": ["/shop/db"]},
        {"id": "db", "cmd": "d", "cpus": 0.01, "mem": 1}
    ]})
}

#[test]
fn groups_start_in_dependency_order_and_stop_in_reverse() {
    let mut sim = Sim::new();
    sim.auto = false;
    let out = sim.group("/", three_tier(), false).unwrap();
    assert!(matches!(out, Outcome::Deployment { created: true, .. }));
    let dep = sim
        .core
        .snapshot()
        .deployments
        .values()
        .next()
        .unwrap()
        .clone();
    let names: Vec<Vec<String>> = dep
        .steps
        .iter()
        .map(|s| {
            s.iter()
                .map(|a| format!("{} {}", a.action.name(), a.app))
                .collect()
        })
        .collect();
    assert_eq!(
        names,
        vec![
            vec![
                "StartApplication /shop/api",
                "StartApplication /shop/db",
                "StartApplication /shop/web"
            ],
            vec!["ScaleApplication /shop/db"],
            vec!["ScaleApplication /shop/api"],
            vec!["ScaleApplication /shop/web"],
        ]
    );
    // Only db may launch until it runs; then api; then web.
    let mut order = Vec::new();
    for _ in 0..3 {
        sim.settle();
        let staged: Vec<TaskId> = sim.running.keys().cloned().collect();
        assert_eq!(staged.len(), order.len() + 1, "one tier at a time");
        let new = staged
            .into_iter()
            .find(|t| !order.contains(&Sim::app_of(t)))
            .unwrap();
        order.push(Sim::app_of(&new));
        sim.status(&new, TaskState::Running);
    }
    assert_eq!(order, ["shop_db", "shop_api", "shop_web"]);
    assert!(sim.core.snapshot().deployments.is_empty());

    sim.cmd(Command::DeleteGroup {
        id: Sim::id("/shop"),
        force: false,
    })
    .unwrap();
    let mut stopped = Vec::new();
    for _ in 0..3 {
        let pending: Vec<TaskId> = sim
            .killed
            .iter()
            .filter(|t| sim.running.contains_key(*t))
            .cloned()
            .collect();
        assert_eq!(pending.len(), 1, "one tier at a time");
        stopped.push(Sim::app_of(&pending[0]));
        sim.status(&pending[0], TaskState::Killed);
    }
    assert_eq!(stopped, ["shop_web", "shop_api", "shop_db"]);
    let snap = sim.core.snapshot();
    assert!(snap.deployments.is_empty() && snap.apps.is_empty());
    assert!(snap.group(&Sim::id("/shop")).is_none());
}

#[test]
fn cyclic_dependencies_are_rejected_with_nothing_applied() {
    let mut sim = Sim::new();
    let err = sim
        .group(
            "/",
            json!({"id": "/c", "apps": [
                {"id": "a", "cmd": "x", "dependencies": ["b"]},
                {"id": "b", "cmd": "x", "dependencies": ["a"]}]}),
            false,
        )
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::Invalid(vec![crate::violation::Violation::new(
            "/",
            "Dependency graph has cyclic dependencies."
        )])
    );
    assert!(sim.core.snapshot().apps.is_empty());
    assert!(sim.store.is_empty());
}

#[test]
fn locked_apps_conflict_unless_forced_and_limits_apply() {
    let mut sim = Sim::new();
    sim.auto = false;
    let Outcome::Deployment { id: first, .. } =
        sim.create(json!({"id": "/l", "cmd": "x", "cpus": 0.01, "mem": 1}))
    else {
        panic!()
    };
    let p = parse_app_patch(json!({"cmd": "y"})).unwrap();
    let update = |force| Command::UpdateApps {
        updates: vec![(Sim::id("/l"), p.clone())],
        partial: true,
        create: false,
        force,
    };
    assert_eq!(
        sim.cmd(update(false)).unwrap_err(),
        CommandError::Locked(vec![first.clone()])
    );
    assert_eq!(
        sim.core.snapshot().apps[&Sim::id("/l")].cmd.as_deref(),
        Some("x")
    );
    let Outcome::Deployment { id: second, .. } = sim.cmd(update(true)).unwrap() else {
        panic!()
    };
    let snap = sim.core.snapshot();
    assert!(
        !snap.deployments.contains_key(&first),
        "forced: old one cancelled"
    );
    assert!(snap.deployments.contains_key(&second));
    assert!(!sim.store.contains_key(&format!("deployment/{first}")));

    // --max_running_deployments
    let mut sim = Sim::new();
    sim.core.config.max_running_deployments = 1;
    sim.auto = false;
    sim.create(json!({"id": "/m1", "cmd": "x"}));
    let p = parse_app_patch(json!({"id": "/m2", "cmd": "x"})).unwrap();
    let err = sim
        .cmd(Command::CreateApp {
            id: Sim::id("/m2"),
            patch: Box::new(p),
            force: false,
        })
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Forbidden(ref m) if m.starts_with("Max number (1) of running deployments"))
    );
}

#[test]
fn max_apps_refuses_only_changes_that_add_apps_beyond_it() {
    let mut sim = Sim::new();
    sim.core.config.max_apps = Some(1);
    sim.create(json!({"id": "/one", "cmd": "x", "cpus": 0.01, "mem": 1}));
    sim.bring_up();
    let create = |id: &str| Command::CreateApp {
        id: Sim::id(id),
        patch: Box::new(parse_app_patch(json!({"id": id, "cmd": "x"})).unwrap()),
        force: false,
    };
    let err = sim.cmd(create("/two")).unwrap_err();
    let CommandError::Invalid(v) = err else {
        panic!("{err:?}")
    };
    assert_eq!(v[0].path, "/");
    assert_eq!(
        v[0].message,
        "This Marathon instance may only handle up to 1 Apps!"
    );
    assert!(!sim.core.snapshot().apps.contains_key(&Sim::id("/two")));
    // Changing the app that exists is still allowed at the limit.
    sim.update("/one", json!({"cmd": "y"}));
    assert_eq!(
        sim.core.snapshot().apps[&Sim::id("/one")].cmd.as_deref(),
        Some("y")
    );
}

#[test]
fn revert_restores_the_original_and_keeps_its_instances() {
    let mut sim = Sim::new();
    sim.auto = false;
    sim.create(
        json!({"id": "/v", "cmd": "v1", "instances": 3, "cpus": 0.01, "mem": 1,
        "upgradeStrategy": {"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.0}}),
    );
    sim.bring_up();
    let v1 = sim.core.snapshot().apps[&Sim::id("/v")].clone();
    let Outcome::Deployment { id: dep, .. } = sim.update("/v", json!({"cmd": "v2"})) else {
        panic!()
    };
    // One extra v2 instance starts (the one-extra rule) and runs; one v1 goes.
    sim.bring_up();
    assert_eq!(sim.launched.len(), 4);
    let out = sim
        .cmd(Command::CancelDeployment {
            id: dep.clone(),
            force: false,
        })
        .unwrap();
    let Outcome::Deployment { id: revert, .. } = out else {
        panic!()
    };
    let snap = sim.core.snapshot();
    let app = &snap.apps[&Sim::id("/v")];
    assert_eq!(app.cmd.as_deref(), Some("v1"));
    assert_eq!(
        app.version_info.last_config_change_at, v1.version_info.last_config_change_at,
        "the original configuration comes back"
    );
    assert!(snap.deployments.contains_key(&revert) && !snap.deployments.contains_key(&dep));
    for t in sim.killed.clone() {
        if sim.running.contains_key(&t) {
            sim.status(&t, TaskState::Killed);
        }
    }
    sim.bring_up();
    for t in sim.killed.clone() {
        if sim.running.contains_key(&t) {
            sim.status(&t, TaskState::Killed);
        }
    }
    sim.bring_up();
    let snap = sim.core.snapshot();
    assert!(snap.deployments.is_empty());
    let insts: Vec<_> = snap.instances_of(&Sim::id("/v")).collect();
    assert_eq!(insts.len(), 3);
    // Only the v1 instance the upgrade replaced was relaunched: 4 launches + 1.
    assert_eq!(sim.launched.len(), 5);
    assert!(sim.launched.last().unwrap().env["MARATHON_APP_VERSION"] != v1.version.to_string());

    // force=true just stops a deployment.
    let Outcome::Deployment { id: dep, .. } = sim.update("/v", json!({"cmd": "v3"})) else {
        panic!()
    };
    assert_eq!(
        sim.cmd(Command::CancelDeployment {
            id: dep.clone(),
            force: true
        })
        .unwrap(),
        Outcome::Done
    );
    assert!(sim.core.snapshot().deployments.is_empty());
    assert_eq!(
        sim.cmd(Command::CancelDeployment {
            id: dep.clone(),
            force: true
        })
        .unwrap_err(),
        CommandError::NotFound(format!("DeploymentPlan {dep} does not exist"))
    );
}

#[test]
fn dry_run_scale_by_and_group_rollback() {
    let mut sim = Sim::new();
    sim.group("/", three_tier(), false).unwrap();
    sim.settle();
    let v0 = *sim
        .core
        .snapshot()
        .root_versions
        .keys()
        .next_back()
        .unwrap();
    let before = sim.store.clone();
    let patch = crate::group_patch::parse_group_patch(json!({"scaleBy": 2})).unwrap();
    let out = sim
        .cmd(Command::UpdateGroup {
            id: Sim::id("/shop"),
            patch: Box::new(patch.clone()),
            force: false,
            dry_run: true,
        })
        .unwrap();
    let Outcome::Plan(steps) = out else { panic!() };
    assert_eq!(steps.len(), 3, "db, api, web scale in order");
    assert_eq!(sim.store, before, "a dry run stores nothing");
    assert!(sim.core.snapshot().deployments.is_empty());
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.cmd(Command::UpdateGroup {
        id: Sim::id("/shop"),
        patch: Box::new(patch),
        force: false,
        dry_run: false,
    })
    .unwrap();
    sim.settle();
    assert_eq!(sim.count("/shop/web"), (2, 2));
    assert_eq!(sim.core.snapshot().root_versions.len(), 2);
    // Back to the first version of the whole group.
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.group("/shop", json!({"version": v0.to_string()}), false)
        .unwrap();
    sim.settle();
    assert_eq!(sim.count("/shop/web"), (1, 1));
    assert_eq!(sim.count("/shop/db"), (1, 1));
    // A structural update replaces the app set: api and web go, db stays.
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.group(
        "/shop",
        json!({"apps": [{"id": "db", "cmd": "d", "cpus": 0.01, "mem": 1}]}),
        false,
    )
    .unwrap();
    sim.settle();
    let snap = sim.core.snapshot();
    assert_eq!(
        snap.apps.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["/shop/db"]
    );
    // Rolling the root back brings the removed apps back from their stored versions.
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.group("/", json!({"version": v0.to_string()}), false)
        .unwrap();
    sim.settle();
    assert_eq!(sim.core.snapshot().apps.len(), 3);
}

#[test]
fn held_apps_are_untouched_until_their_step() {
    let mut sim = Sim::new();
    sim.group("/", three_tier(), false).unwrap();
    sim.settle();
    sim.auto = false;
    let web_before: Vec<TaskId> = sim
        .running
        .keys()
        .filter(|t| Sim::app_of(t) == "shop_web")
        .cloned()
        .collect();
    // Change every tier's config at once.
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.group(
        "/shop",
        json!({"apps": [
            {"id": "web", "cmd": "w2", "cpus": 0.01, "mem": 1, "dependencies": ["api"]},
            {"id": "api", "cmd": "a2", "cpus": 0.01, "mem": 1, "dependencies": ["/shop/db"]},
            {"id": "db", "cmd": "d2", "cpus": 0.01, "mem": 1}]}),
        false,
    )
    .unwrap();
    sim.settle();
    // Only db is being replaced; web and api were not touched.
    assert!(sim
        .killed
        .iter()
        .chain(sim.launched.iter().skip(3).map(|l| &l.task_id))
        .all(|t| Sim::app_of(t) == "shop_db"));
    // A held web task that dies comes back with its old definition.
    sim.status(&web_before[0], TaskState::Failed);
    sim.now = sim.now.plus(Duration::from_secs(5));
    sim.settle();
    let relaunched = sim.launched.last().unwrap();
    assert_eq!(Sim::app_of(&relaunched.task_id), "shop_web");
    assert_eq!(relaunched.command, CommandSpec::Shell("w".into()));
}

#[test]
fn a_restored_deployment_resumes_without_relaunching() {
    let mut sim = Sim::new();
    sim.auto = false;
    sim.create(
        json!({"id": "/p", "cmd": "v1", "instances": 4, "cpus": 0.01, "mem": 1,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}}),
    );
    sim.bring_up();
    sim.update("/p", json!({"cmd": "v2"}));
    sim.settle();
    for t in sim.killed.clone() {
        sim.status(&t, TaskState::Killed);
    }
    sim.settle();
    let new_tasks: Vec<TaskId> = sim
        .running
        .iter()
        .filter(|(_, s)| **s == TaskState::Staging)
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(new_tasks.len(), 2);
    for t in &new_tasks {
        sim.status(t, TaskState::Running);
    }
    // Restart the scheduler from its store.
    let entries: Vec<(String, Vec<u8>)> = sim.store.clone().into_iter().collect();
    let mut core = Scheduler::new(Config::default(), 7);
    core.restore(entries).unwrap();
    sim.core = core;
    sim.core.converge_all(sim.now);
    sim.drain();
    let snap = sim.core.snapshot();
    assert_eq!(snap.deployments.len(), 1, "the deployment was restored");
    let launched_before = sim.launched.len();
    for t in sim.killed.clone() {
        if sim.running.contains_key(&t) {
            sim.status(&t, TaskState::Killed);
        }
    }
    sim.bring_up();
    for t in sim.killed.clone() {
        if sim.running.contains_key(&t) {
            sim.status(&t, TaskState::Killed);
        }
    }
    sim.bring_up();
    assert!(sim.core.snapshot().deployments.is_empty());
    // The two v2 instances that already ran were kept; only two more were launched.
    assert_eq!(sim.launched.len() - launched_before, 2);
    assert!(new_tasks.iter().all(|t| sim.running.contains_key(t)));
}

#[test]
fn a_kill_stored_before_a_crash_is_sent_again_after_recovery() {
    let mut sim = Sim::new();
    sim.create(
        json!({"id": "/k", "cmd": "v1", "instances": 3, "cpus": 0.01, "mem": 1,
        "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.0}}),
    );
    sim.bring_up();
    // The upgrade is stored (with its first kill), then the scheduler dies before the kill
    // reaches the backend.
    let patch = parse_app_patch(json!({"cmd": "v2"})).unwrap();
    sim.core
        .command(
            sim.now,
            Command::UpdateApps {
                force: false,
                updates: vec![(Sim::id("/k"), patch)],
                partial: true,
                create: false,
            },
        )
        .unwrap();
    let mut lost_kills = Vec::new();
    while let Some(e) = sim.core.poll_effect() {
        match e {
            Effect::Persist(ops) => {
                for op in ops {
                    if let StoreOp::Put { key, value } = op {
                        sim.store.insert(key, value);
                    }
                }
            }
            Effect::Kill(k) => lost_kills.push(k.task_id),
            _ => {}
        }
    }
    assert_eq!(lost_kills.len(), 1, "one old instance goes first");

    let entries: Vec<(String, Vec<u8>)> = sim.store.clone().into_iter().collect();
    let mut core = Scheduler::new(Config::default(), 7);
    core.restore(entries).unwrap();
    sim.core = core;
    sim.core.converge_all(sim.now);
    sim.drain();
    assert!(
        sim.killed.contains(&lost_kills[0]),
        "the stored kill is sent again: {:?}",
        sim.killed
    );
    sim.bring_up();
    for _ in 0..10 {
        sim.bring_up();
    }
    assert!(
        sim.core.snapshot().deployments.is_empty(),
        "the upgrade completes"
    );
    assert_eq!(sim.count("/k"), (3, 3));
}

#[test]
fn progress_deadline_fails_and_rolls_back() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/d", "cmd": "v1", "cpus": 0.01, "mem": 1}));
    sim.settle();
    sim.auto = false;
    sim.now = sim.now.plus(Duration::from_secs(1));
    sim.update(
        "/d",
        json!({"cmd": "v2", "labels": {
            "PACER_DEPLOYMENT_PROGRESS_DEADLINE_SECONDS": "30",
            "PACER_DEPLOYMENT_ROLLBACK_ON_FAILURE": "true"}}),
    );
    sim.settle();
    let deadline = sim.core.next_deadline(sim.now).unwrap();
    assert_eq!(deadline, sim.now.plus(Duration::from_secs(30)));
    sim.now = deadline;
    sim.core.tick(sim.now);
    sim.drain();
    assert!(sim.events.iter().any(|e| matches!(e,
        crate::events::Event::DeploymentFailed { reason, .. } if reason.contains("No progress for 30 seconds"))));
    let snap = sim.core.snapshot();
    assert_eq!(
        snap.apps[&Sim::id("/d")].cmd.as_deref(),
        Some("v1"),
        "rolled back"
    );
    let revert = snap.deployments.values().next().unwrap();
    assert!(revert.is_revert);
    let v1_task = &sim.launched[0].task_id;
    assert!(
        !sim.killed.contains(v1_task),
        "the instance running the original was never touched"
    );
}

#[test]
fn cancelling_keeps_running_instances_and_drops_unlaunched_ones() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/c", "cmd": "v1", "cpus": 0.01, "mem": 1}));
    sim.settle();
    let v1_task = sim.launched[0].task_id.clone();
    // The new version fits nowhere, so its instance stays unlaunched.
    let Outcome::Deployment { id, .. } = sim.update("/c", json!({"cmd": "v2", "cpus": 1000}))
    else {
        panic!()
    };
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    sim.drain();
    assert_eq!(sim.core.snapshot().instances.len(), 2);
    sim.cmd(Command::CancelDeployment { id, force: true })
        .unwrap();
    let snap = sim.core.snapshot();
    assert!(sim.killed.is_empty());
    let left: Vec<_> = snap.instances_of(&Sim::id("/c")).collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].task.as_ref().unwrap().task_id, v1_task);
}

#[test]
fn launch_timeout_kills_and_relaunches() {
    let mut sim = Sim::new();
    sim.auto = false;
    sim.create(json!({"id": "/t", "cmd": "x", "cpus": 0.01, "mem": 1}));
    sim.settle();
    let t1 = sim.launched[0].task_id.clone();
    let deadline = sim.core.next_deadline(sim.now).unwrap();
    assert_eq!(deadline, sim.now.plus(Duration::from_secs(300)));
    sim.now = deadline;
    sim.core.tick(sim.now);
    sim.drain();
    assert_eq!(sim.killed, vec![t1.clone()]);
    sim.status(&t1, TaskState::Killed);
    sim.settle();
    let t2 = sim.launched.last().unwrap().task_id.clone();
    assert_eq!(t2.instance_id(), t1.instance_id());
    assert_eq!(t2.incarnation(), 2, "relaunched without backoff");
}

#[test]
fn reset_delay_lets_a_backed_off_app_launch() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/b", "cmd": "false", "cpus": 0.01, "mem": 1, "backoffSeconds": 60}));
    sim.settle();
    let t = sim.launched[0].task_id.clone();
    sim.status(&t, TaskState::Failed);
    assert!(!sim.core.wants_offers(sim.now));
    sim.cmd(Command::ResetDelay { id: Sim::id("/b") }).unwrap();
    assert!(sim.core.wants_offers(sim.now));
    sim.settle();
    assert_eq!(
        sim.cmd(Command::ResetDelay { id: Sim::id("/b") })
            .unwrap_err(),
        CommandError::NotFound("Application /b not found in tasks queue.".into())
    );
}

#[test]
fn removed_apps_keep_versions_until_the_history_forgets_them() {
    let mut sim = Sim::new();
    sim.core.config.max_versions = 2;
    sim.create(json!({"id": "/o", "cmd": "x", "instances": 0}));
    sim.cmd(Command::DeleteApp {
        id: Sim::id("/o"),
        force: true,
    })
    .unwrap();
    assert!(sim.store.keys().any(|k| k.starts_with("app-version//o@")));
    for i in 0..2 {
        sim.now = sim.now.plus(Duration::from_secs(1));
        sim.create(json!({"id": format!("/other{i}"), "cmd": "x", "instances": 0}));
    }
    assert!(!sim.store.keys().any(|k| k.starts_with("app-version//o@")));
    assert!(sim.core.snapshot().versions.get(&Sim::id("/o")).is_none());
    // The stored history stays bounded and rebuilds to the same versions.
    let entries: Vec<(String, Vec<u8>)> = sim.store.clone().into_iter().collect();
    let mut core = Scheduler::new(Config::default(), 1);
    core.config.max_versions = 2;
    core.restore(entries).unwrap();
    assert_eq!(
        core.snapshot().root_versions.keys().collect::<Vec<_>>(),
        sim.core.snapshot().root_versions.keys().collect::<Vec<_>>()
    );
}

#[test]
fn scaling_keeps_backoff_and_a_config_change_resets_it() {
    let mut sim = Sim::new();
    sim.create(json!({"id": "/s", "cmd": "false", "cpus": 0.01, "mem": 1, "backoffSeconds": 60}));
    sim.settle();
    let t = sim.launched[0].task_id.clone();
    sim.status(&t, TaskState::Failed);
    assert!(!sim.core.wants_offers(sim.now));
    let scale = |sim: &mut Sim, v: Value| {
        let p = parse_app_patch(v).unwrap();
        sim.cmd(Command::UpdateApps {
            updates: vec![(Sim::id("/s"), p)],
            partial: true,
            create: false,
            force: true,
        })
        .unwrap()
    };
    scale(&mut sim, json!({"instances": 2}));
    assert!(
        !sim.core.wants_offers(sim.now),
        "same config: still backed off"
    );
    scale(&mut sim, json!({"cmd": "true"}));
    assert!(sim.core.wants_offers(sim.now), "a new config starts fresh");
}

/// A plugin operator `ONE_PER_HOST` (at most one instance per hostname) that records its calls.
#[derive(Default)]
struct OnePerHost {
    ops: Vec<String>,
    calls: std::sync::Mutex<Vec<(usize, u32)>>,
}

impl crate::constraints::ConstraintPlugins for OnePerHost {
    fn operators(&self) -> &[String] {
        &self.ops
    }
    fn validate(&self, _op: &str, _field: &str, params: &str) -> Result<(), String> {
        match params {
            "" => Ok(()),
            _ => Err("ONE_PER_HOST takes no value".into()),
        }
    }
    fn check(
        &self,
        req: &crate::constraints::PluginRequest<'_>,
        placed: &crate::constraints::PlacedSummary,
        offers: &[&Offer],
    ) -> Vec<crate::constraints::PluginDecision> {
        self.calls
            .lock()
            .unwrap()
            .push((offers.len(), placed.total));
        assert_eq!((req.operator, req.field), ("ONE_PER_HOST", "hostname"));
        offers
            .iter()
            .map(|o| {
                let used = placed.counts.get(&o.hostname).copied().unwrap_or(0);
                crate::constraints::PluginDecision {
                    accept: used == 0,
                    reason: (used > 0).then(|| format!("{} is taken", o.hostname)),
                }
            })
            .collect()
    }
}

#[test]
fn plugin_operators_are_validated_and_asked_once_per_batch_until_a_placement() {
    let plugin = std::sync::Arc::new(OnePerHost {
        ops: vec!["ONE_PER_HOST".into()],
        ..Default::default()
    });
    let mut config = Config::default();
    config.extensions.constraints = Some(plugin.clone());
    let mut sim = Sim::new();
    sim.core = Scheduler::new(config, 42);

    let bad = parse_app_patch(
        json!({"id": "/p", "cmd": "x", "constraints": [["hostname", "ONE_PER_HOST", "2"]]}),
    )
    .unwrap();
    let err = sim
        .cmd(Command::CreateApp {
            force: false,
            id: Sim::id("/p"),
            patch: Box::new(bad),
        })
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("ONE_PER_HOST takes no value"),
        "{err:?}"
    );

    sim.create(
        json!({"id": "/p", "cmd": "x", "cpus": 0.1, "mem": 1, "instances": 2,
        "constraints": [["hostname", "ONE_PER_HOST"]]}),
    );
    let on = |sim: &Sim, host: &str| {
        let mut o = sim.offer();
        o.id = OfferId(format!("offer-{host}"));
        o.hostname = host.into();
        o.agent_id = AgentId(format!("agent-{host}"));
        o
    };
    // Three offers in one batch: asked about all three at once. The first placement changes
    // the summary, so the plugin is asked again, from the current offer on (it may take a
    // second instance); h1 is then refused on both of its offers and h2 takes the second.
    let batch = vec![on(&sim, "h1"), on(&sim, "h1"), on(&sim, "h2")];
    sim.core.handle_offers(sim.now, batch);
    sim.drain();
    assert_eq!(sim.count("/p"), (2, 2));
    assert_eq!(*plugin.calls.lock().unwrap(), vec![(3, 0), (3, 1)]);
    let stats = sim.core.snapshot().offer_stats[&Sim::id("/p")].clone();
    let refused = stats.last_unused.back().unwrap();
    assert_eq!(refused.offer.hostname, "h1");
    assert_eq!(refused.detail.as_deref(), Some("ONE_PER_HOST: h1 is taken"));
}

#[test]
fn unreachable_instances_are_replaced_after_inactive_and_expunged_after_expunge() {
    let mut sim = Sim::new();
    sim.create(
        json!({"id": "/u", "cmd": "x", "cpus": 0.01, "mem": 1, "instances": 2,
        "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}}),
    );
    sim.settle();
    assert_eq!(sim.count("/u"), (2, 2));
    let lost = sim.launched[0].task_id.clone();
    sim.status(&lost, TaskState::Unreachable);
    // Its agent cannot answer a kill while it is unreachable.
    sim.running.remove(&lost);
    // Still counted: no replacement before inactiveAfterSeconds.
    assert!(!sim.core.wants_offers(sim.now));
    let t0 = sim.now;
    assert_eq!(
        sim.core.next_deadline(sim.now),
        Some(t0.plus(Duration::from_secs(60)))
    );
    sim.now = t0.plus(Duration::from_secs(60));
    sim.core.tick(sim.now);
    sim.drain();
    assert_eq!(sim.killed, vec![lost.clone()], "given up: its kill is sent");
    sim.settle();
    assert_eq!(sim.launched.len(), 3, "a replacement was launched");
    assert_ne!(sim.launched[2].task_id.instance_id(), lost.instance_id());
    let snap = sim.core.snapshot();
    let iid = lost.instance_id().unwrap();
    assert_eq!(
        snap.instances[&iid].state(),
        Some(TaskState::Unreachable),
        "kept until expunged"
    );
    assert_eq!(
        sim.core.next_deadline(sim.now),
        Some(t0.plus(Duration::from_secs(120)))
    );
    sim.now = t0.plus(Duration::from_secs(120));
    sim.core.tick(sim.now);
    sim.drain();
    assert!(
        !sim.core.snapshot().instances.contains_key(&iid),
        "expunged"
    );
    assert_eq!(sim.count("/u"), (2, 2));
    // If its agent comes back, the task is unknown and is killed.
    sim.killed.clear();
    sim.status(&lost, TaskState::Running);
    assert_eq!(sim.killed, vec![lost]);
}

#[test]
fn disabled_or_zero_unreachable_strategy_replaces_at_once_and_comeback_is_killed() {
    for strategy in [
        json!("disabled"),
        json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}),
    ] {
        let mut sim = Sim::new();
        sim.create(json!({"id": "/d", "cmd": "x", "cpus": 0.01, "mem": 1,
            "unreachableStrategy": strategy}));
        sim.settle();
        let lost = sim.launched[0].task_id.clone();
        sim.status(&lost, TaskState::Unreachable);
        assert_eq!(sim.core.next_deadline(sim.now), Some(sim.now));
        sim.core.tick(sim.now);
        sim.drain();
        sim.settle();
        assert_eq!(sim.launched.len(), 2);
        assert_eq!(sim.count("/d"), (1, 1));
    }
}

#[test]
fn launch_tokens_limit_launches_until_tasks_run_or_a_refill() {
    let mut sim = Sim::new();
    sim.core = Scheduler::new(
        Config {
            launch_tokens: Some(3),
            max_instances_per_offer: 100,
            ..Config::default()
        },
        42,
    );
    sim.auto = false;
    sim.create(json!({"id": "/t", "cmd": "x", "cpus": 0.01, "mem": 1, "instances": 10}));
    sim.offer_seq += 1;
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    sim.drain();
    assert_eq!(sim.launched.len(), 3);
    assert!(
        !sim.core.wants_offers(sim.now),
        "no tokens left: no offers wanted"
    );
    // A task reaching RUNNING gives its token back.
    let first = sim.launched[0].task_id.clone();
    sim.status(&first, TaskState::Running);
    assert!(sim.core.wants_offers(sim.now));
    sim.offer_seq += 1;
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    sim.drain();
    assert_eq!(sim.launched.len(), 4);
    sim.core.refill_launch_tokens();
    sim.offer_seq += 1;
    let o = sim.offer();
    sim.core.handle_offer(sim.now, o);
    sim.drain();
    assert_eq!(sim.launched.len(), 7);
}

/// Expires after `allowed` instances on each offer.
struct CountingDeadline {
    allowed: usize,
    asked: usize,
    starts: usize,
}

impl crate::machine::MatchDeadline for CountingDeadline {
    fn start(&mut self) {
        self.asked = 0;
        self.starts += 1;
    }
    fn expired(&mut self) -> bool {
        self.asked += 1;
        self.asked > self.allowed
    }
}

#[test]
fn offer_matching_stops_when_the_offers_time_is_up() {
    let mut sim = Sim::new();
    sim.core = Scheduler::new(
        Config {
            max_instances_per_offer: 100,
            ..Config::default()
        },
        42,
    );
    sim.auto = false;
    sim.create(json!({"id": "/t", "cmd": "x", "cpus": 0.01, "mem": 1, "instances": 10}));
    let mut deadline = CountingDeadline {
        allowed: 3,
        asked: 0,
        starts: 0,
    };
    // Two offers in one batch: each gets its own time, so each launches three.
    sim.offer_seq += 1;
    let first = sim.offer();
    sim.offer_seq += 1;
    let second = sim.offer();
    sim.core
        .handle_offers_within(sim.now, vec![first, second], &mut deadline);
    sim.drain();
    assert_eq!(deadline.starts, 2);
    assert_eq!(sim.launched.len(), 6);
    // An offer whose time is up at once launches nothing and is declined.
    deadline.allowed = 0;
    sim.offer_seq += 1;
    let o = sim.offer();
    let id = o.id.clone();
    sim.core
        .handle_offers_within(sim.now, vec![o], &mut deadline);
    let effects: Vec<Effect> = std::iter::from_fn(|| sim.core.poll_effect()).collect();
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Decline { offer, .. } if *offer == id)),
        "{effects:?}"
    );
    assert!(!effects.iter().any(|e| matches!(e, Effect::Launch { .. })));
}
