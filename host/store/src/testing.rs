//! Behaviour every [`Store`] must share, written once and run against each backend.
//!
//! Compiled for this crate's tests and, with the `testing` feature, for other crates that want
//! to check a store of their own.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Store, StoreOp};

/// Runs every conformance check, each on a fresh store from `make`. Panics on the first failure.
pub fn conformance_suite(make: &dyn Fn() -> Box<dyn Store>) {
    type Check = fn(&dyn Store);
    let checks: &[(&str, Check)] = &[
        ("put_get_delete", put_get_delete),
        ("missing_keys", missing_keys),
        ("overwrite", overwrite),
        ("empty_batch", empty_batch),
        ("batch_is_applied_entirely", batch_is_applied_entirely),
        ("ops_apply_in_order", ops_apply_in_order),
        ("scan_respects_prefix", scan_respects_prefix),
        ("scan_is_sorted", scan_is_sorted),
        ("binary_values", binary_values),
        (
            "readers_never_see_half_a_batch",
            readers_never_see_half_a_batch,
        ),
    ];
    for (name, check) in checks {
        let store = make();
        eprintln!("conformance: {name} on {}", store.describe());
        check(store.as_ref());
    }
}

fn put(key: &str, value: &[u8]) -> StoreOp {
    StoreOp::Put {
        key: key.to_string(),
        value: value.to_vec(),
    }
}

fn delete(key: &str) -> StoreOp {
    StoreOp::Delete {
        key: key.to_string(),
    }
}

fn keys(entries: &[(String, Vec<u8>)]) -> Vec<&str> {
    entries.iter().map(|(key, _)| key.as_str()).collect()
}

fn put_get_delete(store: &dyn Store) {
    store.apply(&[put("app//prod/web", b"web")]).unwrap();
    assert_eq!(store.get("app//prod/web").unwrap(), Some(b"web".to_vec()));
    store.apply(&[delete("app//prod/web")]).unwrap();
    assert_eq!(store.get("app//prod/web").unwrap(), None);
    assert!(store.scan("").unwrap().is_empty());
}

fn missing_keys(store: &dyn Store) {
    assert_eq!(store.get("app//nope").unwrap(), None);
    assert!(store.scan("app/").unwrap().is_empty());
    // Deleting something that is not there is not an error: retries must be harmless.
    store.apply(&[delete("app//nope")]).unwrap();
    // Lookups are exact, never by prefix.
    store.apply(&[put("app//a/b", b"x")]).unwrap();
    assert_eq!(store.get("app//a").unwrap(), None);
}

fn overwrite(store: &dyn Store) {
    store.apply(&[put("group//prod", b"old")]).unwrap();
    store.apply(&[put("group//prod", b"new")]).unwrap();
    assert_eq!(store.get("group//prod").unwrap(), Some(b"new".to_vec()));
    assert_eq!(store.scan("group/").unwrap().len(), 1);
}

fn empty_batch(store: &dyn Store) {
    store.apply(&[]).unwrap();
    store.apply(&[put("meta/k", b"v")]).unwrap();
    store.apply(&[]).unwrap();
    assert_eq!(
        store.scan("").unwrap(),
        vec![("meta/k".to_string(), b"v".to_vec())]
    );
}

fn batch_is_applied_entirely(store: &dyn Store) {
    store
        .apply(&[put("instance/a", b"1"), put("instance/b", b"2")])
        .unwrap();
    // One batch mixing categories, puts and deletes, as a deployment step would.
    store
        .apply(&[
            delete("instance/a"),
            put("instance/c", b"3"),
            put("app//x", b"app"),
            put("deployment/d1", b"plan"),
            put("instance/b", b"2b"),
        ])
        .unwrap();
    assert_eq!(
        store.scan("").unwrap(),
        vec![
            ("app//x".to_string(), b"app".to_vec()),
            ("deployment/d1".to_string(), b"plan".to_vec()),
            ("instance/b".to_string(), b"2b".to_vec()),
            ("instance/c".to_string(), b"3".to_vec()),
        ]
    );
}

