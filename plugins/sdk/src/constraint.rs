//! Placement constraint plugins (world `constraint-plugin`).
//!
//! An app uses a constraint operator as `["<field>", "<OPERATOR>", "<params>"]`. The host calls
//! [`Constraint::configure`] once after loading, [`Constraint::operators`] once, then
//! [`Constraint::validate`] for every submitted app that uses one of the operators and
//! [`Constraint::check`] during placement with a batch of offers for one app.
//!
//! A constraint plugin may import only [`log`](crate::log).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use crate::__bindings::constraint::exports::pacer::plugin::constraint as wit;
use crate::Error;
use crate::runtime;
use crate::types::PluginError;

pub use crate::types::{AttrValue, Attribute};
pub use wit::{Decision, Offer, Request};

/// How many of the app's active instances run on each value of the constraint's field
/// (WIT `placed-summary`). Instances on agents without the field count in `total` only.
pub type Placed = wit::PlacedSummary;

/// A placement constraint.
///
/// `configure` builds the value the other calls get; the default ignores the configuration
/// and uses `Self::default()`.
pub trait Constraint: Default + 'static {
    /// Builds the plugin from its `configuration` (JSON text; `""` when the plugin file has
    /// none). Parse it with [`config::parse`](crate::config::parse).
    fn configure(config: &str) -> Result<Self, Error> {
        let _ = config;
        Ok(Self::default())
    }

    /// The operator names this plugin provides (upper case by convention). Called once at load.
    fn operators() -> Vec<String>;

    /// Checks a constraint as an app wrote it when the app is submitted; an `Err` is shown to
    /// the user as a 422 at the constraint's path. The default accepts everything.
    fn validate(&self, operator: &str, field: &str, params: &str) -> Result<(), String> {
        let _ = (operator, field, params);
        Ok(())
    }

    /// Decides a batch of offers for one app: one [`Decision`] per offer, in order.
    ///
    /// The host calls again after each placement, so the decisions of one batch need not take
    /// each other into account.
    fn check(
        &mut self,
        request: &Request,
        placed: &Placed,
        offers: &[Offer],
    ) -> Result<Vec<Decision>, Error>;
}

/// Exports a [`Constraint`] implementation as the plugin's `pacer:plugin/constraint`.
///
/// ```ignore
/// pacer_plugin_sdk::export_constraint!(MyConstraint);
/// ```
#[macro_export]
macro_rules! export_constraint {
    ($plugin:ty) => {
        const _: () = {
            type __PacerConstraintExport = $crate::constraint::__Adapter<$plugin>;
            $crate::__bindings::constraint::export_world!(
                __PacerConstraintExport with_types_in $crate::__bindings::constraint
            );
        };
    };
}

#[doc(hidden)]
pub struct __Adapter<T>(PhantomData<T>);

impl<T: Constraint> wit::Guest for __Adapter<T> {
    fn configure(config: String) -> Result<(), PluginError> {
        runtime::enter();
        runtime::install(T::configure(&config)?);
        Ok(())
    }

    fn operators() -> Vec<String> {
        runtime::enter();
        T::operators()
    }

    fn validate(operator: String, field: String, params: String) -> Result<(), String> {
        runtime::enter();
        runtime::with(|plugin: &mut T| plugin.validate(&operator, &field, &params))
            .map_err(|e| e.to_string())?
    }

    fn check_batch(
        req: Request,
        placed: Placed,
        offers: Vec<Offer>,
    ) -> Result<Vec<Decision>, PluginError> {
        runtime::enter();
        let decisions = runtime::with(|plugin: &mut T| plugin.check(&req, &placed, &offers))??;
        if decisions.len() != offers.len() {
            return Err(PluginError::Failed(format!(
                "the plugin returned {} decisions for {} offers",
                decisions.len(),
                offers.len()
            )));
        }
        Ok(decisions)
    }
}

impl Decision {
    /// Accepts the offer.
    pub fn accept() -> Self {
        Decision {
            accept: true,
            reason: None,
        }
    }

    /// Refuses the offer; `reason` is shown to operators.
    pub fn reject(reason: impl Into<String>) -> Self {
        Decision {
            accept: false,
            reason: Some(reason.into()),
        }
    }

    /// Accepts the offer if `accept`, else refuses it with the reason `reason` makes (only
    /// called for a refusal).
    pub fn accept_if(accept: bool, reason: impl FnOnce() -> String) -> Self {
        if accept {
            Self::accept()
        } else {
            Self::reject(reason())
        }
    }
}

impl Placed {
    /// How many instances run on `value` (0 when it has none).
    pub fn count(&self, value: &str) -> u32 {
        self.counts
            .iter()
            .find(|(v, _)| v == value)
            .map_or(0, |&(_, n)| n)
    }
}

impl Offer {
    /// The value of the agent attribute `name`, if the agent has it.
    pub fn attribute(&self, name: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    /// The offer's value for a constraint `field`, as Pacer's built-in operators see it:
    /// `hostname` and `@hostname` are the hostname, `@region` and `@zone` the agent's region and
    /// zone, anything else an agent attribute (scalars formatted minimally: `2.0` is `"2"`).
    /// `None` when the agent has no such value.
    pub fn field(&self, field: &str) -> Option<Cow<'_, str>> {
        match field {
            "hostname" | "@hostname" => Some(Cow::Borrowed(&self.hostname)),
            "@region" => self.region.as_deref().map(Cow::Borrowed),
            "@zone" => self.zone.as_deref().map(Cow::Borrowed),
            name => self.attribute(name).map(AttrValue::as_text),
        }
    }
}

impl AttrValue {
    /// The value as text; scalars formatted minimally (`2.0` is `"2"`, `0.5` is `"0.5"`).
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            AttrValue::Text(s) => Cow::Borrowed(s),
            AttrValue::Scalar(x) => Cow::Owned(x.to_string()),
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Text(s) => f.write_str(s),
            AttrValue::Scalar(x) => write!(f, "{x}"),
        }
    }
}
