//! Marathon's placement constraints (`["field", "OPERATOR", "value"?]`), parsed once and checked
//! against an offer and the agents the app's active instances already run on.
//!
//! Fields: `hostname`/`@hostname`, `@region`, `@zone`, or an agent attribute. Attribute values are
//! compared as strings, scalars formatted as Marathon does (`0.###`, half-even). An offer without
//! the field satisfies only `UNLIKE`.

use crate::cluster::{AttributeValue, Offer};
use crate::instance::AgentInfo;
use regex::Regex;
use std::collections::BTreeMap;

/// The built-in operators, in the order Marathon's validation message lists them.
pub const OPERATORS: [&str; 7] = [
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "MAX_PER", "UNLIKE", "IS",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Hostname,
    Region,
    Zone,
    Attribute(String),
}

#[derive(Clone, Debug)]
pub enum Operator {
    /// An operator provided by a constraint plugin; checked in batches through
    /// [`ConstraintPlugins`], never by [`Constraint::admits`].
    Plugin {
        name: String,
        params: String,
    },
    Unique,
    Cluster(Option<String>),
    /// `None`: no target number of groups (fill the smallest group, open new ones as offered).
    GroupBy(Option<u32>),
    MaxPer(u32),
    Like(Regex),
    Unlike(Regex),
    Is(String),
}

#[derive(Clone, Debug)]
pub struct Constraint {
    pub field: Field,
    pub op: Operator,
}

/// Operators that constraint plugins provide, consulted by placement in batches: one call per
/// app and constraint covers many offers, with the app's placed instances summarised as counts
/// per value of the constraint's field. Implemented by the Wasm host; the core stays pure.
pub trait ConstraintPlugins: Send + Sync {
    /// The operator names the plugins provide (upper case).
    fn operators(&self) -> &[String];
    /// Checks an app's use of a plugin operator; the error is shown as a 422.
    fn validate(&self, operator: &str, field: &str, params: &str) -> Result<(), String>;
    /// One decision per offer, in order. A failing plugin is turned into decisions by its
    /// failure policy, so this never fails.
    fn check(
        &self,
        req: &PluginRequest<'_>,
        placed: &PlacedSummary,
        offers: &[&Offer],
    ) -> Vec<PluginDecision>;
}

/// What a plugin is asked about one app's constraint.
#[derive(Clone, Debug)]
pub struct PluginRequest<'a> {
    pub app_id: &'a str,
    pub operator: &'a str,
    pub field: &'a str,
    pub params: &'a str,
    /// Instances of the app still waiting for an offer.
    pub waiting: u32,
}

/// The app's active instances, counted per value of the constraint's field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlacedSummary {
    pub total: u32,
    pub counts: BTreeMap<String, u32>,
}

