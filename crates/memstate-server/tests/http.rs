//! The HTTP API against an engine on an in-memory stream, request by request.

// Helpers outside #[test] functions: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use failing::FailingStream;
use memstate_core::{BadRecordPolicy, EngineBuilder, MemoryStream, Settings, Stream};
use memstate_server::kv::{self, KvStore};
use memstate_server::{EventFeed, FeedEvent, ServerBuilder};
use serde_json::{Value, json};
use tower::ServiceExt;

mod failing {
    //! A stream whose appends fail while a switch is on: the backend is unreachable.
    use super::*;
    use memstate_core::{Cursor, StreamError, Subscription};

    #[derive(Debug, Clone)]
    pub struct FailingStream {
        pub inner: MemoryStream,
        pub down: Arc<AtomicBool>,
    }

    #[async_trait::async_trait]
    impl Stream for FailingStream {
        fn describe(&self) -> String {
            "failing memory stream".into()
        }
        fn capabilities(&self) -> memstate_core::Capabilities {
            self.inner.capabilities()
        }
        async fn append(&self, records: Vec<bytes::Bytes>) -> Result<Vec<Cursor>, StreamError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StreamError::Timeout {
                    action: "reaching the backend".into(),
                    after: Duration::from_millis(1),
                });
            }
            self.inner.append(records).await
        }
        async fn subscribe(
            &self,
            after: Option<Cursor>,
        ) -> Result<Box<dyn Subscription>, StreamError> {
            self.inner.subscribe(after).await
        }
        async fn head(&self) -> Result<Option<Cursor>, StreamError> {
            self.inner.head().await
        }
        fn compare_cursors(
            &self,
            a: &Cursor,
            b: &Cursor,
        ) -> Result<std::cmp::Ordering, StreamError> {
            self.inner.compare_cursors(a, b)
        }
    }
}

async fn kv_server(
    stream: impl Stream,
    configure: impl FnOnce(ServerBuilder<KvStore>) -> ServerBuilder<KvStore>,
) -> Router {
    let engine = EngineBuilder::new(KvStore::default(), stream)
        .execute_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    configure(kv::queries(ServerBuilder::new(engine)))
        .build()
        .router()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        headers,
        body,
    }
}

fn post(path: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.into()))
        .unwrap()
}

