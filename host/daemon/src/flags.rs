//! Command-line flags with Marathon's spelling, defaults and rules (§9 of the reference):
//!
//! - `--flag value` or `--flag=value`; booleans are toggles, `--ha` / `--disable_ha`;
//! - every flag can also be given as `MARATHON_<NAME>` in the environment (an empty value is a bare
//!   toggle); those are read first, so the command line wins; names starting `MARATHON_APP_` are
//!   Marathon's own task variables and are ignored;
//! - `MESOSPHERE_HTTP_CREDENTIALS`, `MESOSPHERE_KEYSTORE_PATH` and `MESOSPHERE_KEYSTORE_PASS` as in
//!   Marathon's start scripts;
//! - flags that mean nothing in Pacer are accepted with a warning that says why ([`COMPAT`]);
//!   unknown flags stop start-up (exit code [`EXIT_BAD_FLAGS`], as Marathon's 112).

use clap::builder::BoolishValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;

/// Exit code for a configuration Pacer refuses (Marathon uses 112 for invalid flags).
pub const EXIT_BAD_FLAGS: u8 = 112;

const CORE: &str = "Core / Mesos";
const SCHED: &str = "Scheduling / tuning";
const ZK: &str = "ZooKeeper / storage";
const HTTP: &str = "HTTP / web";
const MISC: &str = "Plugins / events / metrics / debug";
const LOCAL: &str = "Pacer: local agent (the default backend)";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pacer",
    version,
    rename_all = "snake_case",
    args_override_self = true,
    about = "Pacer: a Marathon-compatible scheduler for long-running services",
    long_about = "Pacer speaks Marathon's REST API v2. By default it runs apps as real processes on this \
                  machine and keeps its state in an embedded store under --data_dir.\n\n\
                  Every flag may also be set as MARATHON_<FLAG_NAME_IN_UPPER_CASE> in the environment \
                  (an empty value sets a toggle); the command line wins. Toggles are written \
                  --name / --disable_name. Durations are in milliseconds unless a flag says otherwise."
)]
pub struct Flags {
    // ---- Core / Mesos -------------------------------------------------------------------------
    /// Where apps run: `local` (this machine), or a Mesos cluster: `http://host:5050` (several
    /// comma-separated; standbys redirect) or `zk://host:2181,…/mesos`.
    #[arg(long, default_value = "local", help_heading = CORE)]
    pub master: String,

    /// Mesos UI URL shown in /v2/info.
    #[arg(long, help_heading = CORE)]
    pub mesos_leader_ui_url: Option<String>,

    /// Framework name (shown in /v2/info; registered with Mesos by the Mesos backend).
    #[arg(long, default_value = "marathon", help_heading = CORE)]
    pub framework_name: String,

    /// The default role of apps.
    #[arg(long, default_value = "*", help_heading = CORE)]
    pub mesos_role: String,

    /// Which resources apps without acceptedResourceRoles accept: any, unreserved or reserved
    /// [default: any, or what --default_accepted_resource_roles implies].
    #[arg(long, value_parser = ["any", "unreserved", "reserved"], help_heading = CORE)]
    pub accepted_resource_roles_default_behavior: Option<String>,

    /// Default acceptedResourceRoles, comma-separated (deprecated in Marathon 1.9).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, help_heading = CORE)]
    pub default_accepted_resource_roles: Vec<String>,

    /// User tasks run as on Mesos (Mesos backend).
    #[arg(long, help_heading = CORE)]
    pub mesos_user: Option<String>,

    /// Ask Mesos agents to checkpoint tasks (Mesos backend). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = CORE)]
    pub checkpoint: bool,

    /// Framework failover timeout in seconds (Mesos backend).
    #[arg(long, default_value_t = 604_800, help_heading = CORE)]
    pub failover_timeout: u64,

    /// Host name advertised for this Pacer and used as the local agent's host name.
    #[arg(long, help_heading = CORE)]
    pub hostname: Option<String>,

    /// Web UI URL registered with Mesos (Mesos backend).
    #[arg(long, help_heading = CORE)]
    pub webui_url: Option<String>,

    /// Default executor (Mesos backend).
    #[arg(long, default_value = "//cmd", help_heading = CORE)]
    pub executor: String,

    /// Authenticate with Mesos (Mesos backend). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = CORE)]
    pub mesos_authentication: bool,

    /// Principal for Mesos authentication.
    #[arg(long, help_heading = CORE)]
    pub mesos_authentication_principal: Option<String>,

    /// Secret for Mesos authentication (prefer the _file variant).
    #[arg(long, help_heading = CORE)]
    pub mesos_authentication_secret: Option<String>,

    /// File holding the secret for Mesos authentication.
    #[arg(long, help_heading = CORE)]
    pub mesos_authentication_secret_file: Option<PathBuf>,

    /// Expected interval of Mesos heartbeats (Mesos backend).
    #[arg(long, default_value_t = 15_000, help_heading = CORE)]
    pub mesos_heartbeat_interval: u64,

    /// Missed heartbeats after which the master counts as lost (Mesos backend).
    #[arg(long, default_value_t = 5, help_heading = CORE)]
    pub mesos_heartbeat_failure_threshold: u32,

    /// Network name given to unnamed container networks.
    #[arg(long, help_heading = CORE)]
    pub default_network_name: Option<String>,

    /// Prefix for the PORT*/HOST environment variables of tasks.
    #[arg(long, help_heading = CORE)]
    pub env_vars_prefix: Option<String>,

    /// Lowest service port assigned to apps that ask for port 0.
    #[arg(long, default_value_t = 10_000, help_heading = CORE)]
    pub local_port_min: u16,

    /// Highest service port assigned to apps that ask for port 0.
    #[arg(long, default_value_t = 20_000, help_heading = CORE)]
    pub local_port_max: u16,

    /// Most apps Pacer manages; creating more is refused with 422.
    #[arg(long, help_heading = CORE)]
    pub max_apps: Option<usize>,

