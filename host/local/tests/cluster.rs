//! The local agent with real processes in temporary data directories. Every wait is on events
//! from the sink (or on a condition), bounded by a generous timeout; nothing sleeps to "let
//! things settle".

use pacer_core::cluster::*;
use pacer_core::id::{InstanceId, PathId, TaskId};
use pacer_local::{LocalCluster, LocalConfig};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

struct Agent {
    cluster: Arc<LocalCluster>,
    events: mpsc::UnboundedReceiver<ClusterEvent>,
    pending: VecDeque<ClusterEvent>,
}

impl Agent {
    fn start(config: LocalConfig) -> Agent {
        let (tx, events) = mpsc::unbounded_channel();
        let sink: ClusterEventSink = Arc::new(move |ev| {
            let _ = tx.send(ev);
        });
        let cluster = LocalCluster::start(config, sink).expect("local agent starts");
        Agent {
            cluster,
            events,
            pending: VecDeque::new(),
        }
    }

    /// The next event in arrival order (nothing may be buffered).
    async fn next(&mut self) -> ClusterEvent {
        if let Some(ev) = self.pending.pop_front() {
            return ev;
        }
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("event channel closed")
    }

    /// The first event matching `pred`; others are kept for later waits.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&ClusterEvent) -> bool) -> ClusterEvent {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {what}; unconsumed: {:?}",
                        self.pending
                    )
                })
                .expect("event channel closed");
            if pred(&ev) {
                return ev;
            }
            self.pending.push_back(ev);
        }
    }

    async fn offer(&mut self) -> Offer {
        match self
            .wait_for("an offer", |e| matches!(e, ClusterEvent::Offer(_)))
            .await
        {
            ClusterEvent::Offer(o) => o,
            _ => unreachable!(),
        }
    }

    async fn status(&mut self, task: &TaskId) -> TaskStatus {
        let what = format!("a status of {task}");
        match self
            .wait_for(
                &what,
                |e| matches!(e, ClusterEvent::Status(s) if &s.task_id == task),
            )
            .await
        {
            ClusterEvent::Status(s) => s,
            _ => unreachable!(),
        }
    }

    /// Asserts the next statuses of `task` have exactly these states, returning the last one.
    async fn expect_states(&mut self, task: &TaskId, states: &[TaskState]) -> TaskStatus {
        let mut last = None;
        for want in states {
            let s = self.status(task).await;
            assert_eq!(s.state, *want, "status of {task}: {s:?}");
            last = Some(s);
        }
        last.unwrap()
    }

    async fn launch_one(&mut self, spec_for: impl FnOnce(&Offer) -> LaunchSpec) -> TaskId {
        self.cluster.revive();
        let offer = self.offer().await;
        let spec = spec_for(&offer);
        let id = spec.task_id.clone();
        self.cluster.launch(offer.id, vec![spec]);
        id
    }

    fn record_pid(&self, task: &TaskId) -> u32 {
        let path = self
            .cluster
            .data_dir()
            .join("local/tasks")
            .join(format!("{task}.json"));
        let text = std::fs::read_to_string(&path).expect("task record exists while the task runs");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["pid"].as_u64().expect("record has a pid") as u32
    }
}

fn config(dir: &Path) -> LocalConfig {
    let mut c = LocalConfig::new(dir);
    c.hostname = "test-host".into();
    c.cpus = Some(4.0);
    c.mem_mb = Some(4096.0);
    c.disk_mb = Some(10_000.0);
    c.ports = vec![PortRange {
        begin: 31000,
        end: 31009,
    }];
    c
}

fn task_id() -> (TaskId, InstanceId, PathId) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let app = PathId::resolve("/test/app", &PathId::root()).unwrap();
    let inst = InstanceId::new(
        &app,
        &format!("00000000-0000-1000-8000-{:06x}{n:06x}", std::process::id()),
    );
    (TaskId::new(&inst, 1), inst, app)
}

fn spec(offer: &Offer, command: CommandSpec) -> LaunchSpec {
    let (task_id, instance_id, app_id) = task_id();
    LaunchSpec {
        task_id,
        instance_id,
        app_id,
        offer_id: offer.id.clone(),
        agent_id: offer.agent_id.clone(),
        hostname: offer.hostname.clone(),
        command,
        user: None,
        env: BTreeMap::new(),
        cpus: 0.1,
        mem_mb: 32.0,
        disk_mb: 0.0,
        host_ports: vec![],
        docker: None,
        kill_grace: None,
        fetch: vec![],
        health_checks: vec![],
        resource_roles: vec![],
        labels: BTreeMap::new(),
    }
}

