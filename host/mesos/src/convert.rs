//! Translation between Mesos messages and the core's cluster types: offers in (only the
//! resources Pacer may use), tasks out (`TaskInfo` built as Marathon §14 describes, with
//! resources carved from the offer they came from), status updates in.

use pacer_core::cluster::{
    AgentCheck, AgentCheckKind, AgentId, AttributeValue, CommandSpec, LaunchSpec, NetworkSpec,
    Offer, OfferId, PortRange, Reserved, TaskState, TaskStatus,
};
use pacer_core::id::TaskId;
use pacer_mesos_proto::v1;
use std::collections::BTreeMap;

/// The role a resource is offered for (pre-refinement `role`, or the refined reservation's
/// last role, or the allocation role).
#[allow(deprecated)] // `role` is how Mesos offers resources to frameworks without MULTI_ROLE.
pub fn resource_role(r: &v1::Resource) -> &str {
    if let Some(last) = r.reservations.last() {
        if let Some(role) = last.role.as_deref() {
            return role;
        }
    }
    match r.role.as_deref() {
        Some(role) => role,
        None => r
            .allocation_info
            .as_ref()
            .and_then(|a| a.role.as_deref())
            .unwrap_or("*"),
    }
}

/// Resources Pacer may give ordinary tasks: unreserved ones and those reserved for the
/// framework's role — but not persistent volumes or mount/block disks (they belong to resident
/// tasks and cannot be split), labelled reservations (made for a particular resident instance),
/// revocable or shared resources.
fn usable(r: &v1::Resource, framework_role: &str) -> bool {
    let role = resource_role(r);
    let labelled = r
        .reservations
        .iter()
        .chain(r.reservation.iter())
        .any(|res| res.labels.as_ref().is_some_and(|l| !l.labels.is_empty()));
    let special_disk = r
        .disk
        .as_ref()
        .is_some_and(|d| d.persistence.is_some() || d.volume.is_some() || d.source.is_some());
    (role == "*" || role == framework_role)
        && !labelled
        && !special_disk
        && r.revocable.is_none()
        && r.shared.is_none()
}

/// Sums of offered resources by kind.
#[derive(Default)]
struct Amounts {
    cpus: f64,
    mem_mb: f64,
    disk_mb: f64,
    gpus: f64,
    ports: Vec<PortRange>,
}

impl Amounts {
    fn add(&mut self, r: &v1::Resource) {
        let scalar = r.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
        match r.name.as_str() {
            "cpus" => self.cpus += scalar,
            "mem" => self.mem_mb += scalar,
            "disk" => self.disk_mb += scalar,
            "gpus" => self.gpus += scalar,
            "ports" => {
                for range in r.ranges.iter().flat_map(|rs| rs.range.iter()) {
                    self.ports.push(PortRange {
                        begin: range.begin as u32,
                        end: range.end.min(u32::MAX as u64) as u32,
                    });
                }
            }
            _ => {}
        }
    }
}

/// The core's view of an offer: the sum of the usable resources, the part of it reserved for
/// the framework's role, attributes, and the fault domain. Offers of a framework without
/// MULTI_ROLE are all allocated to its role.
pub fn offer_in(o: &v1::Offer, framework_role: &str) -> Offer {
    let mut total = Amounts::default();
    let mut reserved: Option<Amounts> = None;
    for r in o.resources.iter().filter(|r| usable(r, framework_role)) {
        total.add(r);
        if resource_role(r) != "*" {
            reserved.get_or_insert_with(Amounts::default).add(r);
        }
    }
    let mut out = Offer {
        id: OfferId(o.id.value.clone()),
        agent_id: AgentId(o.agent_id.value.clone()),
        hostname: o.hostname.clone(),
        cpus: total.cpus,
        mem_mb: total.mem_mb,
        disk_mb: total.disk_mb,
        gpus: total.gpus,
        ports: total.ports,
        attributes: BTreeMap::new(),
        region: None,
        zone: None,
        reserved: reserved.map(|r| {
            Box::new(Reserved {
                role: framework_role.to_string(),
                cpus: r.cpus,
                mem_mb: r.mem_mb,
                disk_mb: r.disk_mb,
                gpus: r.gpus,
                ports: r.ports,
            })
        }),
        allocation_role: Some(framework_role.to_string()),
    };
    for a in &o.attributes {
        let value = if let Some(t) = &a.text {
            AttributeValue::Text(t.value.clone())
        } else if let Some(s) = &a.scalar {
            AttributeValue::Scalar(s.value)
        } else if let Some(rs) = &a.ranges {
            let parts: Vec<String> = rs
                .range
                .iter()
                .map(|r| format!("{}-{}", r.begin, r.end))
                .collect();
            AttributeValue::Text(format!("[{}]", parts.join(", ")))
        } else if let Some(set) = &a.set {
            AttributeValue::Text(format!("{{{}}}", set.item.join(",")))
        } else {
            continue;
        };
        out.attributes.insert(a.name.clone(), value);
    }
    if let Some(fd) = o.domain.as_ref().and_then(|d| d.fault_domain.as_ref()) {
        out.region = Some(fd.region.name.clone());
        out.zone = Some(fd.zone.name.clone());
    }
    out
}