    /// Default enforceRole of new top-level groups: off or top.
    #[arg(long, default_value = "off", value_parser = ["off", "top"], help_heading = CORE)]
    pub new_group_enforce_role: String,

    /// Suppress offers while nothing waits to launch (Mesos backend). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = CORE)]
    pub suppress_offers: bool,

    /// Optional features, comma-separated (e.g. gpu_resources, secrets, task_killing).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, help_heading = CORE)]
    pub enable_features: Vec<String>,

    // ---- Scheduling / tuning ------------------------------------------------------------------
    /// A task not RUNNING this long after launch is killed and relaunched.
    #[arg(long, default_value_t = 300_000, help_heading = SCHED)]
    pub task_launch_timeout: u64,

    /// A task not STAGING this long after launch is killed (Mesos backend).
    #[arg(long, default_value_t = 300_000, help_heading = SCHED)]
    pub task_launch_confirm_timeout: u64,

    /// Delay before the first task reconciliation (Mesos backend).
    #[arg(long, default_value_t = 15_000, help_heading = SCHED)]
    pub reconciliation_initial_delay: u64,

    /// Interval of task reconciliation (Mesos backend).
    #[arg(long, default_value_t = 600_000, help_heading = SCHED)]
    pub reconciliation_interval: u64,

    /// Launches allowed per token interval (Mesos backend).
    #[arg(long, default_value_t = 100, help_heading = SCHED)]
    pub launch_tokens: u32,

    /// Interval at which launch tokens are refilled (Mesos backend).
    #[arg(long, default_value_t = 30_000, help_heading = SCHED)]
    pub launch_token_refresh_interval: u64,

    /// At most this many instances are launched from one offer.
    #[arg(long, default_value_t = 5, help_heading = SCHED)]
    pub max_instances_per_offer: usize,

    /// Time budget for matching one offer (Mesos backend).
    #[arg(long, default_value_t = 3_000, help_heading = SCHED)]
    pub offer_matching_timeout: u64,

    /// How long a declined offer's resources are not offered again unless something changes.
    #[arg(long, default_value_t = 120_000, help_heading = SCHED)]
    pub decline_offer_duration: u64,

    /// Least time between two REVIVE calls (Mesos backend).
    #[arg(long, default_value_t = 5_000, help_heading = SCHED)]
    pub min_revive_offers_interval: u64,

    /// Running deployments allowed at once; more are refused with 403.
    #[arg(long, default_value_t = 100, help_heading = SCHED)]
    pub max_running_deployments: usize,

    /// Scheduler-side health and readiness probes in flight at once; a probe that waits a
    /// whole interval for a slot is reported late, not failed.
    #[arg(long, default_value_t = 256, help_heading = SCHED)]
    pub max_concurrent_marathon_health_checks: usize,

    /// Delay before unreachable tasks are first garbage-collected (Mesos backend).
    #[arg(long, default_value_t = 300_000, help_heading = SCHED)]
    pub task_lost_expunge_initial_delay: u64,

    /// Interval of the unreachable-task garbage collection (Mesos backend).
    #[arg(long, default_value_t = 30_000, help_heading = SCHED)]
    pub task_lost_expunge_interval: u64,

    /// Events an /v2/events client may fall behind by before it is disconnected.
    #[arg(long, default_value_t = 1_024, help_heading = SCHED)]
    pub event_stream_max_outstanding_messages: usize,

    /// Time a newly elected leader may take to load its state (HA).
    #[arg(long, default_value_t = 180_000, help_heading = SCHED)]
    pub on_elected_prepare_timeout: u64,

    /// On SIGTERM, how long in-flight requests may take before Pacer exits anyway.
    #[arg(long, default_value_t = 45_000, help_heading = SCHED)]
    pub graceful_shutdown_timeout: u64,

    /// Tasks killed per batch (Mesos backend).
    #[arg(long, default_value_t = 100, hide = true, help_heading = SCHED)]
    pub kill_chunk_size: usize,

    /// A kill not confirmed within this is sent again (Mesos backend).
    #[arg(long, default_value_t = 30_000, hide = true, help_heading = SCHED)]
    pub kill_retry_timeout: u64,

    /// Pacer: time a deployment step may go without progress before the deployment fails
    /// (0 = never, as in Marathon). Apps can set the label PACER_DEPLOYMENT_PROGRESS_DEADLINE_SECONDS.
    #[arg(long, default_value_t = 0, help_heading = SCHED)]
    pub deployment_progress_timeout: u64,

    /// Pacer: roll a failed deployment back automatically (apps can opt in with the label
    /// PACER_DEPLOYMENT_ROLLBACK_ON_FAILURE=true). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = SCHED)]
    pub deployment_rollback_on_failure: bool,

    // ---- ZooKeeper / storage ------------------------------------------------------------------
    /// ZooKeeper state store `zk://[user:pass@]host:port,…/path`. This build keeps its state in
    /// the embedded store under --data_dir; the ZooKeeper store is not part of it yet.
    #[arg(long, default_value = "zk://localhost:2181/marathon", help_heading = ZK)]
    pub zk: String,

    /// ZooKeeper operation timeout.
    #[arg(long, default_value_t = 10_000, help_heading = ZK)]
    pub zk_timeout: u64,

    /// ZooKeeper session timeout.
    #[arg(long, default_value_t = 10_000, help_heading = ZK)]
    pub zk_session_timeout: u64,

    /// ZooKeeper connection timeout.
    #[arg(long, default_value_t = 10_000, help_heading = ZK)]
    pub zk_connection_timeout: u64,

    /// Largest ZooKeeper node Pacer writes, in bytes.
    #[arg(long, default_value_t = 1_024_000, help_heading = ZK)]
    pub zk_max_node_size: usize,

    /// Compress ZooKeeper nodes above the threshold. Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = ZK)]
    pub zk_compression: bool,

