//! Command-line flags with Marathon's spelling. Every flag can also be given as
//! `MARATHON_<NAME>` in the environment; the command line wins when both are set.

use clap::Parser;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pacer",
    version,
    about = "Pacer: a Marathon-compatible scheduler for long-running services",
    long_about = "Pacer speaks Marathon's REST API v2. By default it runs apps as real processes on this \
                  machine and keeps its state in an embedded store under --data_dir.\n\n\
                  Every flag may also be set as MARATHON_<FLAG_NAME_IN_UPPER_CASE> in the environment; \
                  a flag on the command line wins over the environment."
)]
pub struct Flags {
    /// Address the HTTP API listens on. Defaults to loopback: the API can run commands on this
    /// machine and has no authentication yet.
    #[arg(
        long = "http_address",
        env = "MARATHON_HTTP_ADDRESS",
        default_value = "127.0.0.1"
    )]
    pub http_address: IpAddr,

    /// Port of the HTTP API (0 picks a free port and logs it).
    #[arg(long = "http_port", env = "MARATHON_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// Directory for the embedded store and the local agent's task sandboxes.
    #[arg(
        long = "data_dir",
        env = "MARATHON_DATA_DIR",
        default_value = "pacer-data"
    )]
    pub data_dir: PathBuf,

    /// Host name advertised for this Pacer and used as the local agent's host name.
    #[arg(long = "hostname", env = "MARATHON_HOSTNAME")]
    pub hostname: Option<String>,

    /// Framework name (shown in /v2/info; registered with Mesos once that backend exists).
    #[arg(
        long = "framework_name",
        env = "MARATHON_FRAMEWORK_NAME",
        default_value = "marathon"
    )]
    pub framework_name: String,

    /// The default Mesos role of apps.
    #[arg(long = "mesos_role", env = "MARATHON_MESOS_ROLE", default_value = "*")]
    pub mesos_role: String,

    /// Lowest service port assigned to apps that ask for port 0.
    #[arg(
        long = "local_port_min",
        env = "MARATHON_LOCAL_PORT_MIN",
        default_value_t = 10000
    )]
    pub local_port_min: u16,

    /// Highest service port assigned to apps that ask for port 0.
    #[arg(
        long = "local_port_max",
        env = "MARATHON_LOCAL_PORT_MAX",
        default_value_t = 20000
    )]
    pub local_port_max: u16,

    /// At most this many instances are launched from one offer.
    #[arg(
        long = "max_instances_per_offer",
        env = "MARATHON_MAX_INSTANCES_PER_OFFER",
        default_value_t = 5
    )]
    pub max_instances_per_offer: usize,

    /// How long (ms) a declined offer's resources are not offered again unless something changes.
    #[arg(
        long = "decline_offer_duration",
        env = "MARATHON_DECLINE_OFFER_DURATION",
        default_value_t = 120_000
    )]
    pub decline_offer_duration: u64,

    /// Prefix for the PORT*/HOST environment variables of tasks.
    #[arg(long = "env_vars_prefix", env = "MARATHON_ENV_VARS_PREFIX")]
    pub env_vars_prefix: Option<String>,

    /// Optional features, comma-separated (e.g. gpu_resources, secrets).
    #[arg(
        long = "enable_features",
        env = "MARATHON_ENABLE_FEATURES",
        value_delimiter = ','
    )]
    pub enable_features: Vec<String>,

    /// Versions kept per app.
    #[arg(
        long = "zk_max_versions",
        env = "MARATHON_ZK_MAX_VERSIONS",
        default_value_t = 50
    )]
    pub zk_max_versions: usize,

    /// Running deployments allowed at once; more are refused with 403.
    #[arg(
        long = "max_running_deployments",
        env = "MARATHON_MAX_RUNNING_DEPLOYMENTS",
        default_value_t = 100
    )]
    pub max_running_deployments: usize,

    /// Milliseconds a task may take from launch to TASK_RUNNING before it is killed and
    /// relaunched.
    #[arg(
        long = "task_launch_timeout",
        env = "MARATHON_TASK_LAUNCH_TIMEOUT",
        default_value_t = 300_000
    )]
    pub task_launch_timeout: u64,

    /// Scheduler-side health and readiness probes (HTTP, HTTPS, TCP) that may be in flight at
    /// once; probes beyond it wait, and one that waits a whole interval is reported late (not
    /// failed).
    #[arg(
        long = "max_concurrent_marathon_health_checks",
        env = "MARATHON_MAX_CONCURRENT_MARATHON_HEALTH_CHECKS",
        default_value_t = 256
    )]
    pub max_concurrent_marathon_health_checks: usize,

    /// Pacer: milliseconds a deployment step may go without progress before the deployment is
    /// marked failed (0 = never, as in Marathon). Apps can set a tighter deadline with the label
    /// PACER_DEPLOYMENT_PROGRESS_DEADLINE_SECONDS.
    #[arg(
        long = "deployment_progress_timeout",
        env = "MARATHON_DEPLOYMENT_PROGRESS_TIMEOUT",
        default_value_t = 0
    )]
    pub deployment_progress_timeout: u64,

    /// Pacer: roll a failed deployment back automatically (apps can opt in with the label
    /// PACER_DEPLOYMENT_ROLLBACK_ON_FAILURE=true).
    #[arg(
        long = "deployment_rollback_on_failure",
        env = "MARATHON_DEPLOYMENT_ROLLBACK_ON_FAILURE",
        default_value_t = false
    )]
    pub deployment_rollback_on_failure: bool,

    /// Events an `/v2/events` client may fall behind by before it is disconnected.
    #[arg(
        long = "event_stream_max_outstanding_messages",
        env = "MARATHON_EVENT_STREAM_MAX_OUTSTANDING_MESSAGES",
        default_value_t = 1024
    )]
    pub event_stream_max_outstanding_messages: usize,

    /// `http_callback` turns on HTTP callbacks (`/v2/eventSubscriptions`).
    #[arg(long = "event_subscriber", env = "MARATHON_EVENT_SUBSCRIBER")]
    pub event_subscriber: Option<String>,

    /// Callback URLs subscribed at start, comma-separated (with `--event_subscriber http_callback`).
    #[arg(
        long = "http_endpoints",
        env = "MARATHON_HTTP_ENDPOINTS",
        value_delimiter = ','
    )]
    pub http_endpoints: Vec<String>,

    /// Milliseconds one callback POST may take.
    #[arg(
        long = "http_event_request_timeout",
        env = "MARATHON_HTTP_EVENT_REQUEST_TIMEOUT",
        default_value_t = 10_000
    )]
    pub http_event_request_timeout: u64,

    /// Milliseconds after which a callback subscriber counts as slow and is backed off.
    #[arg(
        long = "http_event_callback_slow_consumer_timeout",
        env = "MARATHON_HTTP_EVENT_CALLBACK_SLOW_CONSUMER_TIMEOUT",
        default_value_t = 10_000
    )]
    pub http_event_callback_slow_consumer_timeout: u64,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides it).
    #[arg(
        long = "logging_level",
        env = "MARATHON_LOGGING_LEVEL",
        default_value = "info"
    )]
    pub logging_level: String,

    /// Pacer: host port range(s) the local agent offers, e.g. `31000-32000` or `31000-31100,32000-32100`.
    #[arg(
        long = "local_agent_ports",
        env = "MARATHON_LOCAL_AGENT_PORTS",
        default_value = "31000-32000"
    )]
    pub local_agent_ports: String,

    /// Pacer: attributes of the local agent for placement constraints, e.g. `rack:r1;zone:z1`.
    #[arg(
        long = "local_agent_attributes",
        env = "MARATHON_LOCAL_AGENT_ATTRIBUTES",
        default_value = ""
    )]
    pub local_agent_attributes: String,

    /// Pacer: CPUs the local agent offers (default: this machine's CPUs).
    #[arg(long = "local_agent_cpus", env = "MARATHON_LOCAL_AGENT_CPUS")]
    pub local_agent_cpus: Option<f64>,

    /// Pacer: memory in MB the local agent offers (default: this machine's memory).
    #[arg(long = "local_agent_mem", env = "MARATHON_LOCAL_AGENT_MEM")]
    pub local_agent_mem: Option<f64>,

    /// Pacer: default SIGTERM→SIGKILL grace (ms) for tasks without taskKillGracePeriodSeconds.
    #[arg(
        long = "local_agent_kill_grace",
        env = "MARATHON_LOCAL_AGENT_KILL_GRACE",
        default_value_t = 3000
    )]
    pub local_agent_kill_grace: u64,
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
