//! Graceful drain: on shutdown Baton stops accepting at once, reports
//! unready, lets in-flight requests finish within the grace period, and
//! cuts what is left when it ends.

use std::sync::Arc;

use baton::body;
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
async fn requests_still_running_at_the_grace_deadline_are_cut() {
    let (backend, arrived, _release) = gated_backend().await;
    let mut baton =
        TestBaton::start(&config(backend.addr, r#"shutdown_grace = "200ms""#, "")).await;
    let client = client();
    let request = Request::get(baton.url("/never"))
        .body(body::empty())
        .unwrap();
    let in_flight = tokio::spawn(async move { client.request(request).await });
    arrived.notified().await;

    baton.begin_shutdown();
    baton.finished().await.unwrap();
    let outcome = tokio::time::timeout(HANG, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_err(), "the cut request cannot have an answer");
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