    /// Size in bytes above which ZooKeeper nodes are compressed.
    #[arg(long, default_value_t = 65_536, help_heading = ZK)]
    pub zk_compression_threshold: usize,

    /// Versions kept per app.
    #[arg(long, default_value_t = 50, help_heading = ZK)]
    pub zk_max_versions: usize,

    /// Where a backup is written before a migration (ZooKeeper store).
    #[arg(long, help_heading = ZK)]
    pub backup_location: Option<String>,

    /// Leader election between several Pacers (needs --zk). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = ZK)]
    pub ha: bool,

    /// Pacer: directory of the embedded store and the local agent's task sandboxes.
    #[arg(long, default_value = "pacer-data", help_heading = ZK)]
    pub data_dir: PathBuf,

    // ---- HTTP / web ---------------------------------------------------------------------------
    /// Address of the HTTP API. Pacer defaults to loopback (Marathon: all addresses); see
    /// --http_credentials before listening on a network.
    #[arg(long, default_value = "127.0.0.1", help_heading = HTTP)]
    pub http_address: IpAddr,

    /// Port of the HTTP API (0 picks a free port and logs it).
    #[arg(long, default_value_t = 8080, help_heading = HTTP)]
    pub http_port: u16,

    /// Address of the HTTPS API (defaults to loopback, as --http_address).
    #[arg(long, default_value = "127.0.0.1", help_heading = HTTP)]
    pub https_address: IpAddr,

    /// Port of the HTTPS API, served when a certificate is configured (0 picks a free port).
    #[arg(long, default_value_t = 8443, help_heading = HTTP)]
    pub https_port: u16,

    /// Serve no plain HTTP (only HTTPS).
    #[arg(long, action = ArgAction::SetTrue, help_heading = HTTP)]
    pub disable_http: bool,

    /// PKCS#12 keystore with the HTTPS certificate and key (also MESOSPHERE_KEYSTORE_PATH).
    #[arg(long, help_heading = HTTP)]
    pub ssl_keystore_path: Option<PathBuf>,

    /// Password of the keystore (also MESOSPHERE_KEYSTORE_PASS).
    #[arg(long, help_heading = HTTP)]
    pub ssl_keystore_password: Option<String>,

    /// Pacer: PEM file with the HTTPS certificate chain (instead of a keystore).
    #[arg(long, help_heading = HTTP)]
    pub ssl_cert_path: Option<PathBuf>,

    /// Pacer: PEM file with the HTTPS private key (with --ssl_cert_path).
    #[arg(long, help_heading = HTTP)]
    pub ssl_key_path: Option<PathBuf>,

    /// HTTP Basic credentials `user:password` required on every path (also
    /// MESOSPHERE_HTTP_CREDENTIALS).
    #[arg(long, help_heading = HTTP)]
    pub http_credentials: Option<String>,

    /// Realm of the Basic authentication challenge.
    #[arg(long, default_value = "Mesosphere", help_heading = HTTP)]
    pub http_realm: String,

    /// Pacer: allow listening on a non-loopback address without --http_credentials. Anyone who
    /// reaches the API can run commands on this machine.
    #[arg(long, action = ArgAction::SetTrue, help_heading = HTTP)]
    pub allow_unauthenticated_remote_api: bool,

    /// Requests served at once; more get 503.
    #[arg(long, help_heading = HTTP)]
    pub http_max_concurrent_requests: Option<usize>,

    /// Pacer: largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 4 * 1024 * 1024, help_heading = HTTP)]
    pub http_max_request_body_bytes: usize,

    /// CORS: origins allowed to call the API, comma-separated, or `*`.
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, help_heading = HTTP)]
    pub access_control_allow_origin: Vec<String>,

    /// Gzip responses for clients that accept it (never the event stream). Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = HTTP)]
    pub http_compression: bool,

    /// Connection timeout of a standby proxying to the leader (HA).
    #[arg(long, default_value_t = 5_000, help_heading = HTTP)]
    pub leader_proxy_connection_timeout: u64,

    /// Read timeout of a standby proxying to the leader (HA).
    #[arg(long, default_value_t = 10_000, help_heading = HTTP)]
    pub leader_proxy_read_timeout: u64,

    // ---- Plugins / events / metrics / debug ---------------------------------------------------
    /// Directory the `implementation` paths of --plugin_conf are relative to.
    #[arg(long, help_heading = MISC)]
    pub plugin_dir: Option<PathBuf>,

    /// Plugin configuration file (JSON): the WebAssembly plugins to load (docs/plugins.md).
    #[arg(long, help_heading = MISC)]
    pub plugin_conf: Option<PathBuf>,

    /// `http_callback` turns on HTTP callbacks (/v2/eventSubscriptions).
    #[arg(long, help_heading = MISC)]
    pub event_subscriber: Option<String>,

    /// Callback URLs subscribed at start, comma-separated (with --event_subscriber http_callback).
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, help_heading = MISC)]
    pub http_endpoints: Vec<String>,

    /// Time one callback POST may take.
    #[arg(long, default_value_t = 10_000, help_heading = MISC)]
    pub http_event_request_timeout: u64,

    /// Time after which a callback subscriber counts as slow and is backed off.
    #[arg(long, default_value_t = 10_000, help_heading = MISC)]
    pub http_event_callback_slow_consumer_timeout: u64,

    /// Serve /metrics. Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = MISC)]
    pub metrics: bool,

    /// Also serve the metrics at /metrics/prometheus, Marathon 1.7's path. Toggle.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL", help_heading = MISC)]
    pub metrics_prometheus: bool,

    /// Prefix of every metric name.
    #[arg(long, default_value = "pacer", help_heading = MISC)]
    pub metrics_name_prefix: String,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides it). Change it at run
    /// time with POST /logging.
    #[arg(long, default_value = "info", help_heading = MISC)]
    pub logging_level: String,

    /// Pacer: log format, `text` or `json` (one JSON object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"], help_heading = MISC)]
    pub log_format: String,

    // ---- Pacer: local agent -------------------------------------------------------------------
    /// Host port range(s) the local agent offers, e.g. `31000-32000` or `31000-31100,32000-32100`.
    #[arg(long, default_value = "31000-32000", help_heading = LOCAL)]
    pub local_agent_ports: String,

    /// Attributes of the local agent for placement constraints, e.g. `rack:r1;zone:z1`.
    #[arg(long, default_value = "", help_heading = LOCAL)]
    pub local_agent_attributes: String,

    /// CPUs the local agent offers (default: this machine's CPUs).
    #[arg(long, help_heading = LOCAL)]
    pub local_agent_cpus: Option<f64>,

    /// Memory in MB the local agent offers (default: this machine's memory).
    #[arg(long, help_heading = LOCAL)]
    pub local_agent_mem: Option<f64>,

    /// Default SIGTERM→SIGKILL grace for tasks without taskKillGracePeriodSeconds.
    #[arg(long, default_value_t = 3_000, help_heading = LOCAL)]
    pub local_agent_kill_grace: u64,
}

