//! `pacer-mesos-sim`: runs the simulated Mesos master until SIGTERM or Ctrl-C.

use clap::Parser;
use pacer_mesos_sim::{Sim, SimConfig};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pacer-mesos-sim",
    about = "A simulated Mesos master (v1 scheduler API) with simulated agents and tasks"
)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Agents registered at start.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    #[arg(long, default_value_t = 4.0)]
    agent_cpus: f64,
    /// Memory per agent in MB.
    #[arg(long, default_value_t = 8192.0)]
    agent_mem: f64,
    /// Disk per agent in MB.
    #[arg(long, default_value_t = 10000.0)]
    agent_disk: f64,
    /// Port ranges per agent, e.g. `31000-32000` or `10000-10100,20000-20100`.
    #[arg(long, default_value = "31000-32000", value_parser = parse_ranges)]
    agent_ports: Ranges,
    /// One hostname for every agent (default: agent-<n>.sim).
    #[arg(long)]
    agent_hostname: Option<String>,
    /// Reserve resources on every agent for a role: `role:cpus:mem`.
    #[arg(long, value_parser = parse_reservation)]
    reserve: Option<(String, f64, f64)>,
    #[arg(long, default_value_t = 15_000)]
    heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = 1_000)]
    allocation_interval_ms: u64,
    #[arg(long, default_value_t = 20)]
    starting_after_ms: u64,
    #[arg(long, default_value_t = 20)]
    running_after_ms: u64,
    #[arg(long, default_value_t = 20)]
    kill_after_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    status_retry_ms: u64,
    /// Run tasks with a CommandInfo as real local processes.
    #[arg(long)]
    run_commands: bool,
    /// Announce the master in ZooKeeper: zk://host:port/mesos.
    #[arg(long)]
    zk: Option<String>,
    /// Do not keep the scheduler calls (saves memory in long benchmarks).
    #[arg(long)]
    no_record_calls: bool,
}

#[derive(Clone, Debug)]
struct Ranges(Vec<(u64, u64)>);

fn parse_ranges(s: &str) -> Result<Ranges, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (b, e) = part.split_once('-').unwrap_or((part, part));
        let b: u64 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad port range '{part}'"))?;
        let e: u64 = e
            .trim()
            .parse()
            .map_err(|_| format!("bad port range '{part}'"))?;
        if b > e {
            return Err(format!("bad port range '{part}'"));
        }
        out.push((b, e));
    }
    Ok(Ranges(out))
}

fn parse_reservation(s: &str) -> Result<(String, f64, f64), String> {
    let mut it = s.split(':');
    let (Some(role), Some(c), Some(m), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err("expected role:cpus:mem".into());
    };
    let c = c.parse().map_err(|_| "cpus must be a number".to_string())?;
    let m = m.parse().map_err(|_| "mem must be a number".to_string())?;
    Ok((role.to_string(), c, m))
}

#[tokio::main]
async fn main() -> anyhow_free::Result {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let ms = Duration::from_millis;
    let cfg = SimConfig {
        agents: a.agents,
        agent_cpus: a.agent_cpus,
        agent_mem_mb: a.agent_mem,
        agent_disk_mb: a.agent_disk,
        agent_ports: a.agent_ports.0,
        agent_hostname: a.agent_hostname,
        roles_reserved: a.reserve,
        heartbeat_interval: ms(a.heartbeat_interval_ms),
        allocation_interval: ms(a.allocation_interval_ms.max(1)),
        starting_after: ms(a.starting_after_ms),
        running_after: ms(a.running_after_ms),
        kill_after: ms(a.kill_after_ms),
        status_retry: ms(a.status_retry_ms.max(1)),
        run_commands: a.run_commands,
        zk: a.zk,
        port: a.port,
        record_calls: !a.no_record_calls,
    };
    let sim = Sim::start(cfg).await?;
    println!("listening on {}", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    sim.stop().await;
    Ok(())
}

mod anyhow_free {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}
