//! `run_commands`: tasks as real local processes.

mod common;

use common::*;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use pacer_mesos_proto::v1;
use pacer_mesos_proto::v1::framework_info::capability::Type as Cap;
use pacer_mesos_proto::v1::TaskState;
use pacer_mesos_sim::{Sim, SimConfig};
use std::time::Duration;

fn config() -> SimConfig {
    SimConfig {
        agents: 1,
        agent_hostname: Some("127.0.0.1".into()),
        allocation_interval: Duration::from_millis(50),
        run_commands: true,
        ..Default::default()
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test]
async fn commands_run_are_killed_and_report_their_exit() {
    let sim = Sim::start(config()).await.unwrap();
    let caps = [Cap::PartitionAware, Cap::TaskKillingState];
    let mut s = Stream::subscribe(&sim.url(), framework_info("procs", &caps), false).await;
    let offers = s.offers().await;
    let o = &offers[0];
    assert_eq!(o.hostname, "127.0.0.1");
    let sleeper = task("sleeper", o, 0.5, 32.0, "sleep 1000");
    let failing = task("failing", o, 0.5, 32.0, "exit 3");
    let mut env_check = task(
        "env",
        o,
        0.5,
        32.0,
        r#"test "$MESOS_TASK_ID" = env && test -d "$MESOS_SANDBOX" && test "$GREETING" = hello"#,
    );
    env_check.command.as_mut().unwrap().environment = Some(v1::Environment {
        variables: vec![v1::environment::Variable {
            name: "GREETING".into(),
            value: Some("hello".into()),
            ..Default::default()
        }],
    });
    let mut argv = task("argv", o, 0.5, 32.0, "/bin/sh");
    let cmd = argv.command.as_mut().unwrap();
    cmd.shell = Some(false);
    cmd.arguments = vec!["sh".into(), "-c".into(), "exit 0".into()];
    s.accept(&[&o.id], vec![sleeper, failing, env_check, argv], Some(0.0))
        .await;

    let mut finals = std::collections::BTreeMap::new();
    let mut sleeper_running = None;
    while finals.len() < 3 || sleeper_running.is_none() {
        let st = s.update_acked().await;
        let state = state_of(&st);
        match (st.task_id.value.as_str(), state) {
            ("sleeper", TaskState::TaskRunning) => {
                let net = &st.container_status.as_ref().unwrap().network_infos[0];
                assert_eq!(net.ip_addresses[0].ip_address.as_deref(), Some("127.0.0.1"));
                sleeper_running = Some(st);
            }
            (_, TaskState::TaskStarting | TaskState::TaskRunning) => {}
            (id, _) => {
                finals.insert(id.to_string(), (state, st.message.unwrap_or_default()));
            }
        }
    }
    assert_eq!(
        finals["failing"],
        (
            TaskState::TaskFailed,
            "Command exited with status 3".to_string()
        )
    );
    assert_eq!(
        finals["env"].0,
        TaskState::TaskFinished,
        "{:?}",
        finals["env"]
    );
    assert_eq!(
        finals["argv"].0,
        TaskState::TaskFinished,
        "{:?}",
        finals["argv"]
    );

    let pid = sim.task("sleeper").unwrap().pid.expect("a real process");
    assert!(alive(pid));
    s.kill("sleeper", None).await;
    let st = s.update_acked().await;
    assert_eq!(state_of(&st), TaskState::TaskKilling);
    let st = s.update_acked().await;
    assert_eq!(state_of(&st), TaskState::TaskKilled);
    assert_eq!(
        st.message.as_deref(),
        Some("Command terminated with signal SIGTERM")
    );
    eventually("the process is gone", || !alive(pid)).await;
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    sim.stop().await;
}

#[tokio::test]
async fn failing_health_check_kills_the_task() {
    let sim = Sim::start(config()).await.unwrap();
    let mut s = Stream::subscribe(
        &sim.url(),
        framework_info("health", &[Cap::PartitionAware]),
        false,
    )
    .await;
    let offers = s.offers().await;
    let o = &offers[0];
    let mut t = task("sick", o, 0.5, 32.0, "sleep 1000");
    t.health_check = Some(v1::HealthCheck {
        r#type: Some(v1::health_check::Type::Command as i32),
        command: Some(v1::CommandInfo {
            value: Some("exit 1".into()),
            ..Default::default()
        }),
        delay_seconds: Some(0.0),
        interval_seconds: Some(0.1),
        grace_period_seconds: Some(0.0),
        consecutive_failures: Some(2),
        timeout_seconds: Some(5.0),
        ..Default::default()
    });
    s.accept(&[&o.id], vec![t], Some(0.0)).await;
    let mut unhealthy = 0;
    loop {
        let st = s.update_acked().await;
        match state_of(&st) {
            TaskState::TaskStarting => {}
            TaskState::TaskRunning if st.healthy.is_none() => {}
            TaskState::TaskRunning => {
                assert_eq!(st.healthy, Some(false));
                unhealthy += 1;
            }
            TaskState::TaskKilled => {
                assert_eq!(st.healthy, Some(false));
                break;
            }
            other => panic!("unexpected {other:?}: {st:?}"),
        }
    }
    assert_eq!(unhealthy, 2);
    sim.stop().await;
}