/// A Marathon flag Pacer accepts but that has no effect, and why.
pub struct CompatFlag {
    pub name: &'static str,
    pub toggle: bool,
    /// Marathon's default, shown in /v2/info where Marathon shows the flag.
    pub default: &'static str,
    pub heading: &'static str,
    pub why: &'static str,
    /// Marathon hides it from its own help too.
    pub hidden: bool,
}

const fn compat(
    name: &'static str,
    toggle: bool,
    default: &'static str,
    heading: &'static str,
    why: &'static str,
) -> CompatFlag {
    CompatFlag {
        name,
        toggle,
        default,
        heading,
        why,
        hidden: false,
    }
}

const fn hidden(name: &'static str, heading: &'static str, why: &'static str) -> CompatFlag {
    CompatFlag {
        name,
        toggle: false,
        default: "",
        heading,
        why,
        hidden: true,
    }
}

const JVM_TUNING: &str =
    "a tuning knob of Marathon's JVM actors; Pacer's queues are sized differently";
const NO_REPORTER: &str =
    "Pacer exposes metrics only as Prometheus text at /metrics; scrape it instead";

/// Flags of Marathon that Pacer accepts with a warning: they change nothing here.
pub const COMPAT: &[CompatFlag] = &[
    compat(
        "mesos_bridge_name",
        false,
        "mesos-bridge",
        CORE,
        "Pacer does not use CNI networks for the MESOS containerizer",
    ),
    compat(
        "gpu_scheduling_behavior",
        false,
        "restricted",
        CORE,
        "Pacer does not schedule GPUs",
    ),
    compat(
        "maintenance_mode",
        true,
        "true",
        CORE,
        "the local agent is never in maintenance",
    ),
    compat(
        "draining_seconds",
        false,
        "0",
        CORE,
        "the local agent is never in maintenance",
    ),
    compat(
        "mesos_offer_constraints",
        true,
        "false",
        CORE,
        "Pacer evaluates constraints itself",
    ),
    compat(
        "min_mesos_offer_constraints_update_interval",
        false,
        "1000",
        CORE,
        "Pacer evaluates constraints itself",
    ),
    compat(
        "task_reservation_timeout",
        false,
        "20000",
        SCHED,
        "Pacer has no resident tasks or reservations",
    ),
    compat(
        "scale_apps_initial_delay",
        false,
        "15000",
        SCHED,
        "Pacer converges instance counts on every change, not on a timer",
    ),
    compat(
        "scale_apps_interval",
        false,
        "300000",
        SCHED,
        "Pacer converges instance counts on every change, not on a timer",
    ),
    compat(
        "group_versions_cache_size",
        false,
        "1000",
        SCHED,
        "Pacer keeps group versions as persistent maps, without a cache",
    ),
    compat(
        "store_cache",
        true,
        "true",
        ZK,
        "Pacer always serves reads from memory",
    ),
    compat(
        "storage_compaction_interval",
        false,
        "30",
        ZK,
        "Pacer removes unreferenced versions as it writes",
    ),
    compat(
        "storage_compaction_scan_batch_size",
        false,
        "32",
        ZK,
        "Pacer removes unreferenced versions as it writes",
    ),
    compat(
        "leader_proxy_ssl_ignore_hostname",
        true,
        "false",
        HTTP,
        "standby proxying is not part of this build yet",
    ),
    compat(
        "leader_proxy_max_open_connections",
        false,
        "64",
        HTTP,
        "standby proxying is not part of this build yet",
    ),
    compat("metrics_statsd", true, "false", MISC, NO_REPORTER),
    compat("metrics_statsd_host", false, "", MISC, NO_REPORTER),
    compat("metrics_statsd_port", false, "", MISC, NO_REPORTER),
    compat(
        "metrics_statsd_transmission_interval_ms",
        false,
        "10000",
        MISC,
        NO_REPORTER,
    ),
    compat("metrics_datadog", true, "false", MISC, NO_REPORTER),
    compat("metrics_datadog_host", false, "", MISC, NO_REPORTER),
    compat("metrics_datadog_port", false, "", MISC, NO_REPORTER),
    compat("metrics_datadog_protocol", false, "udp", MISC, NO_REPORTER),
    compat("metrics_datadog_api_key", false, "", MISC, NO_REPORTER),
    compat(
        "metrics_datadog_transmission_interval_ms",
        false,
        "10000",
        MISC,
        NO_REPORTER,
    ),
    compat(
        "metrics_histogram_reservoir_significant_digits",
        false,
        "4",
        MISC,
        "Pacer's histograms have fixed buckets",
    ),
    compat(
        "metrics_histogram_reservoir_reset_periodically",
        true,
        "true",
        MISC,
        "Pacer's histograms have fixed buckets",
    ),
    compat(
        "metrics_histogram_reservoir_resetting_interval_ms",
        false,
        "5000",
        MISC,
        "Pacer's histograms have fixed buckets",
    ),
    compat(
        "metrics_histogram_reservoir_resetting_chunks",
        false,
        "0",
        MISC,
        "Pacer's histograms have fixed buckets",
    ),
    compat(
        "logstash",
        false,
        "",
        MISC,
        "ship Pacer's log (--log_format json) with a log collector instead",
    ),
    compat("sentry", false, "", MISC, "Pacer does not report to Sentry"),
    compat(
        "sentry_tags",
        false,
        "",
        MISC,
        "Pacer does not report to Sentry",
    ),
    compat(
        "deprecated_features",
        false,
        "",
        MISC,
        "Pacer has no soft-removed features to keep",
    ),
    hidden("assets_path", HTTP, "Pacer serves no UI assets"),
    hidden("max_parallel_offers", SCHED, JVM_TUNING),
    hidden("max_queued_offers", SCHED, JVM_TUNING),
    hidden("max_parallel_status_updates", SCHED, JVM_TUNING),
    hidden("max_queued_status_updates", SCHED, JVM_TUNING),
    hidden("max_queued_root_group_updates", SCHED, JVM_TUNING),
    hidden("launch_queue_request_timeout", SCHED, JVM_TUNING),
    hidden("task_operation_notification_timeout", SCHED, JVM_TUNING),
    hidden("zk_max_concurrency", ZK, JVM_TUNING),
    hidden(
        "internal_store_backend",
        ZK,
        "Pacer chooses its store from --zk",
    ),
    hidden(
        "leader_election_backend",
        ZK,
        "Pacer elects its leader through ZooKeeper",
    ),
];

