//! Marathon's JSON for apps (AppInfo) and tasks, computed from a state snapshot.

use pacer_core::app::AppDefinition;
use pacer_core::cluster::TaskState;
use pacer_core::instance::Instance;
use pacer_core::state::State;
use pacer_core::time::Timestamp;
use serde_json::{json, Map, Value};

/// Which optional parts of AppInfo a request asked for (`embed=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub readiness: bool,
    pub last_task_failure: bool,
    pub task_stats: bool,
}

impl Embed {
    /// Parses `embed` values; `apps.`, `app.` and `group.apps.` prefixes are interchangeable and
    /// unknown values are ignored, as in Marathon.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut e = Embed::default();
        for v in values {
            let v = v
                .strip_prefix("group.apps.")
                .or_else(|| v.strip_prefix("apps."))
                .or_else(|| v.strip_prefix("app."))
                .unwrap_or(v);
            match v {
                "tasks" => {
                    e.tasks = true;
                    e.deployments = true;
                }
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "readiness" => e.readiness = true,
                "lastTaskFailure" => e.last_task_failure = true,
                "taskStats" => e.task_stats = true,
                "failures" => {
                    e.tasks = true;
                    e.last_task_failure = true;
                    e.deployments = true;
                }
                _ => {}
            }
        }
        e
    }
}

/// Counts as AppInfo reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub staged: usize,
    pub running: usize,
    pub healthy: usize,
    pub unhealthy: usize,
}

fn count<'a>(state: &State, instances: impl Iterator<Item = &'a Instance>) -> Counts {
    let mut c = Counts::default();
    for i in instances {
        match i.state() {
            Some(TaskState::Staging) => c.staged += 1,
            Some(TaskState::Running) => c.running += 1,
            _ => {}
        }
        match state.health.get(&i.id).and_then(|h| h.healthy()) {
            Some(true) => c.healthy += 1,
            Some(false) => c.unhealthy += 1,
            None => {}
        }
    }
    c
}

/// One entry of a task's `healthCheckResults`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView<'a> {
    alive: bool,
    consecutive_failures: u32,
    first_success: Option<Timestamp>,
    last_success: Option<Timestamp>,
    last_failure: Option<Timestamp>,
    last_failure_cause: &'a Option<String>,
    instance_id: &'a pacer_core::id::InstanceId,
}

/// `healthCheckResults` of an instance's task (one entry per check that has a result).
fn health_results<'a>(state: &'a State, inst: &'a Instance) -> Vec<HealthView<'a>> {
    let Some(h) = state.health.get(&inst.id) else {
        return Vec::new();
    };
    h.checks
        .iter()
        .flatten()
        .map(|r| HealthView {
            alive: r.alive(),
            consecutive_failures: r.consecutive_failures,
            first_success: r.first_success,
            last_success: r.last_success,
            last_failure: r.last_failure,
            last_failure_cause: &r.last_failure_cause,
            instance_id: &inst.id,
        })
        .collect()
}

/// `readinessCheckResults` of an app: shown while a deployment waits for it, as in Marathon.
pub fn readiness_results(state: &State, app: &pacer_core::id::PathId) -> Vec<Value> {
    if state.deployments_of(app).next().is_none() {
        return Vec::new();
    }
    state
        .instances_of(app)
        .filter_map(|i| {
            let h = state.health.get(&i.id)?;
            let r = h.readiness.as_ref()?;
            let mut v = json!({"name": r.name, "taskId": h.task_id, "ready": r.ready});
            if let Some(resp) = &r.last_response {
                v["lastResponse"] = json!({"status": resp.status, "contentType": resp.content_type, "body": resp.body});
            }
            Some(v)
        })
        .collect()
}

/// The task JSON of one instance's current task, or `None` if it has no live task.
pub fn task_json(state: &State, inst: &Instance) -> Option<Value> {
    task_view(state, inst).map(|v| serde_json::to_value(v).expect("tasks serialise"))
}

/// `{"tasks": [..]}`.
#[derive(serde::Serialize)]
pub struct Tasks<'a> {
    pub tasks: Vec<TaskView<'a>>,
}