impl PlacedSummary {
    pub fn of<'a>(field: &Field, placed: impl Iterator<Item = &'a AgentInfo>) -> Self {
        let mut s = PlacedSummary::default();
        for agent in placed {
            s.total += 1;
            if let Some(v) = agent.value_of(field) {
                *s.counts.entry(v).or_default() += 1;
            }
        }
        s
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PluginDecision {
    pub accept: bool,
    /// Why the offer was refused, for operators.
    pub reason: Option<String>,
}

/// The field as the app wrote it, for plugins.
pub fn field_name(f: &Field) -> &str {
    match f {
        Field::Hostname => "hostname",
        Field::Region => "@region",
        Field::Zone => "@zone",
        Field::Attribute(a) => a,
    }
}

/// Parses one constraint; the error is Marathon's validation message.
pub fn parse(c: &[String]) -> Result<Constraint, String> {
    parse_with(c, None)
}

/// Parses one constraint, knowing the operators plugins provide; a plugin checks its params.
pub fn parse_with(
    c: &[String],
    plugins: Option<&dyn ConstraintPlugins>,
) -> Result<Constraint, String> {
    parse_inner(c, plugins, true)
}

fn parse_inner(
    c: &[String],
    plugins: Option<&dyn ConstraintPlugins>,
    check_params: bool,
) -> Result<Constraint, String> {
    if c.len() != 2 && c.len() != 3 {
        return Err("Each constraint must have either 2 or 3 fields".into());
    }
    if c[0].trim().is_empty() {
        return Err("missing field for constraint declaration".into());
    }
    let field = match c[0].as_str() {
        "hostname" | "@hostname" => Field::Hostname,
        "@region" => Field::Region,
        "@zone" => Field::Zone,
        other => Field::Attribute(other.to_string()),
    };
    let value = c.get(2).cloned();
    let op = match c[1].to_ascii_uppercase().as_str() {
        "UNIQUE" => match value {
            None => Operator::Unique,
            Some(_) => return Err("UNIQUE does not accept a value".into()),
        },
        "CLUSTER" => Operator::Cluster(value.filter(|v| !v.is_empty())),
        "GROUP_BY" => match value {
            None => Operator::GroupBy(None),
            Some(v) => Operator::GroupBy(Some(v.trim().parse().map_err(|_| {
                "GROUP BY must define an integer value or else no value at all".to_string()
            })?)),
        },
        "MAX_PER" => Operator::MaxPer(
            value
                .and_then(|v| v.trim().parse().ok())
                .ok_or("MAX_PER requires an integer value")?,
        ),
        op @ ("LIKE" | "UNLIKE") => {
            let v = value
                .filter(|v| !v.is_empty())
                .ok_or("LIKE and UNLIKE require a non-empty, regular expression value")?;
            // Marathon matches the whole value (Java's `matches`).
            let re = Regex::new(&format!("^(?:{v})$"))
                .map_err(|_| format!("'{v}' is not a valid regular expression"))?;
            if op == "LIKE" {
                Operator::Like(re)
            } else {
                Operator::Unlike(re)
            }
        }
        "IS" => {
            let v = value.unwrap_or_default();
            let ok = !v.is_empty()
                && v.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '/' | '.' | '-'));
            if !ok {
                return Err(
                    "IS only supports Mesos text and float values (letters, digits, _ / . -)"
                        .into(),
                );
            }
            Operator::Is(v)
        }
        other => match plugins.filter(|p| p.operators().iter().any(|o| o == other)) {
            Some(p) => {
                let params = value.unwrap_or_default();
                if check_params {
                    p.validate(other, &c[0], &params)?;
                }
                Operator::Plugin {
                    name: other.to_string(),
                    params,
                }
            }
            None => return Err(unknown_operator(plugins)),
        },
    };
    Ok(Constraint { field, op })
}

/// Marathon's message for an unknown operator, listing the built-ins and then the plugins'.
fn unknown_operator(plugins: Option<&dyn ConstraintPlugins>) -> String {
    let mut all: Vec<&str> = OPERATORS.to_vec();
    if let Some(p) = plugins {
        all.extend(p.operators().iter().map(String::as_str));
    }
    let (last, rest) = all.split_last().expect("operators");
    format!(
        "operator must be one of the following {} or {last}",
        rest.join(", ")
    )
}

/// Parses every constraint of an app (already validated, so errors are skipped).
pub fn parse_all(
    constraints: &[Vec<String>],
    plugins: Option<&dyn ConstraintPlugins>,
) -> Vec<Constraint> {
    constraints
        .iter()
        .filter_map(|c| parse_inner(c, plugins, false).ok())
        .collect()
}