fn ops_apply_in_order(store: &dyn Store) {
    store
        .apply(&[
            put("meta/a", b"1"),
            put("meta/a", b"2"),
            put("meta/b", b"1"),
            delete("meta/b"),
            delete("meta/c"),
            put("meta/c", b"back"),
        ])
        .unwrap();
    assert_eq!(store.get("meta/a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get("meta/b").unwrap(), None);
    assert_eq!(store.get("meta/c").unwrap(), Some(b"back".to_vec()));
}

fn scan_respects_prefix(store: &dyn Store) {
    store
        .apply(&[
            put("ap", b""),
            put("app", b""),
            put("app-version//web/2024", b""),
            put("app//web", b""),
            put("app//api", b""),
            put("app0", b""),
            put("apq/", b""),
            put("instance/web.1", b""),
        ])
        .unwrap();
    assert_eq!(keys(&store.scan("app/").unwrap()), ["app//api", "app//web"]);
    assert_eq!(
        keys(&store.scan("app-version/").unwrap()),
        ["app-version//web/2024"]
    );
    assert_eq!(
        keys(&store.scan("app").unwrap()),
        [
            "app",
            "app-version//web/2024",
            "app//api",
            "app//web",
            "app0"
        ]
    );
    assert_eq!(keys(&store.scan("app//web").unwrap()), ["app//web"]);
    assert!(store.scan("deployment/").unwrap().is_empty());
    assert!(store.scan("zzz").unwrap().is_empty());
    assert_eq!(store.scan("").unwrap().len(), 8);
}

fn scan_is_sorted(store: &dyn Store) {
    // Inserted out of order, over several batches, including non-ASCII keys.
    let inserted = [
        "instance/z",
        "instance/a",
        "instance/é",
        "instance/A",
        "instance/a/b",
        "instance/10",
        "instance/9",
        "instance/ä",
    ];
    for pair in inserted.chunks(3) {
        let batch: Vec<StoreOp> = pair.iter().map(|key| put(key, key.as_bytes())).collect();
        store.apply(&batch).unwrap();
    }
    let entries = store.scan("instance/").unwrap();
    let mut expected: Vec<&str> = inserted.to_vec();
    expected.sort_unstable();
    assert_eq!(keys(&entries), expected);
    for (key, value) in &entries {
        assert_eq!(key.as_bytes(), value.as_slice(), "value stays with its key");
    }
}

fn binary_values(store: &dyn Store) {
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    store
        .apply(&[
            put("meta/bytes", &every_byte),
            put("meta/empty", b""),
            put("meta/large", &large),
        ])
        .unwrap();
    assert_eq!(store.get("meta/bytes").unwrap(), Some(every_byte));
    // An empty value is still a value, distinct from "absent".
    assert_eq!(store.get("meta/empty").unwrap(), Some(Vec::new()));
    assert_eq!(store.get("meta/large").unwrap(), Some(large));
}

/// Two keys are always written together with the same value; a reader running concurrently must
/// never observe them disagreeing.
fn readers_never_see_half_a_batch(store: &dyn Store) {
    const ROUNDS: u32 = 40;
    store
        .apply(&[put("instance/pair-a", b"0"), put("instance/pair-b", b"0")])
        .unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0u32;
            while !done.load(Ordering::Acquire) || reads == 0 {
                let entries = store.scan("instance/pair-").unwrap();
                assert_eq!(entries.len(), 2, "both keys always exist");
                assert_eq!(entries[0].1, entries[1].1, "saw half of a batch");
                reads += 1;
            }
        });
        for round in 1..=ROUNDS {
            let value = round.to_string().into_bytes();
            store
                .apply(&[
                    put("instance/pair-a", &value),
                    put("instance/pair-b", &value),
                ])
                .unwrap();
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap();
    });
    assert_eq!(
        store.get("instance/pair-b").unwrap(),
        Some(ROUNDS.to_string().into_bytes())
    );
}
