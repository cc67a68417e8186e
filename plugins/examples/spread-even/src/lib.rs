//! Constraint operator `SPREAD_EVEN`: `["rack", "SPREAD_EVEN", "1"]` keeps an app's instances
//! evenly spread over the values of a field. An offer is accepted while its value has fewer
//! than `max skew` instances more than the emptiest value (default 1, or `{"maxSkew": n}`).

use std::collections::BTreeMap;

use pacer_plugin_sdk::Error;
use pacer_plugin_sdk::constraint::{Constraint, Decision, Offer, Placed, Request};

struct SpreadEven {
    max_skew: u32,
}

impl Default for SpreadEven {
    fn default() -> Self {
        SpreadEven { max_skew: 1 }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    max_skew: Option<u32>,
}

/// The constraint's params: empty (the configured default) or a positive integer.
fn max_skew(params: &str) -> Result<Option<u32>, String> {
    match params.trim() {
        "" => Ok(None),
        p => match p.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "SPREAD_EVEN expects a positive integer max skew, got {p:?}"
            )),
        },
    }
}

impl Constraint for SpreadEven {
    fn configure(config: &str) -> Result<Self, Error> {
        let config: Config = pacer_plugin_sdk::config::parse(config)?;
        match config.max_skew {
            Some(0) => Err(Error::bad_config("maxSkew must be a positive integer")),
            n => Ok(SpreadEven {
                max_skew: n.unwrap_or(1),
            }),
        }
    }

    fn operators() -> Vec<String> {
        vec!["SPREAD_EVEN".into()]
    }

    fn validate(&self, _operator: &str, _field: &str, params: &str) -> Result<(), String> {
        max_skew(params).map(drop)
    }

    fn check(
        &mut self,
        req: &Request,
        placed: &Placed,
        offers: &[Offer],
    ) -> Result<Vec<Decision>, Error> {
        let max_skew = max_skew(&req.params)
            .map_err(Error::BadConfig)?
            .unwrap_or(self.max_skew);
        let counts: BTreeMap<&str, u32> = placed
            .counts
            .iter()
            .map(|(v, n)| (v.as_str(), *n))
            .collect();
        let values: Vec<_> = offers.iter().map(|o| o.field(&req.field)).collect();
        // The emptiest value: over the placed values and this batch's values (absent ones have 0).
        let mut min = counts.values().copied().min().unwrap_or(0);
        if values
            .iter()
            .flatten()
            .any(|v| !counts.contains_key(v.as_ref()))
        {
            min = 0;
        }
        let decisions = values.iter().map(|value| {
            let Some(value) = value else {
                return Decision::reject(format!("offer has no attribute {}", req.field));
            };
            let count = counts.get(value.as_ref()).copied().unwrap_or(0);
            Decision::accept_if(count.saturating_sub(min) < max_skew, || {
                format!(
                    "{}={value} has {count} instance{}, the emptiest value has {min} (max skew {max_skew})",
                    req.field,
                    if count == 1 { "" } else { "s" }
                )
            })
        });
        Ok(decisions.collect())
    }
}

pacer_plugin_sdk::export_constraint!(SpreadEven);

#[cfg(test)]
mod tests {
    // Runs natively: `cargo test --target x86_64-unknown-linux-gnu -p spread-even`.
    use super::*;
    use pacer_plugin_sdk::constraint::{AttrValue, Attribute};

    fn offer(rack: Option<AttrValue>) -> Offer {
        Offer {
            id: "o".into(),
            agent_id: "a".into(),
            hostname: "h1".into(),
            region: None,
            zone: None,
            attributes: rack
                .into_iter()
                .map(|value| Attribute {
                    name: "rack".into(),
                    value,
                })
                .collect(),
        }
    }

    fn check(params: &str, counts: &[(&str, u32)], offers: &[Offer]) -> Vec<Decision> {
        let req = Request {
            app_id: "/app".into(),
            operator: "SPREAD_EVEN".into(),
            field: "rack".into(),
            params: params.into(),
            waiting: 1,
        };
        let placed = Placed {
            total: counts.iter().map(|c| c.1).sum(),
            counts: counts.iter().map(|&(v, n)| (v.into(), n)).collect(),
        };
        SpreadEven::configure("")
            .unwrap()
            .check(&req, &placed, offers)
            .unwrap()
    }

    #[test]
    fn spreads_evenly() {
        let text = |s: &str| Some(AttrValue::Text(s.into()));
        let offers = [
            offer(text("r1")),
            offer(text("r2")),
            offer(None),
            offer(Some(AttrValue::Scalar(2.0))),
        ];
        let d = check("", &[("r1", 2), ("r2", 1), ("2", 1)], &offers);
        assert_eq!(
            d[0],
            Decision::reject("rack=r1 has 2 instances, the emptiest value has 1 (max skew 1)")
        );
        assert_eq!(d[1], Decision::accept());
        assert_eq!(d[2], Decision::reject("offer has no attribute rack"));
        assert_eq!(d[3], Decision::accept());
        // A value nobody runs on yet makes the emptiest count 0.
        let d = check(
            "2",
            &[("r1", 2), ("r2", 1)],
            &[offer(text("r1")), offer(text("r3"))],
        );
        assert_eq!(
            d[0],
            Decision::reject("rack=r1 has 2 instances, the emptiest value has 0 (max skew 2)")
        );
        assert_eq!(d[1], Decision::accept());
    }

    #[test]
    fn validates_params_and_config() {
        let p = SpreadEven::default();
        assert!(p.validate("SPREAD_EVEN", "rack", "").is_ok());
        assert!(p.validate("SPREAD_EVEN", "rack", "3").is_ok());
        assert!(p.validate("SPREAD_EVEN", "rack", "0").is_err());
        assert!(p.validate("SPREAD_EVEN", "rack", "x").is_err());
        assert_eq!(
            SpreadEven::configure(r#"{"maxSkew": 3}"#).unwrap().max_skew,
            3
        );
        assert!(SpreadEven::configure(r#"{"maxSkew": 0}"#).is_err());
        assert!(SpreadEven::configure(r#"{"maxSkew": "x"}"#).is_err());
    }
}
