//! Announcing the simulated master in ZooKeeper the way Mesos masters do: an ephemeral,
//! sequential `json.info_NNNNNNNNNN` node under the URL's path holding the MasterInfo as JSON.

use pacer_mesos_proto::v1;
use std::time::Duration;
use zookeeper_client as zk;

pub(crate) struct Registration {
    client: zk::Client,
    pub node: String,
}

/// `zk://[user:pass@]host:port[,host:port]/path` → (hosts, path, credentials).
fn parse(url: &str) -> Result<(String, String, Option<String>), String> {
    let rest = url
        .strip_prefix("zk://")
        .ok_or_else(|| format!("'{url}' does not start with zk://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (creds, hosts) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_string()), h),
        None => (None, authority),
    };
    if hosts.is_empty() {
        return Err(format!("'{url}' names no ZooKeeper hosts"));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    Ok((hosts.to_string(), path.to_string(), creds))
}

pub(crate) async fn register(url: &str, info: &v1::MasterInfo) -> Result<Registration, String> {
    let (hosts, path, creds) = parse(url)?;
    let mut connector = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
    if let Some(c) = &creds {
        connector = connector.with_auth("digest", c.as_bytes());
    }
    let client = tokio::time::timeout(Duration::from_secs(15), connector.connect(&hosts))
        .await
        .map_err(|_| format!("timed out connecting to ZooKeeper at {hosts}"))?
        .map_err(|e| format!("cannot connect to ZooKeeper at {hosts}: {e}"))?;
    if path != "/" {
        let dir = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        match client.mkdir(&path, &dir).await {
            Ok(()) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(format!("cannot create {path} in ZooKeeper: {e}")),
        }
    }
    let data = serde_json::to_vec(info).map_err(|e| e.to_string())?;
    let prefix = if path == "/" {
        "/json.info_".to_string()
    } else {
        format!("{path}/json.info_")
    };
    let node_opts = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let (_, seq) = client
        .create(&prefix, &data, &node_opts)
        .await
        .map_err(|e| format!("cannot create {prefix}N in ZooKeeper: {e}"))?;
    let node = format!("{prefix}{seq}");
    tracing::info!(%node, "announced the simulated master in ZooKeeper");
    Ok(Registration { client, node })
}

pub(crate) async fn deregister(reg: Registration) {
    let delete = reg.client.delete(&reg.node, None);
    match tokio::time::timeout(Duration::from_secs(5), delete).await {
        Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => {}
        Ok(Err(e)) => {
            tracing::warn!(node = %reg.node, error = %e, "cannot delete the master's ZooKeeper node")
        }
        Err(_) => {
            tracing::warn!(node = %reg.node, "timed out deleting the master's ZooKeeper node")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(
            super::parse("zk://a:1,b:2/mesos/").unwrap(),
            ("a:1,b:2".into(), "/mesos".into(), None)
        );
        assert_eq!(
            super::parse("zk://u:p@a:1").unwrap(),
            ("a:1".into(), "/".into(), Some("u:p".into()))
        );
        assert!(super::parse("http://a:1/x").is_err());
    }
}