/// `{"app": ..}`.
#[derive(serde::Serialize)]
pub struct One<'a> {
    pub app: AppInfoView<'a>,
}

/// `{"*": [..]}`, the apps of a group (`/v2/apps/{group}/*`).
#[derive(serde::Serialize)]
pub struct Star<'a> {
    #[serde(rename = "*")]
    pub apps: Vec<AppInfoView<'a>>,
}

/// `{"apps": [..]}`.
#[derive(serde::Serialize)]
pub struct Apps<'a> {
    pub apps: Vec<AppInfoView<'a>>,
}

/// A response body made of app and task views.
pub trait Listing: serde::Serialize {
    /// How many task views it embeds.
    fn task_count(&self) -> usize;
}

impl Listing for Tasks<'_> {
    fn task_count(&self) -> usize {
        self.tasks.len()
    }
}

impl Listing for One<'_> {
    fn task_count(&self) -> usize {
        self.app.task_count()
    }
}

impl Listing for Star<'_> {
    fn task_count(&self) -> usize {
        self.apps.iter().map(AppInfoView::task_count).sum()
    }
}

impl Listing for Apps<'_> {
    fn task_count(&self) -> usize {
        self.apps.iter().map(AppInfoView::task_count).sum()
    }
}

/// A listing as JSON bytes, its buffer sized once from the number of tasks (growing a 5 MB
/// buffer by doubling copied it and faulted in fresh pages several times).
pub fn to_json(listing: &impl Listing) -> Vec<u8> {
    const TASK_JSON_BYTES: usize = 480;
    let mut out = Vec::with_capacity(1024 + TASK_JSON_BYTES * listing.task_count());
    serde_json::to_writer(&mut out, listing).expect("listings serialise");
    out
}

/// Marathon's task JSON, serialised straight from the instance (no `Value` tree): `/v2/tasks`
/// renders 10,000 of these per request.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView<'a> {
    app_id: &'a pacer_core::id::PathId,
    health_check_results: Vec<HealthView<'a>>,
    host: &'a str,
    id: &'a pacer_core::id::TaskId,
    ip_addresses: Vec<IpView>,
    ports: &'a [u32],
    service_ports: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slave_id: Option<&'a pacer_core::cluster::AgentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    staged_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Timestamp>,
    state: &'static str,
    version: Timestamp,
    local_volumes: [(); 0],
    role: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IpView {
    ip_address: String,
    protocol: &'static str,
}

