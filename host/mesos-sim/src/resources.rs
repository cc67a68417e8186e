//! Resource bookkeeping. Scalars are kept in thousandths (Mesos rounds them to three decimals),
//! so sums and comparisons are exact; ports are sorted, merged inclusive ranges.

// `Resource.role` and `FrameworkInfo.role` are deprecated in Mesos but still part of the protocol.
#![allow(deprecated)]

use pacer_mesos_proto::v1::{self, resource, value};
use std::fmt;

/// A set of port numbers as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut v: Vec<(u64, u64)> = pairs.into_iter().filter(|(b, e)| b <= e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ranges(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn add(&mut self, other: &Ranges) {
        if other.is_empty() {
            return;
        }
        *self = Ranges::new(self.0.iter().chain(other.0.iter()).copied());
    }

    /// Removes `other` (whatever part of it is present).
    pub fn sub(&mut self, other: &Ranges) {
        if other.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(b, e) in &self.0 {
            let mut pieces = vec![(b, e)];
            for &(ob, oe) in &other.0 {
                let mut next = Vec::with_capacity(pieces.len() + 1);
                for (pb, pe) in pieces {
                    if oe < pb || ob > pe {
                        next.push((pb, pe));
                        continue;
                    }
                    if ob > pb {
                        next.push((pb, ob - 1));
                    }
                    if oe < pe {
                        next.push((oe + 1, pe));
                    }
                }
                pieces = next;
            }
            out.extend(pieces);
        }
        self.0 = out;
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other
            .0
            .iter()
            .all(|&(ob, oe)| self.0.iter().any(|&(b, e)| b <= ob && oe <= e))
    }

    /// Every port, in order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// Scalar to thousandths.
pub(crate) fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

pub(crate) fn unmilli(v: i64) -> f64 {
    v as f64 / 1000.0
}

/// cpus, mem (MB), disk (MB) and ports of one pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Res {
    pub cpus: i64,
    pub mem: i64,
    pub disk: i64,
    pub ports: Ranges,
}

impl Res {
    pub fn add(&mut self, o: &Res) {
        self.cpus += o.cpus;
        self.mem += o.mem;
        self.disk += o.disk;
        self.ports.add(&o.ports);
    }

    pub fn sub(&mut self, o: &Res) {
        self.cpus -= o.cpus;
        self.mem -= o.mem;
        self.disk -= o.disk;
        self.ports.sub(&o.ports);
    }

    pub fn contains(&self, o: &Res) -> bool {
        self.cpus >= o.cpus
            && self.mem >= o.mem
            && self.disk >= o.disk
            && self.ports.contains(&o.ports)
    }

    pub fn is_empty(&self) -> bool {
        self.cpus <= 0 && self.mem <= 0 && self.disk <= 0 && self.ports.is_empty()
    }

    fn fmt_with(&self, f: &mut fmt::Formatter<'_>, role: &str, first: &mut bool) -> fmt::Result {
        let mut item = |f: &mut fmt::Formatter<'_>, text: String| -> fmt::Result {
            if !*first {
                f.write_str("; ")?;
            }
            *first = false;
            f.write_str(&text)
        };
        let tag = if role == "*" {
            String::new()
        } else {
            format!("({role})")
        };
        if self.cpus != 0 {
            item(f, format!("cpus{tag}:{}", unmilli(self.cpus)))?;
        }
        if self.mem != 0 {
            item(f, format!("mem{tag}:{}", unmilli(self.mem)))?;
        }
        if self.disk != 0 {
            item(f, format!("disk{tag}:{}", unmilli(self.disk)))?;
        }
        if !self.ports.is_empty() {
            item(f, format!("ports{tag}:{}", self.ports))?;
        }
        Ok(())
    }
}

/// Resources split into the unreserved pool and the pool reserved for the configured role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pools {
    pub unreserved: Res,
    pub reserved: Res,
}

impl Pools {
    pub fn add(&mut self, o: &Pools) {
        self.unreserved.add(&o.unreserved);
        self.reserved.add(&o.reserved);
    }

    pub fn sub(&mut self, o: &Pools) {
        self.unreserved.sub(&o.unreserved);
        self.reserved.sub(&o.reserved);
    }

