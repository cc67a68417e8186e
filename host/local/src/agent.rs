//! The agent's resource ledger and offer state: what this machine has, what live tasks hold, and
//! whether an offer should go out now. Pure bookkeeping; no IO and no clock.

use pacer_core::cluster::{AgentId, AttributeValue, LaunchSpec, Offer, OfferId, PortRange};
use pacer_core::id::TaskId;
use std::collections::{BTreeMap, BTreeSet};

/// Slack for comparing fractional resources (cpus such as 0.1 + 0.2).
const EPSILON: f64 = 1e-6;

/// Resources of the machine (or what is left of them).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Capacity {
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub ports: Vec<PortRange>,
}

/// What one live task holds.
#[derive(Clone, Debug)]
struct Claim {
    cpus: f64,
    mem_mb: f64,
    disk_mb: f64,
    ports: Vec<u32>,
}

impl Claim {
    fn of(spec: &LaunchSpec) -> Self {
        Claim {
            cpus: spec.cpus.max(0.0),
            mem_mb: spec.mem_mb.max(0.0),
            disk_mb: spec.disk_mb.max(0.0),
            ports: spec
                .host_ports
                .iter()
                .copied()
                .filter(|p| *p != 0)
                .collect(),
        }
    }
}

pub(crate) struct Ledger {
    agent_id: AgentId,
    hostname: String,
    attributes: BTreeMap<String, AttributeValue>,
    total: Capacity,
    claims: BTreeMap<TaskId, Claim>,
    /// The offer Pacer currently holds, if any.
    outstanding: Option<OfferId>,
    /// Revived and not suppressed since.
    wanted: bool,
    /// A decline filter, by generation, that holds back offers until its refuse time ends.
    filter: Option<u64>,
    generation: u64,
    /// Makes offer ids of this run differ from those of earlier runs.
    offer_prefix: String,
    offer_seq: u64,
}

impl Ledger {
    pub fn new(
        agent_id: AgentId,
        hostname: String,
        attributes: BTreeMap<String, AttributeValue>,
        total: Capacity,
        run_nonce: &str,
    ) -> Self {
        let offer_prefix = format!("{}-{run_nonce}-O", agent_id.0);
        Ledger {
            agent_id,
            hostname,
            attributes,
            total,
            claims: BTreeMap::new(),
            outstanding: None,
            wanted: false,
            filter: None,
            generation: 0,
            offer_prefix,
            offer_seq: 0,
        }
    }

    fn used_ports(&self) -> BTreeSet<u32> {
        self.claims
            .values()
            .flat_map(|c| c.ports.iter().copied())
            .collect()
    }

    /// Total capacity minus every claim; never negative.
    pub fn free(&self) -> Capacity {
        let (mut cpus, mut mem_mb, mut disk_mb) =
            (self.total.cpus, self.total.mem_mb, self.total.disk_mb);
        for c in self.claims.values() {
            cpus -= c.cpus;
            mem_mb -= c.mem_mb;
            disk_mb -= c.disk_mb;
        }
        Capacity {
            cpus: round(cpus.max(0.0)),
            mem_mb: round(mem_mb.max(0.0)),
            disk_mb: round(disk_mb.max(0.0)),
            ports: subtract_ports(&self.total.ports, &self.used_ports()),
        }
    }

    /// Claims the resources of a task about to be launched, if they are free.
    pub fn reserve(&mut self, spec: &LaunchSpec) -> Result<(), String> {
        let free = self.free();
        let need = Claim::of(spec);
        for (what, needed, left) in [
            ("cpus", need.cpus, free.cpus),
            ("mem", need.mem_mb, free.mem_mb),
            ("disk", need.disk_mb, free.disk_mb),
        ] {
            if needed > left + EPSILON {
                return Err(format!(
                    "Insufficient {what} on agent {}: the task needs {needed} but only {left} is free",
                    self.agent_id.0
                ));
            }
        }
        let used = self.used_ports();
        let mut seen = BTreeSet::new();
        for &port in &need.ports {
            if !in_ranges(&self.total.ports, port) {
                return Err(format!(
                    "Port {port} is not offered by agent {}",
                    self.agent_id.0
                ));
            }
            if used.contains(&port) || !seen.insert(port) {
                return Err(format!(
                    "Port {port} is already in use on agent {}",
                    self.agent_id.0
                ));
            }
        }
        self.claims.insert(spec.task_id.clone(), need);
        Ok(())
    }

