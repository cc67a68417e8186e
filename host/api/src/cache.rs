//! Response bodies rendered once per state of what they show. The big listings (`/v2/tasks`,
//! `/v2/apps?embed=apps.tasks`, `/v2/groups`) cost milliseconds per thousand tasks; until the
//! apps, groups, instances, health, deployments or task failures change, every client gets the
//! same bytes (offer statistics and backoff delays change with every offer and are not shown
//! in them), and clients that ask while a body is being rendered wait for that one rendering
//! instead of starting their own.

use axum::body::Bytes;
use pacer_core::state::State;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Distinct requests remembered per state; more are rendered without being kept.
const MAX_BODIES: usize = 32;

/// A published snapshot and its place in the order of publication.
#[derive(Clone)]
pub struct Versioned {
    pub state: Arc<State>,
    pub generation: u64,
}

impl std::ops::Deref for Versioned {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

/// The maps a cached listing reads. Clones of persistent maps: O(1), and they keep the roots
/// alive, so that root identity tells whether anything in them changed.
struct Shown {
    apps: pacer_core::imbl::OrdMap<pacer_core::id::PathId, Arc<pacer_core::app::AppDefinition>>,
    groups: pacer_core::imbl::OrdMap<pacer_core::id::PathId, Arc<pacer_core::state::Group>>,
    instances:
        pacer_core::imbl::OrdMap<pacer_core::id::InstanceId, Arc<pacer_core::instance::Instance>>,
    by_app: pacer_core::imbl::OrdMap<
        pacer_core::id::PathId,
        pacer_core::imbl::OrdSet<pacer_core::id::InstanceId>,
    >,
    deployments: pacer_core::imbl::OrdMap<String, Arc<pacer_core::state::Deployment>>,
    deployments_by_app:
        pacer_core::imbl::OrdMap<pacer_core::id::PathId, pacer_core::imbl::OrdSet<String>>,
    task_failures:
        pacer_core::imbl::OrdMap<pacer_core::id::PathId, Arc<pacer_core::instance::TaskFailure>>,
    health: pacer_core::imbl::OrdMap<
        pacer_core::id::InstanceId,
        Arc<pacer_core::state::InstanceHealth>,
    >,
}

impl Shown {
    fn of(s: &State) -> Self {
        Shown {
            apps: s.apps.clone(),
            groups: s.groups.clone(),
            instances: s.instances.clone(),
            by_app: s.by_app.clone(),
            deployments: s.deployments.clone(),
            deployments_by_app: s.deployments_by_app.clone(),
            task_failures: s.task_failures.clone(),
            health: s.health.clone(),
        }
    }

    fn same_as(&self, s: &State) -> bool {
        self.apps.ptr_eq(&s.apps)
            && self.groups.ptr_eq(&s.groups)
            && self.instances.ptr_eq(&s.instances)
            && self.by_app.ptr_eq(&s.by_app)
            && self.deployments.ptr_eq(&s.deployments)
            && self.deployments_by_app.ptr_eq(&s.deployments_by_app)
            && self.task_failures.ptr_eq(&s.task_failures)
            && self.health.ptr_eq(&s.health)
    }
}

#[derive(Default)]
pub struct RenderCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The newest snapshot seen; a request still holding an older one renders for itself
    /// rather than evicting newer bodies.
    generation: u64,
    /// What the bodies show (`None`: nothing cached yet).
    shown: Option<Shown>,
    /// Each body as it will be once rendered (`None` until then).
    bodies: HashMap<String, watch::Receiver<Option<Bytes>>>,
}

impl RenderCache {
    /// The body for `key` rendered from `snap`, rendering it (off the async workers) if no
    /// request for the same key and the same shown state has. The rendering is a task of its
    /// own: a client that goes away does not cancel it for the others.
    pub async fn body<F>(&self, snap: &Versioned, key: &str, render: F) -> Bytes
    where
        F: FnOnce(&State) -> Vec<u8> + Send + 'static,
    {
        let state = snap.state.clone();
        let render = move || Bytes::from(render(&state));
        // `None`: not cached (an older snapshot than the cache's, or too many bodies); render
        // for this request only.
        let slot = {
            let mut inner = self.inner.lock().expect("render cache lock poisoned");
            if snap.generation < inner.generation {
                None
            } else {
                inner.generation = snap.generation;
                if !inner.shown.as_ref().is_some_and(|s| s.same_as(snap)) {
                    inner.shown = Some(Shown::of(snap));
                    inner.bodies.clear();
                }
                match inner.bodies.get(key) {
                    Some(ready) => Some((ready.clone(), None)),
                    None if inner.bodies.len() < MAX_BODIES => {
                        let (tx, rx) = watch::channel(None);
                        inner.bodies.insert(key.to_string(), rx.clone());
                        Some((rx, Some(tx)))
                    }
                    None => None,
                }
            }
        };
        let Some((mut ready, start)) = slot else {
            return rendered(render).await;
        };
        if let Some(tx) = start {
            tokio::spawn(async move {
                let body = rendered(render).await;
                let _ = tx.send(Some(body));
            });
        }
        let outcome = ready.wait_for(Option::is_some).await.map(|b| b.clone());
        match outcome {
            Ok(Some(body)) => body,
            _ => {
                // The rendering panicked (a bug, logged by its task): forget it so the next
                // request tries again, and fail this one.
                let mut inner = self.inner.lock().expect("render cache lock poisoned");
                if inner
                    .bodies
                    .get(key)
                    .is_some_and(|r| r.same_channel(&ready))
                {
                    inner.bodies.remove(key);
                }
                panic!("rendering the body for {key} failed");
            }
        }
    }
}

