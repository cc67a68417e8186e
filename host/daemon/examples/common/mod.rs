//! What the daemon benchmarks share: starting the release `pacer` next to the example binary,
//! and a minimal keep-alive HTTP/1.1 client, so that load generators sharing the machine with
//! Pacer cost as little as possible per request.

#![allow(dead_code)] // each benchmark uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
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
    // Keep draining stderr so the daemon never blocks on a full pipe; PACER_BENCH_STDERR=1
    // passes it through (with RUST_LOG to choose what the daemon logs).
    let echo = std::env::var_os("PACER_BENCH_STDERR").is_some();
    std::thread::spawn(move || {
        let mut line = String::new();
        while err.read_line(&mut line).is_ok_and(|n| n > 0) {
            if echo {
                eprint!("{line}");
            }
            line.clear();
        }
    });
    Daemon { child, port }
}

/// A keep-alive connection to the daemon on 127.0.0.1:`port`, retried until it listens.
pub fn connect(port: u16) -> BufReader<TcpStream> {
    let s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    };
    s.set_nodelay(true).unwrap();
    BufReader::with_capacity(1 << 16, s)
}

/// One request on a keep-alive connection (`headers`: extra header lines, each ending in CRLF);
/// the response body goes into `response`, reused between requests. Returns the status code;
/// an error when the server closed the connection.
pub fn exchange(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
    response: &mut Vec<u8>,
) -> std::io::Result<u16> {
    write!(
        conn.get_mut(),
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let closed = || std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(closed());
    }
    let status = line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(closed());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    response.resize(length, 0);
    conn.read_exact(response)?;
    Ok(status)
}
