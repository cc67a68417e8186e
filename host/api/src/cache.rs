//! Response bodies rendered once per snapshot. The big listings (`/v2/tasks`,
//! `/v2/apps?embed=apps.tasks`) cost milliseconds per thousand tasks; between two changes of
//! the state every client gets the same bytes, and clients that ask while a body is being
//! rendered wait for that one rendering instead of starting their own.

use axum::body::Bytes;
use pacer_core::state::State;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::OnceCell;

/// Distinct requests remembered per snapshot; more are rendered without being kept.
const MAX_BODIES: usize = 32;

#[derive(Default)]
pub struct RenderCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The snapshot the bodies were rendered from. Weak: the cache must not keep an old state
    /// alive, and a live `Weak` keeps the address from being reused by a newer snapshot.
    snapshot: Weak<State>,
    bodies: HashMap<String, Arc<OnceCell<Bytes>>>,
}

impl RenderCache {
    /// The body for `key` rendered from `snap`, rendering it (off the async workers) if no
    /// request for the same key and snapshot has.
    pub async fn body<F>(&self, snap: &Arc<State>, key: &str, render: F) -> Bytes
    where
        F: FnOnce(&State) -> Vec<u8> + Send + 'static,
    {
        let cell = {
            let mut inner = self.inner.lock().expect("render cache lock poisoned");
            if !std::ptr::eq(inner.snapshot.as_ptr(), Arc::as_ptr(snap)) {
                inner.snapshot = Arc::downgrade(snap);
                inner.bodies.clear();
            }
            match inner.bodies.get(key) {
                Some(cell) => Some(cell.clone()),
                None if inner.bodies.len() < MAX_BODIES => {
                    let cell = Arc::new(OnceCell::new());
                    inner.bodies.insert(key.to_string(), cell.clone());
                    Some(cell)
                }
                None => None,
            }
        };
        let snap = snap.clone();
        let render = move || Bytes::from(render(&snap));
        match cell {
            Some(cell) => cell.get_or_init(|| rendered(render)).await.clone(),
            None => rendered(render).await,
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
    pub async fn encoded<F>(&self, snap: &Arc<State>, key: &str, gzip: bool, render: F) -> Body
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

/// Whether the request's `Accept-Encoding` admits gzip (and compression is on).
pub fn accepts_gzip(headers: &axum::http::HeaderMap, enabled: bool) -> bool {
    enabled
        && headers
            .get_all(axum::http::header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        == Some(0.0)
                });
                (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
            })
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

    #[tokio::test]
    async fn one_rendering_per_key_and_snapshot() {
        let cache = RenderCache::default();
        let renders = Arc::new(AtomicUsize::new(0));
        let render = |text: &'static str| {
            let renders = renders.clone();
            move |_: &State| {
                renders.fetch_add(1, Ordering::SeqCst);
                text.as_bytes().to_vec()
            }
        };
        let s1 = Arc::new(State::default());
        assert_eq!(cache.body(&s1, "a", render("one")).await, "one");
        assert_eq!(cache.body(&s1, "a", render("other")).await, "one");
        assert_eq!(cache.body(&s1, "b", render("two")).await, "two");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
        // A new snapshot renders again, even with equal contents.
        let s2 = Arc::new(State::default());
        assert_eq!(cache.body(&s2, "a", render("three")).await, "three");
        assert_eq!(renders.load(Ordering::SeqCst), 3);
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
        let snap = Arc::new(State::default());
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
        assert!(!with("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new(), true));
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!accepts_gzip(&h, false), "compression disabled");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_requests_share_one_rendering() {
        let cache = Arc::new(RenderCache::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let snap = Arc::new(State::default());
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
