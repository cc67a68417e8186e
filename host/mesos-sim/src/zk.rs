//! Announcing the simulated master in ZooKeeper the way Mesos masters do: an ephemeral,
//! sequential `json.info_NNNNNNNNNN` node under the URL's path holding the MasterInfo as JSON.

use pacer_mesos_proto::v1;
use std::time::Duration;
use zookeeper_client as zk;

pub(crate) struct Registration {
    client: zk::Client,
    pub node: String,
}

pub(crate) async fn register(url: &str, info: &v1::MasterInfo) -> Result<Registration, String> {
    let url = pacer_zk::ZkUrl::parse_group(url)?;
    let hosts = url.hosts.clone();
    let path = url.path.clone();
    let connect = pacer_zk::connect_client(&url, Duration::from_secs(10));
    let client = tokio::time::timeout(Duration::from_secs(15), connect)
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
