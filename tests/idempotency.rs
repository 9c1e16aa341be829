//! Nothing lost, nothing twice: `Idempotency-Key` latching and replay,
//! continuation monitors when the hold ends before the job, and shedding
//! load past the held-request limits.

use std::time::Duration;

use baton::body;
use http::{Request, StatusCode};
use serde_json::json;

use crate::support::jobs::{async_config, post, route_config, Dialect, Flake, JobApi, Script};
use crate::support::{client, get, send, Answer, TestBaton};

fn job(polls_until_done: u32) -> Script {
    Script {
        dialect: Dialect::Location303,
        polls_until_done,
        ..Script::default()
    }
}

async fn post_body(
    baton: &TestBaton,
    api: &JobApi,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Answer {
    let mut request = Request::post(baton.url(api.submit_path()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(body::full(body)).unwrap()).await
}

#[tokio::test(start_paused = true)]
async fn concurrent_duplicates_make_one_job_and_share_one_answer() {
    let api = JobApi::start(job(3)).await;
    let baton = TestBaton::start(&async_config(&api, "preset = \"location-303\"")).await;
    let client = client();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let client = client.clone();
        let url = baton.url(api.submit_path());
        clients.push(tokio::spawn(async move {
            let request = Request::post(url)
                .header("idempotency-key", "order-7781")
                .body(body::full(r#"{"sku":"A1","qty":2}"#))
                .unwrap();
            send(&client, request).await
        }));
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.push(c.await.unwrap());
    }
    assert_eq!(api.submits(), 1, "one job for 200 duplicates");
    assert_eq!(api.fetches(), 1);
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.text());
        assert_eq!(answer.body, answers[0].body);
        assert_eq!(answer.header("content-type"), Some("application/json"));
    }
    let led = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(led, 1, "exactly one request led; the others got its answer");
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_completion_replays_and_a_different_body_is_422() {
    let api = JobApi::start(job(1)).await;
    let baton = TestBaton::start(&async_config(&api, "preset = \"location-303\"")).await;
    let key = [("idempotency-key", "k-1")];
    let first = post_body(&baton, &api, &key, "one").await;
    assert_eq!(first.status, 201);
    let polls = api.polls();

    let again = post_body(&baton, &api, &key, "one").await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.body, first.body);
    assert_eq!(
        again.header("x-result"),
        Some("yes"),
        "stored headers come back"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_ne!(
        again.header("x-request-id"),
        first.header("x-request-id"),
        "its own request id"
    );
    assert_eq!(
        (api.submits(), api.polls()),
        (1, polls),
        "no backend call for a replay"
    );

    let problem = post_body(&baton, &api, &key, "two").await.problem(422);
    assert_eq!(problem["type"], "urn:baton:problem:idempotency-key-reused");
    assert_eq!(api.submits(), 1);

    // Without a key, or with another one, each request is its own job.
    post_body(&baton, &api, &[], "one").await;
    post_body(&baton, &api, &[("idempotency-key", "k-2")], "one").await;
    assert_eq!(api.submits(), 3);
}

#[tokio::test(start_paused = true)]
async fn keys_expire_after_their_ttl() {
    let api = JobApi::start(job(0)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nidempotency = { ttl = \"1m\" }",
    ))
    .await;
    let key = [("idempotency-key", "k")];
    post_body(&baton, &api, &key, "x").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    post_body(&baton, &api, &key, "x").await;
    assert_eq!(api.submits(), 1, "within the TTL: replayed");
    tokio::time::sleep(Duration::from_secs(61)).await;
    let after = post_body(&baton, &api, &key, "x").await;
    assert_eq!(after.header("idempotent-replayed"), None);
    assert_eq!(api.submits(), 2, "after the TTL: a new job");
}

#[tokio::test(start_paused = true)]
async fn the_oldest_answers_are_evicted_at_the_memory_bound() {
    let api = JobApi::start(Script {
        outcome: crate::support::jobs::Outcome::Succeed(json!({"pad": "x".repeat(600)})),
        ..job(0)
    })
    .await;
    let toml = async_config(&api, "preset = \"location-303\"").replacen(
        "[backends.jobs]",
        "[server]\nidempotency_memory = \"1KiB\"\n\n[backends.jobs]",
        1,
    );
    let baton = TestBaton::start(&toml).await;
    post_body(&baton, &api, &[("idempotency-key", "a")], "x").await;
    post_body(&baton, &api, &[("idempotency-key", "b")], "x").await;
    assert_eq!(api.submits(), 2);
    // b still fits and replays; a was evicted to make room, so it runs again.
    post_body(&baton, &api, &[("idempotency-key", "b")], "x").await;
    assert_eq!(api.submits(), 2);
    post_body(&baton, &api, &[("idempotency-key", "a")], "x").await;
    assert_eq!(api.submits(), 3);
}

#[tokio::test(start_paused = true)]
async fn keys_are_scoped_by_the_configured_client_header() {
    let api = JobApi::start(job(0)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nidempotency = { scope_header = \"Authorization\" }",
    ))
    .await;
    for who in ["Bearer alice", "Bearer bob", "Bearer alice"] {
        post_body(
            &baton,
            &api,
            &[("idempotency-key", "same"), ("authorization", who)],
            "x",
        )
        .await;
    }
    assert_eq!(
        api.submits(),
        2,
        "alice's retry replays; bob's key is his own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_timeout_follows_the_same_job() {
    let api = JobApi::start(job(20)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"5s\"\nmax_wait = \"10m\"",
    ))
    .await;
    let key = [("idempotency-key", "slow-1")];
    let first = post_body(&baton, &api, &key, "x").await;
    first.problem(504);
    let retried = post_body(
        &baton,
        &api,
        &[("idempotency-key", "slow-1"), ("prefer", "wait=600")],
        "x",
    )
    .await;
    assert_eq!(retried.status, 201, "{}", retried.text());
    assert_eq!(
        api.submits(),
        1,
        "the retry re-attached instead of submitting again"
    );
}

// ---------------------------------------------------------------------------
// Continuation monitors.

#[tokio::test(start_paused = true)]
async fn timeout_hands_out_a_monitor_that_holds_again_then_answers() {
    // Backoff to a 5 s cap: 40 polls outlast the first two 3 s holds.
    let api = JobApi::start(job(40)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"3s\"\non_timeout = \"accepted\"\nidempotency = { enabled = false }",
    ))
    .await;
    let accepted = post(&baton, api.submit_path(), &[]).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text());
    let monitor = accepted.header("location").unwrap().to_owned();
    assert!(monitor.starts_with("/.baton/jobs/"), "{monitor}");
    assert_eq!(accepted.json()["monitor"], monitor.as_str());
    assert_eq!(accepted.json()["job_id"], "job-1");

    // Still running after another hold: the same monitor again.
    let polls = api.polls();
    let again = get(&baton.url(&monitor)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    // A 3 s hold on 100 ms × 1.5 backoff is about 8 polls; a tight loop
    // would be dozens.
    assert!(
        api.polls() - polls <= 12,
        "a resumed hold backs off like the first: {polls} polls, then {}",
        api.polls() - polls
    );
    // A fresh token (each is sealed with its own nonce) for the same job.
    let next = again.header("location").unwrap().to_owned();
    assert!(next.starts_with("/.baton/jobs/"), "{next}");
    assert_eq!(again.json()["job_id"], "job-1");
    // Eventually the job's own result.
    let mut answer = again;
    for _ in 0..100 {
        if answer.status != StatusCode::ACCEPTED {
            break;
        }
        let location = answer.header("location").unwrap().to_owned();
        answer = get(&baton.url(&location)).await;
    }
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.json(), json!({"answer": 42}));
    assert_eq!(api.submits(), 1);
}

