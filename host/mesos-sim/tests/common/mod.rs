//! A small scheduler-side client for the simulator tests: raw HTTP/1.1 over loopback (hyper),
//! SUBSCRIBE streams decoded from RecordIO, and helpers to build calls.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pacer_mesos_proto::v1::framework_info::{capability::Type as Cap, Capability};
use pacer_mesos_proto::{call, event, recordio, v1, Call, Event, JSON, PROTOBUF};
use prost::Message;
use std::collections::VecDeque;
use std::time::Duration;

/// Upper bound for any single wait in the tests (never an assertion about speed).
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

async fn open(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> hyper::Response<Incoming> {
    let uri: hyper::Uri = base.parse().unwrap();
    let authority = uri.authority().unwrap().to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("the simulator answers in time")
        .unwrap()
}

/// One request on a fresh connection; the whole answer.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let resp = open(base, method, path, headers, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("body in time")
        .unwrap()
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn encode_call(call: &Call, json: bool) -> Vec<u8> {
    if json {
        serde_json::to_vec(call).unwrap()
    } else {
        call.encode_to_vec()
    }
}

/// POSTs a call to `/api/v1/scheduler`.
pub async fn post_call(base: &str, call: &Call, json: bool, stream_id: Option<&str>) -> Reply {
    let ct = if json { JSON } else { PROTOBUF };
    let mut headers = vec![("Content-Type", ct)];
    if let Some(s) = stream_id {
        headers.push(("Mesos-Stream-Id", s));
    }
    request(
        base,
        "POST",
        "/api/v1/scheduler",
        &headers,
        encode_call(call, json),
    )
    .await
}

pub fn framework_info(name: &str, caps: &[Cap]) -> v1::FrameworkInfo {
    v1::FrameworkInfo {
        user: "tester".into(),
        name: name.into(),
        failover_timeout: Some(3600.0),
        capabilities: caps
            .iter()
            .map(|c| Capability {
                r#type: Some(*c as i32),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn subscribe_call(info: v1::FrameworkInfo) -> Call {
    Call {
        framework_id: info.id.clone(),
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info,
            suppressed_roles: vec![],
        }),
        ..Default::default()
    }
}

pub fn ty(e: &Event) -> event::Type {
    event::Type::try_from(e.r#type.unwrap_or(0)).unwrap()
}

pub fn state_of(s: &v1::TaskStatus) -> v1::TaskState {
    v1::TaskState::try_from(s.state).unwrap()
}

/// A SUBSCRIBE stream.
pub struct Stream {
    pub base: String,
    pub json: bool,
    pub stream_id: String,
    pub framework_id: String,
    pub content_type: String,
    pub subscribed: Option<event::Subscribed>,
    body: Option<Incoming>,
    decoder: recordio::Decoder,
    queue: VecDeque<Event>,
    ended: bool,
}

impl Stream {
    /// Subscribes and reads the SUBSCRIBED event (panics on anything else).
    pub async fn subscribe(base: &str, info: v1::FrameworkInfo, json: bool) -> Stream {
        let mut s = Stream::open(base, info, json).await;
        let first = s.next().await.expect("SUBSCRIBED");
        assert_eq!(ty(&first), event::Type::Subscribed, "{first:?}");
        let sub = first.subscribed.unwrap();
        s.framework_id = sub.framework_id.value.clone();
        s.subscribed = Some(sub);
        s
    }

    /// Sends SUBSCRIBE and returns the stream without reading from it.
    pub async fn open(base: &str, info: v1::FrameworkInfo, json: bool) -> Stream {
        let ct = if json { JSON } else { PROTOBUF };
        let body = encode_call(&subscribe_call(info), json);
        let resp = open(
            base,
            "POST",
            "/api/v1/scheduler",
            &[("Content-Type", ct), ("Accept", ct)],
            body,
        )
        .await;
        assert_eq!(
            resp.status().as_u16(),
            200,
            "SUBSCRIBE answered {}",
            resp.status()
        );
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        Stream {
            base: base.to_string(),
            json,
            stream_id: header("mesos-stream-id"),
            content_type: header("content-type"),
            framework_id: String::new(),
            subscribed: None,
            body: Some(resp.into_body()),
            decoder: recordio::Decoder::default(),
            queue: VecDeque::new(),
            ended: false,
        }
    }

    fn decode(&self, rec: &[u8]) -> Event {
        if self.json {
            serde_json::from_slice(rec)
                .unwrap_or_else(|e| panic!("bad JSON event {e}: {}", String::from_utf8_lossy(rec)))
        } else {
            Event::decode(rec).unwrap()
        }
    }

    /// The next event; `None` once the master closed the stream. Panics after [`WAIT`].
    pub async fn next(&mut self) -> Option<Event> {
        tokio::time::timeout(WAIT, self.next_inner())
            .await
            .expect("an event (or the end of the stream) in time")
    }

    async fn next_inner(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let body = self.body.as_mut()?;
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.feed(&data);
                        while let Some(rec) = self.decoder.next_record().unwrap() {
                            let e = self.decode(&rec);
                            self.queue.push_back(e);
                        }
                    }
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next event that is not a HEARTBEAT.
    pub async fn next_non_heartbeat(&mut self) -> Option<Event> {
        loop {
            let e = self.next().await?;
            if ty(&e) != event::Type::Heartbeat {
                return Some(e);
            }
        }
    }

    /// Skips events until one of type `t` (panics if the stream ends first).
    pub async fn expect(&mut self, t: event::Type) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {t:?}"
            );
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended while waiting for {t:?}"));
            if ty(&e) == t {
                return e;
            }
        }
    }

    /// The next OFFERS event's offers (skipping everything else).
    pub async fn offers(&mut self) -> Vec<v1::Offer> {
        self.expect(event::Type::Offers)
            .await
            .offers
            .unwrap()
            .offers
    }

    /// The next UPDATE event's status (skipping heartbeats and offers; panics on other events).
    pub async fn update(&mut self) -> v1::TaskStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for an UPDATE"
            );
            let e = self
                .next()
                .await
                .expect("stream ended while waiting for an UPDATE");
            match ty(&e) {
                event::Type::Update => return e.update.unwrap().status,
                event::Type::Heartbeat | event::Type::Offers => continue,
                other => panic!("expected UPDATE, got {other:?}: {e:?}"),
            }
        }
    }

    /// Closes the stream from the client side.
    pub fn close(&mut self) {
        self.body = None;
        self.ended = true;
    }

    /// Whether the master ended the stream (reads what is left).
    pub async fn ends(&mut self) -> bool {
        while self.next().await.is_some() {}
        true
    }

    pub fn fid(&self) -> Option<v1::FrameworkId> {
        Some(v1::FrameworkId {
            value: self.framework_id.clone(),
        })
    }

    /// POSTs a call for this framework on this stream (framework_id and stream id set).
    pub async fn call(&self, mut c: Call) -> Reply {
        c.framework_id = self.fid();
        post_call(&self.base, &c, self.json, Some(&self.stream_id)).await
    }

    pub async fn ack(&self, status: &v1::TaskStatus) {
        let r = self
            .call(Call {
                r#type: Some(call::Type::Acknowledge as i32),
                acknowledge: Some(call::Acknowledge {
                    agent_id: status.agent_id.clone().unwrap(),
                    task_id: status.task_id.clone(),
                    uuid: status.uuid.clone().expect("an update with a uuid"),
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.status, 202, "ACKNOWLEDGE: {}", r.text());
    }

    /// Waits for the task's next update and acknowledges it; returns it.
    pub async fn update_acked(&mut self) -> v1::TaskStatus {
        let s = self.update().await;
        if s.uuid.is_some() {
            self.ack(&s).await;
        }
        s
    }

    pub async fn accept(
        &self,
        offer_ids: &[&v1::OfferId],
        tasks: Vec<v1::TaskInfo>,
        refuse: Option<f64>,
    ) -> Reply {
        let r = self
            .call(Call {
                r#type: Some(call::Type::Accept as i32),
                accept: Some(call::Accept {
                    offer_ids: offer_ids.iter().map(|o| (*o).clone()).collect(),
                    operations: vec![v1::offer::Operation {
                        r#type: Some(v1::offer::operation::Type::Launch as i32),
                        launch: Some(v1::offer::operation::Launch { task_infos: tasks }),
                    }],
                    filters: refuse.map(|r| v1::Filters {
                        refuse_seconds: Some(r),
                    }),
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.status, 202, "ACCEPT: {}", r.text());
        r
    }

    pub async fn decline(&self, offer_ids: &[&v1::OfferId], refuse: Option<f64>) {
        let r = self
            .call(Call {
                r#type: Some(call::Type::Decline as i32),
                decline: Some(call::Decline {
                    offer_ids: offer_ids.iter().map(|o| (*o).clone()).collect(),
                    filters: refuse.map(|r| v1::Filters {
                        refuse_seconds: Some(r),
                    }),
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.status, 202, "DECLINE: {}", r.text());
    }

    pub async fn simple(&self, t: call::Type) -> Reply {
        self.call(Call {
            r#type: Some(t as i32),
            ..Default::default()
        })
        .await
    }

    pub async fn kill(&self, task_id: &str, agent_id: Option<&str>) {
        let r = self
            .call(Call {
                r#type: Some(call::Type::Kill as i32),
                kill: Some(call::Kill {
                    task_id: v1::TaskId {
                        value: task_id.into(),
                    },
                    agent_id: agent_id.map(|a| v1::AgentId { value: a.into() }),
                    kill_policy: None,
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.status, 202, "KILL: {}", r.text());
    }

    pub async fn reconcile(&self, tasks: &[(&str, Option<&str>)]) {
        let r = self
            .call(Call {
                r#type: Some(call::Type::Reconcile as i32),
                reconcile: Some(call::Reconcile {
                    tasks: tasks
                        .iter()
                        .map(|(t, a)| call::reconcile::Task {
                            task_id: v1::TaskId { value: (*t).into() },
                            agent_id: a.map(|a| v1::AgentId { value: a.into() }),
                        })
                        .collect(),
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(r.status, 202, "RECONCILE: {}", r.text());
    }
}

pub fn scalar(name: &str, v: f64) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        r#type: v1::value::Type::Scalar as i32,
        scalar: Some(v1::value::Scalar { value: v }),
        ..Default::default()
    }
}

pub fn ports(ranges: &[(u64, u64)]) -> v1::Resource {
    v1::Resource {
        name: "ports".into(),
        r#type: v1::value::Type::Ranges as i32,
        ranges: Some(v1::value::Ranges {
            range: ranges
                .iter()
                .map(|&(begin, end)| v1::value::Range { begin, end })
                .collect(),
        }),
        ..Default::default()
    }
}

/// A command task for the offer's agent.
pub fn task(id: &str, offer: &v1::Offer, cpus: f64, mem: f64, shell: &str) -> v1::TaskInfo {
    v1::TaskInfo {
        name: id.into(),
        task_id: v1::TaskId { value: id.into() },
        agent_id: offer.agent_id.clone(),
        resources: vec![scalar("cpus", cpus), scalar("mem", mem)],
        command: Some(v1::CommandInfo {
            value: Some(shell.into()),
            shell: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn scalar_of(offer: &v1::Offer, name: &str) -> f64 {
    offer
        .resources
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.scalar.as_ref().unwrap().value)
        .sum()
}

/// Polls `f` until it is true (bounded by [`WAIT`]).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