    /// Claims the resources of a task that is already running (re-adopted), without checks.
    pub fn claim_running(&mut self, spec: &LaunchSpec) {
        self.claims.insert(spec.task_id.clone(), Claim::of(spec));
    }

    /// Gives a task's resources back. Changed resources lift any decline filter.
    pub fn release(&mut self, task: &TaskId) {
        if self.claims.remove(task).is_some() {
            self.filter = None;
        }
    }

    /// Consumes the outstanding offer if `offer` is it.
    pub fn take_offer(&mut self, offer: &OfferId) -> bool {
        if self.outstanding.as_ref() == Some(offer) {
            self.outstanding = None;
            true
        } else {
            false
        }
    }

    /// Returns the outstanding offer and holds back new ones; gives the filter generation that
    /// [`Ledger::refuse_elapsed`] must be called with once the refuse time is over.
    pub fn decline(&mut self, offer: &OfferId) -> Option<u64> {
        if !self.take_offer(offer) {
            return None;
        }
        self.generation += 1;
        self.filter = Some(self.generation);
        Some(self.generation)
    }

    pub fn refuse_elapsed(&mut self, generation: u64) {
        if self.filter == Some(generation) {
            self.filter = None;
        }
    }

    /// Pacer wants offers; like Mesos, reviving also lifts decline filters.
    pub fn revive(&mut self) {
        self.wanted = true;
        self.filter = None;
    }

    pub fn suppress(&mut self) {
        self.wanted = false;
    }

    /// A fresh offer of all free resources, when one is due: revived, none outstanding, and no
    /// decline filter in force. The returned offer becomes the outstanding one.
    pub fn next_offer(&mut self) -> Option<Offer> {
        if !self.wanted || self.outstanding.is_some() || self.filter.is_some() {
            return None;
        }
        self.offer_seq += 1;
        let id = OfferId(format!("{}{}", self.offer_prefix, self.offer_seq));
        let free = self.free();
        self.outstanding = Some(id.clone());
        Some(Offer {
            id,
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            cpus: free.cpus,
            mem_mb: free.mem_mb,
            disk_mb: free.disk_mb,
            gpus: 0.0,
            ports: free.ports,
            attributes: self.attributes.clone(),
            region: None,
            zone: None,
            reserved: None,
            allocation_role: None,
        })
    }
}