/// What is left of an offer's usable resources while tasks are carved from it.
pub struct Carver {
    resources: Vec<v1::Resource>,
}

impl Carver {
    pub fn new(o: &v1::Offer, framework_role: &str) -> Self {
        Carver {
            resources: o
                .resources
                .iter()
                .filter(|r| usable(r, framework_role))
                .cloned()
                .collect(),
        }
    }

    /// Takes `amount` of a scalar resource of the `allowed` roles, reserved roles first;
    /// `None` if not enough is left.
    fn scalar(
        &mut self,
        name: &str,
        mut amount: f64,
        allowed: &dyn Fn(&v1::Resource) -> bool,
    ) -> Option<Vec<v1::Resource>> {
        let mut taken = Vec::new();
        let mut order: Vec<usize> = (0..self.resources.len())
            .filter(|i| {
                let r = &self.resources[*i];
                r.name == name && r.scalar.is_some() && allowed(r)
            })
            .collect();
        order.sort_by_key(|i| resource_role(&self.resources[*i]) == "*");
        for i in order {
            if amount <= 1e-9 {
                break;
            }
            let r = &mut self.resources[i];
            let have = r.scalar.as_ref().map(|s| s.value).unwrap_or(0.0);
            let take = have.min(amount);
            if take <= 1e-9 {
                continue;
            }
            // Mesos keeps scalars in thousandths.
            let take = (take * 1000.0).round() / 1000.0;
            r.scalar = Some(v1::value::Scalar { value: have - take });
            amount -= take;
            let mut piece = r.clone();
            piece.scalar = Some(v1::value::Scalar { value: take });
            taken.push(piece);
        }
        (amount <= 1e-6).then_some(taken)
    }

    /// Takes the given ports from the ranges (of the `allowed` roles) that hold them.
    fn ports(
        &mut self,
        ports: &[u32],
        allowed: &dyn Fn(&v1::Resource) -> bool,
    ) -> Option<Vec<v1::Resource>> {
        let mut taken: Vec<v1::Resource> = Vec::new();
        for &p in ports {
            let p = p as u64;
            let i = self.resources.iter().position(|r| {
                r.name == "ports"
                    && allowed(r)
                    && r.ranges
                        .as_ref()
                        .is_some_and(|rs| rs.range.iter().any(|x| x.begin <= p && p <= x.end))
            })?;
            let r = &mut self.resources[i];
            let rs = r.ranges.as_mut().expect("checked above");
            let at = rs
                .range
                .iter()
                .position(|x| x.begin <= p && p <= x.end)
                .expect("checked above");
            let x = rs.range.remove(at);
            if x.begin < p {
                rs.range.push(v1::value::Range {
                    begin: x.begin,
                    end: p - 1,
                });
            }
            if p < x.end {
                rs.range.push(v1::value::Range {
                    begin: p + 1,
                    end: x.end,
                });
            }
            let role = resource_role(r).to_string();
            let single = v1::value::Range { begin: p, end: p };
            match taken.iter_mut().find(|t| resource_role(t) == role) {
                Some(t) => t
                    .ranges
                    .get_or_insert_with(Default::default)
                    .range
                    .push(single),
                None => {
                    let mut piece = r.clone();
                    piece.ranges = Some(v1::value::Ranges {
                        range: vec![single],
                    });
                    taken.push(piece);
                }
            }
        }
        Some(taken)
    }