/// The view of an instance's current task, or `None` if it has no live task.
pub fn task_view<'a>(state: &'a State, inst: &'a Instance) -> Option<TaskView<'a>> {
    let task = inst.task.as_ref().filter(|t| !t.state.is_terminal())?;
    let app = state.apps.get(&inst.app_id);
    let agent = inst.agent.as_ref();
    let host = agent.map(|a| a.host.as_str()).unwrap_or_default();
    let ip_addresses = host
        .parse::<std::net::IpAddr>()
        .map(|ip| {
            vec![IpView {
                ip_address: ip.to_string(),
                protocol: if ip.is_ipv4() { "IPv4" } else { "IPv6" },
            }]
        })
        .unwrap_or_default();
    Some(TaskView {
        app_id: &inst.app_id,
        health_check_results: health_results(state, inst),
        host,
        id: &task.task_id,
        ip_addresses,
        ports: &task.host_ports,
        service_ports: app.map(|a| a.service_ports()).unwrap_or_default(),
        slave_id: agent.map(|a| &a.agent_id),
        region: agent.and_then(|a| a.region.as_deref()),
        zone: agent.and_then(|a| a.zone.as_deref()),
        staged_at: task.staged_at,
        started_at: task.started_at,
        state: task.state.mesos_name(),
        version: inst.run_spec_version,
        local_volumes: [],
        role: app.map(|a| a.role.as_str()).unwrap_or("*"),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn stats_bucket(state: &State, instances: &[&Instance], now: Timestamp) -> Option<Value> {
    if instances.is_empty() {
        return None;
    }
    let c = count(state, instances.iter().copied());
    let lifetimes: Vec<f64> = instances
        .iter()
        .filter_map(|i| i.task.as_ref().and_then(|t| t.started_at))
        .map(|s| now.since(s).as_secs_f64())
        .collect();
    let mut stats = json!({"counts": {"staged": c.staged, "running": c.running, "healthy": c.healthy, "unhealthy": c.unhealthy}});
    if !lifetimes.is_empty() {
        let avg = lifetimes.iter().sum::<f64>() / lifetimes.len() as f64;
        stats["lifeTime"] = json!({"averageSeconds": avg, "medianSeconds": median(lifetimes)});
    }
    Some(json!({"stats": stats}))
}

fn task_stats(state: &State, app: &AppDefinition, live: &[&Instance], now: Timestamp) -> Value {
    let mut m = Map::new();
    let after_scaling: Vec<&Instance> = live
        .iter()
        .copied()
        .filter(|i| {
            i.task
                .as_ref()
                .is_some_and(|t| t.staged_at >= app.version_info.last_scaling_at)
        })
        .collect();
    let latest: Vec<&Instance> = live
        .iter()
        .copied()
        .filter(|i| i.config_version >= app.version_info.last_config_change_at)
        .collect();
    let outdated: Vec<&Instance> = live
        .iter()
        .copied()
        .filter(|i| i.config_version < app.version_info.last_config_change_at)
        .collect();
    for (k, v) in [
        ("startedAfterLastScaling", after_scaling),
        ("withLatestConfig", latest),
        ("withOutdatedConfig", outdated),
        ("totalSummary", live.to_vec()),
    ] {
        if let Some(b) = stats_bucket(state, &v, now) {
            m.insert(k.into(), b);
        }
    }
    Value::Object(m)
}

/// AppInfo, serialised straight from the state: the app definition plus the parts `embed` asks
/// for, in Marathon's key order. `/v2/apps?embed=apps.tasks` renders every task through this.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfoView<'a> {
    #[serde(flatten)]
    app: &'a AppDefinition,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_staged: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_running: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_healthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_unhealthy: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployments: Option<Vec<DeploymentRef<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    readiness_check_results: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<TaskView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_task_failure: Option<&'a pacer_core::instance::TaskFailure>,
    // 1.8+ renamed the key; the UI still reads the old one, so both are sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    task_stats: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks_stats: Option<Value>,
}

impl AppInfoView<'_> {
    /// How many tasks are embedded.
    pub fn task_count(&self) -> usize {
        self.tasks.as_ref().map_or(0, Vec::len)
    }
}

#[derive(serde::Serialize)]
pub struct DeploymentRef<'a> {
    id: &'a str,
}

/// The AppInfo view of `app`; `now` only matters for `taskStats` lifetimes.
pub fn app_view<'a>(
    state: &'a State,
    app: &'a AppDefinition,
    embed: Embed,
    now: Timestamp,
) -> AppInfoView<'a> {
    let live: Vec<&Instance> = state
        .instances_of(&app.id)
        .map(|i| i.as_ref())
        .filter(|i| i.is_active())
        .collect();
    let counts = embed.counts.then(|| count(state, live.iter().copied()));
    let stats = embed.task_stats.then(|| task_stats(state, app, &live, now));
    AppInfoView {
        app,
        tasks_staged: counts.map(|c| c.staged),
        tasks_running: counts.map(|c| c.running),
        tasks_healthy: counts.map(|c| c.healthy),
        tasks_unhealthy: counts.map(|c| c.unhealthy),
        deployments: embed.deployments.then(|| {
            state
                .deployments_of(&app.id)
                .map(|d| DeploymentRef { id: &d.id })
                .collect()
        }),
        readiness_check_results: embed.readiness.then(|| readiness_results(state, &app.id)),
        tasks: embed
            .tasks
            .then(|| live.iter().filter_map(|i| task_view(state, i)).collect()),
        last_task_failure: if embed.last_task_failure {
            state.task_failures.get(&app.id).map(|f| f.as_ref())
        } else {
            None
        },
        tasks_stats: stats.clone(),
        task_stats: stats,
    }
}

