//! Pacer on Mesos: the real `pacer` binary against the Mesos master simulator
//! (`pacer-mesos-sim`) over real HTTP, with real task processes where a test needs them.

use crate::harness::*;
use crate::health::{ctl_dir, server_app, task_ids, touch, wait_app};
use pacer_mesos_proto::{call, v1, Call};
use pacer_mesos_sim::{Sim, SimConfig};
use serde_json::{json, Value};
use std::time::Duration;

/// The simulator on its own runtime, stopped with the test.
struct Master {
    rt: tokio::runtime::Runtime,
    sim: Option<Sim>,
}

impl Master {
    fn start(config: SimConfig) -> Master {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt
            .block_on(Sim::start(config))
            .expect("start the simulator");
        Master { rt, sim: Some(sim) }
    }

    fn sim(&self) -> &Sim {
        self.sim.as_ref().unwrap()
    }

    fn url(&self) -> String {
        self.sim().url()
    }

    /// Killed, or killed and already forgotten (the master drops a task once its terminal
    /// update is acknowledged).
    fn killed(&self, task: &str) -> bool {
        matches!(self.state_of(task), None | Some(v1::TaskState::TaskKilled))
    }

    fn state_of(&self, task: &str) -> Option<v1::TaskState> {
        self.sim()
            .tasks()
            .into_iter()
            .find(|t| t.task_id == task)
            .map(|t| t.state)
    }

    /// Calls of one type Pacer made, decoded from the bytes it sent.
    fn calls(&self, kind: call::Type) -> Vec<(Vec<u8>, Call)> {
        self.sim()
            .calls()
            .into_iter()
            .filter_map(|c| {
                let call = c.call?;
                (call.r#type == Some(kind as i32)).then(|| (c.body.to_vec(), call))
            })
            .collect()
    }

    fn assert_no_violations(&self) {
        let v = self.sim().violations();
        assert!(v.is_empty(), "protocol violations: {v:#?}");
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.stop());
        }
    }
}

