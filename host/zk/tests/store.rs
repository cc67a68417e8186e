//! The store conformance suite and ZooKeeper-specific behaviour, against a real server.

use pacer_store::{Store, StoreError, StoreOp};
use pacer_zk::testing::ZkCluster;
use pacer_zk::{Fence, ZkStore, ZkStoreConfig, ZkUrl};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn store(zk: &ZkCluster, config: ZkStoreConfig) -> ZkStore {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let url = ZkUrl::parse(&zk.url(&format!("/t{n}/pacer"))).unwrap();
    ZkStore::connect(&url, Duration::from_secs(4), config).unwrap()
}

#[test]
fn conformance_suite_passes_against_zookeeper() {
    let zk = ZkCluster::start(1);
    pacer_store::testing::conformance_suite(&|| Box::new(store(&zk, ZkStoreConfig::default())));
}

#[test]
fn state_survives_a_new_connection_and_large_values_are_compressed() {
    let zk = ZkCluster::start(1);
    let url = ZkUrl::parse(&zk.url("/shared")).unwrap();
    let big: Vec<u8> = b"abcdefgh".repeat(200_000); // 1.6 MB, compresses well
    {
        let s = ZkStore::connect(&url, Duration::from_secs(4), ZkStoreConfig::default()).unwrap();
        s.apply(&[
            StoreOp::Put {
                key: "app//web".into(),
                value: b"web".to_vec(),
            },
            StoreOp::Put {
                key: "meta/big".into(),
                value: big.clone(),
            },
        ])
        .unwrap();
    }
    let s = ZkStore::connect(&url, Duration::from_secs(4), ZkStoreConfig::default()).unwrap();
    assert_eq!(s.get("app//web").unwrap(), Some(b"web".to_vec()));
    assert_eq!(s.get("meta/big").unwrap(), Some(big));
    assert!(s.describe().starts_with("zookeeper at zk://127.0.0.1:"));
}

#[test]
fn over_large_records_are_refused_before_they_are_sent() {
    let zk = ZkCluster::start(1);
    let config = ZkStoreConfig {
        compression: false,
        ..ZkStoreConfig::default()
    };
    let s = store(&zk, config);
    let noise: Vec<u8> = (0..1_100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = s
        .apply(&[
            StoreOp::Put {
                key: "app//ok".into(),
                value: b"fine".to_vec(),
            },
            StoreOp::Put {
                key: "app//huge".into(),
                value: noise,
            },
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                limit: 1_024_000,
                ..
            }
        ),
        "{err}"
    );
    // Nothing of the batch was written, and the connection is fine.
    assert_eq!(s.get("app//ok").unwrap(), None);
    s.apply(&[StoreOp::Put {
        key: "app//ok".into(),
        value: b"fine".to_vec(),
    }])
    .unwrap();
    // A batch whose records fit one by one but not together is refused too.
    let half: Vec<u8> = (0..600_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = s
        .apply(&[
            StoreOp::Put {
                key: "a/1".into(),
                value: half.clone(),
            },
            StoreOp::Put {
                key: "a/2".into(),
                value: half,
            },
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
    assert!(s.scan("a/").unwrap().is_empty());
}

#[test]
fn fenced_writes_fail_once_the_latch_is_gone() {
    let zk = ZkCluster::start(1);
    let s = store(&zk, ZkStoreConfig::default());
    s.apply(&[StoreOp::Put {
        key: "meta/latch".into(),
        value: vec![],
    }])
    .unwrap();
    // Any node can serve as the fence here; the election uses its latch node.
    let client = s.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let latch = "/fence-latch";
    rt.block_on(async {
        let options = zookeeper_client::CreateMode::Persistent
            .with_acls(zookeeper_client::Acls::anyone_all());
        client.create(latch, b"me", &options).await.unwrap();
    });
    s.set_fence(Some(Fence {
        path: latch.into(),
        version: 0,
    }));
    s.apply(&[StoreOp::Put {
        key: "app//a".into(),
        value: b"1".to_vec(),
    }])
    .unwrap();
    rt.block_on(async { client.delete(latch, None).await.unwrap() });
    let err = s
        .apply(&[StoreOp::Put {
            key: "app//a".into(),
            value: b"2".to_vec(),
        }])
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert_eq!(s.get("app//a").unwrap(), Some(b"1".to_vec()));
}
