//! Offer matching: does an instance of an app fit what is left of an offer? Each check is a small
//! function that names the reason it rejected the offer, in Marathon's funnel order.

use crate::app::{AppDefinition, NetworkMode};
use crate::cluster::{Offer, PortRange};
use serde::Serialize;

/// Marathon's `NoOfferMatchReason` names, as `/v2/queue` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RejectReason {
    UnfulfilledRole,
    UnfulfilledConstraint,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
}

/// Which resources an app takes when its definition does not say
/// (`--accepted_resource_roles_default_behavior`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RoleDefault {
    /// Unreserved and reserved for the app's role.
    #[default]
    Any,
    /// Unreserved only.
    Unreserved,
    /// Reserved for the app's role only.
    Reserved,
}

impl RoleDefault {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "any" => Some(RoleDefault::Any),
            "unreserved" => Some(RoleDefault::Unreserved),
            "reserved" => Some(RoleDefault::Reserved),
            _ => None,
        }
    }
}

/// The pools of an offer an app may draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub unreserved: bool,
    /// Resources reserved for the app's own role.
    pub reserved: bool,
}

impl Accepted {
    /// From `acceptedResourceRoles` (which may name only `*` and the app's role), else from
    /// the default behaviour. As in Marathon, "reserved" means the app's own role, which for an
    /// app of role `*` is the unreserved pool.
    pub fn of(app: &AppDefinition, default: RoleDefault) -> Self {
        match &app.accepted_resource_roles {
            Some(roles) => Accepted {
                unreserved: roles.iter().any(|r| r == "*"),
                reserved: app.role != "*" && roles.contains(&app.role),
            },
            None => Accepted {
                unreserved: default != RoleDefault::Reserved || app.role == "*",
                reserved: default != RoleDefault::Unreserved && app.role != "*",
            },
        }
    }
}

/// What is left of one pool of an offer.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub gpus: f64,
    /// Free ports, ascending.
    pub ports: Vec<u32>,
}

/// What is left of an offer while instances are placed on it: the unreserved pool and the one
/// reserved for `reserved_role`.
#[derive(Clone, Debug)]
pub struct OfferBudget {
    pub unreserved: Pool,
    pub reserved: Pool,
    pub reserved_role: Option<String>,
    pub allocation_role: Option<String>,
}

/// Guards against float dust when many small requests are subtracted from a budget.
const EPSILON: f64 = 1e-9;

/// `total - part` in Mesos's precision (thousandths), so that float dust of the subtraction
/// (0.1 + 0.2 - 0.2) neither shows in `/v2/queue` nor decides a match.
pub fn unreserved_amount(total: f64, part: f64) -> f64 {
    ((total - part) * 1000.0).round() / 1000.0
}

impl OfferBudget {
    pub fn of(offer: &Offer) -> Self {
        let r = offer.reserved.as_deref().cloned().unwrap_or_default();
        let reserved_ports = expand(&r.ports);
        let mut ports = expand(&offer.ports);
        ports.retain(|p| reserved_ports.binary_search(p).is_err());
        OfferBudget {
            unreserved: Pool {
                cpus: unreserved_amount(offer.cpus, r.cpus),
                mem_mb: unreserved_amount(offer.mem_mb, r.mem_mb),
                disk_mb: unreserved_amount(offer.disk_mb, r.disk_mb),
                gpus: unreserved_amount(offer.gpus, r.gpus),
                ports,
            },
            reserved: Pool {
                cpus: r.cpus,
                mem_mb: r.mem_mb,
                disk_mb: r.disk_mb,
                gpus: r.gpus,
                ports: reserved_ports,
            },
            reserved_role: offer.reserved.as_ref().map(|r| r.role.clone()),
            allocation_role: offer.allocation_role.clone(),
        }
    }
}

/// Where a matched instance's resources come from.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// Host ports in request order.
    pub host_ports: Vec<u32>,
    /// The roles of the pools it may draw from (`*` for unreserved), for the backend to carve
    /// the same resources.
    pub roles: Vec<String>,
}

