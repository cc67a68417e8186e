//! Health and readiness semantics (Marathon §5.4, §6) stepped through the state machine.

use crate::cluster::*;
use crate::health::*;
use crate::id::{InstanceId, TaskId};
use crate::machine_tests::Sim;
use crate::state::HttpResponse;
use serde_json::{json, Value};
use std::time::Duration;

fn http_app(id: &str, instances: u32, grace: u64, max_failures: u32) -> Value {
    json!({"id": id, "cmd": "serve", "instances": instances, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "gracePeriodSeconds": grace,
            "intervalSeconds": 2, "timeoutSeconds": 1, "maxConsecutiveFailures": max_failures}]})
}

impl Sim {
    fn instances(&self, app: &str) -> Vec<(InstanceId, TaskId)> {
        let snap = self.core.snapshot();
        snap.instances_of(&Sim::id(app))
            .filter_map(|i| Some((i.id.clone(), i.task.as_ref()?.task_id.clone())))
            .collect()
    }

    fn report(&mut self, inst: &(InstanceId, TaskId), check: usize, outcome: ProbeOutcome) {
        self.core.handle_health(
            self.now,
            HealthReport {
                instance_id: inst.0.clone(),
                task_id: inst.1.clone(),
                check_index: check,
                outcome,
            },
        );
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.plus(d);
    }

    fn take_events(&mut self) -> Vec<&'static str> {
        self.events.drain(..).map(|e| e.event_type()).collect()
    }

    fn deployments(&self) -> usize {
        self.core.snapshot().deployments.len()
    }

    fn health_of(&self, inst: &InstanceId) -> Option<crate::state::HealthResult> {
        self.core.snapshot().health.get(inst)?.checks[0].clone()
    }
}

#[test]
fn a_task_is_watched_with_its_port_and_counts_only_once_healthy() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 300, 3));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    let spec = sim.watched.get(&inst.0).expect("running task is probed");
    assert_eq!(spec.task_id, inst.1);
    assert_eq!(spec.host, "host-1");
    assert_eq!(spec.checks.len(), 1);
    assert_eq!(spec.checks[0].port, Some(sim.launched[0].host_ports[0]));
    assert_eq!(spec.checks[0].check.path.as_deref(), Some("/health"));
    assert_eq!(
        sim.deployments(),
        1,
        "RUNNING alone does not finish the deployment"
    );

    sim.take_events();
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    let r = sim.health_of(&inst.0).unwrap();
    assert!(r.alive());
    assert_eq!(r.first_success, Some(sim.now));
    assert_eq!(
        sim.take_events(),
        [
            "health_status_changed_event",
            "instance_health_changed_event",
            "deployment_step_success",
            "deployment_success"
        ]
    );
    assert_eq!(sim.deployments(), 0);
}

#[test]
fn grace_forgives_failures_until_the_first_success_or_its_end() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 10, 1));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    sim.take_events();
    sim.advance(Duration::from_secs(5));
    sim.report(
        &inst,
        0,
        ProbeOutcome::Unhealthy("connection refused".into()),
    );
    assert_eq!(sim.health_of(&inst.0), None, "ignored during grace");
    assert!(sim.take_events().is_empty());

    // After the grace period failures count even without a success.
    sim.advance(Duration::from_secs(6));
    sim.report(
        &inst,
        0,
        ProbeOutcome::Unhealthy("connection refused".into()),
    );
    let r = sim.health_of(&inst.0).unwrap();
    assert_eq!(r.consecutive_failures, 1);
    assert_eq!(r.last_failure_cause.as_deref(), Some("connection refused"));
    assert!(!r.alive());
    assert_eq!(
        sim.take_events(),
        ["failed_health_check_event", "instance_health_changed_event"]
    );
    assert!(
        sim.killed.is_empty(),
        "the first counted failure never kills"
    );
}

#[test]
fn a_success_ends_grace_early() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 300, 3));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    sim.advance(Duration::from_secs(2));
    sim.report(&inst, 0, ProbeOutcome::Unhealthy("HTTP 503".into()));
    let r = sim.health_of(&inst.0).unwrap();
    assert_eq!(
        r.consecutive_failures, 1,
        "counted within grace after a success"
    );
    assert!(!r.alive());
    // A success resets the count.
    sim.advance(Duration::from_secs(2));
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    let r = sim.health_of(&inst.0).unwrap();
    assert_eq!(r.consecutive_failures, 0);
    assert!(r.alive());
}

