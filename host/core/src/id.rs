//! Identifiers: path ids for apps and groups, instance ids, task ids, and a deterministic id source.
//! Each id parses and validates itself here, in one place.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// An absolute, canonical path id such as `/prod/web`; the root group is `/`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
/// Shared, immutable text: ids are cloned into many index maps, so a clone must not allocate.
pub struct PathId(Arc<str>);

/// Why an id string was rejected, in Marathon's words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$'")]
    BadSegment,
    #[error("Path must contain at least one path element")]
    Empty,
    #[error(
        "must not end with any of the following reserved keywords: restart, tasks, versions, ., .."
    )]
    Reserved,
}

/// Last segments Marathon 1.8+ refuses because they collide with API routes.
const RESERVED_LAST: [&str; 5] = ["restart", "tasks", "versions", ".", ".."];

fn label_ok(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A segment is DNS-label-like: lower-case labels separated by dots; `.` and `..` are relative steps.
pub fn segment_ok(seg: &str) -> bool {
    seg == "." || seg == ".." || seg.split('.').all(label_ok)
}

impl PathId {
    pub fn root() -> Self {
        PathId("/".into())
    }

    /// Resolves `raw` (absolute, or relative to `base`) into a canonical absolute path.
    /// `.` and `..` are resolved; leading, trailing and repeated slashes are dropped.
    /// Only syntax is checked here; `validate_app_id` adds Marathon's app rules.
    pub fn resolve(raw: &str, base: &PathId) -> Result<Self, PathError> {
        let mut segs: Vec<&str> = if raw.starts_with('/') {
            Vec::new()
        } else {
            base.segments().collect()
        };
        for seg in raw.split('/').filter(|s| !s.is_empty()) {
            if !segment_ok(seg) {
                return Err(PathError::BadSegment);
            }
            match seg {
                "." => {}
                ".." => {
                    segs.pop();
                }
                s => segs.push(s),
            }
        }
        Ok(PathId(format!("/{}", segs.join("/")).into()))
    }

    /// Parses an id for an app (or pod): absolute after resolution, not root, no reserved last segment.
    pub fn parse_app_id(raw: &str, base: &PathId) -> Result<Self, PathError> {
        if let Some(last) = raw.trim_end_matches('/').rsplit('/').next() {
            if RESERVED_LAST.contains(&last) && !raw.trim_matches('/').is_empty() {
                // `.`/`..` as the *last* step of a relative id are still reserved names in 1.8+.
                return Err(PathError::Reserved);
            }
        }
        let id = Self::resolve(raw, base)?;
        if id.is_root() {
            return Err(PathError::Empty);
        }
        Ok(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A bound for range scans; not necessarily a valid id.
    pub(crate) fn from_raw_unchecked(s: String) -> Self {
        PathId(s.into())
    }

    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    pub fn parent(&self) -> PathId {
        match self.0.rfind('/') {
            Some(0) | None => PathId::root(),
            Some(i) => PathId(self.0[..i].into()),
        }
    }

    /// Every ancestor group from the root down to the direct parent.
    pub fn ancestors(&self) -> Vec<PathId> {
        let mut out = vec![PathId::root()];
        let segs: Vec<&str> = self.segments().collect();
        for i in 1..segs.len() {
            out.push(PathId(format!("/{}", segs[..i].join("/")).into()));
        }
        out
    }

    pub fn is_descendant_of(&self, group: &PathId) -> bool {
        group.is_root() || self.0.starts_with(&format!("{}/", group.0))
    }

    /// Marathon's "safe path": segments joined by `_`, used inside task ids and store keys.
    pub fn safe_id(&self) -> String {
        self.segments().collect::<Vec<_>>().join("_")
    }

    pub fn child(&self, name: &str) -> PathId {
        if self.is_root() {
            PathId(format!("/{name}").into())
        } else {
            PathId(format!("{}/{name}", self.0).into())
        }
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `<safe-app-id>.instance-<uuid>` (1.4+), or the derived `<safe-app-id>.marathon-<uuid>` of older tasks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    pub fn new(app: &PathId, uuid: &str) -> Self {
        InstanceId(format!("{}.instance-{uuid}", app.safe_id()).into())
    }

    pub fn parse(s: &str) -> Option<Self> {
        // The safe app id may itself contain dots (dotted labels), so split on the marker.
        let i = s.find(".instance-").or_else(|| s.find(".marathon-"))?;
        let uuid = s[i + 1..].split_once('-').map(|(_, u)| u)?;
        if i == 0 || uuid.is_empty() || uuid.contains('.') {
            return None;
        }
        Some(InstanceId(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The app id this instance belongs to, read back from its safe form (Marathon's
    /// `PathId.fromSafePath`: `_` separates segments).
    pub fn app_id(&self) -> PathId {
        PathId(format!("/{}", self.safe_app_id().replace('_', "/")).into())
    }

    /// The least id above every id of the same app and form (`<safe-app-id>.instance-…`):
    /// ordered sets of instance ids keep an app's instances next to each other, and ranging
    /// from here (exclusive) skips them all at once.
    pub fn app_block_end(&self) -> InstanceId {
        let marker = self
            .0
            .find(".instance-")
            .or_else(|| self.0.find(".marathon-"));
        match marker {
            // `<safe>.instance` + `.`: `.` follows `-`, so this sorts right after the block.
            Some(i) => InstanceId(format!("{}.", &self.0[..i + ".instance".len()]).into()),
            None => self.clone(),
        }
    }

    /// The safe form of the app id this instance belongs to.
    pub fn safe_app_id(&self) -> &str {
        let i = self
            .0
            .find(".instance-")
            .or_else(|| self.0.find(".marathon-"))
            .unwrap_or(0);
        &self.0[..i]
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Mesos task id. Pacer creates `<instance-id>.<container>.<incarnation>` (1.8+ form) and parses
/// every historical form so that kills by old ids keep working.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

/// The container name Marathon uses inside task ids of apps (pods use the container's name).
pub const APP_CONTAINER: &str = "_app";

impl TaskId {
    pub fn new(instance: &InstanceId, incarnation: u32) -> Self {
        TaskId(format!("{instance}.{APP_CONTAINER}.{incarnation}"))
    }

    pub fn from_raw(s: &str) -> Self {
        TaskId(s.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses any task id form Marathon has used into its instance id.
    pub fn instance_id(&self) -> Option<InstanceId> {
        let s = self.0.as_str();
        if let Some(i) = s.find(".instance-") {
            // 1.4+: <safe>.instance-<uuid>[.<container>[.<incarnation>]]
            let after = &s[i + ".instance-".len()..];
            let uuid = after.split('.').next().unwrap_or("");
            if i == 0 || uuid.is_empty() {
                return None;
            }
            return Some(InstanceId(format!("{}.instance-{uuid}", &s[..i]).into()));
        }
        // ≤1.7: <safe>.<uuid>[.<attempt>] and very old <safe>_<uuid>: the uuid is the 36-char group.
        let (safe, uuid) = split_legacy(s)?;
        Some(InstanceId(format!("{safe}.marathon-{uuid}").into()))
    }

    /// The incarnation counter of a 1.8+ id; older forms count as the first incarnation.
    pub fn incarnation(&self) -> u32 {
        match self.0.find(".instance-") {
            Some(_) => self
                .0
                .rsplit('.')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            None => 1,
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn split_legacy(s: &str) -> Option<(&str, &str)> {
    for sep in ['.', '_'] {
        let mut start = 0;
        while let Some(off) = s[start..].find(sep) {
            let i = start + off;
            let rest = &s[i + 1..];
            let candidate = rest.get(..36).unwrap_or("");
            let tail_ok = rest.len() == 36 || rest[36..].starts_with('.');
            if i > 0 && is_uuid(candidate) && tail_ok {
                return Some((&s[..i], candidate));
            }
            start = i + 1;
        }
    }
    None
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deterministic source of UUIDs: seeded once by the shell, then driven only by `now`.
/// Instance ids are time-based (v1) as in Marathon; deployment ids are random (v4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdSource {
    state: u64,
    node: u64,
    clock_seq: u16,
    last_ticks: u64,
}

impl IdSource {
    pub fn new(seed: u64) -> Self {
        let mut s = IdSource {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            node: 0,
            clock_seq: 0,
            last_ticks: 0,
        };
        s.node = s.next_u64() & 0xFFFF_FFFF_FFFF | 0x0100_0000_0000; // multicast bit: not a real MAC
        s.clock_seq = (s.next_u64() & 0x3FFF) as u16;
        s
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random (version 4) UUID.
    pub fn uuid_v4(&mut self) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        let hi = (hi & !0xF000) | 0x4000;
        let lo = (lo & !(0xC000_0000_0000_0000)) | 0x8000_0000_0000_0000;
        format_uuid(hi, lo)
    }

    /// A time-based (version 1) UUID; strictly increasing ticks keep ids unique within a millisecond.
    pub fn uuid_v1(&mut self, now: Timestamp) -> String {
        const GREGORIAN_OFFSET: u64 = 0x01B2_1DD2_1381_4000;
        let mut ticks = now.as_millis() * 10_000 + GREGORIAN_OFFSET;
        if ticks <= self.last_ticks {
            ticks = self.last_ticks + 1;
        }
        self.last_ticks = ticks;
        let time_low = ticks & 0xFFFF_FFFF;
        let time_mid = (ticks >> 32) & 0xFFFF;
        let time_hi = (ticks >> 48) & 0x0FFF;
        let hi = (time_low << 32) | (time_mid << 16) | 0x1000 | time_hi;
        let lo = ((0x8000 | self.clock_seq as u64) << 48) | self.node;
        format_uuid(hi, lo)
    }
}

fn format_uuid(hi: u64, lo: u64) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::resolve(s, &PathId::root()).unwrap()
    }

    #[test]
    fn an_apps_instances_end_at_its_block_end() {
        let id = |app: &str, uuid: &str| InstanceId::new(&p(app), uuid);
        let mut all = std::collections::BTreeSet::new();
        for app in ["/a", "/a-x", "/a.b", "/a/b", "/ab", "/b"] {
            for uuid in ["0", "5", "ffff"] {
                all.insert(id(app, uuid));
            }
        }
        all.insert(InstanceId::parse("a.marathon-9").unwrap());
        let end = id("/a", "5").app_block_end();
        let block: Vec<&str> = all
            .range((
                std::ops::Bound::Included(&id("/a", "0")),
                std::ops::Bound::Excluded(&end),
            ))
            .map(InstanceId::as_str)
            .collect();
        // Exactly the `/a` instances of the same form lie between the first and the end.
        assert_eq!(block, ["a.instance-0", "a.instance-5", "a.instance-ffff"]);
        assert!(!all.contains(&end));
    }

    #[test]
    fn resolves_relative_ids() {
        let base = p("/prod/api");
        assert_eq!(
            PathId::resolve("web", &base).unwrap().as_str(),
            "/prod/api/web"
        );
        assert_eq!(
            PathId::resolve("../db", &base).unwrap().as_str(),
            "/prod/db"
        );
        assert_eq!(PathId::resolve("/x//y/", &base).unwrap().as_str(), "/x/y");
        assert_eq!(
            PathId::resolve("./a", &base).unwrap().as_str(),
            "/prod/api/a"
        );
        assert_eq!(PathId::resolve("Bad", &base), Err(PathError::BadSegment));
        assert_eq!(PathId::resolve("a_b", &base), Err(PathError::BadSegment));
        assert_eq!(PathId::resolve("-a", &base), Err(PathError::BadSegment));
        assert!(PathId::resolve("a.b-c.d", &base).is_ok());
    }

    #[test]
    fn app_ids_reject_root_and_reserved_names() {
        assert_eq!(
            PathId::parse_app_id("/", &PathId::root()),
            Err(PathError::Empty)
        );
        assert_eq!(
            PathId::parse_app_id("/a/tasks", &PathId::root()),
            Err(PathError::Reserved)
        );
        assert_eq!(
            PathId::parse_app_id("/a/restart/", &PathId::root()),
            Err(PathError::Reserved)
        );
        assert!(PathId::parse_app_id("/a/restarts", &PathId::root()).is_ok());
    }

    #[test]
    fn tree_helpers() {
        let id = p("/a/b/c");
        assert_eq!(id.parent().as_str(), "/a/b");
        assert_eq!(p("/a").parent(), PathId::root());
        assert_eq!(id.safe_id(), "a_b_c");
        let anc: Vec<_> = id.ancestors().into_iter().map(|p| p.to_string()).collect();
        assert_eq!(anc, ["/", "/a", "/a/b"]);
        assert!(id.is_descendant_of(&p("/a")));
        assert!(!p("/ab").is_descendant_of(&p("/a")));
    }

    #[test]
    fn parses_all_task_id_forms() {
        let uuid = "5a5b2c3d-1111-11e9-9e2b-0242ac110002";
        let modern = TaskId::from_raw(&format!("prod_web.instance-{uuid}._app.3"));
        assert_eq!(
            modern.instance_id().unwrap().as_str(),
            format!("prod_web.instance-{uuid}")
        );
        assert_eq!(modern.incarnation(), 3);
        let pod = TaskId::from_raw(&format!("prod_web.instance-{uuid}.nginx"));
        assert_eq!(
            pod.instance_id().unwrap().as_str(),
            format!("prod_web.instance-{uuid}")
        );
        let legacy = TaskId::from_raw(&format!("my.app.{uuid}"));
        assert_eq!(
            legacy.instance_id().unwrap().as_str(),
            format!("my.app.marathon-{uuid}")
        );
        let resident = TaskId::from_raw(&format!("web.{uuid}.2"));
        assert_eq!(
            resident.instance_id().unwrap().as_str(),
            format!("web.marathon-{uuid}")
        );
        let ancient = TaskId::from_raw(&format!("web_{uuid}"));
        assert_eq!(
            ancient.instance_id().unwrap().as_str(),
            format!("web.marathon-{uuid}")
        );
        assert_eq!(TaskId::from_raw("garbage").instance_id(), None);
        let iid = InstanceId::parse(&format!("prod_web.instance-{uuid}")).unwrap();
        assert_eq!(iid.safe_app_id(), "prod_web");
    }

    #[test]
    fn uuids_have_versions_and_are_unique() {
        let mut ids = IdSource::new(7);
        let a = ids.uuid_v1(Timestamp::from_millis(1_700_000_000_000));
        let b = ids.uuid_v1(Timestamp::from_millis(1_700_000_000_000));
        assert_ne!(a, b);
        assert_eq!(&a[14..15], "1");
        let v4 = ids.uuid_v4();
        assert_eq!(&v4[14..15], "4");
        assert!(is_uuid(&a) && is_uuid(&v4));
        // Deterministic from the seed.
        let mut again = IdSource::new(7);
        assert_eq!(again.uuid_v1(Timestamp::from_millis(1_700_000_000_000)), a);
    }
}
