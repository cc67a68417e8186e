//! Architecture invariant: pacer-core performs no IO and never reads the clock.
//! This test fails if the crate gains an IO-capable dependency or calls into std's IO APIs.

use std::path::Path;

/// Pure crates the core may depend on.
const ALLOWED: [&str; 7] = [
    "serde",
    "serde_json",
    "thiserror",
    "time",
    "serde_path_to_error",
    "imbl",
    "regex",
];

/// Paths that mean IO, threads, or reading the clock.
const FORBIDDEN: [&str; 11] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
    "SystemTime",
    "Instant::now",
    "OffsetDateTime::now",
    "tokio",
    "std::io::stdin",
    "rand::",
];

#[test]
fn core_dependencies_are_pure() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap();
            assert!(
                ALLOWED.contains(&name),
                "pacer-core must stay pure, but depends on `{name}`"
            );
        }
    }
}

#[test]
fn core_sources_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with("_tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Only the non-test part of a file counts.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for bad in FORBIDDEN {
            assert!(
                !code.contains(bad),
                "{name} uses `{bad}`: pacer-core must not do IO or read the clock"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "expected to scan the core's modules, scanned {checked}"
    );
}