#[tokio::test(start_paused = true)]
async fn redirect_mode_points_clients_that_follow_redirects_at_the_monitor() {
    let api = JobApi::start(job(8)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"1s\"\non_timeout = \"redirect\"",
    ))
    .await;
    let mut answer = post(&baton, api.submit_path(), &[]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let monitor = answer.header("location").unwrap().to_owned();
    assert!(monitor.starts_with("/.baton/jobs/"));
    // What a redirect-following client does: GET the Location until done.
    for _ in 0..100 {
        if answer.status != StatusCode::SEE_OTHER {
            break;
        }
        let location = answer.header("location").unwrap().to_owned();
        assert!(location.starts_with("/.baton/jobs/"), "{location}");
        answer = get(&baton.url(&location)).await;
    }
    assert_eq!(answer.status, 201, "{}", answer.text());
}

#[tokio::test(start_paused = true)]
async fn a_forged_or_altered_monitor_is_404_without_a_backend_call() {
    let api = JobApi::start(job(50)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"1s\"\non_timeout = \"accepted\"",
    ))
    .await;
    let monitor = post(&baton, api.submit_path(), &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let seen = api.requests().len();
    let mut altered = monitor.clone().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    for path in [
        altered.as_str(),
        "/.baton/jobs/forged.token",
        "/.baton/jobs/",
    ] {
        let problem = get(&baton.url(path)).await.problem(404);
        assert_eq!(
            problem["type"], "urn:baton:problem:unknown-monitor",
            "{path}"
        );
    }
    assert_eq!(
        api.requests().len(),
        seen,
        "no backend call for a bad token"
    );
}