/// Real flags that only the Mesos backend reads; given with the local backend they get a warning.
const MESOS_ONLY: &[&str] = &[
    "mesos_leader_ui_url",
    "accepted_resource_roles_default_behavior",
    "default_accepted_resource_roles",
    "mesos_user",
    "checkpoint",
    "failover_timeout",
    "webui_url",
    "executor",
    "mesos_authentication",
    "mesos_authentication_principal",
    "mesos_authentication_secret",
    "mesos_authentication_secret_file",
    "mesos_heartbeat_interval",
    "mesos_heartbeat_failure_threshold",
    "suppress_offers",
    "task_launch_confirm_timeout",
    "reconciliation_initial_delay",
    "reconciliation_interval",
    "launch_tokens",
    "launch_token_refresh_interval",
    "offer_matching_timeout",
    "min_revive_offers_interval",
    "task_lost_expunge_initial_delay",
    "task_lost_expunge_interval",
    "kill_chunk_size",
    "kill_retry_timeout",
];

/// Real flags that only the ZooKeeper store and leader election read.
const ZK_ONLY: &[&str] = &[
    "zk_timeout",
    "zk_session_timeout",
    "zk_connection_timeout",
    "zk_max_node_size",
    "zk_compression",
    "zk_compression_threshold",
    "backup_location",
    "on_elected_prepare_timeout",
    "leader_proxy_connection_timeout",
    "leader_proxy_read_timeout",
];

impl Flags {
    /// Which pools apps without `acceptedResourceRoles` draw from: the behaviour flag when
    /// given, else the deprecated `--default_accepted_resource_roles` decides as in Marathon
    /// 1.9, else any.
    pub fn accepted_roles_default(&self) -> pacer_core::placement::RoleDefault {
        use pacer_core::placement::RoleDefault;
        let roles = &self.default_accepted_resource_roles;
        if let Some(behaviour) = &self.accepted_resource_roles_default_behavior {
            return RoleDefault::parse(behaviour).expect("clap admits only the three values");
        }
        if !roles.is_empty() {
            let star = roles.iter().any(|r| r == "*");
            let own = self.mesos_role != "*" && roles.contains(&self.mesos_role);
            return match (star, own) {
                (true, false) => RoleDefault::Unreserved,
                (false, true) => RoleDefault::Reserved,
                _ => RoleDefault::Any,
            };
        }
        RoleDefault::Any
    }
}

/// Flags as parsed, with what the operator should be told about them.
#[derive(Debug)]
pub struct Parsed {
    pub flags: Flags,
    /// `--zk` was given: state lives in ZooKeeper instead of the embedded store.
    pub use_zk: bool,
    /// Compat flags as given: name → value (toggles as `true`/`false`).
    pub compat: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
}

impl Parsed {
    /// Leader election takes place: `--zk` without `--disable_ha`.
    pub fn ha(&self) -> bool {
        self.use_zk && self.flags.ha
    }
}

/// Why start-up stops.
#[derive(Debug)]
pub enum FlagError {
    /// `--help` or `--version`: print and exit 0.
    Display(clap::Error),
    /// A clap parse error, already formatted with usage.
    Parse(clap::Error),
    /// A flag that parses but that Pacer refuses, with the reason.
    Refused(String),
}

impl FlagError {
    pub fn print_and_exit_code(&self) -> u8 {
        match self {
            FlagError::Display(e) => {
                let _ = e.print();
                0
            }
            FlagError::Parse(e) => {
                let _ = e.print();
                EXIT_BAD_FLAGS
            }
            FlagError::Refused(msg) => {
                eprintln!("pacer: {msg}");
                EXIT_BAD_FLAGS
            }
        }
    }
}

