use std::fmt;

use crate::types::PluginError;

/// Why a plugin call failed; becomes the WIT `plugin-error` the host reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The plugin's configuration, or the parameters an app gave, cannot be used.
    BadConfig(String),
    /// Anything else; the text is shown to operators.
    Failed(String),
}

impl Error {
    /// An [`Error::BadConfig`].
    pub fn bad_config(message: impl Into<String>) -> Self {
        Error::BadConfig(message.into())
    }

    /// An [`Error::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }

    /// The text without the kind.
    pub fn message(&self) -> &str {
        match self {
            Error::BadConfig(m) | Error::Failed(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadConfig(m) => write!(f, "bad configuration: {m}"),
            Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

/// Host errors (the `Err` text of [`probe`](crate::probe) and [`http`](crate::http) calls)
/// become [`Error::Failed`], so `?` works on them.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failed(message)
    }
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadConfig(m) => PluginError::BadConfig(m),
            Error::Failed(m) => PluginError::Failed(m),
        }
    }
}
