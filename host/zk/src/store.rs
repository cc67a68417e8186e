//! [`ZkStore`]: the [`Store`] port on ZooKeeper.
//!
//! Layout under the `--zk` path: one znode per record, `/state/<category>/<bucket>/<name>`, where
//! the category is the key up to its first `/` (`app`, `instance`, …; `%` for keys without one),
//! the bucket one hex digit of a stable hash (so no directory grows without bound), and names are
//! percent-encoded so any key round-trips. Values carry a one-byte header: `0` raw, `1` gzip
//! (above `--zk_compression_threshold`).
//!
//! A batch is one multi-op transaction (optionally fenced by a check on the leader's latch node),
//! so it is atomic; a batch or value over the size limits is refused before it is sent, because
//! ZooKeeper answers an over-large request by dropping the connection.

use crate::conn::{Runtime, ZkUrl};
use pacer_store::{Store, StoreError, StoreOp};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;
use zookeeper_client as zk;

const STATE: &str = "/state";
/// Category name for keys without a `/`; `%` never results from escaping.
const NO_CATEGORY: &str = "%";
const BUCKETS: u64 = 16;
/// ZooKeeper's default `jute.maxbuffer` is 1 MiB − 1 for a whole request; keep a margin for
/// paths and framing.
const MAX_REQUEST_BYTES: usize = 1_000_000;
/// Pause before trying an idempotent operation again after a lost connection.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Nodes read per multi-read while scanning.
const SCAN_CHUNK: usize = 500;

#[derive(Clone, Debug)]
pub struct ZkStoreConfig {
    pub max_node_size: usize,
    pub compression: bool,
    pub compression_threshold: usize,
    /// Per operation (`--zk_timeout`).
    pub op_timeout: Duration,
    /// For the first connection to the ensemble (`--zk_connection_timeout`).
    pub connect_timeout: Duration,
}