/// clap's command: the derived flags plus the compat flags.
pub fn command() -> clap::Command {
    let mut cmd = Flags::command();
    for c in COMPAT {
        let mut arg = Arg::new(c.name)
            .long(c.name)
            .help(format!("Accepted, no effect: {}.", c.why))
            .help_heading(c.heading)
            .hide(c.hidden);
        arg = if c.toggle {
            arg.action(ArgAction::Set)
                .num_args(0..=1)
                .default_missing_value("true")
                .value_parser(BoolishValueParser::new())
                .value_name("BOOL")
        } else {
            arg.action(ArgAction::Set).num_args(1)
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Parses `argv` (with the program name first) and the environment, Marathon's way.
pub fn parse<A, E>(argv: A, env: E) -> Result<Parsed, FlagError>
where
    A: IntoIterator<Item = OsString>,
    E: IntoIterator<Item = (OsString, OsString)>,
{
    let cmd = command();
    let toggles: BTreeSet<String> = cmd
        .get_arguments()
        // Every toggle (bare flag, or `=true`/`=false`) is declared with the value name BOOL.
        .filter(|a| {
            a.get_value_names()
                .is_some_and(|n| n.len() == 1 && n[0] == "BOOL")
        })
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let longs: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let known = |name: &str| {
        longs.contains(name)
            || name
                .strip_prefix("disable_")
                .is_some_and(|t| toggles.contains(t))
    };

    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_else(|| "pacer".into());
    let argv: Vec<OsString> = argv.collect();
    // Flags on the command line replace their environment values outright (an invalid value
    // in the environment does not matter then).
    let on_command_line: BTreeSet<String> = argv
        .iter()
        .filter_map(|a| a.to_str()?.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .map(|a| match a.strip_prefix("disable_") {
            Some(t) if toggles.contains(t) => t.to_string(),
            _ => a.to_string(),
        })
        .collect();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    env.sort();
    let mut from_env = Vec::new();
    for (key, value) in &env {
        let name = match key.as_str() {
            "MESOSPHERE_HTTP_CREDENTIALS" => "http_credentials".to_string(),
            "MESOSPHERE_KEYSTORE_PATH" => "ssl_keystore_path".to_string(),
            "MESOSPHERE_KEYSTORE_PASS" => "ssl_keystore_password".to_string(),
            k if k.starts_with("MARATHON_APP_") => continue,
            k => match k.strip_prefix("MARATHON_") {
                Some(rest) => rest.to_ascii_lowercase(),
                None => continue,
            },
        };
        if !known(&name) {
            return Err(FlagError::Refused(format!(
                "unknown flag --{name} (from the environment variable {key}); see pacer --help"
            )));
        }
        let flag = match name.strip_prefix("disable_") {
            Some(t) if toggles.contains(t) => t,
            _ => name.as_str(),
        };
        if on_command_line.contains(flag) {
            continue;
        }
        from_env.push(if value.is_empty() {
            format!("--{name}")
        } else {
            format!("--{name}={value}")
        });
    }

    // `--disable_x` of a toggle is `--x=false`; environment first so the command line wins.
    let rewrite = |arg: OsString| -> OsString {
        match arg.to_str().and_then(|s| s.strip_prefix("--disable_")) {
            Some(t) if toggles.contains(t) => format!("--{t}=false").into(),
            _ => arg,
        }
    };
    let args: Vec<OsString> = std::iter::once(program)
        .chain(from_env.into_iter().map(OsString::from))
        .chain(argv)
        .map(rewrite)
        .collect();
    let matches = cmd.try_get_matches_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            FlagError::Display(e)
        }
        _ => FlagError::Parse(e),
    })?;
    let flags = Flags::from_arg_matches(&matches).map_err(FlagError::Parse)?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };

    let mut warnings = Vec::new();
    let mut compat_values = Vec::new();
    for c in COMPAT {
        if given(c.name) {
            let value = if c.toggle {
                matches
                    .get_one::<bool>(c.name)
                    .copied()
                    .unwrap_or(true)
                    .to_string()
            } else {
                matches
                    .get_one::<String>(c.name)
                    .cloned()
                    .unwrap_or_default()
            };
            warnings.push(format!("--{} has no effect in Pacer: {}.", c.name, c.why));
            compat_values.push((c.name, value));
        }
    }
    for name in MESOS_ONLY
        .iter()
        .filter(|n| given(n) && flags.master == "local")
    {
        warnings.push(format!(
            "--{name} only applies to the Mesos backend; the local backend ignores it."
        ));
    }
    let use_zk = given("zk");
    for name in ZK_ONLY.iter().filter(|n| given(n) && !use_zk) {
        warnings.push(format!(
            "--{name} only applies with the ZooKeeper store (--zk); the embedded store ignores it."
        ));
    }
    if flags.new_group_enforce_role != "off" {
        warnings.push(format!(
            "--new_group_enforce_role {}: enforceRole is not implemented yet; new groups get \
             enforceRole false.",
            flags.new_group_enforce_role
        ));
    }
    if given("ha") && flags.ha && !use_zk {
        warnings.push(
            "--ha needs --zk; a single Pacer on the embedded store is always the leader.".into(),
        );
    }
    refuse_unsupported(&flags, &given)?;
    Ok(Parsed {
        use_zk,
        flags,
        compat: compat_values,
        warnings,
    })
}