    /// The resources for one task; `None` when the offer cannot hold it (the core matched it
    /// against the same numbers, so this means the offer changed).
    /// Only resources of the roles the core matched the task against (`resource_roles`) are
    /// taken, in the same order (reserved first), so both agree on what is left.
    /// A task that does not fit takes nothing.
    pub fn take(&mut self, spec: &LaunchSpec) -> Option<Vec<v1::Resource>> {
        let before = self.resources.clone();
        let taken = self.try_take(spec);
        if taken.is_none() {
            self.resources = before;
        }
        taken
    }

    fn try_take(&mut self, spec: &LaunchSpec) -> Option<Vec<v1::Resource>> {
        let roles = &spec.resource_roles;
        let allowed =
            |r: &v1::Resource| roles.is_empty() || roles.iter().any(|x| x == resource_role(r));
        let mut out = self.scalar("cpus", spec.cpus, &allowed)?;
        out.extend(self.scalar("mem", spec.mem_mb, &allowed)?);
        if spec.disk_mb > 0.0 {
            out.extend(self.scalar("disk", spec.disk_mb, &allowed)?);
        }
        out.extend(self.ports(&spec.host_ports, &allowed)?);
        Some(out)
    }
}

/// Marathon names tasks by the app id read backwards as a host name (`/prod/web` → `web.prod`).
pub fn task_name(spec: &LaunchSpec) -> String {
    let parts: Vec<&str> = spec
        .app_id
        .as_str()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(".")
}

pub(crate) fn duration_info(d: std::time::Duration) -> v1::DurationInfo {
    v1::DurationInfo {
        nanoseconds: d.as_nanos().min(i64::MAX as u128) as i64,
    }
}

