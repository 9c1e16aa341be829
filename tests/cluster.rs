//! Many instances, one Redis: idempotency across instances, a dead
//! instance's job taken over by the next retry, and Redis going away.
//! Skipped, loudly, where no Redis answers (see `support::redis`).

use std::process::Command;

use baton::body;
use http::Request;

use crate::support::jobs::{async_config, post, Dialect, JobApi, Script};
use crate::support::redis::{cluster_table, command, namespace, url, Relay};
use crate::support::{client, get, send, Doomed, TestBaton};

fn job(polls_until_done: u32) -> Script {
    Script {
        dialect: Dialect::Location303,
        polls_until_done,
        ..Script::default()
    }
}

fn clustered(api: &JobApi, table: &str, cluster: &str) -> String {
    format!("{cluster}\n{}", async_config(api, table))
}

#[tokio::test]
async fn concurrent_duplicate_submits_across_instances_make_one_job() {
    let Some(redis) = url().await else { return };
    let api = JobApi::start(job(3)).await;
    let toml = clustered(
        &api,
        "preset = \"location-303\"",
        &cluster_table(&redis, &namespace(), "5s"),
    );
    let a = TestBaton::start(&toml).await;
    let b = TestBaton::start(&toml).await;
    let key = [("idempotency-key", "cross-1")];
    // Many at once, alternating instances, so claims race inside Redis.
    let answers = futures_util::future::join_all((0..40).map(|i| {
        let baton = if i % 2 == 0 { &a } else { &b };
        post(baton, "/reports", &key)
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.status.as_u16(), 201, "{}", answer.text());
        assert_eq!(answer.body, answers[0].body);
    }
    assert_eq!(api.submits(), 1, "one job across both instances");
    // A later retry on either instance replays without a backend call.
    let polls = api.polls();
    let replay = post(&b, "/reports", &key).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!((api.submits(), api.polls()), (1, polls));
    // The same key with another request is refused on any instance.
    let other = send(
        &client(),
        Request::post(a.url("/reports"))
            .header("idempotency-key", "cross-1")
            .body(body::full("different"))
            .unwrap(),
    )
    .await;
    other.problem(422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_instance_takes_over_a_dead_instances_job() {
    let Some(redis) = url().await else { return };
    let api = JobApi::start(job(6)).await;
    let toml = clustered(
        &api,
        "preset = \"location-303\"\npoll = { max_interval = \"200ms\" }",
        &cluster_table(&redis, &namespace(), "1s"),
    );
    let mut a = Doomed::start(&toml);
    let url = format!("http://{}/reports", a.addr);
    let held = tokio::spawn(async move {
        let request = Request::post(url)
            .header("idempotency-key", "crash-1")
            .body(body::full(r#"{"report":"q3"}"#))
            .unwrap();
        client().request(request).await
    });
    api.wait_until(|a| a.polls() >= 1).await;
    a.crash();
    assert!(
        held.await.unwrap().is_err(),
        "the client of the dead instance lost its connection"
    );

    let b = TestBaton::start(&toml).await;
    let retried = post(&b, "/reports", &[("idempotency-key", "crash-1")]).await;
    assert_eq!(retried.status, 201, "{}", retried.text());
    assert_eq!(
        api.submits(),
        1,
        "the retry followed the dead instance's job"
    );
    assert_eq!(api.fetches(), 1);
}

/// POSTs `body` with Idempotency-Key `key` through `baton`.
async fn post_body(baton: &TestBaton, key: &str, body: &'static str) -> crate::support::Answer {
    send(
        &client(),
        Request::post(baton.url("/reports"))
            .header("idempotency-key", key)
            .body(body::full(body))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_expired_leaves_the_next_requests_record_alone() {
    let Some(redis) = url().await else { return };
    let api = JobApi::start(job(5)).await;
    let ns = namespace();
    let toml = clustered(
        &api,
        "preset = \"location-303\"\npoll = { initial = \"100ms\", min_interval = \"100ms\", max_interval = \"100ms\", jitter = 0.0, adaptive = false }",
        &cluster_table(&redis, &ns, "5s"),
    );
    let (a, b) = (TestBaton::start(&toml).await, TestBaton::start(&toml).await);
    let first = tokio::spawn(async move { post_body(&a, "reused", r#"{"order":1}"#).await });
    api.wait_until(|api| api.polls() >= 2).await;
    // The first request's record expires while its job runs; the key is
    // then used again, for another request, on the other instance.
    let record = format!(
        "{ns}:idem:{}",
        baton::store::scoped_key("facade", None, b"reused")
    );
    assert_eq!(command(&redis, &["DEL", &record]).await, ":1\r\n");
    let second = tokio::spawn({
        let b_url = b.url("/reports");
        async move {
            send(
                &client(),
                Request::post(b_url)
                    .header("idempotency-key", "reused")
                    .body(body::full(r#"{"order":2}"#))
                    .unwrap(),
            )
            .await
        }
    });
    api.wait_until(|api| api.submits() == 2).await;
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.text());
    assert_eq!(first.header("content-location"), Some("/result/job-1"));
    // The first job is done, the second is not: a retry of the second
    // request waits for its own job, not the first one's answer.
    let retry = post_body(&b, "reused", r#"{"order":2}"#).await;
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.header("content-location"), Some("/result/job-2"));
    let second = second.await.unwrap();
    assert_eq!(second.header("content-location"), Some("/result/job-2"));
    assert_eq!(api.submits(), 2);
}

#[tokio::test]
async fn redis_down_fails_only_what_needs_it_and_recovers() {
    let Some(redis) = url().await else { return };
    let relay = Relay::start(&redis).await;
    let api = JobApi::start(job(0)).await;
    let toml = clustered(
        &api,
        "preset = \"location-303\"",
        &cluster_table(&relay.url(), &namespace(), "5s"),
    );
    let baton = TestBaton::start(&toml).await;
    assert_eq!(
        post(&baton, "/reports", &[("idempotency-key", "up-1")])
            .await
            .status,
        201
    );

    relay.cut();
    let problem = post(&baton, "/reports", &[("idempotency-key", "down-1")])
        .await
        .problem(503);
    assert_eq!(problem["type"], "urn:baton:problem:store-unavailable");
    // What needs no shared state is served as usual.
    assert_eq!(
        post(&baton, "/reports", &[]).await.status,
        201,
        "an async request without a key"
    );
    // The monitor's own 303, passed through.
    assert_eq!(
        get(&baton.url("/status/job-1")).await.status,
        303,
        "a pass-through request"
    );
    let submits = api.submits();

    relay.restore().await;
    let mut answer = post(&baton, "/reports", &[("idempotency-key", "back-1")]).await;
    for _ in 0..50 {
        if answer.status != 503 {
            break;
        }
        // Reconnecting is Redis's client's business; ask again.
        tokio::task::yield_now().await;
        answer = post(&baton, "/reports", &[("idempotency-key", "back-1")]).await;
    }
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(api.submits(), submits + 1);
}

#[test]
fn an_unreachable_cluster_at_start_is_a_clear_exit_64() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = std::env::temp_dir().join(format!("baton-cluster-{:016x}.toml", fastrand::u64(..)));
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nredis = \"redis://127.0.0.1:{port}\"\n\n[backends.app]\nurl = \"http://127.0.0.1:1\"\n\n[[routes]]\nname = \"all\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cluster Redis at redis://127.0.0.1:{port} is unreachable"
        )),
        "{stderr}"
    );
}
