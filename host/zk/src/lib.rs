//! `pacer-zk`: Pacer's state in ZooKeeper ([`ZkStore`], behind the same `Store` port as the
//! embedded store) and, built on the same session, leader election.

mod conn;
pub mod election;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use conn::{connect_client, redact_url, ZkUrl};
pub use store::{Fence, ZkStore, ZkStoreConfig};
/// Session states, as leader election reacts to them.
pub use zookeeper_client::SessionState;
