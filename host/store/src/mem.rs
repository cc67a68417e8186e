//! In-memory store for unit tests and dry runs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::{Store, StoreError, StoreOp};

/// A [`Store`] backed by a `BTreeMap`, so scans come out sorted for free. Nothing survives the
/// process; "durable" here just means "visible to later calls".
#[derive(Debug, Default)]
pub struct MemStore {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applying ops cannot fail half-way, so a poisoned lock still guards a consistent map and
    /// it is safe to keep using it.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Store for MemStore {
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        // Holding the lock for the whole batch is what makes it atomic for readers.
        let mut entries = self.lock();
        for op in ops {
            match op {
                StoreOp::Put { key, value } => {
                    entries.insert(key.clone(), value.clone());
                }
                StoreOp::Delete { key } => {
                    entries.remove(key);
                }
            }
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let entries = self.lock();
        Ok(entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn describe(&self) -> String {
        "memory".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        crate::testing::conformance_suite(&|| Box::new(MemStore::new()));
    }

    #[test]
    fn describes_itself() {
        assert_eq!(MemStore::new().describe(), "memory");
    }
}