/// Flags that would change where apps run or where state lives, and that this build cannot honour:
/// refused rather than silently ignored.
fn refuse_unsupported(f: &Flags, given: &dyn Fn(&str) -> bool) -> Result<(), FlagError> {
    let refuse = |msg: String| Err(FlagError::Refused(msg));
    if f.master != "local" {
        if let Err(e) = pacer_mesos::MasterSource::parse(&f.master) {
            return refuse(format!(
                "--master {}: {e} (use local, http://host:5050 or zk://host:2181/mesos)",
                pacer_zk::redact_url(&f.master)
            ));
        }
        if f.mesos_authentication
            && (f.mesos_authentication_principal.is_none()
                || (f.mesos_authentication_secret.is_none()
                    && f.mesos_authentication_secret_file.is_none()))
        {
            return refuse(
                "--mesos_authentication needs --mesos_authentication_principal and a secret \
                 (--mesos_authentication_secret_file)"
                    .into(),
            );
        }
        if let Some(bad) = f
            .default_accepted_resource_roles
            .iter()
            .find(|r| *r != "*" && **r != f.mesos_role)
        {
            return refuse(format!(
                "--default_accepted_resource_roles: Pacer receives no offers for role '{bad}' \
                 (only * and --mesos_role {} are offered)",
                f.mesos_role
            ));
        }
    }
    if given("zk") {
        if let Err(e) = pacer_zk::ZkUrl::parse(&f.zk) {
            return refuse(format!("--zk: {e}"));
        }
    }
    if f.plugin_dir.is_some() && f.plugin_conf.is_none() {
        return refuse("--plugin_dir needs --plugin_conf, which lists the plugins to load".into());
    }
    if let Some(c) = &f.http_credentials {
        if !c.contains(':') || c.starts_with(':') {
            return refuse("--http_credentials must be `user:password`".into());
        }
    }
    if f.ssl_cert_path.is_some() != f.ssl_key_path.is_some() {
        return refuse("--ssl_cert_path and --ssl_key_path must be given together".into());
    }
    if f.ssl_keystore_path.is_some() && f.ssl_cert_path.is_some() {
        return refuse(
            "give either --ssl_keystore_path or --ssl_cert_path/--ssl_key_path, not both".into(),
        );
    }
    if f.disable_http && f.ssl_keystore_path.is_none() && f.ssl_cert_path.is_none() {
        return refuse(
            "--disable_http leaves no listener: configure HTTPS with --ssl_cert_path and \
             --ssl_key_path (or --ssl_keystore_path)"
                .into(),
        );
    }
    if f.http_max_concurrent_requests == Some(0) {
        return refuse("--http_max_concurrent_requests must be at least 1".into());
    }
    if f.local_port_min > f.local_port_max {
        return refuse("--local_port_min must not be above --local_port_max".into());
    }
    if f.metrics_name_prefix.is_empty()
        || !f
            .metrics_name_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || f.metrics_name_prefix
            .starts_with(|c: char| c.is_ascii_digit())
    {
        return refuse(
            "--metrics_name_prefix must be a Prometheus name: letters, digits, `_`".into(),
        );
    }
    Ok(())
}

/// Parses `31000-32000,33000-33010`.
pub fn parse_port_ranges(s: &str) -> Result<Vec<pacer_core::cluster::PortRange>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (a, b) = part
                .trim()
                .split_once('-')
                .unwrap_or((part.trim(), part.trim()));
            let begin: u32 = a
                .trim()
                .parse()
                .map_err(|_| format!("bad port range `{part}`"))?;
            let end: u32 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad port range `{part}`"))?;
            if begin > end || end > 65535 || begin == 0 {
                return Err(format!("bad port range `{part}`"));
            }
            Ok(pacer_core::cluster::PortRange { begin, end })
        })
        .collect()
}

