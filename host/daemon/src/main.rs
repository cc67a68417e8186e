//! The `pacer` daemon: parses flags, opens the store, starts the cluster backend and the HTTP API,
//! and runs the scheduler loop.

mod backup;
mod callbacks;
mod flags;
mod ha;
mod logs;
mod plugins;
mod runtime;
mod tls;

use anyhow::Context;
use flags::{Flags, Parsed};
use pacer_api::leader::{HaSetup, LeaderAddr};
use pacer_api::metrics::{MetricsSource, MetricsWriter};
use pacer_api::{ApiContext, ApiSetup, HttpOptions, ServerInfo};
use pacer_core::cluster::{ClusterEvent, ClusterEventSink};
use pacer_core::machine::{Config, Scheduler};
use pacer_local::{LocalCluster, LocalConfig};
use pacer_store::{EmbeddedStore, Store};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

// glibc's malloc kept the transient peak of a 100,000-task scale-up as resident memory; mimalloc
// returns freed pages to the system (BENCHMARKS.md, "Mesos at scale").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 after a clean stop (SIGTERM/SIGINT), [`EXIT_FAILED`] when Pacer stops on an
/// error, [`flags::EXIT_BAD_FLAGS`] (112, as Marathon) for a configuration it refuses.
const EXIT_FAILED: u8 = 1;