#[tokio::test(start_paused = true)]
async fn a_monitor_works_on_another_instance_with_the_same_key() {
    let api = JobApi::start(job(8)).await;
    let table = "preset = \"location-303\"\nwait = \"1s\"\non_timeout = \"accepted\"";
    let toml = async_config(&api, table).replacen(
        "[backends.jobs]",
        "[server]\ncontinuation_key = \"0123456789abcdef0123456789abcdef-shared\"\n\n[backends.jobs]",
        1,
    );
    let one = TestBaton::start(&toml).await;
    let two = TestBaton::start(&toml).await;
    let monitor = post(&one, api.submit_path(), &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    let mut answer = get(&two.url(&monitor)).await;
    for _ in 0..100 {
        if answer.status != StatusCode::ACCEPTED {
            break;
        }
        answer = get(&two.url(&monitor)).await;
    }
    assert_eq!(answer.status, 201, "{}", answer.text());
    // An instance with another key does not accept it.
    let other = TestBaton::start(&async_config(&api, table)).await;
    get(&other.url(&monitor)).await.problem(404);
}

// ---------------------------------------------------------------------------
// Limits.

#[tokio::test(start_paused = true)]
async fn held_limits_shed_with_503_and_retry_after() {
    let api = JobApi::start(job(u32::MAX)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"10m\"\nmax_held = 1",
    ))
    .await;
    let url = baton.url(api.submit_path());
    let held = tokio::spawn(async move {
        send(&client(), Request::post(url).body(body::full("x")).unwrap()).await
    });
    api.wait_until(|a| a.polls() >= 1).await;
    let shed = post(&baton, api.submit_path(), &[]).await;
    let problem = shed.problem(503);
    assert_eq!(problem["type"], "urn:baton:problem:overloaded");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("route `facade`"));
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(api.submits(), 1, "a shed request reaches no backend");
    // Pass-through routes are not held requests.
    assert_eq!(get(&baton.url("/status/job-1")).await.status, 200);
    held.abort();

    // The server-wide limit.
    let api = JobApi::start(job(u32::MAX)).await;
    let toml = async_config(&api, "preset = \"location-303\"\nwait = \"10m\"").replacen(
        "[backends.jobs]",
        "[server]\nmax_held = 1\n\n[backends.jobs]",
        1,
    );
    let baton = TestBaton::start(&toml).await;
    let url = baton.url(api.submit_path());
    let held = tokio::spawn(async move {
        send(&client(), Request::post(url).body(body::full("x")).unwrap()).await
    });
    api.wait_until(|a| a.polls() >= 1).await;
    let problem = post(&baton, api.submit_path(), &[]).await.problem(503);
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("Baton holds 1"));
    held.abort();
}

#[tokio::test]
async fn a_route_can_set_its_own_body_limit() {
    let backend = crate::support::Backend::echo().await;
    let toml = route_config(backend.addr, "/small", "preset = \"location-303\"").replace(
        "backend = \"jobs\"\n\n[routes.async]",
        "backend = \"jobs\"\nmax_request_body = \"16B\"\n\n[routes.async]",
    );
    let baton = TestBaton::start(&toml).await;
    let request = Request::post(baton.url("/small"))
        .body(body::full("x".repeat(17)))
        .unwrap();
    send(&client(), request).await.problem(413);
    assert_eq!(backend.count(), 0);
    // Other routes keep the server's limit.
    let request = Request::post(baton.url("/other"))
        .body(body::full("x".repeat(17)))
        .unwrap();
    assert_eq!(send(&client(), request).await.status, 200);
}

// ---------------------------------------------------------------------------
// What a retry finds after Baton, not the job, ended the first attempt.

/// Whatever made Baton give up on a job it had accepted (here: every kind
/// of poll failure, `max_failures` in a row), the record stays resumable:
/// the retry follows the same job and gets its real result, which is then
/// what later retries replay.
#[tokio::test(start_paused = true)]
async fn a_retry_after_failed_polls_resumes_the_job_and_gets_its_result() {
    let flakes = [
        Flake::Status503,
        Flake::Status429 {
            retry_after_secs: 1,
        },
        Flake::Reset,
    ];
    for flake in flakes {
        let api = JobApi::start(Script {
            flaky: (1..=3).map(|poll| (poll, flake.clone())).collect(),
            ..job(2)
        })
        .await;
        let baton = TestBaton::start(&async_config(
            &api,
            "preset = \"location-303\"\nwait = \"30s\"\npoll = { max_failures = 3 }",
        ))
        .await;
        let key = [("idempotency-key", "outage-1")];
        let first = post_body(&baton, &api, &key, "x").await;
        let problem = first.problem(502);
        assert_eq!(
            problem["type"], "urn:baton:problem:job-poll-failed",
            "{flake:?}"
        );

        let retried = post_body(&baton, &api, &key, "x").await;
        assert_eq!(retried.status, 201, "{flake:?}: {}", retried.text());
        assert_eq!(retried.json(), json!({"answer": 42}), "{flake:?}");
        assert_eq!(retried.header("idempotent-replayed"), None, "{flake:?}");
        let again = post_body(&baton, &api, &key, "x").await;
        assert_eq!(again.status, 201, "{flake:?}");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(api.submits(), 1, "{flake:?}: one job for one key");
    }
}