/// AppInfo as a JSON value, for callers that add to it.
pub fn app_info(state: &State, app: &AppDefinition, embed: Embed, now: Timestamp) -> Value {
    serde_json::to_value(app_view(state, app, embed, now)).expect("apps serialise")
}

#[cfg(test)]
mod golden {
    //! AppInfo and task JSON compared with reviewed files in `tests/golden/`.
    //! Set `PACER_BLESS=1` to rewrite them after an intended change, then review the diff.
    use super::*;
    use pacer_core::cluster::*;
    use pacer_core::id::PathId;
    use pacer_core::machine::{Command, Config, Effect, Scheduler};
    use pacer_core::normalize::parse_app_patch;
    use std::collections::BTreeMap;

    fn check(name: &str, actual: &Value) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
        if std::env::var_os("PACER_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, expected, "{name} differs from the golden file");
    }

    /// A scheduler with one running instance of a typical app, at a fixed time and seed.
    fn running_app() -> (Scheduler, Timestamp) {
        let now = Timestamp::from_millis(1_443_194_028_343);
        let mut core = Scheduler::new(Config::default(), 1);
        let patch = parse_app_patch(serde_json::json!({
            "id": "/prod/web", "cmd": "python3 -m http.server $PORT0", "cpus": 0.25, "mem": 64,
            "instances": 1, "labels": {"HAPROXY_GROUP": "external"}, "env": {"MODE": "prod"},
            "portDefinitions": [{"port": 0, "name": "http"}],
            "healthChecks": [{"protocol": "HTTP", "path": "/health"}]
        }))
        .unwrap();
        let id = PathId::parse_app_id("/prod/web", &PathId::root()).unwrap();
        core.command(
            now,
            Command::CreateApp {
                id,
                patch: Box::new(patch),
                force: false,
            },
        )
        .unwrap();
        while core.poll_effect().is_some() {}
        core.handle_offer(
            now,
            Offer {
                id: OfferId("o1".into()),
                agent_id: AgentId("agent-1".into()),
                hostname: "10.0.0.5".into(),
                cpus: 4.0,
                mem_mb: 4096.0,
                disk_mb: 10_000.0,
                gpus: 0.0,
                ports: vec![PortRange {
                    begin: 31000,
                    end: 32000,
                }],
                attributes: BTreeMap::new(),
                region: None,
                zone: Some("z1".into()),
                reserved: None,
                allocation_role: None,
            },
        );
        let mut task = None;
        while let Some(e) = core.poll_effect() {
            if let Effect::Launch { tasks, .. } = e {
                task = Some(tasks[0].task_id.clone());
            }
        }
        let started = now.plus(std::time::Duration::from_secs(2));
        let task_id = task.unwrap();
        core.handle_status(
            started,
            TaskStatus {
                task_id: task_id.clone(),
                state: TaskState::Running,
                message: None,
                agent_id: None,
                healthy: None,
            },
        );
        // One passing health check: the task counts as healthy and the deployment ends.
        core.handle_health(
            started,
            pacer_core::health::HealthReport {
                instance_id: task_id.instance_id().unwrap(),
                task_id,
                check_index: 0,
                outcome: pacer_core::health::ProbeOutcome::Healthy,
            },
        );
        (core, started)
    }

    #[test]
    fn app_info_with_every_embed() {
        let (core, now) = running_app();
        let state = core.snapshot();
        let app = state.apps.values().next().unwrap();
        let all = Embed {
            tasks: true,
            counts: true,
            deployments: true,
            readiness: true,
            last_task_failure: true,
            task_stats: true,
        };
        check(
            "app_info_full.json",
            &app_info(
                &state,
                app,
                all,
                now.plus(std::time::Duration::from_secs(10)),
            ),
        );
        check(
            "app_info_list.json",
            &app_info(
                &state,
                app,
                Embed {
                    counts: true,
                    deployments: true,
                    ..Embed::default()
                },
                now,
            ),
        );
    }

