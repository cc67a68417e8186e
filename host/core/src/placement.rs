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

/// What is left of an offer while instances are placed on it.
#[derive(Clone, Debug)]
pub struct OfferBudget {
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub gpus: f64,
    /// Free ports, ascending.
    pub ports: Vec<u32>,
}

/// Guards against float dust when many small requests are subtracted from a budget.
const EPSILON: f64 = 1e-9;

impl OfferBudget {
    pub fn of(offer: &Offer) -> Self {
        OfferBudget {
            cpus: offer.cpus,
            mem_mb: offer.mem_mb,
            disk_mb: offer.disk_mb,
            gpus: offer.gpus,
            ports: expand(&offer.ports),
        }
    }
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

/// Tries to place one instance of `app`; on success takes its resources from `budget` and
/// returns the host ports in request order.
pub fn match_offer(
    app: &AppDefinition,
    budget: &mut OfferBudget,
) -> Result<Vec<u32>, RejectReason> {
    if budget.cpus + EPSILON < app.cpus {
        return Err(RejectReason::InsufficientCpus);
    }
    if budget.mem_mb + EPSILON < app.mem {
        return Err(RejectReason::InsufficientMemory);
    }
    if budget.disk_mb + EPSILON < app.disk {
        return Err(RejectReason::InsufficientDisk);
    }
    if budget.gpus + EPSILON < app.gpus as f64 {
        return Err(RejectReason::InsufficientGpus);
    }
    let mut free = budget.ports.clone();
    let mut chosen = Vec::new();
    // Fixed ports first, so a dynamic pick cannot steal one.
    let requests = port_requests(app);
    let mut fixed = vec![None; requests.len()];
    for (i, r) in requests.iter().enumerate() {
        if let Some(p) = r {
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
    budget.cpus -= app.cpus;
    budget.mem_mb -= app.mem;
    budget.disk_mb -= app.disk;
    budget.gpus -= app.gpus as f64;
    budget.ports = free;
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::PathId;
    use crate::normalize::{parse_app_patch, NormalizeContext};
    use crate::time::Timestamp;
    use serde_json::json;

    fn app(v: serde_json::Value) -> AppDefinition {
        let root = PathId::root();
        let c = NormalizeContext {
            base: &root,
            default_role: "*",
            now: Timestamp::from_millis(1),
        };
        let p = parse_app_patch(v).unwrap();
        p.apply(p.resolve_id(&c).unwrap().unwrap(), None, &c)
            .unwrap()
    }

    fn budget(cpus: f64, mem: f64, ports: &[u32]) -> OfferBudget {
        OfferBudget {
            cpus,
            mem_mb: mem,
            disk_mb: 1000.0,
            gpus: 0.0,
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn takes_resources_and_lowest_free_ports() {
        let a = app(
            json!({"id": "/a", "cmd": "x", "cpus": 0.5, "mem": 100, "portDefinitions": [{"port": 0}, {"port": 0}]}),
        );
        let mut b = budget(1.0, 150.0, &[31000, 31001, 31002, 31003]);
        assert_eq!(match_offer(&a, &mut b), Ok(vec![31000, 31001]));
        assert_eq!(b.ports, vec![31002, 31003]);
        assert_eq!(
            match_offer(&a, &mut b),
            Err(RejectReason::InsufficientMemory)
        );
        let mut b2 = budget(0.4, 256.0, &[31000]);
        assert_eq!(
            match_offer(&a, &mut b2),
            Err(RejectReason::InsufficientCpus)
        );
    }

    #[test]
    fn require_ports_uses_exact_ports() {
        let a = app(
            json!({"id": "/a", "cmd": "x", "cpus": 0.1, "mem": 1, "requirePorts": true, "portDefinitions": [{"port": 31005}]}),
        );
        let mut b = budget(1.0, 256.0, &[31000, 31005]);
        assert_eq!(match_offer(&a, &mut b), Ok(vec![31005]));
        assert_eq!(
            match_offer(&a, &mut b),
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
        assert_eq!(match_offer(&a, &mut b), Ok(vec![31000, 31009]));
    }
}