/// After Baton canceled the job at the deadline (`cancel.on_timeout`), a
/// retry follows the same job and sees what the backend made of the
/// cancel: here the job reports itself canceled, a 502 that is the job's
/// own outcome and so is replayed from then on. Never a second submit.
#[tokio::test(start_paused = true)]
async fn a_retry_after_baton_canceled_the_job_sees_the_cancel_as_the_job_reports_it() {
    let api = JobApi::start(job(u32::MAX)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"5s\"\ncancel = { on_timeout = true }",
    ))
    .await;
    let key = [("idempotency-key", "canceled-1")];
    post_body(&baton, &api, &key, "x").await.problem(504);
    api.wait_until(|a| a.cancels() == 1).await;

    let retried = post_body(&baton, &api, &key, "x").await;
    let problem = retried.problem(502);
    assert_eq!(problem["type"], "urn:baton:problem:job-canceled");
    assert_eq!(retried.header("idempotent-replayed"), None);
    // The replay is the first answer as it was, its request id included.
    let again = post_body(&baton, &api, &key, "x").await;
    assert_eq!(again.status, 502);
    assert_eq!(again.json()["type"], "urn:baton:problem:job-canceled");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(api.submits(), 1);
}

/// The key goes to the job API with the submit, so a backend that
/// deduplicates can do so when Baton submits again after an unanswered
/// attempt.
#[tokio::test(start_paused = true)]
async fn the_key_is_forwarded_with_the_submit() {
    let api = JobApi::start(job(1)).await;
    let baton = TestBaton::start(&async_config(&api, "preset = \"location-303\"")).await;
    let answer = post_body(&baton, &api, &[("idempotency-key", "forward-1")], "x").await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let submit = api
        .requests()
        .into_iter()
        .find(|seen| seen.method == http::Method::POST)
        .unwrap();
    assert_eq!(
        submit.headers.get("idempotency-key").unwrap(),
        "forward-1",
        "{:?}",
        submit.headers
    );
}

// ---------------------------------------------------------------------------
// Continuation key rotation.

/// A monitor sealed with a secret that was since rotated out still works
/// on an instance that lists it in `continuation_keys`, and not on one
/// that dropped it.
#[tokio::test(start_paused = true)]
async fn a_rotated_continuation_key_still_opens_the_monitors_it_sealed() {
    let api = JobApi::start(job(8)).await;
    let table = "preset = \"location-303\"\nwait = \"1s\"\non_timeout = \"accepted\"";
    let with_server = |server: &str| {
        async_config(&api, table).replacen(
            "[backends.jobs]",
            &format!("[server]\n{server}\n\n[backends.jobs]"),
            1,
        )
    };
    let old = "continuation_key = \"0123456789abcdef0123456789abcdef-old\"";
    let rotated = "continuation_key = \"0123456789abcdef0123456789abcdef-new\"\n\
                   continuation_keys = [\"0123456789abcdef0123456789abcdef-old\"]";
    let retired = "continuation_key = \"0123456789abcdef0123456789abcdef-new\"";
    let before = TestBaton::start(&with_server(old)).await;
    let after = TestBaton::start(&with_server(rotated)).await;
    let gone = TestBaton::start(&with_server(retired)).await;
    let monitor = post(&before, api.submit_path(), &[])
        .await
        .header("location")
        .unwrap()
        .to_owned();
    get(&gone.url(&monitor)).await.problem(404);
    let mut answer = get(&after.url(&monitor)).await;
    for _ in 0..100 {
        if answer.status != StatusCode::ACCEPTED {
            break;
        }
        // The rotated instance hands out monitors under its new secret,
        // which the retired-key instance opens too.
        let next = answer.header("location").unwrap().to_owned();
        answer = get(&gone.url(&next)).await;
    }
    assert_eq!(answer.status, 201, "{}", answer.text());
}
