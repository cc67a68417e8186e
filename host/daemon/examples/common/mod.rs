//! What the daemon benchmarks share: starting the release `pacer` next to the example binary.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `pacer`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `target/<profile>/pacer` on a free loopback port with `data_dir` and `extra` flags
/// (logging at `warn`), and waits until it listens.
pub fn start(data_dir: &Path, extra: &[&str]) -> Daemon {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("pacer");
    let mut child = Command::new(&bin)
        .args(["--http_port", "0", "--hostname", "127.0.0.1"])
        .args(["--logging_level", "warn"])
        .arg("--data_dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it with --bin pacer)", bin.display()));
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "pacer exited");
        if let Some(a) = line.trim().strip_prefix("pacer: listening on http://") {
            break a.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    Daemon { child, port }
}