#[test]
fn kill_after_max_failures_counts_before_the_current_one_and_replaces_without_backoff() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 0, 3));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    for n in 1..=3 {
        sim.advance(Duration::from_secs(2));
        sim.report(&inst, 0, ProbeOutcome::Unhealthy("HTTP 500".into()));
        assert!(sim.killed.is_empty(), "failure {n} does not kill yet");
    }
    sim.take_events();
    sim.advance(Duration::from_secs(2));
    sim.report(&inst, 0, ProbeOutcome::Unhealthy("HTTP 500".into()));
    assert_eq!(sim.killed, vec![inst.1.clone()], "the 4th failure kills");
    let events = sim.take_events();
    assert!(
        events.contains(&"unhealthy_instance_kill_event"),
        "{events:?}"
    );

    // The sim reports KILLED; the same instance is relaunched at once (no backoff).
    sim.settle();
    let after = sim.instances("/web");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].0, inst.0, "same instance");
    assert_ne!(after[0].1, inst.1, "new task");
    assert!(
        sim.core.snapshot().delays.is_empty(),
        "a health kill adds no delay"
    );
    assert_eq!(
        sim.watched[&inst.0].task_id, after[0].1,
        "the new task is probed"
    );
    assert_eq!(sim.health_of(&inst.0), None, "results start over");
}

#[test]
fn zero_max_failures_never_kills_and_late_or_ignored_results_change_nothing() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 0, 0));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    for _ in 0..10 {
        sim.advance(Duration::from_secs(2));
        sim.report(&inst, 0, ProbeOutcome::Unhealthy("timeout".into()));
    }
    assert!(sim.killed.is_empty());
    assert_eq!(sim.health_of(&inst.0).unwrap().consecutive_failures, 10);

    sim.report(&inst, 0, ProbeOutcome::Healthy);
    let before = sim.health_of(&inst.0);
    sim.take_events();
    for outcome in [ProbeOutcome::Late, ProbeOutcome::Ignored] {
        sim.advance(Duration::from_secs(2));
        sim.report(&inst, 0, outcome);
    }
    assert_eq!(sim.health_of(&inst.0), before);
    assert!(sim.take_events().is_empty());
}

#[test]
fn reports_for_other_tasks_are_ignored() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 1, 0, 3));
    sim.settle();
    let inst = sim.instances("/web").remove(0);
    let stale = (inst.0.clone(), TaskId::new(&inst.0, 7));
    sim.report(&stale, 0, ProbeOutcome::Healthy);
    sim.report(&inst, 5, ProbeOutcome::Healthy);
    assert_eq!(sim.health_of(&inst.0), None);
    assert_eq!(sim.deployments(), 1);
}

#[test]
fn rolling_upgrade_keeps_old_instances_until_new_ones_are_healthy() {
    let mut sim = Sim::new();
    let mut app = http_app("/web", 2, 300, 3);
    app["upgradeStrategy"] = json!({"minimumHealthCapacity": 1.0, "maximumOverCapacity": 0.5});
    sim.create(app);
    sim.settle();
    let old = sim.instances("/web");
    for i in &old {
        sim.report(i, 0, ProbeOutcome::Healthy);
    }
    assert_eq!(sim.deployments(), 0);

    sim.update("/web", json!({"cmd": "serve --v2"}));
    sim.settle();
    let all = sim.instances("/web");
    assert_eq!(
        all.len(),
        3,
        "one extra instance within maximumOverCapacity"
    );
    let new: Vec<_> = all.iter().filter(|i| !old.contains(i)).cloned().collect();
    assert_eq!(new.len(), 1);
    // The new instance never becomes healthy: the old ones stay, the deployment waits.
    for _ in 0..5 {
        sim.advance(Duration::from_secs(2));
        sim.report(&new[0], 0, ProbeOutcome::Unhealthy("HTTP 503".into()));
    }
    assert!(
        sim.killed.is_empty(),
        "grace protects the new one, old ones stay"
    );
    assert_eq!(sim.deployments(), 1);

    // Once it is healthy, one old instance goes and the next new one starts.
    sim.report(&new[0], 0, ProbeOutcome::Healthy);
    assert_eq!(sim.killed.len(), 1);
    assert!(old.iter().any(|o| o.1 == sim.killed[0]));
    sim.settle();
    let second: Vec<_> = sim
        .instances("/web")
        .into_iter()
        .filter(|i| !old.contains(i) && !new.contains(i))
        .collect();
    assert_eq!(second.len(), 1);
    sim.report(&second[0], 0, ProbeOutcome::Healthy);
    sim.settle();
    assert_eq!(sim.killed.len(), 2);
    assert_eq!(sim.deployments(), 0);
    assert_eq!(sim.instances("/web").len(), 2);
}

#[test]
fn readiness_gates_the_deployment_and_keeps_the_last_response() {
    let mut sim = Sim::new();
    sim.create(
        json!({"id": "/api", "cmd": "serve", "instances": 1, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0, "name": "http-api"}],
        "readinessChecks": [{"name": "ready", "portName": "http-api", "path": "/ready",
            "intervalSeconds": 2, "timeoutSeconds": 1, "preserveLastResponse": true}]}),
    );
    sim.settle();
    let inst = sim.instances("/api").remove(0);
    let spec = sim.watched[&inst.0].clone();
    assert!(spec.checks.is_empty());
    let rp = spec.readiness.as_ref().expect("readiness probed");
    assert_eq!(rp.port, Some(sim.launched[0].host_ports[0]));
    assert_eq!(sim.deployments(), 1);

    let response = |status: u16| HttpResponse {
        status,
        content_type: "text/plain".into(),
        body: format!("status {status}"),
    };
    let ready = |sim: &mut Sim, ready: bool, status: u16| {
        sim.core.handle_readiness(
            sim.now,
            ReadinessReport {
                instance_id: inst.0.clone(),
                task_id: inst.1.clone(),
                ready,
                response: Some(response(status)),
            },
        );
        sim.drain();
    };
    ready(&mut sim, false, 503);
    let r = sim.core.snapshot().health[&inst.0]
        .readiness
        .clone()
        .unwrap();
    assert!(!r.ready);
    assert_eq!(r.name, "ready");
    assert_eq!(r.last_response, Some(response(503)));
    assert_eq!(sim.deployments(), 1, "not ready yet");
    ready(&mut sim, true, 200);
    assert_eq!(sim.deployments(), 0);
}

