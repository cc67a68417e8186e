//! What plugins add to the core: constraint operators (decided through
//! [`ConstraintPlugins`](crate::constraints::ConstraintPlugins)) and health-check types (probed
//! outside the core; the core only needs their names to validate apps).

use crate::constraints::ConstraintPlugins;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Extensions {
    pub constraints: Option<Arc<dyn ConstraintPlugins>>,
    /// Ids of the loaded health-check plugins, usable as `"plugin"` in a `PLUGIN` check.
    pub health_checks: BTreeSet<String>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field(
                "constraint_operators",
                &self.constraints.as_ref().map(|c| c.operators()),
            )
            .field("health_checks", &self.health_checks)
            .finish()
    }
}