fn command_info(spec: &LaunchSpec) -> v1::CommandInfo {
    let mut c = v1::CommandInfo {
        user: spec.user.clone(),
        environment: Some(v1::Environment {
            variables: spec
                .env
                .iter()
                .map(|(k, v)| v1::environment::Variable {
                    name: k.clone(),
                    r#type: Some(v1::environment::variable::Type::Value as i32),
                    value: Some(v.clone()),
                })
                .collect(),
        }),
        uris: spec
            .fetch
            .iter()
            .map(|u| v1::command_info::Uri {
                value: u.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    match &spec.command {
        CommandSpec::Shell(cmd) => {
            c.shell = Some(true);
            c.value = Some(cmd.clone());
        }
        CommandSpec::Args(args) => {
            c.shell = Some(false);
            c.value = args.first().cloned();
            c.arguments = args.clone();
        }
        CommandSpec::ImageDefault => c.shell = Some(false),
    }
    c
}

fn container_info(spec: &LaunchSpec) -> Option<v1::ContainerInfo> {
    use v1::container_info::{docker_info, DockerInfo};
    let d = spec.docker.as_ref()?;
    let network = match d.network {
        NetworkSpec::Host => docker_info::Network::Host,
        NetworkSpec::Bridge => docker_info::Network::Bridge,
        NetworkSpec::Container(_) => docker_info::Network::User,
    };
    let docker = DockerInfo {
        image: d.image.clone(),
        network: Some(network as i32),
        port_mappings: d
            .port_mappings
            .iter()
            .filter_map(|m| {
                Some(docker_info::PortMapping {
                    host_port: m.host_port?,
                    container_port: m.container_port,
                    protocol: Some(m.protocol.clone()),
                })
            })
            .collect(),
        privileged: Some(d.privileged),
        parameters: d
            .parameters
            .iter()
            .map(|(k, v)| v1::Parameter {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        force_pull_image: Some(d.force_pull),
    };
    let network_infos = match &d.network {
        NetworkSpec::Container(name) => vec![v1::NetworkInfo {
            name: name.clone(),
            ..Default::default()
        }],
        _ => Vec::new(),
    };
    Some(v1::ContainerInfo {
        r#type: v1::container_info::Type::Docker as i32,
        volumes: d
            .volumes
            .iter()
            .map(|v| v1::Volume {
                mode: if v.read_only {
                    v1::volume::Mode::Ro
                } else {
                    v1::volume::Mode::Rw
                } as i32,
                container_path: v.container_path.clone(),
                host_path: Some(v.host_path.clone()),
            })
            .collect(),
        hostname: None,
        docker: Some(docker),
        network_infos,
    })
}

/// Mesos runs one health check per task: the first agent-side check of the app.
fn health_check(c: &AgentCheck) -> v1::HealthCheck {
    use v1::health_check::{HttpCheckInfo, TcpCheckInfo, Type};
    let mut h = v1::HealthCheck {
        delay_seconds: Some(c.delay.as_secs_f64()),
        interval_seconds: Some(c.interval.as_secs_f64()),
        timeout_seconds: Some(c.timeout.as_secs_f64()),
        consecutive_failures: Some(c.consecutive_failures),
        grace_period_seconds: Some(c.grace.as_secs_f64()),
        ..Default::default()
    };
    match &c.kind {
        AgentCheckKind::Http { tls, port, path } => {
            h.r#type = Some(Type::Http as i32);
            h.http = Some(HttpCheckInfo {
                scheme: Some(if *tls { "https" } else { "http" }.into()),
                port: *port,
                path: Some(path.clone()),
                ..Default::default()
            });
        }
        AgentCheckKind::Tcp { port } => {
            h.r#type = Some(Type::Tcp as i32);
            h.tcp = Some(TcpCheckInfo {
                port: *port,
                ..Default::default()
            });
        }
        AgentCheckKind::Command(cmd) => {
            h.r#type = Some(Type::Command as i32);
            h.command = Some(v1::CommandInfo {
                shell: Some(true),
                value: Some(cmd.clone()),
                ..Default::default()
            });
        }
    }
    h
}

/// The `TaskInfo` for one launch, with its resources already carved from the offer.
pub fn task_info(spec: &LaunchSpec, resources: Vec<v1::Resource>) -> v1::TaskInfo {
    let name = task_name(spec);
    let discovery = v1::DiscoveryInfo {
        visibility: v1::discovery_info::Visibility::Framework as i32,
        name: Some(name.clone()),
        ports: Some(v1::Ports {
            ports: spec
                .host_ports
                .iter()
                .map(|p| v1::Port {
                    number: *p,
                    protocol: Some("tcp".into()),
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    v1::TaskInfo {
        name,
        task_id: v1::TaskId {
            value: spec.task_id.as_str().to_string(),
        },
        agent_id: v1::AgentId {
            value: spec.agent_id.0.clone(),
        },
        resources,
        executor: None,
        command: Some(command_info(spec)),
        container: container_info(spec),
        health_check: spec.health_checks.first().map(health_check),
        kill_policy: spec.kill_grace.map(|g| v1::KillPolicy {
            grace_period: Some(duration_info(g)),
        }),
        data: None,
        labels: (!spec.labels.is_empty()).then(|| v1::Labels {
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| v1::Label {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }),
        discovery: Some(discovery),
    }
}

pub fn task_state(s: i32) -> Option<TaskState> {
    use v1::TaskState as M;
    Some(match M::try_from(s).ok()? {
        M::TaskStaging => TaskState::Staging,
        M::TaskStarting => TaskState::Starting,
        M::TaskRunning => TaskState::Running,
        M::TaskKilling => TaskState::Killing,
        M::TaskFinished => TaskState::Finished,
        M::TaskFailed => TaskState::Failed,
        M::TaskKilled => TaskState::Killed,
        M::TaskError => TaskState::Error,
        M::TaskLost => TaskState::Lost,
        M::TaskDropped => TaskState::Dropped,
        M::TaskUnreachable => TaskState::Unreachable,
        M::TaskGone => TaskState::Gone,
        M::TaskGoneByOperator => TaskState::GoneByOperator,
        M::TaskUnknown => TaskState::Unknown,
    })
}

/// A status update for the core; `None` for a state this build does not know.
pub fn status_in(s: &v1::TaskStatus) -> Option<TaskStatus> {
    let state = task_state(s.state)?;
    let reason = s
        .reason
        .and_then(|r| v1::task_status::Reason::try_from(r).ok())
        .map(|r| r.as_str_name());
    let message = match (s.message.as_deref().filter(|m| !m.is_empty()), reason) {
        (Some(m), _) => Some(m.to_string()),
        (None, Some(r)) => Some(r.to_string()),
        (None, None) => None,
    };
    Some(TaskStatus {
        task_id: TaskId::from_raw(&s.task_id.value),
        state,
        message,
        agent_id: s.agent_id.as_ref().map(|a| AgentId(a.value.clone())),
        healthy: s.healthy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_core::id::{InstanceId, PathId};
    use v1::resource::{disk_info, DiskInfo, ReservationInfo, RevocableInfo};

    fn scalar(name: &str, v: f64, role: Option<&str>) -> v1::Resource {
        v1::Resource {
            name: name.into(),
            r#type: v1::value::Type::Scalar as i32,
            scalar: Some(v1::value::Scalar { value: v }),
            reservations: role
                .map(|r| ReservationInfo {
                    role: Some(r.into()),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn offer(resources: Vec<v1::Resource>) -> v1::Offer {
        v1::Offer {
            id: v1::OfferId { value: "o1".into() },
            agent_id: v1::AgentId { value: "a1".into() },
            hostname: "h".into(),
            resources,
            ..Default::default()
        }
    }

    fn spec(cpus: f64, roles: &[&str]) -> LaunchSpec {
        let app = PathId::parse_app_id("/a", &PathId::root()).unwrap();
        let instance_id = InstanceId::new(&app, "00000000-0000-1000-8000-000000000001");
        LaunchSpec {
            task_id: pacer_core::id::TaskId::new(&instance_id, 1),
            instance_id,
            app_id: app,
            offer_id: OfferId("o1".into()),
            agent_id: AgentId("a1".into()),
            hostname: "h".into(),
            command: CommandSpec::Shell("x".into()),
            user: None,
            env: BTreeMap::new(),
            cpus,
            mem_mb: 0.0,
            disk_mb: 0.0,
            host_ports: vec![],
            docker: None,
            kill_grace: None,
            fetch: vec![],
            health_checks: vec![],
            resource_roles: roles.iter().map(|r| r.to_string()).collect(),
            labels: BTreeMap::new(),
        }
    }

    /// Unreserved and reserved cpus next to what ordinary tasks must not take.
    fn mixed() -> v1::Offer {
        let mut revocable = scalar("cpus", 8.0, None);
        revocable.revocable = Some(RevocableInfo {});
        let mut volume = scalar("disk", 100.0, Some("prod"));
        volume.disk = Some(DiskInfo {
            persistence: Some(disk_info::Persistence {
                id: Some("v1".into()),
                principal: None,
            }),
            ..Default::default()
        });
        let mut resident = scalar("mem", 512.0, Some("prod"));
        resident.reservations[0].labels = Some(v1::Labels {
            labels: vec![v1::Label {
                key: "marathon_framework_id".into(),
                value: Some("f".into()),
            }],
        });
        offer(vec![
            scalar("cpus", 4.0, None),
            scalar("cpus", 2.0, Some("prod")),
            scalar("cpus", 1.0, Some("other")),
            scalar("mem", 1024.0, None),
            revocable,
            volume,
            resident,
        ])
    }

    #[test]
    fn offers_leave_out_volumes_labelled_reservations_revocable_and_other_roles() {
        let o = offer_in(&mixed(), "prod");
        assert_eq!((o.cpus, o.mem_mb, o.disk_mb), (6.0, 1024.0, 0.0));
        let r = o.reserved.expect("2 cpus reserved for prod");
        assert_eq!((r.role.as_str(), r.cpus, r.mem_mb), ("prod", 2.0, 0.0));
        assert_eq!(o.allocation_role.as_deref(), Some("prod"));
    }

    #[test]
    fn tasks_are_carved_from_their_roles_reserved_first() {
        let mut c = Carver::new(&mixed(), "prod");
        // Both pools: the 2 reserved cpus, then 1 unreserved.
        let taken = c.take(&spec(3.0, &["prod", "*"])).unwrap();
        let by_role: Vec<(&str, f64)> = taken
            .iter()
            .map(|r| (resource_role(r), r.scalar.as_ref().unwrap().value))
            .collect();
        assert_eq!(by_role, vec![("prod", 2.0), ("*", 1.0)]);
        assert!(taken.iter().all(|r| r.revocable.is_none()));
        // Reserved only: nothing reserved is left.
        assert!(c.take(&spec(0.5, &["prod"])).is_none());
        // 5 cpus do not fit; the 3 unreserved ones they would have started on stay.
        assert!(c.take(&spec(5.0, &["prod", "*"])).is_none());
        // Unreserved: 3 cpus left (the revocable 8 are not offered to tasks).
        assert!(c.take(&spec(3.0, &["*"])).is_some());
        assert!(c.take(&spec(0.5, &["*"])).is_none());
    }
}