    pub fn contains(&self, o: &Pools) -> bool {
        self.unreserved.contains(&o.unreserved) && self.reserved.contains(&o.reserved)
    }

    pub fn is_empty(&self) -> bool {
        self.unreserved.is_empty() && self.reserved.is_empty()
    }

    /// Worth offering: Mesos's default minimum allocatable resources are 0.01 cpus or 32 MB.
    pub fn allocatable(&self) -> bool {
        let cpus = self.unreserved.cpus + self.reserved.cpus;
        let mem = self.unreserved.mem + self.reserved.mem;
        cpus >= 10 || mem >= 32_000
    }

    pub fn cpus(&self) -> f64 {
        unmilli(self.unreserved.cpus + self.reserved.cpus)
    }

    pub fn mem(&self) -> f64 {
        unmilli(self.unreserved.mem + self.reserved.mem)
    }

    pub fn disk(&self) -> f64 {
        unmilli(self.unreserved.disk + self.reserved.disk)
    }

    pub fn ports(&self) -> Ranges {
        let mut p = self.unreserved.ports.clone();
        p.add(&self.reserved.ports);
        p
    }

    pub fn display<'a>(&'a self, reserved_role: Option<&'a str>) -> PoolsDisplay<'a> {
        PoolsDisplay {
            pools: self,
            role: reserved_role.unwrap_or("reserved"),
        }
    }
}

pub(crate) struct PoolsDisplay<'a> {
    pools: &'a Pools,
    role: &'a str,
}

impl fmt::Display for PoolsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        self.pools.unreserved.fmt_with(f, "*", &mut first)?;
        self.pools.reserved.fmt_with(f, self.role, &mut first)?;
        if first {
            f.write_str("{}")?;
        }
        Ok(())
    }
}

/// How resources are written into offers for one framework.
#[derive(Clone, Copy)]
pub(crate) struct Format<'a> {
    /// RESERVATION_REFINEMENT: `reservations` instead of `role`.
    pub refinement: bool,
    /// MULTI_ROLE: every resource carries `allocation_info.role`.
    pub allocation_role: Option<&'a str>,
    pub reserved_role: Option<&'a str>,
}

fn scalar(name: &str, v: i64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: unmilli(v) }),
        ..Default::default()
    }
}

fn with_role(mut r: v1::Resource, role: Option<&str>, fmt: Format<'_>) -> v1::Resource {
    match (role, fmt.refinement) {
        (None, false) => r.role = Some("*".into()),
        (None, true) => {}
        (Some(role), false) => r.role = Some(role.into()),
        (Some(role), true) => r.reservations.push(resource::ReservationInfo {
            r#type: Some(resource::reservation_info::Type::Static as i32),
            role: Some(role.into()),
            ..Default::default()
        }),
    }
    if let Some(a) = fmt.allocation_role {
        r.allocation_info = Some(resource::AllocationInfo {
            role: Some(a.into()),
        });
    }
    r
}

fn push_res(out: &mut Vec<v1::Resource>, res: &Res, role: Option<&str>, fmt: Format<'_>) {
    for (name, v) in [("cpus", res.cpus), ("mem", res.mem), ("disk", res.disk)] {
        if v > 0 {
            out.push(with_role(scalar(name, v), role, fmt));
        }
    }
    if !res.ports.is_empty() {
        let r = v1::Resource {
            name: "ports".into(),
            r#type: value::Type::Ranges as i32,
            ranges: Some(value::Ranges {
                range: res
                    .ports
                    .pairs()
                    .iter()
                    .map(|&(begin, end)| value::Range { begin, end })
                    .collect(),
            }),
            ..Default::default()
        };
        out.push(with_role(r, role, fmt));
    }
}

/// The protobuf resources of a pool pair.
pub(crate) fn to_proto(p: &Pools, fmt: Format<'_>) -> Vec<v1::Resource> {
    let mut out = Vec::new();
    push_res(&mut out, &p.unreserved, None, fmt);
    if let Some(role) = fmt.reserved_role {
        push_res(&mut out, &p.reserved, Some(role), fmt);
    }
    out
}