#[test]
fn agent_checks_travel_with_the_launch_and_report_through_status_updates() {
    let mut sim = Sim::new();
    sim.create(
        json!({"id": "/db", "cmd": "serve", "instances": 1, "cpus": 0.1, "mem": 16,
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "COMMAND", "command": {"value": "test -f ok"},
            "intervalSeconds": 3, "timeoutSeconds": 2, "maxConsecutiveFailures": 0,
            "gracePeriodSeconds": 7, "delaySeconds": 1},
            {"protocol": "MESOS_HTTP", "path": "/h"}]}),
    );
    sim.settle();
    let spec = &sim.launched[0];
    assert_eq!(spec.health_checks.len(), 2);
    assert_eq!(
        spec.health_checks[0],
        AgentCheck {
            kind: AgentCheckKind::Command("test -f ok".into()),
            grace: Duration::from_secs(7),
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(2),
            delay: Duration::from_secs(1),
            consecutive_failures: 0,
        }
    );
    assert_eq!(
        spec.health_checks[1].kind,
        AgentCheckKind::Http {
            tls: false,
            port: spec.host_ports[0],
            path: "/h".into()
        }
    );
    let inst = sim.instances("/db").remove(0);
    assert!(!sim.watched.contains_key(&inst.0), "nothing scheduler-side");
    assert_eq!(sim.deployments(), 1);

    let healthy = |sim: &mut Sim, h: bool| {
        sim.core.handle_status(
            sim.now,
            TaskStatus {
                task_id: inst.1.clone(),
                state: TaskState::Running,
                message: (!h).then(|| "exit status 1".into()),
                agent_id: None,
                healthy: Some(h),
            },
        );
        sim.drain();
    };
    healthy(&mut sim, true);
    assert_eq!(sim.deployments(), 0);
    let h = sim.core.snapshot().health[&inst.0].clone();
    assert!(h.checks.iter().all(|c| c.as_ref().unwrap().alive()));
    healthy(&mut sim, false);
    let h = sim.core.snapshot().health[&inst.0].clone();
    assert_eq!(h.healthy(), Some(false));
    assert_eq!(
        h.checks[0].as_ref().unwrap().last_failure_cause.as_deref(),
        Some("exit status 1")
    );
    assert!(sim.killed.is_empty(), "the agent kills, not the scheduler");
}

#[test]
fn probing_resumes_after_a_restart() {
    let mut sim = Sim::new();
    sim.create(http_app("/web", 2, 300, 3));
    sim.settle();
    for i in sim.instances("/web") {
        sim.report(&i, 0, ProbeOutcome::Healthy);
    }
    let entries: Vec<(String, Vec<u8>)> = sim
        .store
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fresh = Sim::new();
    fresh.core.restore(entries).unwrap();
    fresh.core.converge_all(fresh.now);
    fresh.drain();
    assert_eq!(fresh.watched.len(), 2, "every running task is probed again");
    assert!(
        fresh.core.snapshot().health.is_empty(),
        "results are not stored"
    );
}

#[test]
fn an_apps_life_announces_marathons_events() {
    let mut sim = Sim::new();
    sim.create(http_app("/prod/web", 1, 300, 3));
    sim.settle();
    let kinds = sim.take_events();
    for want in [
        "group_change_success",
        "add_health_check_event",
        "deployment_info",
        "status_update_event",
        "instance_changed_event",
    ] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }
    let inst = sim.instances("/prod/web").remove(0);
    sim.report(&inst, 0, ProbeOutcome::Healthy);
    sim.take_events();
    sim.cmd(crate::machine::Command::DeleteApp {
        id: Sim::id("/prod/web"),
        force: false,
    })
    .unwrap();
    sim.settle();
    let events: Vec<_> = sim.events.drain(..).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    for want in [
        "group_change_success",
        "remove_health_check_event",
        "status_update_event",
        "app_terminated_event",
        "deployment_success",
    ] {
        assert!(kinds.contains(&want), "{want} missing from {kinds:?}");
    }
    let group = events.iter().find_map(|e| match e {
        crate::events::Event::GroupChangeSuccess { group_id, .. } => Some(group_id.to_string()),
        _ => None,
    });
    assert_eq!(
        group.as_deref(),
        Some("/prod"),
        "the deepest group of the change"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "app_terminated_event")
            .count(),
        1
    );
}