/// A fast simulator: short heartbeats and allocation rounds.
fn sim_config() -> SimConfig {
    SimConfig {
        heartbeat_interval: Duration::from_millis(300),
        allocation_interval: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

/// Flags that make Pacer notice faults quickly.
fn mesos_flags(master: &str) -> Vec<String> {
    [
        "--master",
        master,
        "--mesos_heartbeat_interval",
        "300",
        "--mesos_heartbeat_failure_threshold",
        "3",
        "--min_revive_offers_interval",
        "100",
        "--decline_offer_duration",
        "2000",
        "--kill_retry_timeout",
        "2000",
        "--failover_timeout",
        "120",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn start_pacer(master: &str, extra: &[&str]) -> Pacer {
    let mut flags = mesos_flags(master);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    Pacer::start(&refs)
}

fn framework_id(p: &Pacer) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some(id) = p.get("/v2/info").body["frameworkId"].as_str() {
            return id.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "Pacer did not register within 30 s:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The top-level field numbers of a protobuf message, read from its bytes by hand: what a
/// Mesos master decodes does not depend on Pacer's generated code being right.
fn field_numbers(mut b: &[u8]) -> Vec<u64> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        out.push(key >> 3);
        match key & 7 {
            0 => {
                varint(&mut b);
            }
            1 => b = &b[8..],
            2 => {
                let n = varint(&mut b) as usize;
                b = &b[n..];
            }
            5 => b = &b[4..],
            w => panic!("unexpected wire type {w}"),
        }
    }
    out
}

fn running_in_sim(m: &Master, app_prefix: &str) -> Vec<String> {
    m.sim()
        .tasks()
        .into_iter()
        .filter(|t| t.task_id.starts_with(app_prefix) && t.state == v1::TaskState::TaskRunning)
        .map(|t| t.task_id)
        .collect()
}

#[test]
fn app_lifecycle_on_mesos_with_real_processes_and_health_checks() {
    let ports = reserve_ports();
    let m = Master::start(SimConfig {
        agents: 1,
        agent_hostname: Some("127.0.0.1".into()),
        agent_ports: vec![(ports.0 as u64, ports.1 as u64)],
        run_commands: true,
        ..sim_config()
    });
    let p = start_pacer(&m.url(), &[]);
    let fw = framework_id(&p);
    assert_eq!(m.sim().framework().map(|f| f.id), Some(fw.clone()));
    let ctl = ctl_dir(&p);
    let check = json!({"protocol": "HTTP", "path": "/health", "portIndex": 0,
        "gracePeriodSeconds": 30, "intervalSeconds": 2, "timeoutSeconds": 1,
        "maxConsecutiveFailures": 2});

    // Deploy: two healthy tasks, each a real process on the simulated agent.
    let r = p.post(
        "/v2/apps",
        &server_app(
            "/web",
            &ctl,
            "v1",
            "",
            json!({"instances": 2, "healthChecks": [check]}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let app = wait_app(&p, "/web", "2 healthy tasks", 60, |a| {
        a["tasksHealthy"] == 2 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    for t in app["tasks"].as_array().unwrap() {
        assert_eq!(t["host"], "127.0.0.1");
        let id = t["id"].as_str().unwrap();
        let st = m
            .sim()
            .tasks()
            .into_iter()
            .find(|s| s.task_id == id)
            .unwrap();
        assert_eq!(st.state, v1::TaskState::TaskRunning);
        assert!(alive(st.pid.expect("a real process") as i32));
        assert_eq!(t["slaveId"], st.agent_id.as_str());
    }

    // Scale up.
    let r = p.put("/v2/apps/web", r#"{"instances": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    let app = wait_app(&p, "/web", "3 healthy tasks", 60, |a| {
        a["tasksHealthy"] == 3 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let before = task_ids(&app);

    // Rolling upgrade: every task replaced, the old ones killed on the agent.
    let r = p.put("/v2/apps/web", r#"{"env": {"CTL": "%CTL%", "TAG": "v2"}}"#.replace("%CTL%", &ctl.display().to_string()).as_str());
    assert_eq!(r.status, 200, "{}", r.text);
    let app = wait_app(&p, "/web", "3 healthy upgraded tasks", 90, |a| {
        a["tasksHealthy"] == 3
            && a["deployments"].as_array().is_some_and(|d| d.is_empty())
            && task_ids(a).iter().all(|t| !before.contains(t))
    });
    assert_eq!(task_ids(&app).len(), 3);
    for old in &before {
        wait_for("an old task killed", Duration::from_secs(30), || {
            m.killed(old).then_some(())
        });
    }

    // A task turning unhealthy is killed through Mesos and replaced.
    touch(&ctl, "unhealthy-v2");
    let victim_app = wait_app(&p, "/web", "an unhealthy task replaced", 60, |a| {
        task_ids(a).iter().any(|t| !task_ids(&app).contains(t))
    });
    let _ = std::fs::remove_file(ctl.join("unhealthy-v2"));
    wait_app(&p, "/web", "3 healthy tasks again", 90, |a| {
        a["tasksHealthy"] == 3 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    assert!(task_ids(&victim_app).len() >= 3);

    // Delete: every task killed, no process left.
    let r = p.delete("/v2/apps/web");
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("every task gone", Duration::from_secs(30), || {
        let live: Vec<_> = m
            .sim()
            .tasks()
            .into_iter()
            .filter(|t| {
                !matches!(
                    t.state,
                    v1::TaskState::TaskKilled
                        | v1::TaskState::TaskFailed
                        | v1::TaskState::TaskFinished
                )
            })
            .collect();
        (live.is_empty() && p.get("/v2/apps/web").status == 404).then_some(())
    });
    for t in m.sim().tasks() {
        if let Some(pid) = t.pid {
            wait_for("the process to exit", Duration::from_secs(10), || {
                (!alive(pid as i32)).then_some(())
            });
        }
    }
    m.assert_no_violations();
}

#[test]
fn what_pacer_sends_decodes_with_mesos_field_numbers() {
    let m = Master::start(sim_config());
    let p = start_pacer(
        &m.url(),
        &[
            "--framework_name",
            "pacer-wire",
            "--mesos_role",
            "*",
            "--reconciliation_initial_delay",
            "0",
            "--reconciliation_interval",
            "1000",
        ],
    );
    let fw = framework_id(&p);
    let app = json!({"id": "/wire/api", "cmd": "sleep 1000", "cpus": 0.25, "mem": 64, "disk": 10,
        "env": {"GREETING": "hi"}, "taskKillGracePeriodSeconds": 7,
        "labels": {"HAPROXY_GROUP": "external"},
        "portDefinitions": [{"port": 0, "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/ping", "portIndex": 0,
            "gracePeriodSeconds": 30, "intervalSeconds": 5, "timeoutSeconds": 2,
            "maxConsecutiveFailures": 4}]});
    let r = p.post("/v2/apps", &app.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    // The agent runs MESOS_HTTP checks; the simulated one is told what they found.
    let app = wait_app(&p, "/wire/api", "a running task", 30, |a| {
        a["tasksRunning"] == 1
    });
    let task_id = task_ids(&app)[0].clone();
    m.sim().set_task_health(&task_id, true);
    wait_app(&p, "/wire/api", "a healthy task", 30, |a| {
        a["tasksHealthy"] == 1 && a["deployments"].as_array().is_some_and(|d| d.is_empty())
    });
    let tasks = p.app("/wire/api")["tasks"].as_array().unwrap().clone();
    // Every --reconciliation_interval, explicit reconciliation names the tasks Pacer believes
    // alive (the task was launched after subscribing, so only the periodic one can name it).
    let named = |c: &Call| {
        c.reconcile
            .as_ref()
            .is_some_and(|r| r.tasks.iter().any(|t| t.task_id.value == task_id))
    };
    wait_for(
        "an explicit reconciliation of the task",
        Duration::from_secs(20),
        || {
            m.calls(call::Type::Reconcile)
                .iter()
                .any(|(_, c)| named(c))
                .then_some(())
        },
    );

    // SUBSCRIBE: Call{type=1 (field 2), subscribe (field 3)}, no framework id the first time.
    let subs = m.calls(call::Type::Subscribe);
    let (raw, first) = &subs[0];
    assert_eq!(field_numbers(raw), vec![2, 3]);
    assert_eq!(raw[..2], [0x10, 0x01], "type SUBSCRIBE is field 2, value 1");
    let info = &first.subscribe.as_ref().unwrap().framework_info;
    assert_eq!(info.name, "pacer-wire");
    assert_eq!(info.failover_timeout, Some(120.0));
    assert_eq!(info.checkpoint, Some(true));
    assert_eq!(info.hostname.as_deref(), Some("127.0.0.1"));
    let caps: Vec<i32> = info.capabilities.iter().filter_map(|c| c.r#type).collect();
    for cap in [2, 5] {
        assert!(
            caps.contains(&cap),
            "capability {cap} (TASK_KILLING_STATE=2, PARTITION_AWARE=5) in {caps:?}"
        );
    }

    // ACCEPT: framework_id (1), type=3 (2), accept (4) with one LAUNCH.
    let accepts = m.calls(call::Type::Accept);
    let (raw, accept) = accepts
        .iter()
        .find(|(_, c)| {
            c.accept.as_ref().unwrap().operations[0]
                .launch
                .as_ref()
                .is_some_and(|l| l.task_infos.iter().any(|t| t.task_id.value == task_id))
        })
        .expect("the ACCEPT that launched the task");
    assert_eq!(field_numbers(raw), vec![1, 2, 4]);
    assert_eq!(accept.framework_id.as_ref().unwrap().value, fw);
    let a = accept.accept.as_ref().unwrap();
    assert_eq!(a.operations[0].r#type, Some(1), "LAUNCH");
    let t = &a.operations[0].launch.as_ref().unwrap().task_infos[0];
    assert_eq!(t.name, "api.wire");
    let scalar = |name: &str| -> f64 {
        t.resources
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.scalar.as_ref().unwrap().value)
            .sum()
    };
    assert_eq!(
        (scalar("cpus"), scalar("mem"), scalar("disk")),
        (0.25, 64.0, 10.0)
    );
    let ports: Vec<u64> = t
        .resources
        .iter()
        .filter(|r| r.name == "ports")
        .flat_map(|r| r.ranges.as_ref().unwrap().range.iter().map(|x| x.begin))
        .collect();
    assert_eq!(ports.len(), 1);
    assert_eq!(tasks[0]["ports"], json!(ports));
    let cmd = t.command.as_ref().unwrap();
    assert_eq!(
        (cmd.shell, cmd.value.as_deref()),
        (Some(true), Some("sleep 1000"))
    );
    let env: std::collections::BTreeMap<_, _> = cmd
        .environment
        .as_ref()
        .unwrap()
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["PORT0"], ports[0].to_string());
    assert_eq!(env["MARATHON_APP_ID"], "/wire/api");
    let hc = t.health_check.as_ref().unwrap();
    assert_eq!(hc.r#type, Some(2), "HTTP");
    assert_eq!(hc.http.as_ref().unwrap().port as u64, ports[0]);
    assert_eq!(hc.consecutive_failures, Some(4));
    assert_eq!(hc.grace_period_seconds, Some(30.0));
    let grace = t
        .kill_policy
        .as_ref()
        .unwrap()
        .grace_period
        .as_ref()
        .unwrap();
    assert_eq!(grace.nanoseconds, 7_000_000_000);
    assert_eq!(
        t.discovery.as_ref().unwrap().ports.as_ref().unwrap().ports[0].number as u64,
        ports[0]
    );
    let labels: Vec<(&str, Option<&str>)> = t
        .labels
        .as_ref()
        .unwrap()
        .labels
        .iter()
        .map(|l| (l.key.as_str(), l.value.as_deref()))
        .collect();
    assert_eq!(labels, vec![("HAPROXY_GROUP", Some("external"))]);

    // Every ACKNOWLEDGE names a task and carries a 16-byte uuid; the simulator checks each
    // matches an update it sent (a mismatch is a violation).
    let acks = m.calls(call::Type::Acknowledge);
    assert!(acks.len() >= 2, "STARTING and RUNNING acknowledged");
    for (raw, c) in &acks {
        assert_eq!(field_numbers(raw), vec![1, 2, 8]);
        assert_eq!(c.acknowledge.as_ref().unwrap().uuid.len(), 16);
    }

    // DECLINE carries --decline_offer_duration as refuse_seconds.
    wait_for("a decline", Duration::from_secs(20), || {
        (!m.calls(call::Type::Decline).is_empty()).then_some(())
    });
    let (raw, d) = &m.calls(call::Type::Decline)[0];
    assert_eq!(field_numbers(raw), vec![1, 2, 5]);
    let refuse = d
        .decline
        .as_ref()
        .unwrap()
        .filters
        .as_ref()
        .unwrap()
        .refuse_seconds;
    assert_eq!(refuse, Some(2.0));

    // KILL: the task's agent and the app's kill grace period.
    let r = p.delete(&format!("/v2/apps/wire/api/tasks/{task_id}?scale=true"));
    assert_eq!(r.status, 200, "{}", r.text);
    wait_for("the task killed", Duration::from_secs(20), || {
        m.killed(&task_id).then_some(())
    });
    let kills = m.calls(call::Type::Kill);
    let (raw, k) = &kills[0];
    assert_eq!(field_numbers(raw), vec![1, 2, 6]);
    let k = k.kill.as_ref().unwrap();
    assert_eq!(k.task_id.value, task_id);
    assert_eq!(
        k.agent_id.as_ref().unwrap().value,
        tasks[0]["slaveId"].as_str().unwrap()
    );
    assert_eq!(
        k.kill_policy
            .as_ref()
            .unwrap()
            .grace_period
            .as_ref()
            .unwrap()
            .nanoseconds,
        7_000_000_000
    );
    // Reconciliation after subscribing: RECONCILE (9) is field 9 of Call.
    let (raw, _) = &m.calls(call::Type::Reconcile)[0];
    assert_eq!(field_numbers(raw), vec![1, 2, 9]);
    m.assert_no_violations();
}

#[test]
fn docker_apps_launch_with_a_docker_container_info() {
    let m = Master::start(sim_config());
    let p = start_pacer(&m.url(), &[]);
    let app = json!({"id": "/wire/web", "cpus": 0.1, "mem": 32,
        "container": {"type": "DOCKER",
            "docker": {"image": "nginx:1.25", "forcePullImage": true, "privileged": false,
                "parameters": [{"key": "label", "value": "team=web"}]},
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "http"}],
            "volumes": [{"containerPath": "/etc/conf", "hostPath": "/srv/conf", "mode": "RO"}]},
        "networks": [{"mode": "container/bridge"}]});
    let r = p.post("/v2/apps", &app.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let app = wait_app(&p, "/wire/web", "a running task", 30, |a| {
        a["tasksRunning"] == 1
    });
    let task_id = task_ids(&app)[0].clone();
    let host_port = app["tasks"][0]["ports"][0].as_u64().unwrap();
    let t = m
        .calls(call::Type::Accept)
        .into_iter()
        .flat_map(|(_, c)| {
            c.accept.unwrap().operations[0]
                .launch
                .clone()
                .map(|l| l.task_infos)
                .unwrap_or_default()
        })
        .find(|t| t.task_id.value == task_id)
        .expect("the task's TaskInfo");
    let c = t.container.as_ref().expect("a ContainerInfo");
    assert_eq!(c.r#type, 1, "DOCKER");
    let d = c.docker.as_ref().unwrap();
    assert_eq!(d.image, "nginx:1.25");
    assert_eq!(d.network, Some(2), "BRIDGE");
    assert_eq!(d.force_pull_image, Some(true));
    assert_eq!(d.privileged, Some(false));
    assert_eq!(
        d.parameters
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect::<Vec<_>>(),
        vec![("label", "team=web")]
    );
    let pm: Vec<(u64, u32, Option<&str>)> = d
        .port_mappings
        .iter()
        .map(|m| {
            (
                u64::from(m.host_port),
                m.container_port,
                m.protocol.as_deref(),
            )
        })
        .collect();
    assert_eq!(pm, vec![(host_port, 80, Some("tcp"))]);
    // The mapped host port is taken from the offer as a ports resource.
    let offered: Vec<u64> = t
        .resources
        .iter()
        .filter(|r| r.name == "ports")
        .flat_map(|r| r.ranges.as_ref().unwrap().range.iter().map(|x| x.begin))
        .collect();
    assert_eq!(offered, vec![host_port]);
    let v = &c.volumes[0];
    assert_eq!(
        (v.container_path.as_str(), v.host_path.as_deref(), v.mode),
        ("/etc/conf", Some("/srv/conf"), 2)
    );
    // No command: the image's entrypoint runs.
    let cmd = t.command.as_ref().unwrap();
    assert_eq!((cmd.shell, cmd.value.as_deref()), (Some(false), None));
    let env: Vec<(&str, &str)> = cmd
        .environment
        .as_ref()
        .unwrap()
        .variables
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or("")))
        .collect();
    let host_port_text = host_port.to_string();
    assert!(env.contains(&("PORT0", host_port_text.as_str())), "{env:?}");
    m.assert_no_violations();
}

/// The simulator's tasks of an app, by id prefix (`roles_reserved.` for `/roles/reserved`).
fn sim_tasks_of(m: &Master, prefix: &str) -> Vec<pacer_mesos_sim::SimTask> {
    m.sim()
        .tasks()
        .into_iter()
        .filter(|t| t.task_id.starts_with(prefix) && t.state == v1::TaskState::TaskRunning)
        .collect()
}

#[test]
fn accepted_resource_roles_choose_reserved_or_unreserved_resources() {
    // One agent: 2 cpus / 1 GB, of which 1 cpu / 256 MB are reserved for `prod`.
    let m = Master::start(SimConfig {
        agents: 1,
        agent_cpus: 2.0,
        agent_mem_mb: 1024.0,
        roles_reserved: Some(("prod".into(), 1.0, 256.0)),
        ..sim_config()
    });
    let p = start_pacer(
        &m.url(),
        &[
            "--mesos_role",
            "prod",
            "--accepted_resource_roles_default_behavior",
            "unreserved",
        ],
    );
    // Reserved resources only: two tasks take 0.8 of the reserved cpu. (No ports: the agent
    // reserves none, so a reserved-only app asking for one would wait with InsufficientPorts.)
    let reserved = json!({"id": "/roles/reserved", "cmd": "sleep 1000", "cpus": 0.4, "mem": 64,
        "instances": 2, "acceptedResourceRoles": ["prod"], "portDefinitions": []});
    assert_eq!(p.post("/v2/apps", &reserved.to_string()).status, 201);
    wait_app(&p, "/roles/reserved", "two running tasks", 30, |a| {
        a["tasksRunning"] == 2
    });
    let tasks = sim_tasks_of(&m, "roles_reserved.");
    assert_eq!(tasks.len(), 2);
    for t in &tasks {
        assert_eq!((t.cpus, t.reserved_cpus), (0.4, 0.4), "{t:?}");
        assert_eq!((t.mem_mb, t.reserved_mem_mb), (64.0, 64.0), "{t:?}");
    }
    // No acceptedResourceRoles: the default behaviour (unreserved) applies.
    let plain = json!({"id": "/roles/plain", "cmd": "sleep 1000", "cpus": 0.5, "mem": 64});
    assert_eq!(p.post("/v2/apps", &plain.to_string()).status, 201);
    wait_app(&p, "/roles/plain", "a running task", 30, |a| {
        a["tasksRunning"] == 1
    });
    let t = &sim_tasks_of(&m, "roles_plain.")[0];
    assert_eq!((t.cpus, t.reserved_cpus), (0.5, 0.0), "{t:?}");

    // 0.5 reserved cpus wanted, 0.2 left: waiting, and the queue says why, with the offer's
    // reserved resources under their role.
    let greedy = json!({"id": "/roles/greedy", "cmd": "sleep 1000", "cpus": 0.5, "mem": 64,
        "acceptedResourceRoles": ["prod"], "portDefinitions": []});
    assert_eq!(p.post("/v2/apps", &greedy.to_string()).status, 201);
    let unused = wait_for("an offer refused for cpus", Duration::from_secs(30), || {
        let q = p.get("/v2/queue?embed=lastUnusedOffers");
        let item = q.body["queue"]
            .as_array()?
            .iter()
            .find(|i| i["app"]["id"] == "/roles/greedy")?
            .clone();
        item["lastUnusedOffers"]
            .as_array()?
            .iter()
            .find(|u| u["reason"][0] == "InsufficientCpus")
            .cloned()
    });
    let cpus_of = |role: &str| -> f64 {
        unused["offer"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["name"] == "cpus" && r["role"] == role)
            .map(|r| r["scalar"].as_f64().unwrap())
            .sum()
    };
    assert!((cpus_of("prod") - 0.2).abs() < 1e-6, "{unused}");
    assert!((cpus_of("*") - 0.5).abs() < 1e-6, "{unused}");
    assert_eq!(p.app("/roles/greedy")["tasksRunning"], 0);

    // One reserved task fewer: the freed reservation takes the waiting app.
    let r = p.put(
        "/v2/apps/roles/reserved",
        &json!({"instances": 1}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    wait_app(&p, "/roles/greedy", "the waiting app running", 30, |a| {
        a["tasksRunning"] == 1
    });
    let t = &sim_tasks_of(&m, "roles_greedy.")[0];
    assert_eq!((t.cpus, t.reserved_cpus), (0.5, 0.5), "{t:?}");
    // The master checked every ACCEPT against the offer, role by role.
    m.assert_no_violations();
}

#[test]
fn lost_agents_are_replaced_by_the_unreachable_strategy() {
    let m = Master::start(SimConfig {
        agents: 3,
        ..sim_config()
    });
    let p = start_pacer(&m.url(), &[]);
    framework_id(&p);
    let app = json!({"id": "/spread", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 3,
        "constraints": [["hostname", "UNIQUE"]],
        "unreachableStrategy": {"inactiveAfterSeconds": 1, "expungeAfterSeconds": 2}});
    let r = p.post("/v2/apps", &app.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let tasks = p.wait_running("/spread", 3);
    let victim = tasks[0].clone();
    let agent = victim["slaveId"].as_str().unwrap().to_string();
    let victim_id = victim["id"].as_str().unwrap().to_string();

    m.sim().lose_agent(&agent);
    // UNIQUE hostname and one agent gone: the replacement waits for the agent to come back, so
    // first see the task reported unreachable.
    wait_for("the task unreachable", Duration::from_secs(20), || {
        let app = p.app("/spread");
        app["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == victim_id.as_str() && t["state"] == "TASK_UNREACHABLE")
            .then_some(())
    });
    // Add a fresh agent: the replacement goes there.
    m.sim().add_agents(1);
    let app = wait_app(&p, "/spread", "a replacement running", 30, |a| {
        a["tasksRunning"] == 3 && !task_ids(a).contains(&victim_id)
    });
    assert!(app["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["slaveId"] != agent.as_str()));

    // The lost agent comes back with its task: Pacer has replaced it, so it is killed.
    m.sim().reregister_agent(&agent);
    wait_for("the returning task killed", Duration::from_secs(30), || {
        m.killed(&victim_id).then_some(())
    });
    p.wait_running("/spread", 3);
    m.assert_no_violations();
}

#[test]
fn failed_tasks_are_relaunched_and_reported_as_last_task_failure() {
    let m = Master::start(sim_config());
    let p = start_pacer(&m.url(), &[]);
    framework_id(&p);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/flaky", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "backoffSeconds": 1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let first = p.wait_running("/flaky", 1)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    m.sim().fail_task(&first, "Command exited with status 3");
    let app = wait_app(&p, "/flaky", "a relaunch", 30, |a| {
        a["tasksRunning"] == 1 && !task_ids(a).contains(&first)
    });
    let failure =
        &p.get("/v2/apps/flaky?embed=apps.lastTaskFailure").body["app"]["lastTaskFailure"];
    assert_eq!(failure["taskId"], first.as_str());
    assert_eq!(failure["state"], "TASK_FAILED");
    assert_eq!(failure["message"], "Command exited with status 3");
    assert_eq!(app["tasks"].as_array().unwrap().len(), 1);
    m.assert_no_violations();
}

#[test]
fn pacer_survives_dropped_streams_silence_and_master_failover() {
    let m = Master::start(SimConfig {
        agents: 2,
        ..sim_config()
    });
    let p = start_pacer(&m.url(), &[]);
    let fw = framework_id(&p);
    let r = p.post(
        "/v2/apps",
        r#"{"id": "/steady", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let ids: Vec<String> = task_ids(&json!({"tasks": p.wait_running("/steady", 2)}));
    let subscribed = |n: usize| {
        wait_for(
            &format!("subscription {n}"),
            Duration::from_secs(30),
            || {
                (m.sim().subscriptions() >= n
                    && m.sim()
                        .framework()
                        .is_some_and(|f| f.connected && f.id == fw))
                .then_some(())
            },
        )
    };
    let reconciles = || m.calls(call::Type::Reconcile).len();

    // 1. The master closes the stream: Pacer resubscribes with its framework id.
    let r0 = reconciles();
    m.sim().drop_stream();
    subscribed(2);
    wait_for(
        "reconciliation after resubscribing",
        Duration::from_secs(10),
        || (reconciles() > r0).then_some(()),
    );

    // 2. The stream stays open but goes silent: Pacer notices the missing heartbeats.
    m.sim().mute(true);
    subscribed(3);
    m.sim().mute(false);

    // 3. Master failover: the old address redirects, the new master forgets the framework.
    let old = m.url();
    m.rt.block_on(m.sim().failover());
    assert_ne!(m.url(), old);
    subscribed(4);
    let subs = m.calls(call::Type::Subscribe);
    let last = &subs.last().unwrap().1;
    assert_eq!(
        last.framework_id.as_ref().map(|f| f.value.as_str()),
        Some(fw.as_str())
    );
    assert_eq!(
        last.subscribe
            .as_ref()
            .unwrap()
            .framework_info
            .id
            .as_ref()
            .map(|f| f.value.as_str()),
        Some(fw.as_str())
    );

    // Tasks were kept throughout; the app still scales on the new master.
    let now = task_ids(&json!({"tasks": p.wait_running("/steady", 2)}));
    assert_eq!(now, ids);
    let r = p.put("/v2/apps/steady", r#"{"instances": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    p.wait_running("/steady", 3);
    assert_eq!(running_in_sim(&m, "steady").len(), 3);
    let events = p.get("/v2/info").body;
    assert_eq!(events["frameworkId"], fw.as_str());
    m.assert_no_violations();
}

#[test]
fn a_new_pacer_leader_keeps_the_framework_and_its_tasks() {
    let zk = pacer_zk::testing::ZkCluster::start(1);
    let zk_url = format!("zk://{}", zk.hosts());
    let m = Master::start(SimConfig {
        agents: 2,
        zk: Some(format!("{zk_url}/mesos")),
        ..sim_config()
    });
    // Masters are found through ZooKeeper, state lives there too.
    let master = format!("{zk_url}/mesos");
    let state = format!("{zk_url}/pacer");
    let a = start_pacer(&master, &["--zk", &state, "--zk_session_timeout", "4000"]);
    let fw = framework_id(&a);
    let r = a.post(
        "/v2/apps",
        r#"{"id": "/kept", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let ids = task_ids(&json!({"tasks": a.wait_running("/kept", 2)}));
    let b = start_pacer(&master, &["--zk", &state, "--zk_session_timeout", "4000"]);
    let mut a = a;
    a.kill9();

    // B takes over: same framework, the same tasks (reconciled, not relaunched).
    wait_for("B to lead", Duration::from_secs(30), || {
        (b.get("/v2/leader").status == 200 && b.get("/v2/info").body["elected"] == true)
            .then_some(())
    });
    assert_eq!(framework_id(&b), fw);
    let now = task_ids(&json!({"tasks": b.wait_running("/kept", 2)}));
    assert_eq!(now, ids);
    let subs = m.calls(call::Type::Subscribe);
    assert!(subs.len() >= 2);
    assert_eq!(
        subs.last()
            .unwrap()
            .1
            .framework_id
            .as_ref()
            .map(|f| f.value.as_str()),
        Some(fw.as_str())
    );

    // The master fails over too: B finds the new one through ZooKeeper.
    let old = m.url();
    m.rt.block_on(m.sim().failover());
    assert_ne!(m.url(), old);
    wait_for("B on the new master", Duration::from_secs(30), || {
        m.sim()
            .framework()
            .is_some_and(|f| f.connected && f.id == fw)
            .then_some(())
    });
    let r = b.put("/v2/apps/kept", r#"{"instances": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    b.wait_running("/kept", 3);
    m.assert_no_violations();
    let _ = Value::Null;
}