fn main() -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(tool) = args.get(1).and_then(|a| a.to_str()).map(str::to_string) {
        if tool == "backup" || tool == "restore" {
            return store_tool(&tool, args.split_off(2), &args[0]);
        }
        if tool == "leader" {
            return leader_tool(args.split_off(2), &args[0]);
        }
    }
    let parsed = match flags::parse(args, std::env::vars_os()) {
        Ok(p) => p,
        Err(e) => return ExitCode::from(e.print_and_exit_code()),
    };
    let logs = match logs::init(
        &parsed.flags.logging_level,
        parsed.flags.log_format == "json",
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pacer: {e}");
            return ExitCode::from(flags::EXIT_BAD_FLAGS);
        }
    };
    for w in &parsed.warnings {
        warn!(message = %w);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pacer: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = rt.block_on(async {
        let prepared = prepare(&parsed.flags).await.map_err(Stop::Config)?;
        run(parsed, prepared, logs).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Config(e)) => {
            error!(
                message = "Pacer refused its configuration.",
                error = format!("{e:#}")
            );
            eprintln!("pacer: {e:#}");
            ExitCode::from(flags::EXIT_BAD_FLAGS)
        }
        Err(Stop::Plugin(e)) => {
            error!(
                message = "A plugin could not be loaded.",
                error = format!("{e:#}")
            );
            eprintln!("pacer: {e:#}");
            ExitCode::from(plugins::EXIT_PLUGIN_FAILED)
        }
        Err(Stop::Failed(e)) => {
            error!(message = "Pacer stopped.", error = format!("{e:#}"));
            eprintln!("pacer: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Stop::LeadershipEnded(e)) => {
            error!(
                message = "Leadership ended; restart Pacer to rejoin as a standby.",
                error = format!("{e:#}")
            );
            eprintln!("pacer: {e:#}");
            // The ZooKeeper client closes its session in the background (removing ephemerals).
            std::thread::sleep(Duration::from_millis(150));
            ExitCode::from(ha::EXIT_LEADERSHIP_ENDED)
        }
    }
}

/// `pacer backup FILE [flags]` / `pacer restore FILE [flags]`: the store is chosen by the same
/// flags as the daemon's (`--data_dir`, or `--zk`).
fn store_tool(
    tool: &str,
    mut rest: Vec<std::ffi::OsString>,
    program: &std::ffi::OsStr,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let usage = format!("usage: pacer {tool} FILE [--data_dir DIR | --zk zk://host:port/path]");
    if rest.is_empty() || rest[0].to_str().is_some_and(|a| a.starts_with("--")) {
        eprintln!("pacer: {usage}");
        return ExitCode::from(flags::EXIT_BAD_FLAGS);
    }
    let file = std::path::PathBuf::from(rest.remove(0));
    let argv = std::iter::once(program.to_os_string()).chain(rest);
    let parsed = match flags::parse(argv, std::env::vars_os()) {
        Ok(p) => p,
        Err(e) => return ExitCode::from(e.print_and_exit_code()),
    };
    let result = open_store(&parsed).and_then(|(store, _)| {
        let n = if tool == "backup" {
            backup::backup(store.as_ref(), &file)?
        } else {
            backup::restore(store.as_ref(), &file)?
        };
        Ok((n, store.describe()))
    });
    match result {
        Ok((n, describe)) => {
            let verb = if tool == "backup" {
                "backed up from"
            } else {
                "restored into"
            };
            eprintln!("pacer: {n} records {verb} {describe}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pacer {tool}: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The store behind the `Store` port, and the same store as itself when it is ZooKeeper.
type OpenedStore = (Arc<dyn Store>, Option<Arc<pacer_zk::ZkStore>>);

/// `pacer leader --zk URL`: prints the current leader as JSON (`{"leader","url"}`), for scripts
/// and clients that want to talk to the leader directly. Exit 1 when nobody leads.
fn leader_tool(rest: Vec<std::ffi::OsString>, program: &std::ffi::OsStr) -> std::process::ExitCode {
    use std::process::ExitCode;
    let argv = std::iter::once(program.to_os_string()).chain(rest);
    let parsed = match flags::parse(argv, std::env::vars_os()) {
        Ok(p) => p,
        Err(e) => return ExitCode::from(e.print_and_exit_code()),
    };
    if !parsed.use_zk {
        eprintln!("pacer: usage: pacer leader --zk zk://host:port/path");
        return ExitCode::from(flags::EXIT_BAD_FLAGS);
    }
    let found = open_store(&parsed).and_then(|(_, zk)| {
        let client = zk.expect("--zk opens a ZooKeeper store").client();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(pacer_zk::election::current_leader::<LeaderAddr>(&client))
            .map_err(|e| anyhow::anyhow!("cannot read the leader: {e}"))
    });
    match found {
        Ok(Some(l)) => {
            println!("{}", json!({"leader": l.id, "url": l.url}));
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("pacer: no leader is elected");
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("pacer leader: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The store the flags name: ZooKeeper with `--zk` (also returned as itself, for the election),
/// else the embedded store under `--data_dir`.
fn open_store(parsed: &Parsed) -> anyhow::Result<OpenedStore> {
    let f = &parsed.flags;
    if parsed.use_zk {
        let url = pacer_zk::ZkUrl::parse(&f.zk).map_err(anyhow::Error::msg)?;
        let config = pacer_zk::ZkStoreConfig {
            max_node_size: f.zk_max_node_size,
            compression: f.zk_compression,
            compression_threshold: f.zk_compression_threshold,
            op_timeout: Duration::from_millis(f.zk_timeout),
            connect_timeout: Duration::from_millis(f.zk_connection_timeout),
        };
        let store =
            pacer_zk::ZkStore::connect(&url, Duration::from_millis(f.zk_session_timeout), config)
                .with_context(|| format!("cannot use ZooKeeper at {}", url.redacted()))?;
        let store = Arc::new(store);
        Ok((store.clone(), Some(store)))
    } else {
        let store = EmbeddedStore::open(&f.data_dir).context("cannot open the embedded store")?;
        Ok((Arc::new(store), None))
    }
}

enum Stop {
    Config(anyhow::Error),
    /// A plugin could not be loaded (Marathon's exit code 102).
    Plugin(anyhow::Error),
    Failed(anyhow::Error),
    /// Lost, expired or abdicated leadership: exit so a supervisor restarts a standby.
    LeadershipEnded(anyhow::Error),
}

/// What the flags turn into before anything starts: listeners bound, files read. Every error
/// here is the operator's configuration.
struct Prepared {
    http: Option<tokio::net::TcpListener>,
    https: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    local: LocalConfig,
    hostname: String,
    callbacks_enabled: bool,
}

async fn prepare(flags: &Flags) -> anyhow::Result<Prepared> {
    let hostname = flags.hostname.clone().unwrap_or_else(machine_hostname);
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

    let tls = match (
        &flags.ssl_cert_path,
        &flags.ssl_key_path,
        &flags.ssl_keystore_path,
    ) {
        (Some(cert), Some(key), _) => Some(tls::from_pem(cert, key)?),
        (_, _, Some(keystore)) => Some(tls::from_pkcs12(
            keystore,
            flags.ssl_keystore_password.as_deref().unwrap_or(""),
        )?),
        _ => None,
    };
    // The local backend runs whatever the API is told to run, on this machine.
    let exposed = |addr: std::net::IpAddr| !addr.is_loopback();
    let open_to_network = (!flags.disable_http && exposed(flags.http_address))
        || (tls.is_some() && exposed(flags.https_address));
    if open_to_network
        && flags.http_credentials.is_none()
        && !flags.allow_unauthenticated_remote_api
    {
        anyhow::bail!(
            "refusing to serve the API on a non-loopback address without authentication: anyone \
             who reaches it can run commands on this machine. Set --http_credentials user:password \
             (and HTTPS), or pass --allow_unauthenticated_remote_api to accept the risk"
        );
    }
    let http = if flags.disable_http {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind((flags.http_address, flags.http_port))
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {}:{}",
                        flags.http_address, flags.http_port
                    )
                })?,
        )
    };
    let https = match tls {
        Some(config) => Some((
            tokio::net::TcpListener::bind((flags.https_address, flags.https_port))
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {}:{}",
                        flags.https_address, flags.https_port
                    )
                })?,
            config,
        )),
        None => None,
    };
    Ok(Prepared {
        http,
        https,
        local,
        hostname,
        callbacks_enabled,
    })
}

fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The scheduler-side prober's counters on `/metrics`.
struct ProbeMetrics(Arc<pacer_health::ProberStats>);

impl MetricsSource for ProbeMetrics {
    fn write(&self, w: &mut MetricsWriter) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.0;
        w.family(
            "health_checks_total",
            "counter",
            "Scheduler-side health and readiness probes since start, by result (late probes are not judged).",
            [
                ([("result", "run")], s.probes.load(Relaxed)),
                ([("result", "failed")], s.failed.load(Relaxed)),
                ([("result", "late")], s.late.load(Relaxed)),
            ],
        );
    }
}

async fn run(parsed: Parsed, prepared: Prepared, logs: logs::Logs) -> Result<(), Stop> {
    let (store, zk) = tokio::task::block_in_place(|| open_store(&parsed)).map_err(Stop::Failed)?;
    let ha_enabled = parsed.ha();
    let Parsed { flags, compat, .. } = parsed;
    let Prepared {
        http,
        https,
        local,
        hostname,
        callbacks_enabled,
    } = prepared;
    info!(message = "Store opened.", store = %store.describe(), ha = ha_enabled);
    let loaded_plugins = plugins::load(&flags).await.map_err(Stop::Plugin)?;

    let http_port = http
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(|e| Stop::Failed(e.into()))?
        .map(|a| a.port());
    let https_port = https
        .as_ref()
        .map(|(l, _)| l.local_addr())
        .transpose()
        .map_err(|e| Stop::Failed(e.into()))?
        .map(|a| a.port());
    let (scheme, port) = match (http_port, https_port) {
        (Some(p), _) => ("http", p),
        (None, Some(p)) => ("https", p),
        (None, None) => return Err(Stop::Failed(anyhow::anyhow!("no listener configured"))),
    };
    let me = LeaderAddr {
        id: format!("{hostname}:{port}"),
        url: format!("{scheme}://{hostname}:{port}"),
    };
    let info = ServerInfo {
        me: me.clone(),
        framework_id: Default::default(),
        marathon_config: marathon_config(&flags, &hostname, &compat, ha_enabled),
        zookeeper_config: zookeeper_config(&flags),
        http_config: json!({
            "http_port": http_port.unwrap_or(flags.http_port),
            "https_port": https_port.unwrap_or(flags.https_port),
        }),
        plugins: plugins::listing(&loaded_plugins),
    };

    let election = match (&zk, ha_enabled) {
        (Some(zk), true) => Some(ha::Election::start(zk.clone(), me.clone())),
        _ => None,
    };
    let abdicate = Arc::new(tokio::sync::Notify::new());
    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let mut probe_kinds = pacer_health::ProbeKinds::builtin();
    if !loaded_plugins.health_ids().is_empty() {
        probe_kinds.register(
            "PLUGIN",
            Arc::new(plugins::PluginProbes(loaded_plugins.clone())),
        );
    }
    let prober = pacer_health::Prober::new(
        probe_kinds,
        flags.max_concurrent_marathon_health_checks,
        probe_tx,
    );
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let bus = pacer_api::events::EventBus::new(flags.event_stream_max_outstanding_messages);
    let setup = ApiSetup {
        info,
        callbacks_enabled,
        options: http_options(&flags),
        metric_sources: vec![
            Arc::new(ProbeMetrics(prober.stats())),
            Arc::new(plugins::PluginMetricsSource(loaded_plugins.clone())),
        ],
        log_control: Some(Arc::new(logs)),
        ha: election.as_ref().map(|e| HaSetup {
            role: e.role.clone(),
            abdicate: abdicate.clone(),
            proxy_connect_timeout: Duration::from_millis(flags.leader_proxy_connection_timeout),
            proxy_read_timeout: Duration::from_millis(flags.leader_proxy_read_timeout),
        }),
    };
    let api = ApiContext::new(cmd_tx, bus, setup);
    // 5xx answers are expected at times (a standby's /leader/health, a suspended leader) and are
    // counted on /metrics; logging each as an error would drown real ones.
    let trace = tower_http::trace::TraceLayer::new_for_http()
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG));
    let app = pacer_api::router(api.clone()).layer(trace);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut listeners = Some((http, https));
    // With an election the API serves at once: a standby proxies to the leader. A single Pacer
    // serves only once its state is loaded.
    if election.is_some() {
        let (http, https) = listeners.take().expect("listeners not used yet");
        serve(&app, http, https, &stop_rx, &mut servers, &me).map_err(Stop::Failed)?;
    }
    let leadership = match &election {
        None => None,
        Some(e) => tokio::select! {
            won = e.win() => Some(Arc::new(won.map_err(Stop::LeadershipEnded)?)),
            _ = shutdown_signal() => {
                info!(message = "Stopped while standing by.");
                return Ok(());
            }
            Some(r) = servers.join_next() => return Err(Stop::Failed(server_ended(r))),
        },
    };
    let mut lost = match (&election, &leadership) {
        (Some(e), Some(l)) => Some(e.watch_session(l.clone())),
        _ => None,
    };

    let extensions = pacer_core::plugins::Extensions {
        constraints: loaded_plugins.constraints(),
        health_checks: loaded_plugins.health_ids(),
    };
    let core = tokio::task::block_in_place(|| load_core(&flags, store.as_ref(), extensions))
        .map_err(Stop::Failed)?;
    let (event_tx, event_rx) = mpsc::unbounded_channel::<ClusterEvent>();
    let sink: ClusterEventSink = Arc::new(move |ev| {
        let _ = event_tx.send(ev);
    });
    let mesos = flags.master != "local";
    let cluster: Arc<dyn pacer_core::cluster::Cluster> = if mesos {
        tokio::task::block_in_place(|| start_mesos(&flags, &hostname, store.clone(), sink))
            .map_err(Stop::Failed)?
    } else {
        start_local_agent(local, sink, election.is_some())
            .await
            .map_err(Stop::Failed)?
    };

    let runtime = runtime::Runtime {
        core,
        store: store.clone(),
        cluster,
        api: api.clone(),
        prober,
        role: election.as_ref().map(|e| e.role.clone()),
        launch_token_refresh: mesos
            .then(|| Duration::from_millis(flags.launch_token_refresh_interval.max(1))),
        offer_matching_timeout: mesos
            .then(|| Duration::from_millis(flags.offer_matching_timeout.max(1))),
        reconciliation: mesos.then(|| {
            (
                Duration::from_millis(flags.reconciliation_initial_delay),
                Duration::from_millis(flags.reconciliation_interval.max(1000)),
            )
        }),
    };
    let mut scheduler = tokio::spawn(runtime.run(cmd_rx, event_rx, probe_rx));
    plugins::feed_sinks(loaded_plugins.clone(), &api.events);
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
                .map_err(|e| Stop::Failed(anyhow::anyhow!("cannot subscribe {url}: {e:?}")))?;
        }
    }
    // The local backend is this machine: Pacer is registered as soon as it runs. On Mesos the
    // runtime announces it when the master answers SUBSCRIBE.
    if !mesos {
        api.events.publish(
            "scheduler_registered_event",
            json!({"frameworkId": "local", "master": "local"}),
            pacer_api::now(),
        );
    }
    if let Some((http, https)) = listeners.take() {
        serve(&app, http, https, &stop_rx, &mut servers, &me).map_err(Stop::Failed)?;
    }
    if let Some(e) = &election {
        e.serving();
    }

    let lost_leadership = async {
        match &mut lost {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut scheduler => {
            let e = match r {
                Err(e) => anyhow::Error::from(e).context("scheduler task panicked"),
                Ok(Err(e)) => anyhow::Error::from(e).context("scheduler stopped"),
                Ok(Ok(())) => anyhow::anyhow!("scheduler loop ended unexpectedly"),
            };
            if let Some(l) = &leadership {
                // Typically a write refused because the latch is gone. Either way, a leader that
                // cannot write steps down so that a standby takes over at once.
                l.release().await;
                return Err(Stop::LeadershipEnded(e));
            }
            return Err(Stop::Failed(e));
        }
        Some(r) = servers.join_next() => return Err(Stop::Failed(server_ended(r))),
        why = lost_leadership => {
            // Another Pacer may lead already: stop acting at once, no graceful drain.
            let why = why.unwrap_or_else(|| "the session watcher stopped".into());
            return Err(Stop::LeadershipEnded(anyhow::anyhow!("leadership lost: {why}")));
        }
        _ = abdicate.notified() => {
            if let Some(l) = &leadership {
                l.release().await;
            }
            return Err(Stop::LeadershipEnded(anyhow::anyhow!(
                "leadership abdicated (DELETE /v2/leader)"
            )));
        }
    }
    // Stop accepting, end event streams, and give requests in flight their time.
    let grace = Duration::from_millis(flags.graceful_shutdown_timeout);
    info!(
        message = "Shutting down.",
        grace_ms = flags.graceful_shutdown_timeout
    );
    let _ = stop_tx.send(true);
    api.events.close();
    let drained = tokio::time::timeout(grace, async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                warn!(message = "HTTP server failed while stopping.", error = %e);
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(message = "Requests still in flight when the graceful shutdown timeout ran out.");
    }
    // Hand over at once instead of after the session timeout.
    if let Some(l) = &leadership {
        l.release().await;
        info!(message = "Leadership released.");
    }
    info!(message = "Pacer stopped; tasks keep running and are re-adopted at the next start.");
    Ok(())
}

