//! Connecting: `zk://[user:pass@]host:port,…/path` URLs, and a small dedicated runtime so the
//! synchronous [`pacer_store::Store`] methods can drive the async client from any thread.

use std::time::Duration;
use zookeeper_client as zk;

/// A parsed `--zk` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port`.
    pub hosts: String,
    /// The chroot, e.g. `/pacer` (never empty, never `/`).
    pub path: String,
    /// `user:password` for ZooKeeper's digest scheme.
    pub credentials: Option<String>,
}

impl ZkUrl {
    /// A URL for Pacer's own data: it needs a path below the root.
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = Self::parse_group(url)?;
        if parsed.path == "/" {
            return Err(format!(
                "'{}' needs a path for Pacer's data, e.g. zk://host:2181/pacer",
                redact_url(url)
            ));
        }
        Ok(parsed)
    }

    /// A URL naming a group of nodes, such as Mesos masters' `zk://…/mesos`; an empty path is
    /// the root (`/`).
    pub fn parse_group(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("zk://")
            .ok_or_else(|| format!("'{}' does not start with zk://", redact_url(url)))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c.to_string()), h),
            None => (None, authority),
        };
        if hosts.is_empty() || hosts.split(',').any(|h| h.trim().is_empty()) {
            return Err(format!("'{}' names no ZooKeeper hosts", redact_url(url)));
        }
        let path = match path.trim_end_matches('/') {
            "" => "/",
            p => p,
        };
        if let Some(c) = &credentials {
            if !c.contains(':') {
                return Err("ZooKeeper credentials must be user:password".into());
            }
        }
        Ok(ZkUrl {
            hosts: hosts.to_string(),
            path: path.to_string(),
            credentials,
        })
    }

    /// The URL with credentials masked, for logs and `/v2/info`.
    pub fn redacted(&self) -> String {
        match self.credentials {
            Some(_) => format!("zk://********@{}{}", self.hosts, self.path),
            None => format!("zk://{}{}", self.hosts, self.path),
        }
    }
}

/// `zk://user:pass@h1:1/p` → `zk://********@h1:1/p`, for any scheme: credentials never reach
/// logs or `/v2/info`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://********{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Connects to the URL's hosts with its credentials (digest), at the root.
pub async fn connect_client(
    url: &ZkUrl,
    session_timeout: Duration,
) -> Result<zk::Client, zk::Error> {
    let mut connector = zk::Client::connector().with_session_timeout(session_timeout);
    if let Some(c) = &url.credentials {
        connector = connector.with_auth("digest", c.as_bytes());
    }
    connector.connect(&url.hosts).await
}

/// Connects, creates the URL's path if needed and returns a client rooted there.
pub(crate) async fn connect(
    url: ZkUrl,
    session_timeout: Duration,
) -> Result<zk::Client, zk::Error> {
    let client = connect_client(&url, session_timeout).await?;
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match client.mkdir(&url.path, &options).await {
        Ok(()) | Err(zk::Error::NodeExists) => {}
        Err(e) => return Err(e),
    }
    client
        .chroot(url.path.clone())
        .map_err(|_| zk::Error::BadArguments(&"invalid ZooKeeper path"))
}

/// A runtime owned by the store: the client's tasks live here, whatever thread calls.
pub(crate) struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    // A store may be dropped from async code (e.g. the daemon's own runtime); a blocking
    // shutdown would panic there.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Runtime {
    pub(crate) fn new() -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pacer-zk")
            .enable_all()
            .build()
            .map(|rt| Runtime(Some(rt)))
    }

    /// Runs `f` on the store's runtime and waits for it, from sync code or from inside another
    /// runtime's blocking section alike.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rt = self.0.as_ref().expect("runtime present until dropped");
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the ZooKeeper runtime stopped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact_url("zk://user:pass@h1:2181,h2:2181/pacer"),
            "zk://********@h1:2181,h2:2181/pacer"
        );
        assert_eq!(redact_url("zk://h1:2181/p@x"), "zk://h1:2181/p@x");
        assert_eq!(redact_url("local"), "local");
    }

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let u = ZkUrl::parse("zk://ops:pw@h1:2181,h2:2182/pacer/prod/").unwrap();
        assert_eq!(u.hosts, "h1:2181,h2:2182");
        assert_eq!(u.path, "/pacer/prod");
        assert_eq!(u.credentials.as_deref(), Some("ops:pw"));
        assert_eq!(u.redacted(), "zk://********@h1:2181,h2:2182/pacer/prod");
        assert!(ZkUrl::parse("zk://h1:2181").unwrap_err().contains("path"));
        // A group (Mesos masters) may live at the root.
        assert_eq!(ZkUrl::parse_group("zk://h1:2181").unwrap().path, "/");
        assert_eq!(
            ZkUrl::parse_group("zk://h1:2181/mesos/").unwrap().path,
            "/mesos"
        );
        assert!(ZkUrl::parse("http://h1/x").is_err());
        let e = ZkUrl::parse("zk://u:secret@/x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