/// What a task (or executor) asks for.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    pub pools: Pools,
    /// Resources that this master can never satisfy from the offer (unknown names, other
    /// roles, a wrong allocation role): the task is "not contained".
    pub unmatched: Vec<String>,
}

/// Reads a task's resources. `Err` is a malformed resource (TASK_ERROR); anything the offer
/// cannot hold goes to [`Needs::unmatched`].
pub(crate) fn parse_needs(
    resources: &[v1::Resource],
    reserved_role: Option<&str>,
    allocation_role: Option<&str>,
    into: &mut Needs,
) -> Result<(), String> {
    for r in resources {
        let role = match r.reservations.last() {
            Some(rv) => rv.role.clone().unwrap_or_default(),
            None => r.role.clone().unwrap_or_else(|| "*".into()),
        };
        if let Some(want) = allocation_role {
            let got = r.allocation_info.as_ref().and_then(|a| a.role.as_deref());
            if got != Some(want) {
                into.unmatched.push(format!(
                    "{}(allocated: {})",
                    r.name,
                    got.unwrap_or("<none>")
                ));
                continue;
            }
        }
        let pool = if role == "*" {
            &mut into.pools.unreserved
        } else if Some(role.as_str()) == reserved_role {
            &mut into.pools.reserved
        } else {
            into.unmatched.push(format!("{}({role})", r.name));
            continue;
        };
        match r.name.as_str() {
            "cpus" | "mem" | "disk" => {
                let v = match (value::Type::try_from(r.r#type), &r.scalar) {
                    (Ok(value::Type::Scalar), Some(s)) => s.value,
                    _ => return Err(format!("Resource '{}' must be a SCALAR", r.name)),
                };
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("Resource '{}' has an invalid value {v}", r.name));
                }
                let m = milli(v);
                match r.name.as_str() {
                    "cpus" => pool.cpus += m,
                    "mem" => pool.mem += m,
                    _ => pool.disk += m,
                }
            }
            "ports" => {
                let ranges = match (value::Type::try_from(r.r#type), &r.ranges) {
                    (Ok(value::Type::Ranges), Some(rs)) => rs,
                    _ => return Err("Resource 'ports' must be RANGES".to_string()),
                };
                if let Some(bad) = ranges.range.iter().find(|x| x.begin > x.end) {
                    return Err(format!(
                        "Resource 'ports' has an invalid range {}-{}",
                        bad.begin, bad.end
                    ));
                }
                let add = Ranges::new(ranges.range.iter().map(|x| (x.begin, x.end)));
                let listed: u64 = ranges.range.iter().map(|x| x.end - x.begin + 1).sum();
                let distinct: u64 = add.pairs().iter().map(|(b, e)| e - b + 1).sum();
                let clash = add.pairs().iter().any(|&(b, e)| {
                    pool.ports
                        .pairs()
                        .iter()
                        .any(|&(pb, pe)| b <= pe && pb <= e)
                });
                if listed != distinct || clash {
                    return Err("Resource 'ports' lists a port more than once".to_string());
                }
                pool.ports.add(&add);
            }
            other => into.unmatched.push(other.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_subtract_and_contain() {
        let mut r = Ranges::new([(31005, 31010), (31000, 31004), (32000, 32000)]);
        assert_eq!(r.pairs(), &[(31000, 31010), (32000, 32000)]);
        r.sub(&Ranges::new([(31003, 31004), (32000, 32000)]));
        assert_eq!(r.pairs(), &[(31000, 31002), (31005, 31010)]);
        assert!(r.contains(&Ranges::new([(31001, 31002), (31007, 31007)])));
        assert!(!r.contains(&Ranges::new([(31002, 31005)])));
        r.add(&Ranges::new([(31003, 31004)]));
        assert_eq!(r.pairs(), &[(31000, 31010)]);
        assert_eq!(r.to_string(), "[31000-31010]");
    }

    #[test]
    fn scalars_are_exact_in_thousandths() {
        let mut a = Res {
            cpus: milli(1.0),
            ..Default::default()
        };
        for _ in 0..10 {
            a.sub(&Res {
                cpus: milli(0.1),
                ..Default::default()
            });
        }
        assert_eq!(a.cpus, 0);
    }
}