fn server_ended(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Err(e) => anyhow::Error::from(e).context("HTTP server panicked"),
        Ok(Err(e)) => anyhow::Error::from(e).context("HTTP server failed"),
        Ok(Ok(())) => anyhow::anyhow!("HTTP server stopped unexpectedly"),
    }
}

fn http_options(flags: &Flags) -> HttpOptions {
    HttpOptions {
        credentials: flags.http_credentials.clone(),
        realm: flags.http_realm.clone(),
        max_concurrent_requests: flags.http_max_concurrent_requests,
        max_body_bytes: flags.http_max_request_body_bytes,
        cors_origins: flags
            .access_control_allow_origin
            .iter()
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        compression: flags.http_compression,
        metrics_enabled: flags.metrics,
        metrics_prometheus_path: flags.metrics_prometheus,
        metrics_prefix: flags.metrics_name_prefix.clone(),
    }
}

/// The core with the state recovered from the store.
fn load_core(
    flags: &Flags,
    store: &dyn Store,
    extensions: pacer_core::plugins::Extensions,
) -> anyhow::Result<Scheduler> {
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
        max_apps: flags.max_apps,
        extensions,
        launch_tokens: (flags.master != "local").then_some(flags.launch_tokens),
        // The local backend offers no reservations: the flags are Mesos-only.
        accepted_roles_default: if flags.master == "local" {
            Default::default()
        } else {
            flags.accepted_roles_default()
        },
    };
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for ids: {e}"))?;
    let mut core = Scheduler::new(config, u64::from_le_bytes(seed));
    let started = std::time::Instant::now();
    let entries = store.scan("").context("cannot read the store")?;
    let n = entries.len();
    core.restore(entries)
        .map_err(anyhow::Error::msg)
        .context("cannot recover state from the store")?;
    info!(
        message = "State recovered.",
        records = n,
        apps = core.snapshot().apps.len(),
        instances = core.snapshot().instances.len(),
        elapsed_ms = started.elapsed().as_millis() as u64
    );
    Ok(core)
}

