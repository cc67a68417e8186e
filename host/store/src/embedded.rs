//! On-disk store backed by redb: a single file, crash-safe copy-on-write B-tree, no server.

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, Durability, TableDefinition};

use crate::{Store, StoreError, StoreOp};

/// File name inside `--data_dir`. Fixed so that a restart finds the previous state.
const FILE_NAME: &str = "pacer.redb";

/// All records live in one table; the key prefix (`app/`, `instance/`, ...) is the category.
/// One table keeps a batch touching several categories inside a single simple transaction.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");

/// A [`Store`] kept in `<data_dir>/pacer.redb`.
///
/// redb takes an exclusive file lock, so only one `EmbeddedStore` (in any process) can have a
/// given data directory open at a time.
pub struct EmbeddedStore {
    db: Database,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (or creates) the database in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|err| open_error(&path, err))?;

        // Create the table up front so read transactions never see "table does not exist".
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(ENTRIES)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|err| match err {
            redb::Error::Corrupted(detail) => StoreError::Corrupted {
                action: format!("initialise {}", path.display()),
                detail,
            },
            source => StoreError::Open {
                path: path.clone(),
                source,
            },
        })?;

        Ok(Self { db, path })
    }

    /// Path of the database file (for logs and diagnostics).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Turns redb's open error into ours, singling out the two cases an operator can act on.
