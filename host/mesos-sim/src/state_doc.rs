//! The shape of `/master/state`: a subset of Mesos's document (field names as Mesos writes
//! them, agents still called "slaves"), borrowed from the simulator's state.

use crate::resources::Pools;
use pacer_mesos_proto::v1;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Serialize)]
pub(crate) struct ResDoc {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: f64,
    pub ports: String,
}

impl ResDoc {
    pub fn of(p: &Pools) -> ResDoc {
        ResDoc {
            cpus: p.cpus(),
            mem: p.mem(),
            disk: p.disk(),
            gpus: 0.0,
            ports: p.ports().to_string(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct StatusDoc {
    pub state: &'static str,
    pub timestamp: f64,
}

#[derive(Serialize)]
pub(crate) struct TaskDoc<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub framework_id: &'a str,
    pub executor_id: &'a str,
    pub slave_id: &'a str,
    pub state: &'static str,
    pub resources: ResDoc,
    pub statuses: Vec<StatusDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<&'a v1::ContainerInfo>,
}

#[derive(Serialize)]
pub(crate) struct RoleDoc<'a> {
    pub role: &'a str,
}

#[derive(Serialize)]
pub(crate) struct OfferDoc<'a> {
    pub id: &'a str,
    pub framework_id: &'a str,
    pub slave_id: &'a str,
    pub resources: ResDoc,
    pub allocation_info: RoleDoc<'a>,
}

#[derive(Serialize)]
pub(crate) struct FrameworkDoc<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<&'a str>,
    pub roles: Vec<String>,
    pub active: bool,
    pub connected: bool,
    pub failover_timeout: f64,
    pub checkpoint: bool,
    pub capabilities: Vec<&'static str>,
    pub suppressed_roles: Vec<&'a str>,
    pub used_resources: ResDoc,
    pub tasks: Vec<TaskDoc<'a>>,
    pub unreachable_tasks: Vec<TaskDoc<'a>>,
    pub offers: Vec<OfferDoc<'a>>,
}

#[derive(Serialize)]
pub(crate) struct AttributesDoc<'a> {
    pub rack: Option<&'a str>,
    pub index: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct SlaveDoc<'a> {
    pub id: &'a str,
    pub hostname: &'a str,
    pub port: u16,
    pub pid: &'static str,
    pub active: bool,
    pub resources: ResDoc,
    pub used_resources: ResDoc,
    pub offered_resources: ResDoc,
    pub unreserved_resources: ResDoc,
    pub reserved_resources: BTreeMap<&'a str, ResDoc>,
    pub attributes: AttributesDoc<'a>,
    pub domain: &'a v1::DomainInfo,
}

#[derive(Serialize)]
pub(crate) struct UnreachableDoc<'a> {
    pub id: &'a str,
    pub timestamp: i64,
}

#[derive(Serialize)]
pub(crate) struct StateDoc<'a> {
    pub version: &'static str,
    pub id: &'a str,
    pub pid: String,
    pub hostname: &'static str,
    pub leader: String,
    pub leader_info: &'a v1::MasterInfo,
    pub activated_slaves: usize,
    pub deactivated_slaves: usize,
    pub unreachable_slaves: Vec<UnreachableDoc<'a>>,
    pub frameworks: Vec<FrameworkDoc<'a>>,
    pub completed_frameworks: Vec<()>,
    pub orphan_tasks: Vec<TaskDoc<'a>>,
    pub slaves: Vec<SlaveDoc<'a>>,
}
