//! On-disk store backed by redb: a single file, crash-safe copy-on-write B-tree, no server.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, TableDefinition};

/// redb's page cache.
const CACHE_BYTES: usize = 32 << 20;

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
        // redb caches up to 1 GiB of pages by default. Pacer reads the store once, at start-up,
        // so a small cache bounds memory without slowing anything that matters.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(open_error(&path))?;

        // Create the table up front so read transactions never see "table does not exist".
        let txn = db.begin_write().map_err(open_error(&path))?;
        txn.open_table(ENTRIES).map_err(open_error(&path))?;
        txn.commit().map_err(open_error(&path))?;

        Ok(Self { db, path })
    }

    /// Path of the database file (for logs and diagnostics).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Converts an error met while opening `path`, singling out the cases an operator can act on:
/// a lock held elsewhere and a damaged file.
fn open_error<E: Into<redb::Error>>(path: &Path) -> impl FnOnce(E) -> StoreError + '_ {
    move |err| match err.into() {
        redb::Error::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.to_path_buf(),
        },
        redb::Error::Corrupted(detail) => StoreError::Corrupted {
            action: format!("open {}", path.display()),
            detail,
        },
        source => StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    }
}

/// Converts an error met while doing `action`, keeping corruption distinguishable.
fn backend_error<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> StoreError {
    move |err| match err.into() {
        redb::Error::Corrupted(detail) => StoreError::Corrupted {
            action: action.to_string(),
            detail,
        },
        source => StoreError::Io {
            action,
            source: Box::new(source),
        },
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
            .map_err(backend_error("begin a write transaction"))?;
        // Immediate is redb's default; set it explicitly because `apply`'s contract depends on
        // it: commit returns only after the data has been fsync'ed.
        txn.set_durability(Durability::Immediate);
        {
            let mut table = txn
                .open_table(ENTRIES)
                .map_err(backend_error("open the entries table"))?;
            for op in ops {
                // Returning early drops `txn` uncommitted, which aborts the whole batch.
                match op {
                    StoreOp::Put { key, value } => {
                        table
                            .insert(key.as_str(), value.as_slice())
                            .map_err(backend_error("write an entry"))?;
                    }
                    StoreOp::Delete { key } => {
                        table
                            .remove(key.as_str())
                            .map_err(backend_error("delete an entry"))?;
                    }
                }
            }
        }
        txn.commit()
            .map_err(backend_error("commit a write transaction"))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(backend_error("begin a read transaction"))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(backend_error("open the entries table"))?;
        let value = table.get(key).map_err(backend_error("read an entry"))?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(backend_error("begin a read transaction"))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(backend_error("open the entries table"))?;
        let mut found = Vec::new();
        // Keys are ordered, so everything with the prefix is contiguous from `prefix` on.
        let range = table
            .range::<&str>(prefix..)
            .map_err(backend_error("scan entries"))?;
        for entry in range {
            let (key, value) = entry.map_err(backend_error("scan entries"))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push((key.value().to_string(), value.value().to_vec()));
        }
        Ok(found)
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
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

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
    /// Upper bound on the child's run time, so a broken child fails the test instead of hanging.
    const CHILD_DEADLINE: Duration = Duration::from_secs(120);

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
            // Write to the real stdout: `println!` would go to libtest's capture buffer, which
            // is only flushed when the test ends — and this one never ends on its own.
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{APPLIED}").unwrap();
            stdout.flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }

        let dir = tempfile::tempdir().unwrap();
        // Test names are module paths without the crate name.
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let test_name = format!("{module}::data_survives_sigkill_after_apply");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([test_name.as_str(), "--exact", "--test-threads=1"])
            .env(CRASH_DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child test process");
        let stdout = child.stdout.take().unwrap();
        let child = Arc::new(Mutex::new(child));

        // Watchdog: kills the child if the announcement has not arrived in time. Killing closes
        // the pipe, so the read below always ends.
        let (cancel, cancelled) = mpsc::channel::<()>();
        let watchdog = {
            let child = Arc::clone(&child);
            std::thread::spawn(move || {
                if cancelled.recv_timeout(CHILD_DEADLINE) == Err(RecvTimeoutError::Timeout) {
                    let _ = child.lock().unwrap().kill();
                }
            })
        };

        // libtest prints "test <name> ... " without a newline first, so look inside lines.
        // EOF (child died or was stopped by the watchdog) fails the test instead of hanging it.
        let announced = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(APPLIED));

        let status = {
            let mut child = child.lock().unwrap();
            let _ = child.kill(); // `Child::kill` sends SIGKILL on Unix.
            child.wait().unwrap()
        };
        drop(cancel);
        watchdog.join().unwrap();
        assert!(
            announced,
            "child exited without applying its batch ({status})"
        );
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
