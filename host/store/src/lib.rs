//! Pacer's persistence port.
//!
//! The pure core (`pacer-core`) decides *what* must be made durable and expresses it as a list of
//! [`StoreOp`]s; this crate executes those lists. Keeping the trait tiny (batch write, point read,
//! prefix scan) lets the daemon swap backends: [`EmbeddedStore`] (redb, on disk) in production and
//! [`MemStore`] in unit tests.

use std::path::PathBuf;

mod embedded;
mod mem;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use embedded::EmbeddedStore;
pub use mem::MemStore;
pub use pacer_core::persist::StoreOp;

/// A durable, ordered key/value store.
///
/// Synchronous on purpose: every backend we use is blocking (fsync), so callers decide where to
/// block (e.g. `spawn_blocking`) instead of each backend pretending to be async.
pub trait Store: Send + Sync {
    /// Applies `ops` in order as one atomic unit: afterwards either all of them are visible or
    /// none is. Later ops win over earlier ones on the same key; deleting a missing key is a
    /// no-op. When this returns `Ok`, the data survives the process being killed (`kill -9`).
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError>;

    /// Returns the value stored under exactly `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Returns every entry whose key starts with `prefix`, sorted by key. Used at startup to
    /// reload one category of records (e.g. all `app/` entries).
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// A short human-readable description for logs and `/v2/info`-style output,
    /// e.g. `embedded (redb) at /var/lib/pacer/pacer.redb`.
    fn describe(&self) -> String;
}

/// Why a store operation failed. Each message names the action or file involved so that an
/// operator reading the daemon's log knows what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Another handle (usually another Pacer process) holds the database's exclusive lock.
    #[error(
        "database {} is already open (locked by another handle); another Pacer may be using the \
         same --data_dir: stop it or choose a different --data_dir",
        path.display()
    )]
    AlreadyOpen { path: PathBuf },

    /// The database file exists but could not be opened or initialised.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },

    /// A read, write or commit failed (typically an IO error such as a full disk). The redb
    /// error is boxed because it is large and errors travel through every `Result`.
    #[error("store failed to {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: Box<redb::Error>,
    },

    /// The backend found inconsistent data on disk; the file needs to be restored or removed.
    #[error("store data is corrupted (while trying to {action}): {detail}")]
    Corrupted { action: String, detail: String },

    /// A value (or a whole batch) is larger than the backend can store in one piece (ZooKeeper's
    /// node and request limits). Nothing was written.
    #[error("{what} is {bytes} bytes, over the store's limit of {limit} bytes")]
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },

    /// This process may no longer write: another Pacer has taken over as leader.
    #[error("write refused: this Pacer is no longer the leader ({0})")]
    Fenced(String),

    /// A remote store (ZooKeeper) failed or did not answer in time.
    #[error("store failed to {action}: {detail}")]
    Remote {
        action: &'static str,
        detail: String,
    },
}
