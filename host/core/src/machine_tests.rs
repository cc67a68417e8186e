//! Scenario tests of the state machine with a simulated agent: no IO, time passed in by hand.

use crate::cluster::*;
use crate::id::{PathId, TaskId};
use crate::machine::*;
use crate::normalize::parse_app_patch;
use crate::persist::StoreOp;
use crate::time::Timestamp;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// A scheduler plus a fake agent and a fake store, stepping effects synchronously.
struct Sim {
    core: Scheduler,
    now: Timestamp,
    store: BTreeMap<String, Vec<u8>>,
    /// Live tasks on the fake agent.
    running: BTreeMap<TaskId, TaskState>,
    launched: Vec<LaunchSpec>,
    killed: Vec<TaskId>,
    /// Auto-report RUNNING for launches and KILLED for kills.
    auto: bool,
    offer_seq: u32,
}

impl Sim {
    fn new() -> Self {
        Sim {
            core: Scheduler::new(Config::default(), 42),
            now: Timestamp::from_millis(1_700_000_000_000),
            store: BTreeMap::new(),
            running: BTreeMap::new(),
            launched: Vec::new(),
            killed: Vec::new(),
            auto: true,
            offer_seq: 0,
        }
    }

    fn id(s: &str) -> PathId {
        PathId::parse_app_id(s, &PathId::root()).unwrap()
    }

    fn cmd(&mut self, c: Command) -> Result<Outcome, CommandError> {
        let r = self.core.command(self.now, c);
        self.drain();
        r
    }

    fn create(&mut self, v: Value) -> Outcome {
        let p = parse_app_patch(v).unwrap();
        let id = Self::id(p.id.as_deref().unwrap());
        self.cmd(Command::CreateApp {
            id,
            patch: Box::new(p),
        })
        .unwrap()
    }

    fn update(&mut self, id: &str, v: Value) -> Outcome {
        let p = parse_app_patch(v).unwrap();
        self.cmd(Command::UpdateApps {
            updates: vec![(Self::id(id), p)],
            partial: true,
            create: false,
        })
        .unwrap()
    }

    fn offer(&self) -> Offer {
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
        }
    }

    fn status(&mut self, task: &TaskId, state: TaskState) {
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
    fn drain(&mut self) {
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
                Effect::Decline { .. } | Effect::Reconcile(_) => {}
            }
        }
        for (t, s) in follow_up {
            self.status(&t, s);
        }
    }

    /// Offers until nothing more launches.
    fn settle(&mut self) {
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

    fn count(&self, app: &str) -> (usize, usize) {
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
    // A full PUT asking for 0 again keeps the assigned port.
    let p = parse_app_patch(json!({"cmd": "y"})).unwrap();
    sim.cmd(Command::UpdateApps {
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
        tasks: vec![t],
        scale: true,
        wipe: false,
    })
    .unwrap();
    assert_eq!(sim.core.snapshot().apps[&Sim::id("/k")].instances, 1);
    assert_eq!(sim.count("/k"), (1, 1));
    let err = sim
        .cmd(Command::KillTasks {
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
    // Bring up v1 by hand.
    loop {
        sim.settle();
        let staging: Vec<TaskId> = sim
            .running
            .iter()
            .filter(|(_, s)| **s == TaskState::Staging)
            .map(|(t, _)| t.clone())
            .collect();
        if staging.is_empty() {
            break;
        }
        for t in staging {
            sim.status(&t, TaskState::Running);
        }
    }
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
    sim.cmd(Command::RestartApp { id: Sim::id("/x") }).unwrap();
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
        id: Sim::id("/g/d"),
    })
    .unwrap();
    assert!(sim.core.snapshot().instances.is_empty());
    assert!(sim.core.snapshot().deployments.is_empty());
    assert!(!sim
        .store
        .keys()
        .any(|k| k.starts_with("instance/") || k.starts_with("app")));
    let err = sim
        .cmd(Command::DeleteApp {
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
            id: Sim::id("/a"),
            patch: Box::new(p),
        })
        .unwrap_err();
    assert!(matches!(err, CommandError::Invalid(_)));
    let p = parse_app_patch(json!({"id": "/a/b/c", "cmd": "x"})).unwrap();
    assert!(sim
        .cmd(Command::CreateApp {
            id: Sim::id("/a/b/c"),
            patch: Box::new(p)
        })
        .is_err());
    let p = parse_app_patch(json!({"id": "/a/b", "cmd": "x"})).unwrap();
    let err = sim
        .cmd(Command::CreateApp {
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
    assert_eq!(
        sim.core.offer_stats[&Sim::id("/big")].last_reasons,
        vec![crate::placement::RejectReason::InsufficientCpus]
    );
}