fn post_with_key(path: &str, key: &str, body: Value) -> Request<Body> {
    Request::post(path)
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_write_carries_its_index_and_a_read_at_that_index_sees_it() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    let a = call(
        &router,
        post(
            "/commands/put",
            json!({"key": "a", "value": {"n": 1}}).to_string(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let index = a.body["index"].as_u64().unwrap();
    assert!(index > 0);
    assert_eq!(
        a.headers["memstate-index"].to_str().unwrap(),
        index.to_string()
    );
    assert_eq!(a.body["output"]["value"], json!({"n": 1}));
    assert_eq!(a.body["already_applied"], json!(false));

    let r = call(
        &router,
        get(&format!("/queries/get?key=a&consistency=at_least:{index}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"value": {"n": 1}, "version": index}));

    let mut req = get("/queries/count?consistency=read_your_writes");
    req.headers_mut()
        .insert("memstate-last-write", index.into());
    assert_eq!(call(&router, req).await.body, json!(1));
    let r = call(
        &router,
        get("/queries/list?prefix=a&consistency=linearizable"),
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"key": "a", "value": {"n": 1}, "version": index}])
    );
    let r = call(
        &router,
        get("/queries/get?key=missing&consistency=bounded:5s"),
    )
    .await;
    assert_eq!((r.status, r.body), (StatusCode::OK, Value::Null));
}

#[tokio::test]
async fn the_whole_command_may_be_posted() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    let a = call(
        &router,
        post(
            "/commands",
            json!({"increment": {"key": "n", "by": 4}}).to_string(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["output"]["value"], json!(4));
    let a = call(
        &router,
        post("/commands", json!({"explode": {}}).to_string()),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.body["error"], "unknown_command");
}

#[tokio::test]
async fn a_retried_request_is_applied_once() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    let body = json!({"key": "hits", "by": 1});
    let first = call(
        &router,
        post_with_key("/commands/increment", "retry-1", body.clone()),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = call(
        &router,
        post_with_key("/commands/increment", "retry-1", body.clone()),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["already_applied"], json!(true));
    assert_eq!(second.body["index"], first.body["index"]);
    assert_eq!(second.body["command_id"], first.body["command_id"]);
    let other = call(
        &router,
        post_with_key("/commands/increment", "retry-2", body),
    )
    .await;
    assert_eq!(other.body["output"]["value"], json!(2));
    let r = call(
        &router,
        get("/queries/get?key=hits&consistency=read_your_writes"),
    )
    .await;
    assert_eq!(
        r.body["value"],
        json!(2),
        "two keys, two increments: the retry was not applied"
    );
}

#[tokio::test]
async fn bad_input_gets_a_status_that_names_the_problem() {
    let router = kv_server(MemoryStream::new(), |b| b.body_limit(256)).await;

    let a = call(
        &router,
        post("/commands/put", "{\"key\": \"a\", \"value\": "),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["error"], "malformed_json");
    assert!(
        a.body["message"].as_str().unwrap().contains("line 1"),
        "{}",
        a.body
    );

    let a = call(
        &router,
        post("/commands/put", json!({"key": "a"}).to_string()),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("missing field `value`"),
        "{}",
        a.body
    );

    let a = call(&router, post("/commands/explode", "{}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("compare_and_set"),
        "{}",
        a.body
    );

    let a = call(&router, get("/queries/nothing")).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_query"))
    );

    let a = call(&router, get("/queries/get?key=a&consistency=eventual")).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_consistency"))
    );

    let a = call(&router, get("/queries/get")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body["message"].as_str().unwrap().contains("key"),
        "{}",
        a.body
    );

    let big = json!({"key": "a", "value": "x".repeat(300)}).to_string();
    let a = call(&router, post("/commands/put", big)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        a.body["message"].as_str().unwrap().contains("256 bytes"),
        "{}",
        a.body
    );

    let a = call(&router, get("/no/such/route")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // None of it reached the log.
    let r = call(&router, get("/queries/count")).await;
    assert_eq!(r.body, json!(0));
}

#[tokio::test]
async fn a_rejected_command_answers_409_with_its_index_and_changes_nothing() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    call(
        &router,
        post("/commands/put", json!({"key": "k", "value": 1}).to_string()),
    )
    .await;
    let a = call(
        &router,
        post(
            "/commands/compare_and_set",
            json!({"key": "k", "expected": 2, "value": 3}).to_string(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.body["error"], "rejected");
    assert!(a.body["index"].as_u64().is_some());
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("not the expected value"),
        "{}",
        a.body
    );
    let r = call(&router, get("/queries/get?key=k&consistency=linearizable")).await;
    assert_eq!(r.body["value"], json!(1));
}

#[tokio::test]
async fn an_unreachable_stream_is_503_with_retry_after_and_the_retry_applies_once() {
    let down = Arc::new(AtomicBool::new(false));
    let stream = FailingStream {
        inner: MemoryStream::new(),
        down: Arc::clone(&down),
    };
    let router = kv_server(stream, |b| b).await;
    down.store(true, Ordering::SeqCst);
    let body = json!({"key": "n"});
    let a = call(
        &router,
        post_with_key("/commands/increment", "k-1", body.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{}",
        a.body
    );
    down.store(false, Ordering::SeqCst);
    let a = call(
        &router,
        post_with_key("/commands/increment", "k-1", body.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = call(&router, post_with_key("/commands/increment", "k-1", body)).await;
    assert_eq!(a.body["already_applied"], json!(true));
    let r = call(&router, get("/queries/get?key=n&consistency=linearizable")).await;
    assert_eq!(r.body["value"], json!(1));
}

fn halt_on_bad_records() -> Settings {
    let mut settings = Settings::default();
    settings.bad_records = BadRecordPolicy::Halt;
    settings
}

#[tokio::test]
async fn a_halted_node_answers_with_its_reason() {
    let stream = MemoryStream::new();
    let engine = EngineBuilder::new(KvStore::default(), stream.clone())
        .settings(halt_on_bad_records())
        .start()
        .await
        .unwrap();
    let router = kv::queries(ServerBuilder::new(engine.clone()))
        .build()
        .router();
    assert_eq!(call(&router, get("/readyz")).await.status, StatusCode::OK);
    stream
        .append(vec![bytes::Bytes::from_static(b"not a frame")])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(engine.status(), memstate_core::Status::Halted(_)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    for request in [
        post("/commands/put", json!({"key": "a", "value": 1}).to_string()),
        get("/queries/count"),
        get("/readyz"),
    ] {
        let a = call(&router, request).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        assert_eq!(a.body["error"], "halted");
        assert!(
            a.body["halt_reason"]
                .as_str()
                .unwrap()
                .contains("not a memstate frame"),
            "{}",
            a.body
        );
    }
    let s = call(&router, get("/status")).await;
    assert_eq!(s.body["status"], "halted");
    assert!(
        s.body["halt_reason"]
            .as_str()
            .unwrap()
            .contains("policy is to halt")
    );
    assert_eq!(call(&router, get("/healthz")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_bearer_token_guards_everything_but_health_and_the_page() {
    let router = kv_server(MemoryStream::new(), |b| b.bearer_token("s3cret")).await;
    let a = call(&router, get("/queries/count")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.headers[header::WWW_AUTHENTICATE], "Bearer");
    let mut wrong = get("/status");
    wrong
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cres".parse().unwrap());
    assert_eq!(call(&router, wrong).await.status, StatusCode::UNAUTHORIZED);
    let mut right = post("/commands/put", json!({"key": "a", "value": 1}).to_string());
    right
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    assert_eq!(call(&router, right).await.status, StatusCode::OK);
    assert_eq!(call(&router, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(call(&router, get("/readyz")).await.status, StatusCode::OK);
    assert_eq!(call(&router, get("/")).await.status, StatusCode::OK);
    assert_eq!(
        call(&router, get("/openapi.json")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_openapi_document_names_every_command_and_query() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    let doc = call(&router, get("/openapi.json")).await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/commands/put",
        "/commands/delete",
        "/commands/compare_and_set",
        "/commands/increment",
        "/queries/get",
        "/queries/list",
        "/queries/count",
        "/status",
        "/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let write = &doc["components"]["schemas"]["WriteResponse"]["properties"];
    assert!(
        write["index"].is_object() && write["already_applied"].is_object(),
        "{write}"
    );
    assert!(doc["components"]["schemas"]["NodeStatus"]["properties"]["applied_index"].is_object());
}

#[tokio::test]
async fn status_reports_the_node_and_the_commands_it_served() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    let a = call(
        &router,
        post("/commands/put", json!({"key": "a", "value": 1}).to_string()),
    )
    .await;
    let s = call(&router, get("/status")).await.body;
    assert_eq!(s["status"], "running");
    assert_eq!(s["applied_index"], a.body["index"]);
    assert_eq!(s["recent_commands"][0]["name"], "put");
    assert_eq!(s["recent_commands"][0]["outcome"], "applied");
    assert_eq!(s["recent_commands"][0]["index"], a.body["index"]);
    assert_eq!(s["epoch"], 0);
    assert_eq!(s["write_mode"], "multi_writer");
}

fn test_feed() -> EventFeed {
    // Commands 3, 4 and 5 emitted events; command 4 emitted two.
    let all = [
        FeedEvent {
            index: 3,
            last_in_command: true,
            json: "{\"e\":\"a\"}".into(),
        },
        FeedEvent {
            index: 4,
            last_in_command: false,
            json: "{\"e\":\"b1\"}".into(),
        },
        FeedEvent {
            index: 4,
            last_in_command: true,
            json: "{\"e\":\"b2\"}".into(),
        },
        FeedEvent {
            index: 5,
            last_in_command: true,
            json: "{\"e\":\"c\"}".into(),
        },
    ];
    EventFeed::new(move |after| {
        if after == Some(1) {
            return futures::stream::iter(vec![Err(
                "events after index 1 are no longer retained (gap)".to_string(),
            )])
            .boxed();
        }
        let items: Vec<_> = all
            .iter()
            .filter(|e| after.is_none_or(|a| e.index > a))
            .cloned()
            .map(Ok)
            .collect();
        futures::stream::iter(items).boxed()
    })
}

use futures::StreamExt;

#[tokio::test]
async fn events_resume_after_last_event_id_and_ids_mark_whole_commands() {
    let router = kv_server(MemoryStream::new(), |b| b.events(test_feed())).await;
    let a = call(&router, get("/events")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/event-stream");
    let text = a.body.as_str().unwrap().to_owned();
    assert_eq!(
        text,
        "event: event\ndata: {\"e\":\"a\"}\nid: 3\n\nevent: event\ndata: {\"e\":\"b1\"}\n\nevent: event\ndata: {\"e\":\"b2\"}\nid: 4\n\nevent: event\ndata: {\"e\":\"c\"}\nid: 5\n\n"
    );
    let mut resume = get("/events");
    resume
        .headers_mut()
        .insert("last-event-id", "4".parse().unwrap());
    let text = call(&router, resume)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text, "event: event\ndata: {\"e\":\"c\"}\nid: 5\n\n");
    let text = call(&router, get("/events?after=3"))
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with("event: event\ndata: {\"e\":\"b1\"}"),
        "{text}"
    );
    let text = call(&router, get("/events?after=1"))
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.starts_with("event: error\ndata: events after index 1"),
        "{text}"
    );
    let mut bad = get("/events");
    bad.headers_mut()
        .insert("last-event-id", "x".parse().unwrap());
    assert_eq!(call(&router, bad).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn without_a_feed_events_are_404() {
    let router = kv_server(MemoryStream::new(), |b| b).await;
    assert_eq!(
        call(&router, get("/events")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn metrics_show_what_the_engine_recorded() {
    let handle = memstate_server::install_prometheus().unwrap();
    let engine = EngineBuilder::new(KvStore::default(), MemoryStream::new())
        .node_id("metrics-node")
        .start()
        .await
        .unwrap();
    let router = kv::queries(ServerBuilder::new(engine))
        .prometheus(handle)
        .build()
        .router();
    let mut last = 0;
    for i in 0..3 {
        let a = call(
            &router,
            post(
                "/commands/put",
                json!({"key": format!("k{i}"), "value": i}).to_string(),
            ),
        )
        .await;
        last = a.body["index"].as_u64().unwrap();
    }
    let a = call(
        &router,
        post(
            "/commands/compare_and_set",
            json!({"key": "k0", "value": 9}).to_string(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let rejected_at = a.body["index"].as_u64().unwrap();
    assert!(rejected_at > last);

    let applied_line = format!("memstate_applied_index{{node=\"metrics-node\"}} {rejected_at}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let m = call(&router, get("/metrics")).await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(
            m.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = m.body.as_str().unwrap().to_owned();
        // The gauges are refreshed once a second by the engine.
        if text.contains(&applied_line) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {applied_line} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for expected in [
        "memstate_commands_total{node=\"metrics-node\",outcome=\"applied\"} 3",
        "memstate_commands_total{node=\"metrics-node\",outcome=\"rejected\"} 1",
        "memstate_command_latency_seconds_count{node=\"metrics-node\"} 4",
        "memstate_command_latency_seconds_bucket{node=\"metrics-node\",le=\"10\"} 4",
        "memstate_commands_applied_total{node=\"metrics-node\"} 4",
        "memstate_leader_epoch{node=\"metrics-node\"} 0",
        "memstate_halted{node=\"metrics-node\"} 0",
        "memstate_commands_fenced_total{node=\"metrics-node\"} 0",
        "memstate_bad_records_skipped_total{node=\"metrics-node\"} 0",
        "# HELP memstate_command_latency_seconds",
    ] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
}

/// `/events` wired to a real engine: the built-in model's writes come out as
/// events whose SSE id is the write's index, and a client that resumes after
/// the first gets only the second.
#[tokio::test]
async fn the_built_in_model_streams_its_writes_as_events_from_the_engine() {
    let engine = EngineBuilder::new(KvStore::default(), MemoryStream::new())
        .execute_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    let feed = EventFeed::from_engine(&engine);
    let router = kv::queries(ServerBuilder::new(engine))
        .events(feed)
        .build()
        .router();
    let mut indexes = Vec::new();
    for (key, value) in [("a", 1), ("b", 2)] {
        let w = call(
            &router,
            post(
                "/commands/put",
                json!({"key": key, "value": value}).to_string(),
            ),
        )
        .await;
        assert_eq!(w.status, StatusCode::OK, "{:?}", w.body);
        indexes.push(w.body["index"].as_u64().unwrap());
    }
    // The stream follows the tail forever: read until the expected text is in.
    async fn first_events(router: &Router, request: Request<Body>, want: usize) -> String {
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body().into_data_stream();
        let mut text = String::new();
        while text.matches("event: event").count() < want {
            let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
                .await
                .expect("events within 30 s")
                .expect("the stream stays open")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    }
    let all = first_events(&router, get("/events?after=0"), 2).await;
    assert!(all.contains(&format!("id: {}\n", indexes[0])), "{all}");
    assert!(all.contains(&format!("id: {}\n", indexes[1])), "{all}");
    assert!(all.contains("\"key\":\"a\""), "{all}");
    let mut resume = get("/events");
    resume
        .headers_mut()
        .insert("last-event-id", indexes[0].to_string().parse().unwrap());
    let rest = first_events(&router, resume, 1).await;
    assert!(rest.contains("\"key\":\"b\""), "{rest}");
    assert!(!rest.contains("\"key\":\"a\""), "{rest}");
}
