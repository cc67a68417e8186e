//! High availability: this Pacer's part in the leader election on ZooKeeper.
//!
//! A Pacer starts as a standby (its API proxies to the leader), contends for the latch, and once
//! it wins loads the state and serves. The moment its ZooKeeper connection drops it suspends
//! (no writes, no launches or kills, the API answers 503) — not when the session expires, because
//! a standby may take over before this process learns of the expiry. If the connection comes
//! back within the session and the latch is still there it resumes; otherwise leadership has
//! ended and the process exits with [`EXIT_LEADERSHIP_ENDED`] so that its supervisor restarts it
//! as a standby (as Marathon does).

use pacer_api::leader::{LeaderAddr, Role};
use pacer_zk::election::{self, Leadership};
use pacer_zk::SessionState;
use pacer_zk::ZkStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Exit code when leadership ends (lost, expired or abdicated): restart to rejoin as a standby.
pub const EXIT_LEADERSHIP_ENDED: u8 = 103;

/// Where this process stands; the API's [`Role`] follows from it and the leader's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Standby,
    /// Won the election; loading state and adopting tasks before serving.
    Loading,
    Serving,
    Suspended,
}

pub struct Election {
    store: Arc<ZkStore>,
    me: LeaderAddr,
    phase: watch::Sender<Phase>,
    /// State loaded and the scheduler running: a resumed leader serves, otherwise it goes back
    /// to loading.
    loaded: Arc<AtomicBool>,
    /// For the API and the runtime.
    pub role: watch::Receiver<Role>,
}

impl Election {
    /// Starts following the leader (for the standby's proxy). Must run inside the runtime.
    pub fn start(store: Arc<ZkStore>, me: LeaderAddr) -> Election {
        let (leader_tx, leader_rx) = watch::channel(None);
        tokio::spawn(election::follow_leader(store.client(), leader_tx));
        let (phase, phase_rx) = watch::channel(Phase::Standby);
        let (role_tx, role) = watch::channel(Role::Standby { leader: None });
        tokio::spawn(derive_role(leader_rx, phase_rx, role_tx));
        Election {
            store,
            me,
            phase,
            loaded: Arc::new(AtomicBool::new(false)),
            role,
        }
    }

    /// Waits until this Pacer leads; from then on every store write is fenced on its latch.
    pub async fn win(&self) -> anyhow::Result<Leadership> {
        info!(message = "Contending for leadership.", id = %self.me.id);
        let leadership = election::contend(&self.store.client(), &self.me)
            .await
            .map_err(|e| anyhow::anyhow!("leader election failed: {e}"))?;
        self.store.set_fence(Some(leadership.fence()));
        self.phase.send_replace(Phase::Loading);
        info!(message = "Elected leader; loading state.", latch = %leadership.latch_path());
        Ok(leadership)
    }

    /// Loading is done. If the connection was lost meanwhile, the session watcher decides when
    /// to serve (it resumes only with the latch still held).
    pub fn serving(&self) {
        // Set before the phase changes: the watcher's resume reads it under the phase's lock.
        self.loaded.store(true, Ordering::SeqCst);
        let now_serving = self.phase.send_if_modified(|p| {
            let from_loading = *p == Phase::Loading;
            if from_loading {
                *p = Phase::Serving;
            }
            from_loading
        });
        if now_serving {
            info!(message = "Serving as the leader.");
        }
    }

    /// Watches the session for as long as this Pacer leads; returns why leadership ended.
    pub fn watch_session(&self, leadership: Arc<Leadership>) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(1);
        let client = self.store.client();
        let phase = self.phase.clone();
        let loaded = self.loaded.clone();
        tokio::spawn(async move {
            let mut states = client.state_watcher();
            let mut state = states.state();
            loop {
                match state {
                    SessionState::Disconnected | SessionState::ConnectedReadOnly => {
                        if *phase.borrow() != Phase::Suspended {
                            warn!(message = "ZooKeeper connection lost: leadership suspended until it is back.");
                            phase.send_replace(Phase::Suspended);
                        }
                    }
                    SessionState::SyncConnected => {
                        if *phase.borrow() == Phase::Suspended {
                            match leadership.still_held().await {
                                Ok(true) => {
                                    info!(message = "ZooKeeper connection back and the latch still held: resuming.");
                                    phase.send_modify(|p| {
                                        *p = if loaded.load(Ordering::SeqCst) {
                                            Phase::Serving
                                        } else {
                                            Phase::Loading
                                        }
                                    });
                                }
                                Ok(false) => {
                                    let _ = tx.send("the leader latch is gone".into()).await;
                                    return;
                                }
                                // Lost again while checking: the next state change decides.
                                Err(_) => {}
                            }
                        }
                    }
                    SessionState::Expired => {
                        let _ = tx.send("the ZooKeeper session expired".into()).await;
                        return;
                    }
                    SessionState::AuthFailed => {
                        let _ = tx.send("ZooKeeper authentication failed".into()).await;
                        return;
                    }
                    SessionState::Closed => {
                        let _ = tx.send("the ZooKeeper session was closed".into()).await;
                        return;
                    }
                }
                state = states.changed().await;
            }
        });
        rx
    }
}

/// The API's view: a serving leader leads; otherwise the leader is whoever holds the lowest latch
/// (this Pacer's own address while it is still loading, so requests wait for it).
async fn derive_role(
    mut leader: watch::Receiver<Option<LeaderAddr>>,
    mut phase: watch::Receiver<Phase>,
    role: watch::Sender<Role>,
) {
    let mut following = true;
    loop {
        let next = match *phase.borrow_and_update() {
            Phase::Serving => Role::Leader,
            Phase::Suspended => Role::Suspended,
            Phase::Standby | Phase::Loading => Role::Standby {
                leader: leader.borrow_and_update().clone(),
            },
        };
        role.send_if_modified(|cur| {
            let changed = *cur != next;
            *cur = next;
            changed
        });
        tokio::select! {
            r = leader.changed(), if following => following = r.is_ok(),
            r = phase.changed() => if r.is_err() { return },
        }
    }
}