/// Smaller bodies are not worth compressing (the compression layer's own threshold is 32 B;
/// these are only the cached listings).
const GZIP_MIN_BYTES: usize = 1024;

/// A cached body, possibly gzip-compressed.
pub struct Body {
    pub bytes: Bytes,
    pub gzip: bool,
}

impl RenderCache {
    /// As [`RenderCache::body`], gzip-compressed (once per snapshot, like the rendering) when
    /// the client accepts it: compressing a 5 MB listing per request would cost more than
    /// rendering it once.
    pub async fn encoded<F>(&self, snap: &Versioned, key: &str, gzip: bool, render: F) -> Body
    where
        F: FnOnce(&State) -> Vec<u8> + Send + 'static,
    {
        let plain = self.body(snap, key, render).await;
        if !gzip || plain.len() < GZIP_MIN_BYTES {
            return Body {
                bytes: plain,
                gzip: false,
            };
        }
        let compressed = self
            .body(snap, &format!("{key} gzip"), move |_| compress(&plain))
            .await;
        Body {
            bytes: compressed,
            gzip: true,
        }
    }
}

/// Fast gzip: listings are repetitive JSON, and the fastest level already shrinks them about
/// tenfold.
fn compress(plain: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 8),
        flate2::Compression::fast(),
    );
    e.write_all(plain).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// Whether the request's `Accept-Encoding` admits gzip (and compression is on): a `gzip` (or
/// `x-gzip`) entry decides by its weight, else a `*` entry does.
pub fn accepts_gzip(headers: &axum::http::HeaderMap, enabled: bool) -> bool {
    if !enabled {
        return false;
    }
    let (mut gzip, mut star) = (None, None);
    for coding in headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| v.trim().parse::<f32>().ok())?
            })
            .next()
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(weight);
        } else if name == "*" {
            star = Some(weight);
        }
    }
    gzip.or(star).is_some_and(|q| q > 0.0)
}

/// A rendered JSON body as a response.
pub fn json_response(body: Bytes) -> axum::response::Response {
    json_body_response(Body {
        bytes: body,
        gzip: false,
    })
}

/// A cached JSON body as a response, saying how it is encoded.
pub fn json_body_response(body: Body) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    let mut res = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.bytes,
    )
        .into_response();
    if body.gzip {
        let h = res.headers_mut();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    res
}

