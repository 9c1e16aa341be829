//! Thread-per-core serving (`[server] threads`): connections are spread
//! over the lanes, each lane reaches backends over connections of its own,
//! and pass-through, facade and drain work the same on every lane.

use std::sync::atomic::Ordering;

use crate::support::jobs::{async_config, post, Dialect, JobApi, Script};
use crate::support::{client, config, counting_relay, send, Backend, TestBaton};

#[tokio::test]
async fn each_lane_reaches_the_backend_over_connections_of_its_own() {
    let backend = Backend::echo().await;
    let (relay, accepted) = counting_relay(backend.addr).await;
    let baton = TestBaton::start_threaded(&config(relay, "threads = 2", "")).await;
    // Two client connections (two clients, each keeping its own alive):
    // round robin puts them on the two lanes.
    let (one, two) = (client(), client());
    for round in 0..3 {
        for c in [&one, &two] {
            let answer = send(
                c,
                http::Request::get(baton.url(&format!("/r{round}")))
                    .body(baton::body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
    }
    assert_eq!(backend.count(), 6);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one pooled backend connection per lane, reused by its requests"
    );
}

#[tokio::test]
async fn held_facade_requests_are_answered_on_every_lane() {
    let api = JobApi::start(Script {
        dialect: Dialect::Location303,
        polls_until_done: 2,
        ..Script::default()
    })
    .await;
    let toml = format!(
        "[server]\nthreads = 2\n{}",
        async_config(
            &api,
            "preset = \"location-303\"\npoll = { initial = \"10ms\", adaptive = false }"
        )
    );
    let baton = TestBaton::start_threaded(&toml).await;
    // Four clients, four connections, spread over both lanes.
    let answers =
        futures_util::future::join_all((0..4).map(|_| post(&baton, "/reports", &[]))).await;
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
    assert_eq!(api.submits(), 4);
}