impl Default for ZkStoreConfig {
    fn default() -> Self {
        ZkStoreConfig {
            max_node_size: 1_024_000,
            compression: true,
            compression_threshold: 65_536,
            op_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A node's version and data.
type Current = (i32, Vec<u8>);

/// The latch node a leader's writes are conditional on.
#[derive(Clone, Debug)]
pub struct Fence {
    pub path: String,
    pub version: i32,
}

pub struct ZkStore {
    rt: Runtime,
    client: zk::Client,
    config: ZkStoreConfig,
    describe: String,
    fence: Mutex<Option<Fence>>,
    /// Directories known to exist (created on first use, never deleted).
    dirs: Mutex<HashSet<String>>,
}

fn remote(action: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Remote {
        action,
        detail: e.to_string(),
    }
}

impl ZkStore {
    /// Connects to the ensemble in `url` (creating its path if needed).
    pub fn connect(
        url: &ZkUrl,
        session_timeout: Duration,
        config: ZkStoreConfig,
    ) -> Result<Self, StoreError> {
        let rt = Runtime::new().map_err(|e| remote("start the ZooKeeper client", e))?;
        let (url_, limit) = (url.clone(), config.connect_timeout);
        let client = rt
            .run(async move {
                tokio::time::timeout(limit, crate::conn::connect(url_, session_timeout))
                    .await
                    .unwrap_or(Err(zk::Error::Timeout))
            })
            .map_err(|e| remote("connect to ZooKeeper", e))?;
        Ok(ZkStore {
            rt,
            client,
            config,
            describe: format!("zookeeper at {}", url.redacted()),
            fence: Mutex::new(None),
            dirs: Mutex::new(HashSet::new()),
        })
    }

    /// The client, for leader election on the same session.
    pub fn client(&self) -> zk::Client {
        self.client.clone()
    }

    /// From now on every write is conditional on `fence` (the leader's latch node).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().expect("fence lock") = fence;
    }

    /// Runs an idempotent operation (a read, or a create that tolerates `NodeExists`), trying
    /// again while the connection is lost (e.g. while the ensemble elects a new leader), up to
    /// `--zk_timeout` in all.
    fn run<T, F, Fut>(&self, action: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T, zk::Error>> + Send + 'static,
    {
        let timeout = self.config.op_timeout;
        self.rt
            .run(async move {
                let attempts = async {
                    loop {
                        match f().await {
                            Err(zk::Error::ConnectionLoss) => tokio::time::sleep(RETRY_PAUSE).await,
                            r => return r,
                        }
                    }
                };
                tokio::time::timeout(timeout, attempts)
                    .await
                    .unwrap_or(Err(zk::Error::Timeout))
            })
            .map_err(|e| remote(action, e))
    }

    fn encode(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let out = if self.config.compression && value.len() > self.config.compression_threshold {
            let mut enc = flate2::write::GzEncoder::new(vec![1u8], flate2::Compression::fast());
            enc.write_all(value)
                .and_then(|_| enc.finish())
                .map_err(|e| remote("compress a value", e))?
        } else {
            let mut v = Vec::with_capacity(value.len() + 1);
            v.push(0);
            v.extend_from_slice(value);
            v
        };
        if out.len() > self.config.max_node_size {
            return Err(StoreError::TooLarge {
                what: format!("record {key}"),
                bytes: out.len(),
                limit: self.config.max_node_size,
            });
        }
        Ok(out)
    }

    fn decode(key: &str, data: &[u8]) -> Result<Vec<u8>, StoreError> {
        match data.split_first() {
            Some((0, rest)) => Ok(rest.to_vec()),
            Some((1, rest)) => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(rest)
                    .read_to_end(&mut out)
                    .map_err(|e| StoreError::Corrupted {
                        action: format!("decompress {key}"),
                        detail: e.to_string(),
                    })?;
                Ok(out)
            }
            _ => Err(StoreError::Corrupted {
                action: format!("read {key}"),
                detail: "unknown value header".into(),
            }),
        }
    }

    fn ensure_dirs(&self, dirs: BTreeSet<String>) -> Result<(), StoreError> {
        let missing: Vec<String> = {
            let known = self.dirs.lock().expect("dirs lock");
            dirs.into_iter().filter(|d| !known.contains(d)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let client = self.client.clone();
        let created = missing.clone();
        self.run("create directories", move || {
            let client = client.clone();
            let created = created.clone();
            async move {
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                for d in &created {
                    match client.mkdir(d, &options).await {
                        Ok(()) | Err(zk::Error::NodeExists) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        })?;
        self.dirs.lock().expect("dirs lock").extend(missing);
        Ok(())
    }

    /// Versions of the nodes for `paths` (`None`: absent), read atomically.
    fn versions(&self, paths: &[String]) -> Result<Vec<Option<Current>>, StoreError> {
        let client = self.client.clone();
        let paths = paths.to_vec();
        self.run("read current versions", move || {
            let client = client.clone();
            let paths = paths.clone();
            async move {
                let mut reader = client.new_multi_reader();
                for p in &paths {
                    reader.add_get_data(p)?;
                }
                let results = reader.commit().await?;
                results
                    .into_iter()
                    .map(|r| match r {
                        zk::MultiReadResult::Data { data, stat } => Ok(Some((stat.version, data))),
                        zk::MultiReadResult::Error {
                            err: zk::Error::NoNode,
                        } => Ok(None),
                        zk::MultiReadResult::Error { err } => Err(err),
                        _ => Err(zk::Error::UnexpectedError("children in a data read".into())),
                    })
                    .collect()
            }
        })
    }
}

/// Splits a key into its category directory and node name.
pub(crate) fn node_path(key: &str) -> (String, String) {
    let (category, rest) = match key.split_once('/') {
        Some((c, r)) => (escape(c), r),
        None => (NO_CATEGORY.to_string(), key),
    };
    let bucket = fnv1a(rest.as_bytes()) % BUCKETS;
    let dir = format!("{STATE}/{category}/{bucket:x}");
    let name = escape(rest);
    let path = format!("{dir}/{name}");
    (dir, path)
}

/// The key of a node, from its category directory name and node name.
pub(crate) fn key_of(category: &str, name: &str) -> Option<String> {
    let rest = unescape(name)?;
    if category == NO_CATEGORY {
        Some(rest)
    } else {
        Some(format!("{}/{rest}", unescape(category)?))
    }
}

/// Percent-encodes everything but ASCII letters, digits, `_` and `-`; `%` alone is the empty
/// string (a node name cannot be empty).
fn escape(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    if s == "%" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a: stable across processes and versions (unlike std's randomised hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether keys of `category` (`None`: keys without `/`) can start with `prefix`.
fn category_matches(category: Option<&str>, prefix: &str) -> bool {
    match category {
        None => true,
        Some(c) => {
            let head = format!("{c}/");
            head.starts_with(prefix) || prefix.starts_with(&head)
        }
    }
}

impl Store for ZkStore {
    fn apply(&self, ops: &[StoreOp]) -> Result<(), StoreError> {
        // The batch's net effect, key by key (later ops win).
        let mut net: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
        for op in ops {
            match op {
                StoreOp::Put { key, value } => net.insert(key, Some(value)),
                StoreOp::Delete { key } => net.insert(key, None),
            };
        }
        if net.is_empty() {
            return Ok(());
        }
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::with_capacity(net.len());
        let mut dirs = BTreeSet::new();
        let mut request_bytes = 0;
        for (key, value) in net {
            let (dir, path) = node_path(key);
            request_bytes += path.len() + 32;
            let encoded = match value {
                Some(v) => {
                    dirs.insert(dir);
                    let e = self.encode(key, v)?;
                    request_bytes += e.len();
                    Some(e)
                }
                None => None,
            };
            writes.push((path, encoded));
        }
        if request_bytes > MAX_REQUEST_BYTES {
            return Err(StoreError::TooLarge {
                what: format!("a batch of {} records", writes.len()),
                bytes: request_bytes,
                limit: MAX_REQUEST_BYTES,
            });
        }
        self.ensure_dirs(dirs)?;
        let paths: Vec<String> = writes.iter().map(|(p, _)| p.clone()).collect();
        let fence = self.fence.lock().expect("fence lock").clone();
        // A conflict means someone else wrote in between (only during a hand-over); re-read and
        // try again. A lost connection leaves the outcome unknown: re-read and compare.
        for _attempt in 0..5 {
            let current = self.versions(&paths)?;
            if current
                .iter()
                .zip(&writes)
                .all(|(cur, (_, want))| cur.as_ref().map(|(_, d)| d) == want.as_ref())
            {
                return Ok(()); // already in place (e.g. a write whose answer was lost)
            }
            let client = self.client.clone();
            let plan: Vec<(String, Option<Vec<u8>>, Option<i32>)> = writes
                .iter()
                .zip(&current)
                .map(|((p, w), cur)| (p.clone(), w.clone(), cur.as_ref().map(|(v, _)| *v)))
                .collect();
            let fence = fence.clone();
            let outcome = self.rt.run(async move {
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                let add = |w: &mut zk::MultiWriter<'_>| -> Result<(), zk::Error> {
                    for (path, want, version) in &plan {
                        match (want, version) {
                            (Some(data), Some(v)) => w.add_set_data(path, data, Some(*v))?,
                            (Some(data), None) => w.add_create(path, data, &options)?,
                            (None, Some(v)) => w.add_delete(path, Some(*v))?,
                            (None, None) => {}
                        }
                    }
                    Ok(())
                };
                match fence {
                    Some(f) => {
                        let mut w = client.new_multi_writer();
                        w.add_check_version(&f.path, f.version)?;
                        add(&mut w)?;
                        match w.commit().await {
                            Ok(_) => Ok(()),
                            Err(zk::MultiWriteError::OperationFailed { index: 0, source }) => {
                                Err(WriteError::Fenced(format!("{}: {source}", f.path)))
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                    None => {
                        let mut w = client.new_multi_writer();
                        add(&mut w)?;
                        w.commit().await.map(|_| ()).map_err(Into::into)
                    }
                }
            });
            match outcome {
                Ok(()) => return Ok(()),
                Err(WriteError::Fenced(why)) => return Err(StoreError::Fenced(why)),
                Err(WriteError::Conflict) | Err(WriteError::Lost) => continue,
                Err(WriteError::Other(e)) => return Err(remote("write a batch", e)),
            }
        }
        Err(remote(
            "write a batch",
            "it kept conflicting with concurrent writes",
        ))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (_, path) = node_path(key);
        let client = self.client.clone();
        let data = self.run("read a record", move || {
            let client = client.clone();
            let path = path.clone();
            async move {
                match client.get_data(&path).await {
                    Ok((data, _)) => Ok(Some(data)),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })?;
        data.map(|d| Self::decode(key, &d)).transpose()
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Retry until the listing did not change while the data was read (one snapshot for
        // scans that fit one multi-read; scans at start-up are larger but nothing writes then).
        for _attempt in 0..20 {
            let client = self.client.clone();
            let categories = self.run("list categories", move || {
                let client = client.clone();
                async move {
                    match client.list_children(STATE).await {
                        Ok(c) => Ok(c),
                        Err(zk::Error::NoNode) => Ok(Vec::new()),
                        Err(e) => Err(e),
                    }
                }
            })?;
            let mut dirs: Vec<(String, String)> = Vec::new(); // (category node, dir path)
            for c in categories {
                let cat = if c == NO_CATEGORY {
                    None
                } else {
                    Some(unescape(&c).unwrap_or_default())
                };
                if category_matches(cat.as_deref(), prefix) {
                    for b in 0..BUCKETS {
                        dirs.push((c.clone(), format!("{STATE}/{c}/{b:x}")));
                    }
                }
            }
            let listing = self.list_dirs(&dirs)?;
            let mut wanted: Vec<(String, String)> = Vec::new(); // (key, path)
            for ((category, dir), children) in dirs.iter().zip(&listing) {
                for name in children.iter().flatten() {
                    if let Some(key) = key_of(category, name) {
                        if key.starts_with(prefix) {
                            wanted.push((key, format!("{dir}/{name}")));
                        }
                    }
                }
            }
            wanted.sort();
            if wanted.len() > SCAN_CHUNK {
                return self.read_chunks(wanted);
            }
            // Small scans: data and a second listing in one multi-read.
            let client = self.client.clone();
            let paths: Vec<String> = wanted.iter().map(|(_, p)| p.clone()).collect();
            let dir_paths: Vec<String> = dirs.iter().map(|(_, d)| d.clone()).collect();
            let results = self.run("read records", move || {
                let client = client.clone();
                let paths = paths.clone();
                let dir_paths = dir_paths.clone();
                async move {
                    let mut r = client.new_multi_reader();
                    for p in &paths {
                        r.add_get_data(p)?;
                    }
                    for d in &dir_paths {
                        r.add_get_children(d)?;
                    }
                    r.commit().await
                }
            })?;
            let (data, relisted) = results.split_at(wanted.len());
            let same_listing = relisted.iter().zip(&listing).all(|(r, before)| match r {
                zk::MultiReadResult::Children { children } => {
                    before.as_ref().map(|b| sorted(b)) == Some(sorted(children))
                }
                zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                } => before.is_none(),
                _ => false,
            });
            if !same_listing {
                continue;
            }
            let mut out = Vec::with_capacity(wanted.len());
            for ((key, _), r) in wanted.into_iter().zip(data) {
                match r {
                    zk::MultiReadResult::Data { data, .. } => {
                        let v = Self::decode(&key, data)?;
                        out.push((key, v));
                    }
                    other => return Err(remote("read records", format!("{other:?}"))),
                }
            }
            return Ok(out);
        }
        Err(remote("scan", "the records kept changing while being read"))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

enum WriteError {
    Fenced(String),
    /// A version check or existence assumption failed: someone else wrote.
    Conflict,
    /// The connection dropped; the write may or may not have happened.
    Lost,
    Other(zk::Error),
}

impl From<zk::Error> for WriteError {
    fn from(e: zk::Error) -> Self {
        match e {
            zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode => {
                WriteError::Conflict
            }
            zk::Error::ConnectionLoss => WriteError::Lost,
            other => WriteError::Other(other),
        }
    }
}

impl From<zk::MultiWriteError> for WriteError {
    fn from(e: zk::MultiWriteError) -> Self {
        match e {
            zk::MultiWriteError::RequestFailed { source } => source.into(),
            zk::MultiWriteError::OperationFailed { source, .. } => source.into(),
        }
    }
}

impl ZkStore {
    /// Lists each directory (`None`: it does not exist) in one multi-read.
    fn list_dirs(&self, dirs: &[(String, String)]) -> Result<Vec<Option<Vec<String>>>, StoreError> {
        let client = self.client.clone();
        let paths: Vec<String> = dirs.iter().map(|(_, d)| d.clone()).collect();
        self.run("list records", move || {
            let client = client.clone();
            let paths = paths.clone();
            async move {
                let mut r = client.new_multi_reader();
                for p in &paths {
                    r.add_get_children(p)?;
                }
                r.commit()
                    .await?
                    .into_iter()
                    .map(|res| match res {
                        zk::MultiReadResult::Children { children } => Ok(Some(children)),
                        zk::MultiReadResult::Error {
                            err: zk::Error::NoNode,
                        } => Ok(None),
                        zk::MultiReadResult::Error { err } => Err(err),
                        _ => Err(zk::Error::UnexpectedError("data in a listing".into())),
                    })
                    .collect()
            }
        })
    }

    /// Reads many records in chunks (not one snapshot).
    fn read_chunks(
        &self,
        wanted: Vec<(String, String)>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(SCAN_CHUNK) {
            let paths: Vec<String> = chunk.iter().map(|(_, p)| p.clone()).collect();
            let read = self.versions(&paths)?;
            for ((key, _), r) in chunk.iter().zip(read) {
                // A record deleted between listing and reading is simply gone.
                if let Some((_, data)) = r {
                    out.push((key.clone(), Self::decode(key, &data)?));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_node_names() {
        for key in [
            "app//prod/web",
            "app/",
            "ap",
            "instance/é.1",
            "meta/framework-id",
            "root-version/2024-01-01T00:00:00.000Z",
            "%odd%/x",
        ] {
            let (dir, path) = node_path(key);
            let name = path.rsplit('/').next().unwrap();
            let category = dir.split('/').nth(2).unwrap();
            assert_eq!(key_of(category, name).as_deref(), Some(key), "{path}");
            assert!(!name.is_empty() && name != "." && name != "..");
        }
        assert_eq!(
            node_path("app//a").1,
            node_path("app//a").1,
            "stable buckets"
        );
    }

    #[test]
    fn prefixes_select_categories() {
        assert!(category_matches(Some("app"), "app/"));
        assert!(category_matches(Some("app"), "ap"));
        assert!(category_matches(Some("app"), "app//web"));
        assert!(!category_matches(Some("app-version"), "app/"));
        assert!(category_matches(Some("app-version"), "app"));
        assert!(category_matches(None, "zzz"));
    }
}