fn open_error(path: &Path, err: DatabaseError) -> StoreError {
    match redb::Error::from(err) {
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        redb::Error::Corrupted(detail) => StoreError::Corrupted {
            action: format!("open {}", path.display()),
            detail,
        },
        source => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Wraps any redb error met while doing `action`, keeping corruption distinguishable.
fn backend_error(action: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
    move |source| match source {
        redb::Error::Corrupted(detail) => StoreError::Corrupted {
            action: action.to_string(),
            detail,
        },
        source => StoreError::Io { action, source },
    }
}

impl Store for EmbeddedStore {
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            // Nothing to make durable; skip the fsync.
            return Ok(());
        }
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| backend_error("begin a write transaction")(e.into()))?;
        // Immediate is redb's default; set it explicitly because `apply`'s contract depends on
        // it: commit returns only after the data has been fsync'ed.
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn
                .open_table(ENTRIES)
                .map_err(|e| backend_error("open the entries table")(e.into()))?;
            for op in ops {
                let written = match op {
                    StoreOp::Put { key, value } => {
                        table.insert(key.as_str(), value.as_slice()).map(drop)
                    }
                    StoreOp::Delete { key } => table.remove(key.as_str()).map(drop),
                };
                // Returning early drops `txn` uncommitted, which aborts the whole batch.
                written.map_err(|e| backend_error("write an entry")(e.into()))?;
            }
        }
        txn.commit()
            .map_err(|e| backend_error("commit a write transaction")(e.into()))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let read = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            Ok(table.get(key)?.map(|value| value.value().to_vec()))
        };
        read().map_err(backend_error("read an entry"))
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let read = || -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut found = Vec::new();
            // Keys are ordered, so everything with the prefix is contiguous from `prefix` on.
            for entry in table.range::<&str>(prefix..)? {
                let (key, value) = entry?;
                if !key.value().starts_with(prefix) {
                    break;
                }
                found.push((key.value().to_string(), value.value().to_vec()));
            }
            Ok(found)
        };
        read().map_err(backend_error("scan entries"))
    }

    fn describe(&self) -> String {
        format!("embedded (redb) at {}", self.path.display())
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};

    use tempfile::TempDir;

    /// Keeps the temporary directory alive exactly as long as the store using it.
    struct InTempDir {
        store: EmbeddedStore,
        _dir: TempDir,
    }

    impl Store for InTempDir {
        fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
            self.store.apply(ops)
        }
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.store.get(key)
        }
        fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.store.scan(prefix)
        }
        fn describe(&self) -> String {
            self.store.describe()
        }
    }

    fn put(key: &str, value: &[u8]) -> StoreOp {
        StoreOp::Put {
            key: key.to_string(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn conformance() {
        crate::testing::conformance_suite(&|| {
            let dir = tempfile::tempdir().expect("create temp dir");
            let store = EmbeddedStore::open(dir.path()).expect("open store");
            Box::new(InTempDir { store, _dir: dir })
        });
    }

    #[test]
    fn creates_missing_data_dir_and_describes_path() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("nested").join("data");
        let store = EmbeddedStore::open(&data_dir).unwrap();
        let file = data_dir.join("pacer.redb");
        assert!(file.is_file());
        assert_eq!(store.path(), file);
        assert_eq!(
            store.describe(),
            format!("embedded (redb) at {}", file.display())
        );
    }

    #[test]
    fn data_survives_drop_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store
                .apply(&[
                    put("app//prod/web", b"{\"id\":\"/prod/web\"}"),
                    put("meta/x", b"1"),
                ])
                .unwrap();
            store
                .apply(&[StoreOp::Delete {
                    key: "meta/x".to_string(),
                }])
                .unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            store.get("app//prod/web").unwrap().as_deref(),
            Some(&b"{\"id\":\"/prod/web\"}"[..])
        );
        assert_eq!(store.get("meta/x").unwrap(), None);
    }

    #[test]
    fn second_open_of_same_dir_reports_already_open() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let err = EmbeddedStore::open(dir.path()).expect_err("second open must fail");
        assert!(
            matches!(&err, StoreError::AlreadyOpen { path } if path == &dir.path().join("pacer.redb")),
            "unexpected error: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("pacer.redb"), "{message}");
        assert!(message.contains("--data_dir"), "{message}");
        assert!(message.contains("another Pacer"), "{message}");
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(EmbeddedStore::open(dir.path()).unwrap());
        EmbeddedStore::open(dir.path()).expect("reopen after drop");
    }

    #[test]
    fn garbage_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pacer.redb"), vec![0xAB; 64 * 1024]).unwrap();
        let err = EmbeddedStore::open(dir.path()).expect_err("garbage must not open");
        let message = err.to_string();
        assert!(message.contains("pacer.redb"), "{message}");
    }

    #[test]
    fn data_dir_that_is_a_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = EmbeddedStore::open(&not_a_dir).expect_err("must fail");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("data directory"), "{err}");
    }

    /// Set in the child process spawned by [`data_survives_sigkill_after_apply`].
    const CRASH_DIR_ENV: &str = "PACER_STORE_TEST_CRASH_DIR";
    /// Line the child prints once `apply` has returned `Ok`.
    const APPLIED: &str = "PACER_STORE_TEST_APPLIED";

    /// Kills the child if the parent's test fails before doing so, so no process is left behind.
    struct KillOnDrop(Child);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Runs in two roles. As the parent it re-runs this same test in a child process (the test
    /// binary itself); the child applies a batch, announces it on stdout and then waits to be
    /// killed. The parent sends SIGKILL as soon as it reads the announcement — so the child gets
    /// no chance to flush or close anything — and then checks the batch is readable.
    #[test]
    fn data_survives_sigkill_after_apply() {
        if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
            let store = EmbeddedStore::open(Path::new(&dir)).unwrap();
            let batch: Vec<StoreOp> = (0..100)
                .map(|i| put(&format!("instance/i{i:03}"), format!("v{i}").as_bytes()))
                .collect();
            store.apply(&batch).unwrap();
            println!("{APPLIED}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }

        let dir = tempfile::tempdir().unwrap();
        // Test names are module paths without the crate name.
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let test_name = format!("{module}::data_survives_sigkill_after_apply");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child test process");
        let mut child = KillOnDrop(child);

        // Wait (blocking, no timeouts to tune) for the announcement; EOF means the child died
        // before applying, which fails the test instead of hanging it.
        let stdout = child.0.stdout.take().unwrap();
        let announced = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.trim() == APPLIED);
        assert!(announced, "child exited without applying its batch");

        child.0.kill().expect("SIGKILL child"); // `Child::kill` is SIGKILL on Unix.
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "child should have been killed");

        let store = EmbeddedStore::open(dir.path()).expect("reopen after SIGKILL");
        let entries = store.scan("instance/").unwrap();
        assert_eq!(entries.len(), 100);
        for (i, (key, value)) in entries.iter().enumerate() {
            assert_eq!(key, &format!("instance/i{i:03}"));
            assert_eq!(value, format!("v{i}").as_bytes());
        }
    }
}
