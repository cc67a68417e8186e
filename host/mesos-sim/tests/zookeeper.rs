//! Announcing the simulated master in a real ZooKeeper (Debian's `zookeeper` package).

use pacer_mesos_sim::{Sim, SimConfig};
use pacer_zk::testing::ZkCluster;
use zookeeper_client as zk;

async fn members(client: &zk::Client) -> Vec<(String, serde_json::Value)> {
    let mut children = client.list_children("/mesos").await.unwrap();
    children.sort();
    let mut out = Vec::new();
    for c in children {
        let (data, _) = client.get_data(&format!("/mesos/{c}")).await.unwrap();
        out.push((c, serde_json::from_slice(&data).unwrap()));
    }
    out
}

#[tokio::test]
async fn master_announces_itself_and_moves_on_failover() {
    let cluster = tokio::task::spawn_blocking(|| ZkCluster::start(1))
        .await
        .unwrap();
    let sim = Sim::start(SimConfig {
        zk: Some(cluster.url("/mesos")),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = zk::Client::connect(&cluster.hosts()).await.unwrap();

    let first = members(&client).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let (name, info) = &first[0];
    assert!(
        name.starts_with("json.info_") && name.len() == "json.info_".len() + 10,
        "{name}"
    );
    assert_eq!(info["id"], sim.master_id());
    assert_eq!(info["address"]["port"], u64::from(sim.port()));
    assert_eq!(info["address"]["ip"], "127.0.0.1");
    assert_eq!(info["pid"], format!("master@127.0.0.1:{}", sim.port()));

    sim.failover().await;
    let second = members(&client).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0].0, *name);
    assert_eq!(second[0].1["id"], sim.master_id());
    assert_eq!(second[0].1["port"], u64::from(sim.port()));

    sim.stop().await;
    assert!(members(&client).await.is_empty());
    drop(cluster);
}
