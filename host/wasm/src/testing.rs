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

/// A loopback HTTP/1 server answering every request with `status` and `body`; each request it
/// received (head and body, as text) is sent to the returned channel.
pub fn http_server(status: u16, body: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = l.local_addr().expect("local address").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // The head, then as much body as Content-Length says.
            while let Ok(n) = c.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                let Some(i) = text.find("\r\n\r\n") else {
                    continue;
                };
                let len = text[..i]
                    .lines()
                    .find_map(|l| {
                        let l = l.to_ascii_lowercase();
                        l.strip_prefix("content-length:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                    .unwrap_or(0usize);
                if buf.len() >= i + 4 + len {
                    break;
                }
            }
            // The caller may not care about the requests (dropped receiver): answer anyway.
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, rx)
}
