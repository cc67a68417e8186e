//! Parsing the JSON a plugin is configured with.

use serde::de::DeserializeOwned;

use crate::Error;

/// Parses a plugin's `configuration` (the JSON text `configure` receives) into `T`.
///
/// An empty (or all-blank) string parses as `{}`, so a `#[derive(Default)]`/`#[serde(default)]`
/// struct works when the plugin file has no `configuration`. Errors are [`Error::BadConfig`].
///
/// ```ignore
/// #[derive(serde::Deserialize)]
/// #[serde(rename_all = "camelCase", deny_unknown_fields)]
/// struct Config { max_skew: Option<u32> }
///
/// let config: Config = pacer_plugin_sdk::config::parse(text)?;
/// ```
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, Error> {
    parse_json(config, "invalid configuration")
}

pub(crate) fn parse_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    let text = text.trim();
    let text = if text.is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| Error::BadConfig(format!("{what}: {e}")))
}