/// Where the Mesos framework id is stored, so a restarted or newly elected Pacer subscribes as
/// the same framework and keeps its tasks.
const FRAMEWORK_ID_KEY: &str = "meta/framework-id";

/// Starts the Mesos backend: it subscribes (and keeps resubscribing) by itself.
fn start_mesos(
    flags: &Flags,
    hostname: &str,
    store: Arc<dyn Store>,
    sink: ClusterEventSink,
) -> anyhow::Result<Arc<pacer_mesos::MesosCluster>> {
    let master = pacer_mesos::MasterSource::parse(&flags.master).map_err(anyhow::Error::msg)?;
    let framework_id = store
        .get(FRAMEWORK_ID_KEY)
        .context("cannot read the stored framework id")?
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let user = flags.mesos_user.clone().unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into())
    });
    let secret = match (
        &flags.mesos_authentication_secret_file,
        &flags.mesos_authentication_secret,
    ) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--mesos_authentication_secret_file {}", path.display()))?
                .trim_end()
                .to_string(),
        ),
        (None, s) => s.clone(),
    };
    let credentials = if flags.mesos_authentication {
        flags.mesos_authentication_principal.clone().zip(secret)
    } else {
        None
    };
    let framework = pacer_mesos::FrameworkSettings {
        name: flags.framework_name.clone(),
        user,
        role: flags.mesos_role.clone(),
        checkpoint: flags.checkpoint,
        failover_timeout_secs: flags.failover_timeout as f64,
        hostname: Some(
            flags
                .hostname
                .clone()
                .unwrap_or_else(|| hostname.to_string()),
        ),
        webui_url: flags.webui_url.clone(),
        principal: flags.mesos_authentication_principal.clone(),
        gpu_resources: flags.enable_features.iter().any(|f| f == "gpu_resources"),
    };
    info!(
        message = "Starting the Mesos backend.",
        master = %pacer_zk::redact_url(&flags.master),
        framework_id = framework_id.as_deref().unwrap_or("(new)")
    );
    let config = pacer_mesos::MesosConfig {
        master,
        framework,
        framework_id,
        heartbeat_interval: Duration::from_millis(flags.mesos_heartbeat_interval.max(1)),
        heartbeat_failure_threshold: flags.mesos_heartbeat_failure_threshold,
        min_revive_interval: Duration::from_millis(flags.min_revive_offers_interval),
        reconciliation_interval: Duration::from_millis(flags.reconciliation_interval.max(1000)),
        kill_retry_timeout: Duration::from_millis(flags.kill_retry_timeout.max(100)),
        kill_chunk_size: flags.kill_chunk_size,
        credentials,
        zk_session_timeout: Duration::from_millis(flags.zk_session_timeout),
        call_timeout: Duration::from_secs(75),
    };
    let persist: pacer_mesos::FrameworkIdSink = Arc::new(move |id: &str| {
        let op = pacer_store::StoreOp::Put {
            key: FRAMEWORK_ID_KEY.into(),
            value: id.as_bytes().to_vec(),
        };
        if let Err(e) = tokio::task::block_in_place(|| store.apply(&[op])) {
            error!(message = "Cannot store the framework id; a restart would register anew.", error = %e);
        }
    });
    Ok(pacer_mesos::MesosCluster::start(config, sink, persist))
}

