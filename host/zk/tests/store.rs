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

#[test]
fn one_leader_at_a_time_and_a_deposed_leaders_writes_are_fenced() {
    use pacer_zk::election::{contend, current_leader, follow_leader};
    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct LeaderRecord {
        id: String,
        url: String,
    }
    let zk = ZkCluster::start(1);
    let url = ZkUrl::parse(&zk.url("/election/pacer")).unwrap();
    let connect = || ZkStore::connect(&url, Duration::from_secs(4), ZkStoreConfig::default());
    let (a, b, observer) = (connect().unwrap(), connect().unwrap(), connect().unwrap());
    let rec = |n: u16| LeaderRecord {
        id: format!("host:{n}"),
        url: format!("http://host:{n}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, mut seen) = tokio::sync::watch::channel(None);
        tokio::spawn(follow_leader(observer.client(), tx));

        let a_leads = contend(&a.client(), &rec(1)).await.unwrap();
        a.set_fence(Some(a_leads.fence()));
        seen.wait_for(|l| *l == Some(rec(1))).await.unwrap();
        // B waits while A holds the latch.
        let b_client = b.client();
        let mut b_contends = tokio::spawn(async move { contend(&b_client, &rec(2)).await });
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut b_contends)
                .await
                .is_err(),
            "B must not lead while A does"
        );
        assert_eq!(
            current_leader(&observer.client()).await.unwrap(),
            Some(rec(1))
        );

        // A's latch disappears behind its back (as when its session expires while it is
        // paused): B takes over, and A's writes are refused from then on.
        let a_path = a_leads.latch_path().to_string();
        observer.client().delete(&a_path, None).await.unwrap();
        let b_leads = tokio::time::timeout(Duration::from_secs(5), b_contends)
            .await
            .expect("B leads once A's latch is gone")
            .unwrap()
            .unwrap();
        b.set_fence(Some(b_leads.fence()));
        seen.wait_for(|l| *l == Some(rec(2))).await.unwrap();
        assert!(!a_leads.still_held().await.unwrap());
        let a_write = tokio::task::block_in_place(|| {
            a.apply(&[StoreOp::Put {
                key: "app//x".into(),
                value: b"from A".to_vec(),
            }])
        });
        assert!(matches!(a_write, Err(StoreError::Fenced(_))), "{a_write:?}");
        tokio::task::block_in_place(|| {
            b.apply(&[StoreOp::Put {
                key: "app//x".into(),
                value: b"from B".to_vec(),
            }])
        })
        .unwrap();

        // A clean release hands over at once: C leads without waiting for B's session.
        let c = connect().unwrap();
        let c_client = c.client();
        let c_contends = tokio::spawn(async move { contend(&c_client, &rec(3)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        b_leads.release().await;
        let _c_leads = tokio::time::timeout(Duration::from_secs(2), c_contends)
            .await
            .expect("C leads right after B releases, long before B's 4 s session would expire")
            .unwrap()
            .unwrap();
        seen.wait_for(|l| *l == Some(rec(3))).await.unwrap();
    });
    assert_eq!(b.get("app//x").unwrap(), Some(b"from B".to_vec()));
}