/// Parses Mesos-style attributes `rack:r1;zone:z1`; numbers become scalars.
pub fn parse_attributes(
    s: &str,
) -> Result<std::collections::BTreeMap<String, pacer_core::cluster::AttributeValue>, String> {
    use pacer_core::cluster::AttributeValue;
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (k, v) = part
                .split_once(':')
                .ok_or_else(|| format!("bad attribute `{part}` (expected name:value)"))?;
            let value = match v.trim().parse::<f64>() {
                Ok(x) => AttributeValue::Scalar(x),
                Err(_) => AttributeValue::Text(v.trim().to_string()),
            };
            Ok((k.trim().to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, FlagError> {
        parse(
            std::iter::once("pacer")
                .chain(args.iter().copied())
                .map(OsString::from),
            env.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    fn ok(args: &[&str], env: &[(&str, &str)]) -> Parsed {
        match parse_with(args, env) {
            Ok(p) => p,
            Err(e) => panic!("{args:?} {env:?}: {e:?}"),
        }
    }

    fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
        match parse_with(args, env) {
            Ok(_) => panic!("{args:?} {env:?} was accepted"),
            Err(FlagError::Refused(m)) => m,
            Err(FlagError::Parse(e)) => e.to_string(),
            Err(FlagError::Display(_)) => panic!("help shown"),
        }
    }

    #[test]
    fn defaults_are_marathons() {
        let f = ok(&[], &[]).flags;
        assert_eq!(f.http_port, 8080);
        assert_eq!(f.https_port, 8443);
        assert_eq!(f.http_realm, "Mesosphere");
        assert_eq!(f.zk_max_versions, 50);
        assert_eq!(f.failover_timeout, 604_800);
        assert_eq!(f.graceful_shutdown_timeout, 45_000);
        assert!(f.checkpoint && f.ha && f.http_compression && f.metrics);
        assert!(!f.mesos_authentication && !f.disable_http);
        assert_eq!(f.http_max_concurrent_requests, None);
    }

    #[test]
    fn toggles_take_both_spellings() {
        let f = ok(&["--disable_checkpoint", "--mesos_authentication"], &[]).flags;
        assert!(!f.checkpoint);
        assert!(f.mesos_authentication);
        let f = ok(&["--disable_http_compression"], &[]).flags;
        assert!(!f.http_compression);
        // The later of two spellings wins, as with any repeated flag.
        let f = ok(&["--disable_metrics", "--metrics"], &[]).flags;
        assert!(f.metrics);
    }

    #[test]
    fn environment_is_read_and_the_command_line_wins() {
        let p = ok(
            &["--http_port", "9000"],
            &[
                ("MARATHON_HTTP_PORT", "7000"),
                ("MARATHON_FRAMEWORK_NAME", "from-env"),
                ("MARATHON_DISABLE_HTTP_COMPRESSION", ""),
                ("MARATHON_APP_ID", "/ignored"),
                ("MARATHON_ENABLE_FEATURES", "secrets,task_killing"),
                ("MESOSPHERE_HTTP_CREDENTIALS", "ops:s3cret"),
                ("PATH", "/usr/bin"),
            ],
        );
        let f = p.flags;
        assert_eq!(f.http_port, 9000);
        assert_eq!(f.framework_name, "from-env");
        assert!(!f.http_compression);
        assert_eq!(f.enable_features, ["secrets", "task_killing"]);
        assert_eq!(f.http_credentials.as_deref(), Some("ops:s3cret"));
        // A list on the command line replaces the environment's list.
        let f = ok(
            &["--enable_features", "vips"],
            &[("MARATHON_ENABLE_FEATURES", "secrets")],
        )
        .flags;
        assert_eq!(f.enable_features, ["vips"]);
        // A toggle from the environment can be turned back on by the command line.
        let f = ok(&["--checkpoint"], &[("MARATHON_DISABLE_CHECKPOINT", "")]).flags;
        assert!(f.checkpoint);
        // A bad value in the environment does not matter when the command line sets the flag.
        let f = ok(&["--http_port=0"], &[("MARATHON_HTTP_PORT", "notaport")]).flags;
        assert_eq!(f.http_port, 0);
        assert!(parse_with(&[], &[("MARATHON_HTTP_PORT", "notaport")]).is_err());
    }

    #[test]
    fn unknown_flags_stop_start_up() {
        let m = refused(&["--no_such_flag", "1"], &[]);
        assert!(m.contains("--no_such_flag"), "{m}");
        let m = refused(&[], &[("MARATHON_NO_SUCH_FLAG", "1")]);
        assert!(
            m.contains("--no_such_flag") && m.contains("MARATHON_NO_SUCH_FLAG"),
            "{m}"
        );
        // `disable_` only makes sense for toggles.
        let m = refused(&["--disable_http_port"], &[]);
        assert!(m.contains("disable_http_port"), "{m}");
        let m = refused(&["--http_port", "not-a-port"], &[]);
        assert!(m.contains("not-a-port"), "{m}");
    }

    #[test]
    fn compat_flags_are_accepted_with_a_reason() {
        let p = ok(
            &[
                "--metrics_statsd",
                "--metrics_statsd_host",
                "stats",
                "--disable_store_cache",
                "--max_queued_offers",
                "10",
            ],
            &[],
        );
        assert!(p
            .warnings
            .iter()
            .any(|w| w.starts_with("--metrics_statsd has no effect in Pacer: ")));
        assert!(p
            .compat
            .contains(&("metrics_statsd_host", "stats".to_string())));
        assert!(p.compat.contains(&("store_cache", "false".to_string())));
        assert_eq!(p.warnings.len(), 4, "{:?}", p.warnings);
        assert!(ok(&[], &[]).warnings.is_empty());
        let p = ok(&["--mesos_user", "root"], &[]);
        assert!(p.warnings[0].contains("Mesos backend"), "{:?}", p.warnings);
    }

    #[test]
    fn unsupported_backends_are_refused_with_the_flag_named() {
        let m = refused(&["--master", "https://u:pw@m1:5050"], &[]);
        assert!(m.contains("--master") && !m.contains("pw"), "{m}");
        ok(&["--master", "zk://u:pw@zk1:2181/mesos"], &[]);
        ok(&["--master", "m1:5050,m2:5050"], &[]);
        refused(&["--master", "m1:5050", "--mesos_authentication"], &[]);
        let p = ok(&[], &[("MARATHON_ZK", "zk://zk1:2181/marathon")]);
        assert!(p.use_zk && p.flags.ha);
        assert!(refused(&["--zk", "zk://h:2181"], &[]).contains("path"));
        let p = ok(&["--zk", "zk://u:pw@h:2181/pacer", "--disable_ha"], &[]);
        assert!(p.use_zk);
        assert!(!ok(&[], &[]).use_zk);
        assert!(refused(&["--plugin_dir", "/p"], &[]).contains("--plugin_conf"));
        ok(
            &["--plugin_dir", "/p", "--plugin_conf", "/p/plugins.json"],
            &[],
        );
        refused(&["--http_credentials", "nocolon"], &[]);
        refused(&["--disable_http"], &[]);
        refused(&["--ssl_cert_path", "/c.pem"], &[]);
        refused(&["--http_max_concurrent_requests", "0"], &[]);
        ok(&["--master", "local"], &[]);
    }

    #[test]
    fn help_groups_flags_as_marathon_does() {
        let help = command().render_long_help().to_string();
        for heading in [CORE, SCHED, ZK, HTTP, MISC, LOCAL] {
            assert!(help.contains(heading), "{heading} missing");
        }
        assert!(help.contains("--metrics_statsd"));
        assert!(
            !help.contains("--max_queued_offers"),
            "hidden flags stay hidden"
        );
        assert!(matches!(
            parse_with(&["--help"], &[]),
            Err(FlagError::Display(_))
        ));
    }

    #[test]
    fn accepted_roles_default_comes_from_either_flag() {
        use pacer_core::placement::RoleDefault;
        let m = ["--master", "http://m:5050", "--mesos_role", "prod"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = m.iter().chain(extra).copied().collect();
            ok(&args, &[]).flags.accepted_roles_default()
        };
        assert_eq!(with(&[]), RoleDefault::Any);
        let behaviour = "--accepted_resource_roles_default_behavior";
        assert_eq!(with(&[behaviour, "reserved"]), RoleDefault::Reserved);
        // The deprecated list decides when the behaviour is not given.
        let list = "--default_accepted_resource_roles";
        assert_eq!(with(&[list, "*"]), RoleDefault::Unreserved);
        assert_eq!(with(&[list, "prod"]), RoleDefault::Reserved);
        assert_eq!(with(&[list, "*,prod"]), RoleDefault::Any);
        assert_eq!(
            with(&[list, "*", behaviour, "reserved"]),
            RoleDefault::Reserved
        );
        assert_eq!(
            with(&[list, "*", behaviour, "any"]),
            RoleDefault::Any,
            "given wins"
        );
        let args: Vec<&str> = m.iter().copied().chain([list, "dev"]).collect();
        assert!(refused(&args, &[]).contains("role 'dev'"));
        let args: Vec<&str> = m.iter().copied().chain([behaviour, "some"]).collect();
        assert!(refused(&args, &[]).contains("some"));
    }
}