    #[test]
    fn embed_spellings_are_interchangeable() {
        for v in ["apps.tasks", "app.tasks", "tasks", "group.apps.tasks"] {
            let e = Embed::parse([v]);
            assert!(e.tasks && e.deployments, "{v}");
        }
        let e = Embed::parse(["apps.failures", "bogus"]);
        assert!(e.tasks && e.last_task_failure && e.deployments && !e.counts);
    }
}

/// Plan steps as Marathon writes them: `[{"actions": [{"action", "app"}]}]`.
pub fn steps_json(steps: &[Vec<pacer_core::state::DeploymentAction>]) -> Value {
    let action =
        |a: &pacer_core::state::DeploymentAction| json!({"action": a.action, "app": a.app});
    json!(steps
        .iter()
        .map(|s| json!({"actions": s.iter().map(action).collect::<Vec<_>>()}))
        .collect::<Vec<_>>())
}

/// A deployment as `/v2/deployments` lists it (Marathon's DeploymentStepInfo).
pub fn deployment_json(state: &State, d: &pacer_core::state::Deployment) -> Value {
    json!({
        "id": d.id,
        "version": d.version,
        "affectedApps": d.affected_apps,
        "affectedPods": [],
        "steps": steps_json(&d.steps),
        "currentActions": d.current_actions().iter().map(|a| json!({"action": a.action, "app": a.app, "readinessCheckResults": readiness_results(state, &a.app)})).collect::<Vec<_>>(),
        "currentStep": d.current_step.min(d.steps.len()),
        "totalSteps": d.steps.len(),
    })
}

/// Which parts of a group `embed` asks for (`group.groups`, `group.apps`, `group.pods`, plus
/// app-level embeds with the `group.apps.` prefix). No `embed` at all means all three parts.
#[derive(Clone, Copy, Debug)]
pub struct GroupEmbed {
    pub groups: bool,
    pub apps: bool,
    pub pods: bool,
    pub app: Embed,
}

impl GroupEmbed {
    pub fn parse(values: Vec<&str>) -> Self {
        if values.is_empty() {
            return GroupEmbed {
                groups: true,
                apps: true,
                pods: true,
                app: Embed::default(),
            };
        }
        GroupEmbed {
            groups: values.contains(&"group.groups"),
            apps: values.contains(&"group.apps"),
            pods: values.contains(&"group.pods"),
            app: Embed::parse(
                values
                    .iter()
                    .copied()
                    .filter(|v| v.starts_with("group.apps.")),
            ),
        }
    }
}

/// Marathon's GroupInfo for `gid`, over any root (the current one or a stored version).
pub fn group_info(
    state: &State,
    apps: &pacer_core::imbl::OrdMap<pacer_core::id::PathId, std::sync::Arc<AppDefinition>>,
    groups: &pacer_core::imbl::OrdMap<
        pacer_core::id::PathId,
        std::sync::Arc<pacer_core::state::Group>,
    >,
    gid: &pacer_core::id::PathId,
    embed: GroupEmbed,
    now: Timestamp,
) -> Value {
    use pacer_core::state::under;
    let group = groups
        .get(gid)
        .map(|g| (**g).clone())
        .unwrap_or_else(pacer_core::state::Group::root);
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(gid));
    if embed.apps {
        let list: Vec<Value> = under(apps, gid)
            .filter(|(id, _)| &id.parent() == gid)
            .map(|(_, a)| app_info(state, a, embed.app, now))
            .collect();
        m.insert("apps".into(), json!(list));
    }
    if embed.groups {
        let list: Vec<Value> = under(groups, gid)
            .filter(|(id, _)| !id.is_root() && &id.parent() == gid)
            .map(|(id, _)| group_info(state, apps, groups, id, embed, now))
            .collect();
        m.insert("groups".into(), json!(list));
    }
    if embed.pods {
        m.insert("pods".into(), json!([]));
    }
    m.insert("dependencies".into(), json!(group.dependencies));
    m.insert("version".into(), json!(group.version));
    m.insert("enforceRole".into(), json!(group.enforce_role));
    Value::Object(m)
}