fn shell(offer: &Offer, cmd: &str) -> LaunchSpec {
    spec(offer, CommandSpec::Shell(cmd.into()))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Live (non-zombie) processes in process group `pgid`.
fn live_in_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let dead = matches!(f[0], "Z" | "X");
        if !dead && f[2].parse::<u32>().ok() == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Polls a condition that has no event (process death, file removal) until it holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(cluster: &LocalCluster, task: &TaskId, grace: Option<Duration>) {
    cluster.kill(KillRequest {
        task_id: task.clone(),
        agent_id: None,
        grace,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_shows_machine_resources_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalConfig::new(dir.path());
    c.hostname = "box-1".into();
    c.attributes
        .insert("rack".into(), AttributeValue::Text("r1".into()));
    let mut a = Agent::start(c);
    a.cluster.revive();
    let o = a.offer().await;
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let meminfo = read("/proc/meminfo".into());
    let kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(o.cpus, cpus);
    assert_eq!(o.mem_mb, (kb / 1024.0).floor());
    assert!(o.disk_mb > 0.0);
    assert_eq!(o.gpus, 0.0);
    assert_eq!(
        o.ports,
        vec![PortRange {
            begin: 31000,
            end: 32000
        }]
    );
    assert_eq!(o.hostname, "box-1");
    assert_eq!(o.agent_id, AgentId("local-box-1".into()));
    assert_eq!(a.cluster.agent_id(), &o.agent_id);
    assert_eq!(
        o.attributes.get("rack"),
        Some(&AttributeValue::Text("r1".into()))
    );
    assert_eq!(a.cluster.name(), "local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_reports_its_status_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    let id = a
        .launch_one(|o| shell(o, "echo hi; echo oops >&2; exit 3"))
        .await;
    a.expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;
    let end = a.expect_states(&id, &[TaskState::Failed]).await;
    assert_eq!(end.message.as_deref(), Some("Command exited with status 3"));
    assert_eq!(end.agent_id, Some(AgentId("local-test-host".into())));
    let sandbox = a.cluster.sandbox_dir(&id);
    assert_eq!(read(sandbox.join("stdout")), "hi\n");
    assert_eq!(read(sandbox.join("stderr")), "oops\n");
    // The record goes once the terminal status was sent.
    let record = a
        .cluster
        .data_dir()
        .join("local/tasks")
        .join(format!("{id}.json"));
    eventually("the task record is removed", || !record.exists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_command_and_task_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    let id = a
        .launch_one(|o| {
            let mut s = shell(
                o,
                r#"echo "FOO=$FOO"; echo "PORT0=$PORT0"; echo "SANDBOX=$MESOS_SANDBOX"; echo "PWD=$(pwd)"; echo "PATH_SET=${PATH:+yes}"; env"#,
            );
            s.env.insert("FOO".into(), "bar baz".into());
            s.env.insert("PORT0".into(), "31005".into());
            s.host_ports = vec![31005];
            s
        })
        .await;
    let end = a
        .expect_states(
            &id,
            &[TaskState::Starting, TaskState::Running, TaskState::Finished],
        )
        .await;
    assert_eq!(end.message.as_deref(), Some("Command exited with status 0"));
    let sandbox = a.cluster.sandbox_dir(&id);
    let out = read(sandbox.join("stdout"));
    assert!(out.contains("FOO=bar baz\n"), "{out}");
    assert!(out.contains("PORT0=31005\n"), "{out}");
    assert!(
        out.contains(&format!("SANDBOX={}\n", sandbox.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("PWD={}\n", sandbox.display())),
        "{out}"
    );
    assert!(out.contains("PATH_SET=yes\n"), "{out}");
    // Pacer's own environment does not leak into tasks.
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        assert!(!out.contains("CARGO_MANIFEST_DIR="), "{out}");
    }

    // An argument vector runs without a shell, found through PATH.
    let id = a
        .launch_one(|o| {
            let mut s = spec(o, CommandSpec::Args(vec!["printenv".into(), "FOO".into()]));
            s.env.insert("FOO".into(), "$not expanded".into());
            s
        })
        .await;
    a.expect_states(
        &id,
        &[TaskState::Starting, TaskState::Running, TaskState::Finished],
    )
    .await;
    assert_eq!(
        read(a.cluster.sandbox_dir(&id).join("stdout")),
        "$not expanded\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failure_is_a_failed_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    let id = a
        .launch_one(|o| spec(o, CommandSpec::Args(vec!["/nonexistent/program".into()])))
        .await;
    let end = a
        .expect_states(&id, &[TaskState::Starting, TaskState::Failed])
        .await;
    let msg = end.message.unwrap();
    assert!(
        msg.starts_with("Failed to start the command:") && msg.contains("No such file"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_terminates_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    // A background child in the same group, and a foreground sleep.
    let id = a
        .launch_one(|o| shell(o, "sleep 1000 & sleep 1000; wait"))
        .await;
    a.expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;
    let pgid = a.record_pid(&id);
    eventually("both sleeps run", || live_in_group(pgid).len() >= 3).await;
    kill(&a.cluster, &id, Some(Duration::from_secs(10)));
    a.expect_states(&id, &[TaskState::Killing]).await;
    let end = a.expect_states(&id, &[TaskState::Killed]).await;
    assert_eq!(
        end.message.as_deref(),
        Some("Command terminated with signal SIGTERM")
    );
    eventually("the process group is gone", || {
        live_in_group(pgid).is_empty()
    })
    .await;

    // Killing it again repeats its terminal status; killing an unknown task says so.
    kill(&a.cluster, &id, None);
    assert_eq!(a.status(&id).await.state, TaskState::Killed);
    let (unknown, _, _) = task_id();
    kill(&a.cluster, &unknown, None);
    let s = a.status(&unknown).await;
    assert_eq!(s.state, TaskState::Killed);
    assert_eq!(s.message.as_deref(), Some("Task is not known to the agent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_ignoring_sigterm_is_sigkilled_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    // The kill must not race the shell installing its trap (RUNNING is reported at spawn).
    let trapped = dir.path().join("trapped");
    let cmd = format!("trap '' TERM; touch '{}'; sleep 1000", trapped.display());
    let id = a
        .launch_one(|o| {
            let mut s = shell(o, &cmd);
            s.kill_grace = Some(Duration::from_millis(300));
            s
        })
        .await;
    a.expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;
    eventually("the trap to be installed", || trapped.exists()).await;
    let pgid = a.record_pid(&id);
    let t0 = Instant::now();
    kill(&a.cluster, &id, None);
    a.expect_states(&id, &[TaskState::Killing]).await;
    let end = a.expect_states(&id, &[TaskState::Killed]).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "SIGKILL only after the grace period"
    );
    assert_eq!(
        end.message.as_deref(),
        Some("Command terminated with signal SIGKILL")
    );
    eventually("the process group is gone", || {
        live_in_group(pgid).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_shrink_while_a_task_runs_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    a.cluster.revive();
    let first = a.offer().await;
    assert_eq!(
        (first.cpus, first.mem_mb, first.disk_mb),
        (4.0, 4096.0, 10_000.0)
    );
    assert_eq!(
        first.ports,
        vec![PortRange {
            begin: 31000,
            end: 31009
        }]
    );
    let mut s = shell(&first, "sleep 1000");
    (s.cpus, s.mem_mb, s.disk_mb, s.host_ports) = (1.5, 1024.0, 100.0, vec![31003, 31009]);
    let id = s.task_id.clone();
    a.cluster.launch(first.id.clone(), vec![s]);

    // Still revived: the rest is offered at once.
    let second = a.offer().await;
    assert_ne!(second.id, first.id);
    assert_eq!(
        (second.cpus, second.mem_mb, second.disk_mb),
        (2.5, 3072.0, 9_900.0)
    );
    assert_eq!(
        second.ports,
        vec![
            PortRange {
                begin: 31000,
                end: 31002
            },
            PortRange {
                begin: 31004,
                end: 31008
            }
        ]
    );
    a.expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;

    // A used offer is gone: launching on it again drops the task.
    let stale = shell(&first, "true");
    let stale_id = stale.task_id.clone();
    a.cluster.launch(first.id.clone(), vec![stale]);
    let dropped = a.status(&stale_id).await;
    assert_eq!(dropped.state, TaskState::Dropped);
    assert!(dropped.message.unwrap().contains("not outstanding"));

    // Declined for an hour, yet the task's end frees resources and lifts the filter.
    a.cluster
        .decline(second.id.clone(), Duration::from_secs(3600));
    kill(&a.cluster, &id, None);
    a.expect_states(&id, &[TaskState::Killing, TaskState::Killed])
        .await;
    let third = a.offer().await;
    assert_eq!(
        (third.cpus, third.mem_mb, third.disk_mb),
        (4.0, 4096.0, 10_000.0)
    );
    assert_eq!(
        third.ports,
        vec![PortRange {
            begin: 31000,
            end: 31009
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_holds_back_offers_until_refuse_elapses() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Agent::start(config(dir.path()));
    let (unknown, _, _) = task_id();
    a.cluster.revive();
    let ClusterEvent::Offer(first) = a.next().await else {
        panic!("expected an offer")
    };

    // A long filter: the reconcile answer comes, and no offer before it.
    a.cluster
        .decline(first.id.clone(), Duration::from_secs(3600));
    a.cluster.reconcile(vec![unknown.clone()]);
    match a.next().await {
        ClusterEvent::Status(s) => {
            assert_eq!((s.task_id, s.state), (unknown.clone(), TaskState::Gone));
            assert_eq!(
                s.message.as_deref(),
                Some("Task is unknown to the local agent")
            );
        }
        other => panic!("expected the reconcile answer before any offer, got {other:?}"),
    }

    // Reviving lifts filters (as in Mesos).
    a.cluster.revive();
    let ClusterEvent::Offer(second) = a.next().await else {
        panic!("expected an offer")
    };
    assert_ne!(second.id, first.id);

    // A short filter: the next event is a fresh offer, not before the refuse time.
    let t0 = Instant::now();
    a.cluster
        .decline(second.id.clone(), Duration::from_millis(200));
    let ClusterEvent::Offer(third) = a.next().await else {
        panic!("expected an offer")
    };
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_ne!(third.id, second.id);

    // Suppressed: the filter ends but no offer follows; the reconcile answer is next.
    a.cluster.suppress();
    a.cluster
        .decline(third.id.clone(), Duration::from_millis(100));
    // Outlast the filter before asking, so a wrong offer would come first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.cluster.reconcile(vec![unknown.clone()]);
    let ClusterEvent::Status(s) = a.next().await else {
        panic!("no offer while suppressed")
    };
    assert_eq!(s.state, TaskState::Gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_task_is_readopted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Agent::start(config(dir.path()));
    let id = first
        .launch_one(|o| {
            let mut s = shell(o, "sleep 1000");
            (s.cpus, s.host_ports) = (2.0, vec![31001]);
            s
        })
        .await;
    first
        .expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;
    let pid = first.record_pid(&id);
    // "Crash": the agent goes away without touching its task.
    drop(first);

    let mut second = Agent::start(config(dir.path()));
    second.cluster.reconcile(vec![id.clone()]);
    assert_eq!(second.status(&id).await.state, TaskState::Running);
    second.cluster.reconcile(vec![]);
    let s = second.status(&id).await;
    assert_eq!(
        (s.state, s.agent_id),
        (TaskState::Running, Some(AgentId("local-test-host".into())))
    );

    // Its resources stay taken.
    second.cluster.revive();
    let offer = second.offer().await;
    assert_eq!(offer.cpus, 2.0);
    assert_eq!(
        offer.ports,
        vec![
            PortRange {
                begin: 31000,
                end: 31000
            },
            PortRange {
                begin: 31002,
                end: 31009
            }
        ]
    );

    kill(&second.cluster, &id, None);
    second.expect_states(&id, &[TaskState::Killing]).await;
    let end = second.expect_states(&id, &[TaskState::Killed]).await;
    assert!(end.message.unwrap().contains("exit status is unknown"));
    eventually("the process group is gone", || {
        live_in_group(pid).is_empty()
    })
    .await;
    let record = second
        .cluster
        .data_dir()
        .join("local/tasks")
        .join(format!("{id}.json"));
    eventually("the task record is removed", || !record.exists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_that_died_while_pacer_was_down_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Agent::start(config(dir.path()));
    let id = first.launch_one(|o| shell(o, "sleep 1000")).await;
    first
        .expect_states(&id, &[TaskState::Starting, TaskState::Running])
        .await;
    let pid = first.record_pid(&id);
    drop(first);
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eventually("the task died", || live_in_group(pid).is_empty()).await;

    let mut second = Agent::start(config(dir.path()));
    // Not holding resources any more.
    second.cluster.revive();
    assert_eq!(second.offer().await.cpus, 4.0);
    second.cluster.reconcile(vec![]);
    let s = second.status(&id).await;
    assert_eq!(s.state, TaskState::Failed);
    assert_eq!(
        s.message.as_deref(),
        Some("Task exited while Pacer was not running")
    );
    let record = second
        .cluster
        .data_dir()
        .join("local/tasks")
        .join(format!("{id}.json"));
    eventually("the task record is removed", || !record.exists()).await;
    // Still answerable by id afterwards.
    second.cluster.reconcile(vec![id.clone()]);
    assert_eq!(second.status(&id).await.state, TaskState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_without_an_engine_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.docker_bin = "/bin/false".into();
    let mut a = Agent::start(c);
    let id = a
        .launch_one(|o| {
            let mut s = spec(o, CommandSpec::ImageDefault);
            s.docker = Some(docker_spec());
            s
        })
        .await;
    let end = a
        .expect_states(&id, &[TaskState::Starting, TaskState::Failed])
        .await;
    let msg = end.message.unwrap();
    assert!(msg.starts_with("Docker engine not reachable"), "{msg}");
}

fn docker_spec() -> DockerSpec {
    DockerSpec {
        image: "busybox:1".into(),
        force_pull: false,
        privileged: false,
        parameters: vec![],
        network: NetworkSpec::Bridge,
        port_mappings: vec![PortMappingSpec {
            container_port: 80,
            host_port: Some(31002),
            protocol: "tcp".into(),
        }],
        volumes: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_task_runs_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    // A stand-in CLI: `info` succeeds, `run` prints its arguments and exits 0.
    let fake = dir.path().join("fake-docker");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncase \"$1\" in\n  run) echo \"$@\" ;;\n  *) ;;\nesac\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test's fork may briefly hold the file open for writing ("text file busy").
    let deadline = Instant::now() + WAIT;
    while let Err(e) = tokio::process::Command::new(&fake)
        .arg("version")
        .status()
        .await
    {
        assert!(Instant::now() < deadline, "cannot run the fake docker: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = config(dir.path().join("data").as_path());
    c.docker_bin = fake;
    let mut a = Agent::start(c);
    let id = a
        .launch_one(|o| {
            let mut s = shell(o, "echo hello");
            s.docker = Some(docker_spec());
            s.host_ports = vec![31002];
            s.env.insert("HOST".into(), "test-host".into());
            s
        })
        .await;
    a.expect_states(
        &id,
        &[TaskState::Starting, TaskState::Running, TaskState::Finished],
    )
    .await;
    let sandbox = a.cluster.sandbox_dir(&id);
    let out = read(sandbox.join("stdout"));
    let expected = format!(
        "run --rm --init --name {id} -p 31002:80/tcp -e HOST=test-host -e MESOS_SANDBOX=/mnt/mesos/sandbox \
         -v {}:/mnt/mesos/sandbox --network bridge --label MESOS_TASK_ID={id} --entrypoint /bin/sh busybox:1 -c echo hello\n",
        sandbox.display()
    );
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_as_the_requested_user() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    // The task's user must be able to reach its sandbox.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut a = Agent::start(config(dir.path()));
    let id = a
        .launch_one(|o| {
            let mut s = shell(o, "id -u");
            s.user = Some("nobody".into());
            s
        })
        .await;
    a.expect_states(&id, &[TaskState::Starting]).await;
    let end = a.status(&id).await;
    if nix::unistd::geteuid().is_root() {
        assert_eq!(end.state, TaskState::Running, "{end:?}");
        a.expect_states(&id, &[TaskState::Finished]).await;
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            read(a.cluster.sandbox_dir(&id).join("stdout")).trim(),
            nobody.uid.to_string()
        );
    } else {
        assert_eq!(end.state, TaskState::Failed);
        assert!(end.message.unwrap().contains("only root can switch users"));
    }
    let id = a
        .launch_one(|o| {
            let mut s = shell(o, "true");
            s.user = Some("no-such-user-here".into());
            s
        })
        .await;
    let end = a
        .expect_states(&id, &[TaskState::Starting, TaskState::Failed])
        .await;
    assert_eq!(
        end.message.as_deref(),
        Some("User 'no-such-user-here' does not exist on this agent")
    );
}