/// Starts the local agent. After an election the previous leader (on this machine, sharing the
/// data directory) may still hold the agent's lock while it stops; wait for it.
async fn start_local_agent(
    local: LocalConfig,
    sink: ClusterEventSink,
    wait_for_previous: bool,
) -> anyhow::Result<Arc<LocalCluster>> {
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(50);
    loop {
        match LocalCluster::start(local.clone(), sink.clone()) {
            Err(pacer_local::LocalError::Busy { path }) if wait_for_previous => {
                if waited.as_millis().is_multiple_of(5000) {
                    warn!(
                        message = "Waiting for the previous leader's local agent to stop.",
                        data_dir = %path.display(),
                        waited_ms = waited.as_millis() as u64
                    );
                }
                tokio::time::sleep(step).await;
                waited += step;
            }
            r => return r.context("cannot start the local agent"),
        }
    }
}

/// Serves the API on the listeners until `stop` turns true.
fn serve(
    app: &axum::Router,
    http: Option<tokio::net::TcpListener>,
    https: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    stop: &watch::Receiver<bool>,
    servers: &mut tokio::task::JoinSet<std::io::Result<()>>,
    me: &LeaderAddr,
) -> anyhow::Result<()> {
    let stopping = || {
        let mut rx = stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Some(listener) = http {
        let addr = listener.local_addr()?;
        let svc = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, svc).with_graceful_shutdown(stopping());
        servers.spawn(async move { server.await });
        info!(message = "Pacer listening.", address = %format!("http://{addr}"), id = %me.id);
        eprintln!("pacer: listening on http://{addr}");
    }
    if let Some((listener, config)) = https {
        use axum::serve::ListenerExt;
        let addr = listener.local_addr()?;
        // `tap_io` gives the listener axum's connect-info support for its peer address.
        let listener = tls::TlsListener::new(listener, config)?.tap_io(|_| {});
        let svc = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(listener, svc).with_graceful_shutdown(stopping());
        servers.spawn(async move { server.await });
        info!(message = "Pacer listening.", address = %format!("https://{addr}"), id = %me.id);
        eprintln!("pacer: listening on https://{addr}");
    }
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

/// `/v2/info`'s `zookeeper_config` with the values in force and credentials redacted.
fn zookeeper_config(f: &Flags) -> serde_json::Value {
    json!({
        "zk": pacer_zk::redact_url(&f.zk),
        "zk_compression": f.zk_compression,
        "zk_compression_threshold": f.zk_compression_threshold,
        "zk_connection_timeout": f.zk_connection_timeout,
        "zk_max_node_size": f.zk_max_node_size,
        "zk_max_versions": f.zk_max_versions,
        "zk_session_timeout": f.zk_session_timeout,
        "zk_timeout": f.zk_timeout,
    })
}

/// `/v2/info`'s `marathon_config` with the values in force (compat flags as given, else
/// Marathon's defaults).
fn marathon_config(
    f: &Flags,
    hostname: &str,
    compat: &[(&str, String)],
    ha: bool,
) -> serde_json::Value {
    let given = |name: &str| -> serde_json::Value {
        let default = flags::COMPAT
            .iter()
            .find(|c| c.name == name)
            .map_or("", |c| c.default);
        let v = compat
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or(default);
        match v {
            "true" => json!(true),
            "false" => json!(false),
            v => v
                .parse::<u64>()
                .map(|n| json!(n))
                .unwrap_or_else(|_| json!(v)),
        }
    };
    let origins = (!f.access_control_allow_origin.is_empty())
        .then(|| f.access_control_allow_origin.join(","));
    json!({
        "access_control_allow_origin": origins,
        "checkpoint": f.checkpoint,
        "decline_offer_duration": f.decline_offer_duration,
        "default_network_name": f.default_network_name,
        "env_vars_prefix": f.env_vars_prefix,
        "executor": f.executor,
        "failover_timeout": f.failover_timeout,
        "features": f.enable_features,
        "framework_name": f.framework_name,
        // Whether an election takes place (`--zk` without `--disable_ha`).
        "ha": ha,
        "hostname": hostname,
        "launch_token": f.launch_tokens,
        "launch_token_refresh_interval": f.launch_token_refresh_interval,
        "leader_proxy_connection_timeout_ms": f.leader_proxy_connection_timeout,
        "leader_proxy_read_timeout_ms": f.leader_proxy_read_timeout,
        "local_port_max": f.local_port_max,
        "local_port_min": f.local_port_min,
        "master": pacer_zk::redact_url(&f.master),
        "max_instances_per_offer": f.max_instances_per_offer,
        "mesos_bridge_name": given("mesos_bridge_name"),
        "mesos_heartbeat_failure_threshold": f.mesos_heartbeat_failure_threshold,
        "mesos_heartbeat_interval": f.mesos_heartbeat_interval,
        "mesos_leader_ui_url": f.mesos_leader_ui_url,
        "mesos_role": f.mesos_role,
        "mesos_user": f.mesos_user,
        "new_group_enforce_role": f.new_group_enforce_role,
        "min_revive_offers_interval": f.min_revive_offers_interval,
        "offer_matching_timeout": f.offer_matching_timeout,
        "on_elected_prepare_timeout": f.on_elected_prepare_timeout,
        "reconciliation_initial_delay": f.reconciliation_initial_delay,
        "reconciliation_interval": f.reconciliation_interval,
        "scale_apps_initial_delay": given("scale_apps_initial_delay"),
        "scale_apps_interval": given("scale_apps_interval"),
        "store_cache": given("store_cache"),
        "task_launch_confirm_timeout": f.task_launch_confirm_timeout,
        "task_launch_timeout": f.task_launch_timeout,
        "task_lost_expunge_initial_delay": f.task_lost_expunge_initial_delay,
        "task_lost_expunge_interval": f.task_lost_expunge_interval,
        "task_reservation_timeout": given("task_reservation_timeout"),
        "webui_url": f.webui_url,
        "maintenance_mode": given("maintenance_mode"),
    })
}