async fn rendered(render: impl FnOnce() -> Bytes + Send + 'static) -> Bytes {
    let timed = move || {
        let start = std::time::Instant::now();
        let body = render();
        tracing::debug!(
            bytes = body.len(),
            elapsed_ms = start.elapsed().as_secs_f64() * 1000.0,
            "rendered a listing"
        );
        body
    };
    match tokio::task::spawn_blocking(timed).await {
        Ok(b) => b,
        // A rendering panic is a bug; re-raise it in the handler as any other handler panic.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn versioned(state: State, generation: u64) -> Versioned {
        Versioned {
            state: Arc::new(state),
            generation,
        }
    }

    #[tokio::test]
    async fn one_rendering_per_key_and_shown_state() {
        let cache = RenderCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let render = |text: &'static str| {
            let renders = renders.clone();
            move |_: &State| {
                renders.fetch_add(1, Ordering::SeqCst);
                text.as_bytes().to_vec()
            }
        };
        let s1 = versioned(State::default(), 1);
        assert_eq!(cache.body(&s1, "a", render("one")).await, "one");
        assert_eq!(cache.body(&s1, "a", render("other")).await, "one");
        assert_eq!(cache.body(&s1, "b", render("two")).await, "two");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        // A newer snapshot that changed only what listings do not show keeps the bodies.
        let mut unshown = (*s1.state).clone();
        unshown.event_subscribers.insert("http://x".into());
        let s2 = versioned(unshown, 2);
        assert_eq!(cache.body(&s2, "a", render("same")).await, "one");
        // A change of what they show renders again.
        let mut shown = (*s2.state).clone();
        shown
            .by_app
            .insert(pacer_core::id::PathId::root(), Default::default());
        let s3 = versioned(shown, 3);
        assert_eq!(cache.body(&s3, "a", render("three")).await, "three");
        assert_eq!(renders.load(Ordering::SeqCst), 3);
        // A request still holding an older snapshot renders for itself and evicts nothing.
        assert_eq!(cache.body(&s1, "a", render("old")).await, "old");
        assert_eq!(cache.body(&s3, "a", render("new")).await, "three");
        assert_eq!(renders.load(Ordering::SeqCst), 4);
        let s2 = s3;
        // Past the bound bodies are rendered each time.
        for i in 0..MAX_BODIES {
            cache.body(&s2, &format!("k{i}"), render("x")).await;
        }
        let before = renders.load(Ordering::SeqCst);
        cache.body(&s2, "k-last", render("y")).await;
        cache.body(&s2, "k-last", render("y")).await;
        assert_eq!(renders.load(Ordering::SeqCst), before + 2);
    }

    #[tokio::test]
    async fn gzip_is_compressed_once_per_snapshot_and_only_when_accepted() {
        use std::io::Read;
        let cache = RenderCache::default();
        let snap = versioned(State::default(), 1);
        let big = "{\"tasks\": []}".repeat(200).into_bytes();
        let render = {
            let big = big.clone();
            move |_: &State| big
        };
        let zipped = cache.encoded(&snap, "k", true, render).await;
        assert!(zipped.gzip && zipped.bytes.len() < big.len() / 4);
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&zipped.bytes[..])
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, big);
        // The same bytes again, without rendering or compressing (the renderer would panic).
        let again = cache
            .encoded(&snap, "k", true, |_| unreachable!("cached"))
            .await;
        assert_eq!(again.bytes, zipped.bytes);
        let plain = cache.encoded(&snap, "k", false, |_| unreachable!()).await;
        assert!(!plain.gzip && plain.bytes == big);
        // Small bodies stay plain.
        let small = cache.encoded(&snap, "s", true, |_| b"[]".to_vec()).await;
        assert!(!small.gzip);
    }

    #[test]
    fn accept_encoding_is_read_with_weights() {
        use axum::http::{header::ACCEPT_ENCODING, HeaderMap, HeaderValue};
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static(v));
            accepts_gzip(&h, true)
        };
        assert!(with("gzip"));
        assert!(with("deflate, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; Q=0"));
        assert!(!with("gzip;q=0, *"), "an explicit refusal wins over *");
        assert!(!with("*;q=0"));
        assert!(with("x-gzip"));
        assert!(!with("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new(), true));
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!accepts_gzip(&h, false), "compression disabled");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_that_goes_away_does_not_cancel_the_rendering() {
        let cache = RenderCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let snap = versioned(State::default(), 1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut first = {
            let renders = renders.clone();
            Box::pin(cache.body(&snap, "k", move |_| {
                renders.fetch_add(1, Ordering::SeqCst);
                rx.recv().unwrap();
                b"first".to_vec()
            }))
        };
        // Polled once (it starts the rendering), then dropped, as when a client disconnects.
        tokio::select! {
            biased;
            _ = &mut first => unreachable!("the rendering waits for the test"),
            _ = std::future::ready(()) => {}
        }
        drop(first);
        tx.send(()).unwrap();
        let renders2 = renders.clone();
        let body = cache
            .body(&snap, "k", move |_| {
                renders2.fetch_add(1, Ordering::SeqCst);
                b"second".to_vec()
            })
            .await;
        assert_eq!(body, "first");
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_one_rendering() {
        let cache = Arc::new(RenderCache::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let snap = Arc::new(versioned(State::default(), 1));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, snap, renders, rx) =
                    (cache.clone(), snap.clone(), renders.clone(), rx.clone());
                tokio::spawn(async move {
                    cache
                        .body(&snap, "k", move |_| {
                            renders.fetch_add(1, Ordering::SeqCst);
                            // Held until the test lets it finish, so the others must wait.
                            rx.lock().unwrap().recv().unwrap();
                            b"body".to_vec()
                        })
                        .await
                })
            })
            .collect();
        // On this single-threaded runtime a yield polls every spawned task once: all eight
        // are waiting for the body before any rendering may finish.
        tokio::task::yield_now().await;
        for _ in 0..8 {
            tx.send(()).unwrap();
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "body");
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
    }
}
