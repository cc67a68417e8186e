//! Real ZooKeeper servers for tests: Debian's `zookeeper` package started straight from its jar on
//! free loopback ports (`scripts/setup-test-env.sh` installs it). Dropping a server kills it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const JAR: &str = "/usr/share/java/zookeeper.jar";
const SLF4J: &str = "/usr/share/java/slf4j-simple.jar";

/// One ZooKeeper node of a standalone server or an ensemble.
pub struct ZkNode {
    pub id: usize,
    pub port: u16,
    cfg: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A standalone server (one node) or an ensemble (three or more).
pub struct ZkCluster {
    pub nodes: Vec<ZkNode>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `srvr`'s `Mode:` line (standalone, leader, follower), if the node answers.
fn mode(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_string())
}

impl ZkNode {
    fn spawn(&mut self) {
        assert!(
            std::path::Path::new(JAR).exists(),
            "{JAR} is missing: run `apt-get install zookeeper` (scripts/setup-test-env.sh does)"
        );
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("java")
            .args([
                "-Xms32m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
            ])
            .arg("-cp")
            .arg(format!("{JAR}:{SLF4J}"))
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start java (installed with the zookeeper package)");
        self.child = Some(child);
    }

    pub fn mode(&self) -> Option<String> {
        mode(self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ZkNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl ZkCluster {
    /// Starts `n` nodes (1: standalone) and waits until every one serves.
    pub fn start(n: usize) -> ZkCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, quorum, election)) in ports.iter().enumerate() {
            let id = i + 1;
            let data = dir.path().join(format!("n{id}"));
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("myid"), format!("{id}\n")).unwrap();
            let _ = (quorum, election);
            let mut cfg = format!(
                "tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={client}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                 forceSync=no\n4lw.commands.whitelist=*\n",
                data.display()
            );
            if n > 1 {
                for (j, (c, q, e)) in ports.iter().enumerate() {
                    cfg.push_str(&format!(
                        "server.{}=127.0.0.1:{q}:{e};127.0.0.1:{c}\n",
                        j + 1
                    ));
                }
            }
            let cfg_path = dir.path().join(format!("n{id}.cfg"));
            std::fs::write(&cfg_path, cfg).unwrap();
            let mut node = ZkNode {
                id,
                port: *client,
                cfg: cfg_path,
                log: dir.path().join(format!("n{id}.log")),
                child: None,
            };
            node.spawn();
            nodes.push(node);
        }
        let cluster = ZkCluster { nodes, _dir: dir };
        cluster.wait_serving(Duration::from_secs(60));
        cluster
    }

    /// Waits until every running node reports a mode.
    pub fn wait_serving(&self, timeout: Duration) {
        let start = Instant::now();
        while !self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .all(|n| n.mode().is_some())
        {
            if start.elapsed() > timeout {
                let logs: Vec<String> = self.nodes.iter().map(|n| n.log_text()).collect();
                panic!(
                    "ZooKeeper did not start within {timeout:?}:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port,…` of every node.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A `--zk` URL for `path` on this cluster.
    pub fn url(&self, path: &str) -> String {
        format!("zk://{}{path}", self.hosts())
    }

    /// The node that is the ensemble's leader (or the standalone server).
    pub fn leader(&mut self) -> Option<&mut ZkNode> {
        self.nodes
            .iter_mut()
            .find(|n| matches!(n.mode().as_deref(), Some("leader") | Some("standalone")))
    }
}