fn expand(ranges: &[PortRange]) -> Vec<u32> {
    let mut v: Vec<u32> = ranges.iter().flat_map(|r| r.begin..=r.end).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The host ports an app needs: `Some(p)` for a fixed port, `None` for any free port.
fn port_requests(app: &AppDefinition) -> Vec<Option<u32>> {
    if app.is_host_networking() {
        app.port_definitions
            .iter()
            .flatten()
            .map(|d| {
                if app.require_ports && d.port > 0 {
                    Some(d.port as u32)
                } else {
                    None
                }
            })
            .collect()
    } else {
        let bridge = app
            .networks
            .iter()
            .any(|n| n.mode == NetworkMode::ContainerBridge);
        app.port_mappings()
            .iter()
            .filter_map(|m| match m.host_port {
                Some(0) => Some(None),
                Some(p) => Some(Some(p as u32)),
                // Container networks without a host port need nothing from the offer.
                None if bridge => Some(None),
                None => None,
            })
            .collect()
    }
}

/// Tries to place one instance of `app`, drawing from the pools `accepted` allows (reserved
/// resources first, as Marathon does); on success takes its resources from `budget`.
pub fn match_offer(
    app: &AppDefinition,
    accepted: Accepted,
    budget: &mut OfferBudget,
) -> Result<Placement, RejectReason> {
    if budget
        .allocation_role
        .as_ref()
        .is_some_and(|r| *r != app.role)
    {
        return Err(RejectReason::UnfulfilledRole);
    }
    let use_reserved = accepted.reserved && budget.reserved_role.as_ref() == Some(&app.role);
    if !accepted.unreserved && !use_reserved {
        return Err(RejectReason::UnfulfilledRole);
    }
    let (u, r) = (&budget.unreserved, &budget.reserved);
    let have = |f: fn(&Pool) -> f64| {
        (if accepted.unreserved { f(u) } else { 0.0 }) + (if use_reserved { f(r) } else { 0.0 })
    };
    if have(|p| p.cpus) + EPSILON < app.cpus {
        return Err(RejectReason::InsufficientCpus);
    }
    if have(|p| p.mem_mb) + EPSILON < app.mem {
        return Err(RejectReason::InsufficientMemory);
    }
    if have(|p| p.disk_mb) + EPSILON < app.disk {
        return Err(RejectReason::InsufficientDisk);
    }
    if have(|p| p.gpus) + EPSILON < app.gpus as f64 {
        return Err(RejectReason::InsufficientGpus);
    }
    let mut free: Vec<u32> = Vec::new();
    if use_reserved {
        free.extend(&r.ports);
    }
    if accepted.unreserved {
        free.extend(&u.ports);
    }
    free.sort_unstable();
    let mut chosen = Vec::new();
    // Fixed ports first, so a dynamic pick cannot steal one.
    let requests = port_requests(app);
    let mut fixed = vec![None; requests.len()];
    for (i, req) in requests.iter().enumerate() {
        if let Some(p) = req {
            let pos = free
                .binary_search(p)
                .map_err(|_| RejectReason::InsufficientPorts)?;
            free.remove(pos);
            fixed[i] = Some(*p);
        }
    }
    for f in fixed {
        match f {
            Some(p) => chosen.push(p),
            None => {
                if free.is_empty() {
                    return Err(RejectReason::InsufficientPorts);
                }
                chosen.push(free.remove(0));
            }
        }
    }
    // Reserved resources first; what they do not cover comes from the unreserved pool.
    let mut roles = Vec::new();
    let mut rest = [app.cpus, app.mem, app.disk, app.gpus as f64];
    if use_reserved {
        roles.push(app.role.clone());
        let r = &mut budget.reserved;
        for (left, need) in [&mut r.cpus, &mut r.mem_mb, &mut r.disk_mb, &mut r.gpus]
            .into_iter()
            .zip(rest.iter_mut())
        {
            let take = left.min(*need).max(0.0);
            *left -= take;
            *need -= take;
        }
    }
    if accepted.unreserved {
        roles.push("*".to_string());
        let u = &mut budget.unreserved;
        for (left, need) in [&mut u.cpus, &mut u.mem_mb, &mut u.disk_mb, &mut u.gpus]
            .into_iter()
            .zip(rest)
        {
            *left -= need;
        }
    }
    for p in &chosen {
        for pool in [&mut budget.reserved, &mut budget.unreserved] {
            if let Ok(i) = pool.ports.binary_search(p) {
                pool.ports.remove(i);
                break;
            }
        }
    }
    Ok(Placement {
        host_ports: chosen,
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PathId;
    use crate::normalize::{parse_app_patch, NormalizeContext};
    use crate::time::Timestamp;
    use serde_json::json;

    fn app_in(role: &str, v: serde_json::Value) -> AppDefinition {
        let root = PathId::root();
        let c = NormalizeContext {
            base: &root,
            default_role: role,
            now: Timestamp::from_millis(1),
        };
        let p = parse_app_patch(v).unwrap();
        p.apply(p.resolve_id(&c).unwrap().unwrap(), None, &c)
            .unwrap()
    }

    fn app(v: serde_json::Value) -> AppDefinition {
        app_in("*", v)
    }

    const ANY: Accepted = Accepted {
        unreserved: true,
        reserved: true,
    };

    fn budget(cpus: f64, mem: f64, ports: &[u32]) -> OfferBudget {
        OfferBudget {
            unreserved: Pool {
                cpus,
                mem_mb: mem,
                disk_mb: 1000.0,
                gpus: 0.0,
                ports: ports.to_vec(),
            },
            reserved: Pool::default(),
            reserved_role: None,
            allocation_role: None,
        }
    }

    fn ports(r: Result<Placement, RejectReason>) -> Result<Vec<u32>, RejectReason> {
        r.map(|p| p.host_ports)
    }

    #[test]
    fn takes_resources_and_lowest_free_ports() {
        let a = app(
            json!({"id": "/a", "cmd": "x", "cpus": 0.5, "mem": 100, "portDefinitions": [{"port": 0}, {"port": 0}]}),
        );
        let mut b = budget(1.0, 150.0, &[31000, 31001, 31002, 31003]);
        assert_eq!(ports(match_offer(&a, ANY, &mut b)), Ok(vec![31000, 31001]));
        assert_eq!(b.unreserved.ports, vec![31002, 31003]);
        assert_eq!(
            match_offer(&a, ANY, &mut b),
            Err(RejectReason::InsufficientMemory)
        );
        let mut b2 = budget(0.4, 256.0, &[31000]);
        assert_eq!(
            match_offer(&a, ANY, &mut b2),
            Err(RejectReason::InsufficientCpus)
        );
    }

    #[test]
    fn require_ports_uses_exact_ports() {
        let a = app(
            json!({"id": "/a", "cmd": "x", "cpus": 0.1, "mem": 1, "requirePorts": true, "portDefinitions": [{"port": 31005}]}),
        );
        let mut b = budget(1.0, 256.0, &[31000, 31005]);
        assert_eq!(ports(match_offer(&a, ANY, &mut b)), Ok(vec![31005]));
        assert_eq!(
            match_offer(&a, ANY, &mut b),
            Err(RejectReason::InsufficientPorts)
        );
    }

    #[test]
    fn bridge_mappings_pick_host_ports() {
        let a = app(
            json!({"id": "/a", "cpus": 0.1, "mem": 1, "networks": [{"mode": "container/bridge"}],
            "container": {"type": "DOCKER", "docker": {"image": "i"}, "portMappings": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 81, "hostPort": 31009}]}}),
        );
        let mut b = budget(1.0, 256.0, &[31000, 31009]);
        assert_eq!(ports(match_offer(&a, ANY, &mut b)), Ok(vec![31000, 31009]));
    }

    /// An offer allocated to `prod` with 1 cpu / 100 MB / port 31000 unreserved and 2 cpus /
    /// 200 MB / port 32000 reserved for `prod`.
    fn prod_offer() -> OfferBudget {
        OfferBudget::of(&Offer {
            id: crate::cluster::OfferId("o".into()),
            agent_id: crate::cluster::AgentId("a".into()),
            hostname: "h".into(),
            cpus: 3.0,
            mem_mb: 300.0,
            disk_mb: 0.0,
            gpus: 0.0,
            ports: vec![
                PortRange {
                    begin: 31000,
                    end: 31000,
                },
                PortRange {
                    begin: 32000,
                    end: 32000,
                },
            ],
            attributes: Default::default(),
            region: None,
            zone: None,
            reserved: Some(Box::new(crate::cluster::Reserved {
                role: "prod".into(),
                cpus: 2.0,
                mem_mb: 200.0,
                disk_mb: 0.0,
                gpus: 0.0,
                ports: vec![PortRange {
                    begin: 32000,
                    end: 32000,
                }],
            })),
            allocation_role: Some("prod".into()),
        })
    }

    #[test]
    fn accepted_roles_choose_the_pools() {
        let one_port = json!({"id": "/a", "cmd": "x", "cpus": 1.5, "mem": 150, "portDefinitions": [{"port": 0}]});
        // Both pools: reserved first, the rest unreserved; the lowest port of either.
        let a = app_in("prod", one_port.clone());
        let mut b = prod_offer();
        let p = match_offer(&a, Accepted::of(&a, RoleDefault::Any), &mut b).unwrap();
        assert_eq!(p.host_ports, vec![31000]);
        assert_eq!(p.roles, vec!["prod".to_string(), "*".to_string()]);
        assert!((b.reserved.cpus - 0.5).abs() < 1e-9 && (b.unreserved.cpus - 1.0).abs() < 1e-9);
        assert!((b.reserved.mem_mb - 50.0).abs() < 1e-9);
        assert_eq!(b.unreserved.ports, Vec::<u32>::new());
        // The second takes exactly what is left of both pools; a third does not fit.
        let p = match_offer(&a, Accepted::of(&a, RoleDefault::Any), &mut b).unwrap();
        assert_eq!(p.host_ports, vec![32000]);
        assert!(b.reserved.cpus.abs() < 1e-9 && b.unreserved.cpus.abs() < 1e-9);
        assert_eq!(
            match_offer(&a, Accepted::of(&a, RoleDefault::Any), &mut b),
            Err(RejectReason::InsufficientCpus)
        );

        // Reserved only: 2 cpus are not enough for 2.5.
        let mut reserved = one_port.clone();
        reserved["cpus"] = json!(2.5);
        let a = app_in("prod", reserved);
        assert_eq!(
            match_offer(
                &a,
                Accepted::of(&a, RoleDefault::Reserved),
                &mut prod_offer()
            ),
            Err(RejectReason::InsufficientCpus)
        );
        // Named in the app: `["prod"]` gets the reserved port.
        let mut named = one_port.clone();
        named["acceptedResourceRoles"] = json!(["prod"]);
        let a = app_in("prod", named);
        let p = match_offer(
            &a,
            Accepted::of(&a, RoleDefault::Unreserved),
            &mut prod_offer(),
        )
        .unwrap();
        assert_eq!(
            (p.host_ports, p.roles),
            (vec![32000], vec!["prod".to_string()])
        );
        // `["*"]`: 1 unreserved cpu is not enough for 1.5.
        let mut star = one_port.clone();
        star["acceptedResourceRoles"] = json!(["*"]);
        let a = app_in("prod", star);
        assert_eq!(
            match_offer(&a, Accepted::of(&a, RoleDefault::Any), &mut prod_offer()),
            Err(RejectReason::InsufficientCpus)
        );
    }

    #[test]
    fn an_app_of_another_role_is_refused_with_unfulfilled_role() {
        let json = json!({"id": "/a", "cmd": "x", "cpus": 0.1, "mem": 1});
        // Offers allocated to `prod` serve only `prod` apps.
        let a = app_in("*", json.clone());
        assert_eq!(
            match_offer(&a, Accepted::of(&a, RoleDefault::Any), &mut prod_offer()),
            Err(RejectReason::UnfulfilledRole)
        );
        // A `prod` app that accepts only reserved resources has none to take here.
        let p = app_in("prod", json.clone());
        let mut b = budget(1.0, 100.0, &[31000]);
        assert_eq!(
            match_offer(&p, Accepted::of(&p, RoleDefault::Reserved), &mut b),
            Err(RejectReason::UnfulfilledRole)
        );
        assert_eq!(
            ports(match_offer(
                &p,
                Accepted::of(&p, RoleDefault::Unreserved),
                &mut b
            )),
            Ok(vec![31000])
        );
    }

    #[test]
    fn reserved_for_an_app_of_role_star_means_unreserved() {
        let a = app(json!({"id": "/a", "cmd": "x", "cpus": 0.1, "mem": 1}));
        assert_eq!(
            Accepted::of(&a, RoleDefault::Reserved),
            Accepted {
                unreserved: true,
                reserved: false
            }
        );
        let mut b = budget(1.0, 100.0, &[31000]);
        assert!(match_offer(&a, Accepted::of(&a, RoleDefault::Reserved), &mut b).is_ok());
        // Unreserved amounts are totals minus the reserved part, without float dust.
        assert_eq!(unreserved_amount(0.1 + 0.2, 0.2), 0.1);
    }
}
