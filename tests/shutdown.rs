//! Graceful drain: on shutdown Baton stops accepting at once, reports
//! unready, lets in-flight requests finish within the grace period, and
//! cuts what is left when it ends.

use std::sync::Arc;

use baton::body;
use futures_util::StreamExt;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::{client, config, get, send, until_unready, Backend, TestBaton, HANG};

/// A backend whose answers wait until the test releases them.
async fn gated_backend() -> (Backend, Arc<Notify>, Arc<Notify>) {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (a, r) = (arrived.clone(), release.clone());
    let backend = Backend::start(move |_: Request<Incoming>| {
        let (arrived, release) = (a.clone(), r.clone());
        async move {
            arrived.notify_one();
            release.notified().await;
            Response::new(body::full("finished late"))
        }
    })
    .await;
    (backend, arrived, release)
}

#[tokio::test]
async fn in_flight_request_finishes_and_new_connections_are_refused() {
    let (backend, arrived, release) = gated_backend().await;
    let mut baton = TestBaton::start_with_admin(&config(backend.addr, "", ""), true).await;
    assert_eq!(
        get(&format!("http://{}/healthz", baton.admin.unwrap()))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&format!("http://{}/readyz", baton.admin.unwrap()))
            .await
            .status,
        200
    );

    let url = baton.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    arrived.notified().await;

    baton.begin_shutdown();
    until_unready(&baton).await;
    let refused = TcpStream::connect(baton.addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    release.notify_one();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "finished late");
    baton.finished().await.unwrap();
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn requests_still_waiting_at_the_grace_deadline_get_a_503_not_a_cut() {
    let (backend, arrived, _release) = gated_backend().await;
    let mut baton =
        TestBaton::start(&config(backend.addr, r#"shutdown_grace = "200ms""#, "")).await;
    let url = baton.url("/never");
    let in_flight = tokio::spawn(async move { get(&url).await });
    arrived.notified().await;

    baton.begin_shutdown();
    baton.finished().await.unwrap();
    // The backend never answered: the client still gets a status line
    // (a bare close makes some clients send the request again).
    let answer = tokio::time::timeout(HANG, in_flight)
        .await
        .unwrap()
        .unwrap();
    answer.problem(503);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_streaming_answer_still_running_at_the_grace_deadline_is_cut() {
    // The head went out, so cutting the connection is the only answer left.
    let backend = Backend::start(|_: Request<Incoming>| async {
        let stream = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from("part")))
        })
        .chain(futures_util::stream::pending());
        Response::new(body::stream(http_body_util::StreamBody::new(stream)))
    })
    .await;
    let mut baton =
        TestBaton::start(&config(backend.addr, r#"shutdown_grace = "200ms""#, "")).await;
    let client = client();
    let request = Request::get(baton.url("/stream"))
        .body(body::empty())
        .unwrap();
    let response = tokio::time::timeout(HANG, client.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    baton.begin_shutdown();
    baton.finished().await.unwrap();
    let rest = tokio::time::timeout(HANG, http_body_util::BodyExt::collect(response.into_body()))
        .await
        .unwrap();
    assert!(rest.is_err(), "the cut body cannot end cleanly");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_the_drain() {
    let backend = Backend::echo().await;
    // A grace far longer than the test's patience: finishing proves the
    // idle connection was closed rather than waited out.
    let mut baton = TestBaton::start(&config(backend.addr, r#"shutdown_grace = "1h""#, "")).await;
    let client = client();
    let request = Request::get(baton.url("/")).body(body::empty()).unwrap();
    assert_eq!(send(&client, request).await.status, 200);
    baton.begin_shutdown();
    baton.finished().await.unwrap();
}
