//! For tests: builds the guest workspace (`plugins/`) once per process and says where the
//! `.wasm` files are. `PACER_PLUGIN_DIR` points at prebuilt guests instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding the built example and fixture plugins.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("PACER_PLUGIN_DIR") {
            return PathBuf::from(d);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The guests are their own workspace with their own target; nothing of this build's
        // environment may leak into it.
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-wasip2",
            ])
            .current_dir(&workspace)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_MAKEFLAGS")
            .output()
            .expect("run cargo for the guest plugins");
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let hint = if err.contains("wasm32-wasip2") {
                "\nhint: run `rustup target add wasm32-wasip2` (scripts/setup-test-env.sh does)"
            } else {
                ""
            };
            panic!(
                "building the guest plugins in {} failed:\n{err}{hint}",
                workspace.display()
            );
        }
        workspace.join("target/wasm32-wasip2/release")
    })
}

/// The path of one built guest, e.g. `guest("spread_even")`.
pub fn guest(name: &str) -> PathBuf {
    let p = guest_dir().join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}
