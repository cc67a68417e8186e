//! Leader election on the store's ZooKeeper session.
//!
//! Candidates create ephemeral-sequential latch nodes under `/leader` (Curator's `_c_<uuid>-latch-`
//! naming, through `zookeeper-client`'s lock recipe); the lowest sequence leads. Each node's data
//! is the candidate's record as JSON (the daemon's is its `host:port` and URL), so anyone can find
//! the leader by reading the lowest node. The
//! leader's store writes are fenced on its own latch node (see [`crate::Fence`]): once the node is
//! gone, its writes fail, whatever the old leader believes.

use crate::store::Fence;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use zookeeper_client as zk;

/// Directory of the latch nodes, under the `--zk` path.
pub const LEADER_DIR: &str = "/leader";
const LATCH_NAME: &str = "latch-";
/// ZooKeeper's sequence suffix is ten digits.
const SEQUENCE_DIGITS: usize = 10;

/// Held while this process leads; dropping it removes the latch node in the background.
pub struct Leadership {
    lock: zk::OwnedLockClient,
}

impl Leadership {
    /// The latch node this leader's writes are conditional on.
    pub fn fence(&self) -> Fence {
        // Nothing ever sets data on a latch node, so its version stays 0.
        Fence {
            path: self.lock.lock_path().to_string(),
            version: 0,
        }
    }

    pub fn latch_path(&self) -> &str {
        self.lock.lock_path()
    }

    /// Whether the latch node still exists (checked after a reconnection: if it is gone, someone
    /// else may lead by now).
    pub async fn still_held(&self) -> Result<bool, zk::Error> {
        Ok(self
            .lock
            .client()
            .check_stat(self.lock.lock_path())
            .await?
            .is_some())
    }

    /// Gives leadership up now: the latch node is deleted before this returns (when the session
    /// still works), so a standby takes over at once instead of after the session timeout.
    pub async fn release(&self) {
        // Dropping the lock client would delete the node too, but in the background; the
        // process may be gone before that runs.
        // Bounded: without a connection there is nothing to hand over quickly anyway.
        let delete = self.lock.client().delete(self.lock.lock_path(), None);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), delete).await;
    }
}

/// Waits until this candidate leads, publishing `me` (JSON) in its latch node. Cancel-safe:
/// dropping the future withdraws the candidacy.
pub async fn contend<T: Serialize>(client: &zk::Client, me: &T) -> Result<Leadership, zk::Error> {
    let data = serde_json::to_vec(me).map_err(|_| zk::Error::BadArguments(&"unserializable"))?;
    let prefix = zk::LockPrefix::new_curator(LEADER_DIR, LATCH_NAME)?;
    let options = zk::LockOptions::new(zk::Acls::anyone_all())
        .with_ancestor_options(zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()))?;
    let lock = client.lock(prefix, &data, options).await?;
    Ok(Leadership {
        lock: lock.into_owned(),
    })
}

/// The sequence number of a latch node's name, if it is one.
fn sequence(name: &str) -> Option<u64> {
    if !name.contains(LATCH_NAME) || name.len() < SEQUENCE_DIGITS {
        return None;
    }
    name[name.len() - SEQUENCE_DIGITS..].parse().ok()
}

/// The latch node that leads: the lowest sequence among `children` of [`LEADER_DIR`].
fn lowest_latch(children: &[String]) -> Option<&String> {
    children
        .iter()
        .filter_map(|c| sequence(c).map(|s| (s, c)))
        .min()
        .map(|(_, c)| c)
}

/// The leader's record (`Ok(None)`: nobody leads, or its record is unreadable; `NoNode`: the
/// leading node vanished since the listing).
async fn read_leader<T: DeserializeOwned>(
    client: &zk::Client,
    children: &[String],
) -> Result<Option<T>, zk::Error> {
    let Some(lowest) = lowest_latch(children) else {
        return Ok(None);
    };
    let (data, _) = client.get_data(&format!("{LEADER_DIR}/{lowest}")).await?;
    Ok(serde_json::from_slice(&data).ok())
}

/// The current leader's record, read from the lowest latch node (`None` while nobody leads).
pub async fn current_leader<T: DeserializeOwned>(
    client: &zk::Client,
) -> Result<Option<T>, zk::Error> {
    loop {
        let children = match client.list_children(LEADER_DIR).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        };
        match read_leader(client, &children).await {
            // The lowest node went away between the listing and the read: look again.
            Err(zk::Error::NoNode) => continue,
            leader => return leader,
        }
    }
}

/// Keeps `tx` up to date with the current leader's record until the session ends or every
/// receiver is gone. Connection losses are waited out; the value keeps its last known leader
/// meanwhile.
pub async fn follow_leader<T>(client: zk::Client, tx: watch::Sender<Option<T>>)
where
    T: DeserializeOwned + PartialEq,
{
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    loop {
        if tx.is_closed() {
            return;
        }
        let listed = match client.list_and_watch_children(LEADER_DIR).await {
            Ok(listed) => Some(listed),
            Err(zk::Error::NoNode) => {
                // Nobody ever contended yet: create the directory and watch it.
                match client.mkdir(LEADER_DIR, &options).await {
                    Ok(()) | Err(zk::Error::NodeExists) => continue,
                    Err(_) => None,
                }
            }
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => return,
            Err(_) => None,
        };
        let Some((children, watcher)) = listed else {
            // Disconnected: try again shortly (the client reconnects by itself).
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        };
        match read_leader(&client, &children).await {
            Ok(leader) => {
                tx.send_if_modified(|cur| {
                    let changed = *cur != leader;
                    *cur = leader;
                    changed
                });
            }
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => return,
            // NoNode included: the listing changed, so the watch fires.
            Err(_) => {}
        }
        watcher.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latch_names_sort_by_their_sequence() {
        assert_eq!(sequence("_c_8c1e-latch-0000000012"), Some(12));
        assert_eq!(sequence("_c_8c1e-latch-x"), None);
        assert_eq!(sequence("other-0000000001"), None);
    }
}
