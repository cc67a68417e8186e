//! Finding the leading Mesos master: a fixed list of URLs (`http://m1:5050,m2:5050`; a standby
//! answers 307 to the leader), or ZooKeeper (`zk://…/mesos`), where every master holds an
//! ephemeral sequential `json.info_<seq>` node with its `MasterInfo` as JSON and the lowest
//! sequence leads.

use pacer_mesos_proto::v1::MasterInfo;
use pacer_zk::ZkUrl;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};
use zookeeper_client as zk;

/// Where the masters are, from `--master`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterSource {
    /// Base URLs (`http://host:port`), tried in turn.
    Urls(Vec<String>),
    /// ZooKeeper hosts, optional digest credentials, and the masters' group path.
    Zk(ZkUrl),
}

impl MasterSource {
    pub fn parse(master: &str) -> Result<Self, String> {
        if master.starts_with("zk://") {
            return ZkUrl::parse_group(master).map(MasterSource::Zk);
        }
        let urls: Vec<String> = master
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.trim_end_matches('/');
                if s.starts_with("http://") {
                    Ok(s.to_string())
                } else if s.starts_with("https://") {
                    // The URL itself is not repeated: it may hold credentials.
                    Err("HTTPS masters are not supported; use http://".to_string())
                } else if s.contains("://") {
                    Err("expected http://host:port, host:port or zk://…/mesos".to_string())
                } else {
                    Ok(format!("http://{s}"))
                }
            })
            .collect::<Result<_, _>>()?;
        if urls.is_empty() {
            return Err("no master given".into());
        }
        Ok(MasterSource::Urls(urls))
    }
}

/// The base URL to reach a master, from its `MasterInfo` as published in ZooKeeper.
pub fn base_url(info: &MasterInfo) -> String {
    let (host, port) = match &info.address {
        Some(a) => (
            a.hostname
                .clone()
                .filter(|h| !h.is_empty())
                .or_else(|| info.hostname.clone())
                .or_else(|| a.ip.clone())
                .unwrap_or_default(),
            a.port as u32,
        ),
        None => {
            let ip = std::net::Ipv4Addr::from(info.ip.to_le_bytes());
            (
                info.hostname.clone().unwrap_or_else(|| ip.to_string()),
                info.port,
            )
        }
    };
    format!("http://{host}:{port}")
}

/// The sequence number of a master's group node (`json.info_0000000012` → 12); other children
/// (`log_replicas`, old binary `info_` nodes) are not masters Pacer can read.
pub fn member_sequence(name: &str) -> Option<u64> {
    let seq = name.strip_prefix("json.info_")?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// Keeps the leading master's base URL current. For URL lists the value is fixed (the first
/// URL; redirects find the leader, and the driver moves on to the next URL when an attempt
/// fails) and the sender is dropped at once; for ZooKeeper it follows the group until the
/// receiver is dropped.
pub fn detect(source: MasterSource, session_timeout: Duration) -> watch::Receiver<Option<String>> {
    match source {
        MasterSource::Urls(urls) => watch::channel(urls.first().cloned()).1,
        MasterSource::Zk(url) => {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(follow_zk(url, session_timeout, tx));
            rx
        }
    }
}

async fn follow_zk(url: ZkUrl, session_timeout: Duration, tx: watch::Sender<Option<String>>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if tx.is_closed() {
            return;
        }
        match pacer_zk::connect_client(&url, session_timeout).await {
            Ok(client) => {
                backoff = Duration::from_millis(200);
                watch_group(&client, &url.path, &tx).await;
            }
            Err(e) => {
                warn!(message = "Cannot reach ZooKeeper to find the Mesos master.", error = %e)
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Follows the masters' group until the session ends.
async fn watch_group(client: &zk::Client, path: &str, tx: &watch::Sender<Option<String>>) {
    loop {
        if tx.is_closed() {
            return;
        }
        let listed = client.list_and_watch_children(path).await;
        let (children, watcher) = match listed {
            Ok(l) => l,
            Err(zk::Error::NoNode) => {
                // No master registered yet: watch for the group to appear.
                tx.send_if_modified(|cur| cur.take().is_some());
                match client.check_and_watch_stat(path).await {
                    Ok((_, w)) => {
                        w.changed().await;
                        continue;
                    }
                    Err(_) => return,
                }
            }
            Err(zk::Error::SessionExpired | zk::Error::ClientClosed) => return,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let leader = children
            .iter()
            .filter_map(|c| member_sequence(c).map(|s| (s, c)))
            .min()
            .map(|(_, c)| c.clone());
        let url = match leader {
            None => None,
            Some(node) => {
                let node_path = if path == "/" {
                    format!("/{node}")
                } else {
                    format!("{path}/{node}")
                };
                match client.get_data(&node_path).await {
                    Ok((data, _)) => match serde_json::from_slice::<MasterInfo>(&data) {
                        Ok(info) => Some(base_url(&info)),
                        Err(e) => {
                            warn!(message = "Unreadable MasterInfo in ZooKeeper.", node = %node_path, error = %e);
                            None
                        }
                    },
                    // It went away since the listing: the watch fires.
                    Err(_) => None,
                }
            }
        };
        let changed = tx.send_if_modified(|cur| {
            let changed = *cur != url;
            *cur = url.clone();
            changed
        });
        if changed {
            info!(
                message = "Leading Mesos master.",
                master = url.as_deref().unwrap_or("none")
            );
        }
        watcher.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_flags_parse() {
        assert_eq!(
            MasterSource::parse("m1:5050, http://m2:5050/").unwrap(),
            MasterSource::Urls(vec!["http://m1:5050".into(), "http://m2:5050".into()])
        );
        assert_eq!(
            MasterSource::parse("zk://u:p@z1:2181,z2:2181/mesos").unwrap(),
            MasterSource::Zk(ZkUrl {
                hosts: "z1:2181,z2:2181".into(),
                credentials: Some("u:p".into()),
                path: "/mesos".into()
            })
        );
        assert!(MasterSource::parse("https://m:5050").is_err());
        assert!(MasterSource::parse("").is_err());
    }

    #[test]
    fn group_members_and_master_urls() {
        assert_eq!(member_sequence("json.info_0000000012"), Some(12));
        assert_eq!(member_sequence("info_0000000003"), None);
        assert_eq!(member_sequence("log_replicas"), None);
        let info: MasterInfo = serde_json::from_str(
            r#"{"id":"x","ip":16777343,"port":5050,"pid":"master@127.0.0.1:5050",
               "hostname":"m1","address":{"hostname":"m1.example","ip":"127.0.0.1","port":5051}}"#,
        )
        .unwrap();
        assert_eq!(base_url(&info), "http://m1.example:5051");
        let bare: MasterInfo =
            serde_json::from_str(r#"{"id":"x","ip":16777343,"port":5050}"#).unwrap();
        assert_eq!(base_url(&bare), "http://127.0.0.1:5050");
    }
}