/// A scalar as Marathon prints it: at most three decimals, half-even, no trailing zeros.
pub fn format_scalar(x: f64) -> String {
    let thousandths = (x * 1000.0).round_ties_even();
    let s = format!("{:.3}", thousandths / 1000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn attribute_text(v: &AttributeValue) -> String {
    match v {
        AttributeValue::Text(t) => t.clone(),
        AttributeValue::Scalar(x) => format_scalar(*x),
    }
}

/// What an agent looks like to a constraint.
pub trait Placed {
    fn value_of(&self, field: &Field) -> Option<String>;
}

impl Placed for Offer {
    fn value_of(&self, field: &Field) -> Option<String> {
        match field {
            Field::Hostname => Some(self.hostname.clone()),
            Field::Region => self.region.clone(),
            Field::Zone => self.zone.clone(),
            Field::Attribute(a) => self.attributes.get(a).map(attribute_text),
        }
    }
}

impl Placed for AgentInfo {
    fn value_of(&self, field: &Field) -> Option<String> {
        match field {
            Field::Hostname => Some(self.host.clone()),
            Field::Region => self.region.clone(),
            Field::Zone => self.zone.clone(),
            Field::Attribute(a) => self.attributes.get(a).map(attribute_text),
        }
    }
}

impl Constraint {
    /// Whether an instance may go on `offer`, given the agents of the app's active instances.
    pub fn admits<'a>(&self, offer: &Offer, placed: impl Iterator<Item = &'a AgentInfo>) -> bool {
        if matches!(self.op, Operator::Plugin { .. }) {
            // Decided in batches by the placement loop.
            return true;
        }
        let Some(value) = offer.value_of(&self.field) else {
            return matches!(self.op, Operator::Unlike(_));
        };
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for agent in placed {
            if let Some(v) = agent.value_of(&self.field) {
                *counts.entry(v).or_default() += 1;
            }
        }
        match &self.op {
            Operator::Plugin { .. } => true,
            Operator::Unique => !counts.contains_key(&value),
            Operator::Cluster(Some(want)) => &value == want,
            // Without a value, the first instance picks the cluster.
            Operator::Cluster(None) => counts.is_empty() || counts.contains_key(&value),
            Operator::GroupBy(groups) => {
                // Marathon 1.x: a value nobody uses yet is always welcome; otherwise, once
                // enough groups exist, only the smallest group grows.
                let Some(&here) = counts.get(&value) else {
                    return true;
                };
                let min = counts.values().copied().min().unwrap_or(0);
                counts.len() as u32 >= groups.unwrap_or(0) && here == min
            }
            Operator::MaxPer(max) => counts.get(&value).copied().unwrap_or(0) < *max,
            Operator::Like(re) => re.is_match(&value),
            Operator::Unlike(re) => !re.is_match(&value),
            Operator::Is(want) => {
                let scalar = matches!(&self.field, Field::Attribute(a)
                    if matches!(offer.attributes.get(a), Some(AttributeValue::Scalar(_))));
                match want.parse::<f64>() {
                    Ok(x) if scalar => value == format_scalar(x),
                    _ => &value == want,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{AgentId, OfferId};

    fn c(parts: &[&str]) -> Constraint {
        parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn err(parts: &[&str]) -> String {
        parse(&parts.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err()
    }

    fn offer(host: &str, attrs: &[(&str, AttributeValue)]) -> Offer {
        Offer {
            id: OfferId("o".into()),
            agent_id: AgentId(format!("agent-{host}")),
            hostname: host.into(),
            cpus: 1.0,
            mem_mb: 1.0,
            disk_mb: 1.0,
            gpus: 0.0,
            ports: vec![],
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            region: Some("eu".into()),
            zone: Some(format!("zone-{host}")),
            reserved: None,
            allocation_role: None,
        }
    }

    fn agent(o: &Offer) -> AgentInfo {
        AgentInfo {
            agent_id: o.agent_id.clone(),
            host: o.hostname.clone(),
            region: o.region.clone(),
            zone: o.zone.clone(),
            attributes: o.attributes.clone(),
        }
    }

    fn text(s: &str) -> AttributeValue {
        AttributeValue::Text(s.into())
    }

    #[test]
    fn validation_messages_are_marathons() {
        assert_eq!(
            err(&["hostname"]),
            "Each constraint must have either 2 or 3 fields"
        );
        assert_eq!(
            err(&["", "UNIQUE"]),
            "missing field for constraint declaration"
        );
        assert_eq!(
            err(&["rack", "NEAR"]),
            "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS"
        );
        assert_eq!(
            err(&["hostname", "UNIQUE", "x"]),
            "UNIQUE does not accept a value"
        );
        assert_eq!(
            err(&["rack", "GROUP_BY", "two"]),
            "GROUP BY must define an integer value or else no value at all"
        );
        assert_eq!(
            err(&["rack", "MAX_PER"]),
            "MAX_PER requires an integer value"
        );
        assert_eq!(
            err(&["rack", "LIKE", ""]),
            "LIKE and UNLIKE require a non-empty, regular expression value"
        );
        assert_eq!(
            err(&["rack", "UNLIKE", "(x"]),
            "'(x' is not a valid regular expression"
        );
        assert!(err(&["rack", "IS", "a b"]).starts_with("IS only supports"));
        // Operators are case-insensitive on input.
        assert!(matches!(
            c(&["rack", "group_by"]).op,
            Operator::GroupBy(None)
        ));
    }

    #[test]
    fn unique_cluster_and_max_per_count_placed_values() {
        let (a, b) = (offer("a", &[]), offer("b", &[]));
        let unique = c(&["hostname", "UNIQUE"]);
        assert!(unique.admits(&a, [].iter()));
        assert!(!unique.admits(&a, [agent(&a)].iter()));
        assert!(unique.admits(&b, [agent(&a)].iter()));

        let cluster = c(&["@zone", "CLUSTER"]);
        assert!(cluster.admits(&b, [].iter()), "the first picks the cluster");
        assert!(!cluster.admits(&b, [agent(&a)].iter()));
        assert!(cluster.admits(&a, [agent(&a)].iter()));
        assert!(c(&["hostname", "CLUSTER", "b"]).admits(&b, [].iter()));
        assert!(!c(&["hostname", "CLUSTER", "b"]).admits(&a, [].iter()));

        let max2 = c(&["@region", "MAX_PER", "2"]);
        assert!(max2.admits(&a, [agent(&b)].iter()));
        assert!(!max2.admits(&a, [agent(&b), agent(&a)].iter()));
    }

    #[test]
    fn group_by_fills_new_and_smallest_groups() {
        let r = |rack: &str| offer(rack, &[("rack", text(rack))]);
        let (r1, r2, r3) = (r("r1"), r("r2"), r("r3"));
        let g = c(&["rack", "GROUP_BY", "3"]);
        // Unused racks are always welcome; a used one only once 3 groups exist and it is smallest.
        assert!(g.admits(&r2, [agent(&r1)].iter()));
        assert!(!g.admits(&r1, [agent(&r1), agent(&r2)].iter()));
        let placed = [agent(&r1), agent(&r2), agent(&r3), agent(&r1)];
        assert!(!g.admits(&r1, placed.iter()));
        assert!(g.admits(&r2, placed.iter()));
    }

    #[test]
    fn like_unlike_and_is_compare_formatted_values() {
        let o = offer(
            "h",
            &[
                ("rack", text("rack-12")),
                ("weight", AttributeValue::Scalar(0.8001)),
            ],
        );
        assert!(c(&["rack", "LIKE", "rack-[0-9]+"]).admits(&o, [].iter()));
        assert!(
            !c(&["rack", "LIKE", "rack-1"]).admits(&o, [].iter()),
            "the whole value must match"
        );
        assert!(c(&["rack", "UNLIKE", "rack-1"]).admits(&o, [].iter()));
        // A missing attribute satisfies only UNLIKE.
        assert!(c(&["gpu", "UNLIKE", "yes"]).admits(&o, [].iter()));
        assert!(!c(&["gpu", "LIKE", ".*"]).admits(&o, [].iter()));
        assert!(!c(&["gpu", "UNIQUE"]).admits(&o, [].iter()));
        for v in ["0.8", "0.80", "0.8001"] {
            assert!(c(&["weight", "IS", v]).admits(&o, [].iter()), "{v}");
        }
        assert!(!c(&["weight", "IS", "0.81"]).admits(&o, [].iter()));
        assert!(c(&["rack", "IS", "rack-12"]).admits(&o, [].iter()));
    }

    #[test]
    fn scalars_format_as_marathon() {
        assert_eq!(format_scalar(0.8001), "0.8");
        assert_eq!(format_scalar(2.0), "2");
        assert_eq!(format_scalar(1.0625), "1.062");
        assert_eq!(format_scalar(-0.0001), "0");
    }
}