/// Rounds away float noise from repeated subtraction (e.g. 1.0 - 0.1 - 0.2).
fn round(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

fn in_ranges(ranges: &[PortRange], port: u32) -> bool {
    ranges.iter().any(|r| r.begin <= port && port <= r.end)
}

/// The ranges with the `used` ports cut out, sorted and without empty pieces.
pub(crate) fn subtract_ports(ranges: &[PortRange], used: &BTreeSet<u32>) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.begin);
    let mut out = Vec::new();
    for r in sorted {
        let mut begin = r.begin;
        for &p in used.range(r.begin..=r.end) {
            if p > begin {
                out.push(PortRange { begin, end: p - 1 });
            }
            begin = p + 1;
        }
        if begin <= r.end {
            out.push(PortRange { begin, end: r.end });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_core::cluster::CommandSpec;
    use pacer_core::id::{InstanceId, PathId};

    fn pr(begin: u32, end: u32) -> PortRange {
        PortRange { begin, end }
    }

    fn ledger() -> Ledger {
        let total = Capacity {
            cpus: 2.0,
            mem_mb: 1024.0,
            disk_mb: 100.0,
            ports: vec![pr(100, 109)],
        };
        Ledger::new(AgentId("a".into()), "h".into(), BTreeMap::new(), total, "n")
    }

    fn spec(n: u32, cpus: f64, ports: Vec<u32>) -> LaunchSpec {
        let app = PathId::resolve("/app", &PathId::root()).unwrap();
        let inst = InstanceId::new(&app, &format!("u{n}"));
        LaunchSpec {
            task_id: TaskId::new(&inst, 1),
            instance_id: inst,
            app_id: app,
            offer_id: OfferId("o".into()),
            agent_id: AgentId("a".into()),
            hostname: "h".into(),
            command: CommandSpec::Shell("true".into()),
            user: None,
            env: BTreeMap::new(),
            cpus,
            mem_mb: 100.0,
            disk_mb: 0.0,
            host_ports: ports,
            docker: None,
            kill_grace: None,
            fetch: vec![],
            health_checks: vec![],
            resource_roles: vec![],
            labels: Default::default(),
        }
    }

    #[test]
    fn subtracts_ports() {
        let used: BTreeSet<u32> = [100, 103, 104, 109, 500].into();
        assert_eq!(
            subtract_ports(&[pr(100, 109)], &used),
            vec![pr(101, 102), pr(105, 108)]
        );
        assert_eq!(subtract_ports(&[pr(5, 5)], &[5].into()), vec![]);
    }

    #[test]
    fn offers_only_when_wanted_and_unfiltered() {
        let mut l = ledger();
        assert!(l.next_offer().is_none(), "not revived yet");
        l.revive();
        let o1 = l.next_offer().unwrap();
        assert!(l.next_offer().is_none(), "one outstanding offer at a time");
        let generation = l.decline(&o1.id).unwrap();
        assert!(l.next_offer().is_none(), "declined: filtered");
        l.refuse_elapsed(generation);
        let o2 = l.next_offer().unwrap();
        assert_ne!(o1.id, o2.id);
        assert!(l.decline(&o1.id).is_none(), "stale offer ids are ignored");
        l.decline(&o2.id).unwrap();
        l.suppress();
        l.refuse_elapsed(generation + 1);
        assert!(l.next_offer().is_none(), "suppressed");
    }

    #[test]
    fn reservations_shrink_offers_and_release_lifts_filters() {
        let mut l = ledger();
        l.revive();
        let o = l.next_offer().unwrap();
        assert!(l.take_offer(&o.id));
        let s = spec(1, 0.5, vec![101, 105]);
        l.reserve(&s).unwrap();
        let o = l.next_offer().unwrap();
        assert_eq!(o.cpus, 1.5);
        assert_eq!(o.mem_mb, 924.0);
        assert_eq!(o.ports, vec![pr(100, 100), pr(102, 104), pr(106, 109)]);
        l.decline(&o.id).unwrap();
        l.release(&s.task_id);
        let o = l
            .next_offer()
            .expect("freed resources lift the decline filter");
        assert_eq!(o.cpus, 2.0);
        assert_eq!(o.ports, vec![pr(100, 109)]);
    }

    #[test]
    fn rejects_overcommit_and_port_conflicts() {
        let mut l = ledger();
        l.reserve(&spec(1, 1.5, vec![100])).unwrap();
        assert!(l
            .reserve(&spec(2, 1.0, vec![]))
            .unwrap_err()
            .contains("Insufficient cpus"));
        assert!(l
            .reserve(&spec(3, 0.1, vec![100]))
            .unwrap_err()
            .contains("already in use"));
        assert!(l
            .reserve(&spec(4, 0.1, vec![200]))
            .unwrap_err()
            .contains("not offered"));
        assert!(l
            .reserve(&spec(5, 0.1, vec![102, 102]))
            .unwrap_err()
            .contains("already in use"));
        l.reserve(&spec(6, 0.5, vec![102])).unwrap();
        assert_eq!(l.free().cpus, 0.0);
    }
}
