//! The `pacer` daemon: parses flags, opens the store, starts the cluster backend and the HTTP API,
//! and runs the scheduler loop.

mod callbacks;
mod flags;
mod runtime;

use anyhow::Context;
use clap::Parser;
use flags::Flags;
use pacer_api::{ApiContext, ServerInfo};
use pacer_core::cluster::{ClusterEvent, ClusterEventSink};
use pacer_core::machine::{Config, Scheduler};
use pacer_local::{LocalCluster, LocalConfig};
use pacer_store::{EmbeddedStore, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info};

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    init_tracing(&flags.logging_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pacer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!(message = "Pacer stopped.", error = format!("{e:#}"));
            eprintln!("pacer: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},tower_http=warn,hyper=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

async fn run(flags: Flags) -> anyhow::Result<()> {
    let hostname = flags.hostname.clone().unwrap_or_else(machine_hostname);
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&flags.data_dir).context("cannot open the embedded store")?);
    info!(message = "Store opened.", store = %store.describe());

    let config = Config {
        default_role: flags.mesos_role.clone(),
        features: flags
            .enable_features
            .iter()
            .filter(|f| !f.is_empty())
            .cloned()
            .collect(),
        local_port_min: flags.local_port_min as i64,
        local_port_max: flags.local_port_max as i64,
        max_instances_per_offer: flags.max_instances_per_offer.max(1),
        decline_offer_duration: Duration::from_millis(flags.decline_offer_duration),
        max_versions: flags.zk_max_versions.max(1),
        env_vars_prefix: flags.env_vars_prefix.clone(),
        max_running_deployments: flags.max_running_deployments,
        task_launch_timeout: Duration::from_millis(flags.task_launch_timeout),
        deployment_progress_deadline: (flags.deployment_progress_timeout > 0)
            .then(|| Duration::from_millis(flags.deployment_progress_timeout)),
        deployment_rollback_on_failure: flags.deployment_rollback_on_failure,
    };
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for ids: {e}"))?;
    let mut core = Scheduler::new(config, u64::from_le_bytes(seed));
    let entries =
        tokio::task::block_in_place(|| store.scan("")).context("cannot read the store")?;
    let n = entries.len();
    core.restore(entries)
        .map_err(anyhow::Error::msg)
        .context("cannot recover state from the store")?;
    info!(
        message = "State recovered.",
        records = n,
        apps = core.snapshot().apps.len(),
        instances = core.snapshot().instances.len()
    );

    let (event_tx, event_rx) = mpsc::unbounded_channel::<ClusterEvent>();
    let sink: ClusterEventSink = Arc::new(move |ev| {
        let _ = event_tx.send(ev);
    });
    let mut local = LocalConfig::new(flags.data_dir.clone());
    local.hostname = hostname.clone();
    local.ports = flags::parse_port_ranges(&flags.local_agent_ports)
        .map_err(anyhow::Error::msg)
        .context("--local_agent_ports")?;
    local.attributes = flags::parse_attributes(&flags.local_agent_attributes)
        .map_err(anyhow::Error::msg)
        .context("--local_agent_attributes")?;
    local.cpus = flags.local_agent_cpus;
    local.mem_mb = flags.local_agent_mem;
    local.default_kill_grace = Duration::from_millis(flags.local_agent_kill_grace);
    let cluster = LocalCluster::start(local, sink).context("cannot start the local agent")?;

    let listener = tokio::net::TcpListener::bind((flags.http_address, flags.http_port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}:{}",
                flags.http_address, flags.http_port
            )
        })?;
    let addr = listener.local_addr()?;
    let leader = format!("{hostname}:{}", addr.port());
    let info = ServerInfo {
        leader: leader.clone(),
        framework_id: None,
        marathon_config: marathon_config(&flags, &hostname),
        zookeeper_config: json!({}),
        http_config: json!({"http_port": addr.port(), "https_port": 8443}),
    };
    let callbacks_enabled = match flags.event_subscriber.as_deref() {
        None => false,
        Some("http_callback") => true,
        Some(other) => {
            anyhow::bail!("--event_subscriber {other}: the only event subscriber is http_callback")
        }
    };
    for url in &flags.http_endpoints {
        anyhow::ensure!(
            pacer_api::valid_callback_url(url),
            "--http_endpoints: '{url}' is not an absolute http or https URL"
        );
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let bus = pacer_api::events::EventBus::new(flags.event_stream_max_outstanding_messages);
    let api = ApiContext::new(cmd_tx, info, bus, callbacks_enabled);
    let app = pacer_api::router(api.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    info!(message = "Pacer listening.", address = %format!("http://{addr}"), leader = %leader);
    eprintln!("pacer: listening on http://{addr}");

    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let prober = pacer_health::Prober::new(
        pacer_health::ProbeKinds::builtin(),
        flags.max_concurrent_marathon_health_checks,
        probe_tx,
    );
    let runtime = runtime::Runtime {
        core,
        store,
        cluster,
        api: api.clone(),
        prober,
    };
    let scheduler = tokio::spawn(runtime.run(cmd_rx, event_rx, probe_rx));
    if callbacks_enabled {
        let config = callbacks::CallbackConfig {
            request_timeout: Duration::from_millis(flags.http_event_request_timeout),
            slow_consumer_timeout: Duration::from_millis(
                flags.http_event_callback_slow_consumer_timeout,
            ),
        };
        tokio::spawn(callbacks::run(api.clone(), config));
        for url in &flags.http_endpoints {
            api.submit(pacer_core::machine::Command::Subscribe { url: url.clone() })
                .await
                .map_err(|e| anyhow::anyhow!("cannot subscribe {url}: {e:?}"))?;
        }
    }
    // The local backend is this machine: Pacer is registered as soon as it runs.
    api.events.publish(
        "scheduler_registered_event",
        json!({"frameworkId": "local", "master": "local"}),
        pacer_api::now(),
    );
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        r = server => r.context("HTTP server failed")?,
        r = scheduler => {
            r.context("scheduler task panicked")?.context("scheduler stopped")?;
            anyhow::bail!("scheduler loop ended unexpectedly");
        }
    }
    info!(message = "Pacer stopped; tasks keep running and are re-adopted at the next start.");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `/v2/info`'s `marathon_config` with the values in force.
fn marathon_config(f: &Flags, hostname: &str) -> serde_json::Value {
    json!({
        "access_control_allow_origin": null,
        "checkpoint": true,
        "decline_offer_duration": f.decline_offer_duration,
        "default_network_name": null,
        "env_vars_prefix": f.env_vars_prefix,
        "executor": "//cmd",
        "failover_timeout": 604800,
        "features": f.enable_features,
        "framework_name": f.framework_name,
        "ha": false,
        "hostname": hostname,
        "launch_token": 100,
        "launch_token_refresh_interval": 30000,
        "leader_proxy_connection_timeout_ms": 5000,
        "leader_proxy_read_timeout_ms": 10000,
        "local_port_max": f.local_port_max,
        "local_port_min": f.local_port_min,
        "master": "local",
        "max_instances_per_offer": f.max_instances_per_offer,
        "mesos_bridge_name": "mesos-bridge",
        "mesos_heartbeat_failure_threshold": 5,
        "mesos_heartbeat_interval": 15000,
        "mesos_leader_ui_url": null,
        "mesos_role": f.mesos_role,
        "mesos_user": null,
        "new_group_enforce_role": "off",
        "min_revive_offers_interval": 5000,
        "offer_matching_timeout": 3000,
        "on_elected_prepare_timeout": 180000,
        "reconciliation_initial_delay": 15000,
        "reconciliation_interval": 600000,
        "scale_apps_initial_delay": 15000,
        "scale_apps_interval": 300000,
        "store_cache": true,
        "task_launch_confirm_timeout": 300000,
        "task_launch_timeout": f.task_launch_timeout,
        "task_lost_expunge_initial_delay": 300000,
        "task_lost_expunge_interval": 30000,
        "task_reservation_timeout": 20000,
        "webui_url": null,
        "maintenance_mode": true,
    })
}
