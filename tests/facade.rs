//! The sync facade end to end: a blocking client request through Baton to
//! a fake job API of each dialect, and every way a job can end.
//!
//! Tests where the clock matters run on paused tokio time: Baton, the fake
//! backend and the client share one runtime, so a 30 s deadline passes
//! instantly and exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::body;
use http::{Request, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::support::jobs::{
    async_config, post, submit_then_hang_up, Dialect, JobApi, Outcome, RetryAfter, Script, UrlStyle,
};
use crate::support::{client, send, Answer, TestBaton};

/// A shipped dialect example, pointed at `api`.
fn dialect_file(file: &str, api: &JobApi) -> String {
    let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        text.contains("http://127.0.0.1:3000"),
        "{file} names the placeholder backend"
    );
    text.replace("http://127.0.0.1:3000", &format!("http://{}", api.addr))
}

async fn submit(baton: &TestBaton, api: &JobApi, headers: &[(&str, &str)]) -> Answer {
    post(baton, api.submit_path(), headers).await
}

fn script(dialect: Dialect) -> Script {
    Script {
        dialect,
        ..Script::default()
    }
}

// ---------------------------------------------------------------------------
// Every dialect, end to end, from its example config.

async fn happy(file: &str, dialect: Dialect, expect_status: u16) -> (JobApi, Answer) {
    let api = JobApi::start(Script {
        outcome: Outcome::Succeed(json!({"total": 42, "rows": [1, 2]})),
        ..script(dialect)
    })
    .await;
    let baton = TestBaton::start(&dialect_file(file, &api)).await;
    let answer = submit(&baton, &api, &[("authorization", "Bearer secret")]).await;
    assert_eq!(
        answer.status.as_u16(),
        expect_status,
        "{file}: {}",
        answer.text()
    );
    assert_eq!(
        answer.json(),
        json!({"total": 42, "rows": [1, 2]}),
        "{file}"
    );
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(api.submits(), 1, "{file}: one submit");
    assert_eq!(
        api.submit_bodies(),
        [r#"{"report":"q3"}"#],
        "{file}: the body, once"
    );
    assert_eq!(api.polls(), 3, "{file}: two running answers, then done");
    // Correlation and credentials reach every call on the backend's origin.
    let request_id = answer.header("x-request-id").unwrap();
    let traceparent = answer.header("traceparent").unwrap();
    for seen in api.requests() {
        assert_eq!(
            seen.headers["x-request-id"], request_id,
            "{file}: {}",
            seen.uri
        );
        assert_eq!(
            seen.headers["traceparent"], traceparent,
            "{file}: {}",
            seen.uri
        );
        assert_eq!(
            seen.headers["authorization"], "Bearer secret",
            "{file}: {}",
            seen.uri
        );
    }
    (api, answer)
}

#[tokio::test(start_paused = true)]
async fn dialect_a_location_303() {
    let (api, answer) = happy("dialect-location-303.toml", Dialect::Location303, 201).await;
    assert_eq!(api.fetches(), 1, "the 303's Location is fetched");
    let fetch = api
        .requests()
        .into_iter()
        .find(|s| s.uri.path().starts_with("/result/"))
        .unwrap();
    assert_eq!(
        fetch.method,
        http::Method::GET,
        "after a 303: GET, never a re-POST"
    );
    assert_eq!(
        answer.header("x-result"),
        Some("yes"),
        "the result's headers come along"
    );
}

#[tokio::test(start_paused = true)]
async fn dialect_b_operation_location() {
    let (api, _) = happy(
        "dialect-operation-location.toml",
        Dialect::OperationLocation,
        200,
    )
    .await;
    let poll = api
        .requests()
        .into_iter()
        .find(|s| s.uri.path().starts_with("/operations/"))
        .unwrap();
    assert_eq!(
        poll.headers["accept"], "application/json",
        "the route's poll headers"
    );
}

#[tokio::test(start_paused = true)]
async fn dialect_c_google_operation() {
    happy("dialect-google-operation.toml", Dialect::Google, 200).await;
}

#[tokio::test(start_paused = true)]
async fn dialect_d_status_field() {
    happy("dialect-status-field.toml", Dialect::StatusField, 200).await;
}

#[tokio::test(start_paused = true)]
async fn dialect_e_accepted_while_running() {
    happy(
        "dialect-accepted-while-running.toml",
        Dialect::AcceptedWhileRunning,
        200,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn job_api_matching_no_preset_is_fronted_by_config_alone() {
    let (api, _) = happy("dialect-custom.toml", Dialect::Custom, 200).await;
    assert_eq!(api.fetches(), 1, "the result at {{status_url}}/results");
}

// ---------------------------------------------------------------------------
// How jobs end other than well.

#[tokio::test(start_paused = true)]
async fn failed_jobs_answer_the_failure_status_with_the_backends_error() {
    let cases = [
        (
            "dialect-location-303.toml",
            Dialect::Location303,
            json!({"message": "disk full"}),
            502,
            json!({"message": "disk full"}),
        ),
        (
            "dialect-operation-location.toml",
            Dialect::OperationLocation,
            json!({"code": "Bad", "message": "bad page"}),
            502,
            json!("bad page"),
        ),
        (
            "dialect-google-operation.toml",
            Dialect::Google,
            json!({"code": 3, "message": "bad input"}),
            502,
            json!("bad input"),
        ),
        (
            "dialect-status-field.toml",
            Dialect::StatusField,
            json!("Traceback: ZeroDivisionError"),
            502,
            json!("Traceback: ZeroDivisionError"),
        ),
        (
            "dialect-accepted-while-running.toml",
            Dialect::AcceptedWhileRunning,
            json!("orchestrator crashed"),
            502,
            json!("orchestrator crashed"),
        ),
        (
            "dialect-custom.toml",
            Dialect::Custom,
            json!({"why": "quota"}),
            500,
            json!({"why": "quota"}),
        ),
    ];
    for (file, dialect, error, status, shown) in cases {
        let api = JobApi::start(Script {
            outcome: Outcome::Fail(error),
            ..script(dialect)
        })
        .await;
        let baton = TestBaton::start(&dialect_file(file, &api)).await;
        let problem = submit(&baton, &api, &[]).await.problem(status);
        assert_eq!(problem["type"], "urn:baton:problem:job-failed", "{file}");
        assert_eq!(problem["error"], shown, "{file}");
        assert!(
            problem["job_id"].as_str().unwrap().contains("job-1"),
            "{file}: {problem}"
        );
        assert!(
            problem["status_url"].as_str().unwrap().starts_with('/'),
            "{file}: {problem}"
        );
        assert_eq!(api.fetches(), 0, "{file}: no result to fetch");
    }
}

#[tokio::test(start_paused = true)]
async fn canceled_and_vanished_jobs_are_502s_saying_which() {
    for (outcome, slug) in [
        (Outcome::Cancel, "job-canceled"),
        (Outcome::Vanish, "job-gone"),
    ] {
        for (file, dialect) in [
            ("dialect-location-303.toml", Dialect::Location303),
            ("dialect-status-field.toml", Dialect::StatusField),
            ("dialect-google-operation.toml", Dialect::Google),
        ] {
            if matches!((&outcome, &dialect), (Outcome::Cancel, Dialect::Google)) {
                continue; // Google reports a canceled operation as an error.
            }
            let api = JobApi::start(Script {
                outcome: outcome.clone(),
                ..script(dialect)
            })
            .await;
            let baton = TestBaton::start(&dialect_file(file, &api)).await;
            let problem = submit(&baton, &api, &[]).await.problem(502);
            assert_eq!(
                problem["type"],
                format!("urn:baton:problem:{slug}"),
                "{file}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn not_found_means_gone_unless_the_route_says_not_known_yet() {
    let unknown = || Script {
        unknown_first: 2,
        ..script(Dialect::Location303)
    };
    let api = JobApi::start(unknown()).await;
    let baton = TestBaton::start(&async_config(&api, r#"preset = "location-303""#)).await;
    let problem = submit(&baton, &api, &[]).await.problem(502);
    assert_eq!(problem["type"], "urn:baton:problem:job-gone");
    assert_eq!(api.polls(), 1);

    let api = JobApi::start(unknown()).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nstate = { not_found = \"running\" }",
    ))
    .await;
    let answer = submit(&baton, &api, &[]).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(api.polls(), 5, "two 404s, two running, one done");
}

// ---------------------------------------------------------------------------
// The schedule.

#[tokio::test(start_paused = true)]
async fn retry_after_in_every_form_is_obeyed_and_kept() {
    let forms = [
        (RetryAfter::Seconds(3), Duration::from_secs(3)),
        (RetryAfter::HttpDate(4), Duration::from_secs(4)),
        (RetryAfter::Millis(1500), Duration::from_millis(1500)),
        (RetryAfter::MsMillis(2500), Duration::from_millis(2500)),
    ];
    for (form, delay) in forms {
        for only_on_submit in [false, true] {
            let api = JobApi::start(Script {
                retry_after: Some(form.clone()),
                retry_after_only_on_submit: only_on_submit,
                ..script(Dialect::AcceptedWhileRunning)
            })
            .await;
            let baton = TestBaton::start(&async_config(
                &api,
                "preset = \"accepted-while-running\"\npoll = { max_interval = \"10s\" }",
            ))
            .await;
            let started = Instant::now();
            let answer = submit(&baton, &api, &[]).await;
            let waited = started.elapsed();
            assert_eq!(answer.status, 200, "{form:?}");
            assert_eq!(api.polls(), 3);
            // Three polls, each after the advertised delay (an HTTP-date has
            // whole seconds, so it may round up by one).
            let least = delay * 3;
            assert!(
                waited >= least - Duration::from_secs(1)
                    && waited <= least + Duration::from_secs(3),
                "{form:?} only_on_submit={only_on_submit}: waited {waited:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_clamped_to_the_routes_interval() {
    let api = JobApi::start(Script {
        retry_after: Some(RetryAfter::Seconds(3600)),
        ..script(Dialect::AcceptedWhileRunning)
    })
    .await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"accepted-while-running\"\npoll = { max_interval = \"2s\" }",
    ))
    .await;
    let started = Instant::now();
    assert_eq!(submit(&baton, &api, &[]).await.status, 200);
    assert!(
        started.elapsed() <= Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn without_retry_after_polling_backs_off() {
    let api = JobApi::start(Script {
        polls_until_done: 12,
        ..script(Dialect::StatusField)
    })
    .await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"status-field\"\nwait = \"5m\"\npoll = { initial = \"100ms\", factor = 2.0, jitter = 0.0, max_interval = \"10s\" }",
    ))
    .await;
    let started = Instant::now();
    assert_eq!(submit(&baton, &api, &[]).await.status, 200);
    // 0.1 + 0.2 + ... + 6.4 + 10 × 6 = 72.7 s: doubling, then the cap.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(72_700) && waited < Duration::from_secs(74),
        "{waited:?}"
    );
    assert_eq!(api.polls(), 13);
}

// ---------------------------------------------------------------------------
// Deadlines, Prefer, cancel.

fn endless(dialect: Dialect) -> Script {
    Script {
        polls_until_done: u32::MAX,
        ..script(dialect)
    }
}

#[tokio::test(start_paused = true)]
async fn deadline_is_a_504_with_the_job_and_its_status_url() {
    let api = JobApi::start(Script {
        urls: UrlStyle::Absolute,
        ..endless(Dialect::Location303)
    })
    .await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"20s\"",
    ))
    .await;
    let started = Instant::now();
    let answer = submit(&baton, &api, &[]).await;
    let waited = started.elapsed();
    let problem = answer.problem(504);
    assert_eq!(problem["type"], "urn:baton:problem:job-timeout");
    assert_eq!(problem["job_id"], "job-1");
    assert_eq!(
        problem["status_url"], "/status/job-1",
        "a path through Baton, not the backend's address"
    );
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
        "{waited:?}"
    );
    assert_eq!(answer.header("preference-applied"), None);
    assert_eq!(api.cancels(), 0, "no cancel unless configured");
}

#[tokio::test(start_paused = true)]
async fn prefer_wait_shortens_or_extends_the_hold_up_to_max_wait() {
    let api = JobApi::start(endless(Dialect::StatusField)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"status-field\"\nwait = \"20s\"\nmax_wait = \"60s\"",
    ))
    .await;
    for (asked, applied) in [
        ("wait=5", 5u64),
        ("wait=45", 45),
        ("respond-sync, wait=600", 60),
    ] {
        let started = Instant::now();
        let answer = submit(&baton, &api, &[("prefer", asked)]).await;
        let waited = started.elapsed();
        answer.problem(504);
        assert_eq!(
            answer.header("preference-applied"),
            Some(format!("wait={applied}").as_str())
        );
        let applied = Duration::from_secs(applied);
        assert!(
            waited >= applied && waited < applied + Duration::from_secs(1),
            "{asked}: {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cancel_at_the_deadline_when_configured() {
    let api = JobApi::start(endless(Dialect::Location303)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"5s\"\ncancel = { on_timeout = true }",
    ))
    .await;
    submit(&baton, &api, &[("authorization", "Bearer t")])
        .await
        .problem(504);
    api.wait_until(|a| a.cancels() == 1).await;
    let cancel = api
        .requests()
        .into_iter()
        .find(|s| s.method == http::Method::DELETE)
        .unwrap();
    assert_eq!(cancel.uri.path(), "/status/job-1");
    assert_eq!(cancel.headers["authorization"], "Bearer t");
}

#[tokio::test(start_paused = true)]
async fn client_gone_stops_polling_and_cancels_when_configured() {
    let api = JobApi::start(endless(Dialect::Location303)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"10m\"\ncancel = { on_disconnect = true }",
    ))
    .await;
    submit_then_hang_up(&baton, &api).await;
    api.wait_until(|a| a.cancels() == 1).await;
    let polls = api.polls();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(api.polls(), polls, "no poll after the client left");
}

#[tokio::test(start_paused = true)]
async fn client_gone_stops_polling_without_cancel_by_default() {
    let api = JobApi::start(endless(Dialect::Location303)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nwait = \"10m\"",
    ))
    .await;
    submit_then_hang_up(&baton, &api).await;
    let polls = api.polls();
    // Two minutes of the 5 s backoff cap would be 24 more polls; allow the
    // one that may have been in flight when the client left.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        api.polls() <= polls + 1,
        "{} polls after {polls}",
        api.polls()
    );
    assert_eq!(api.cancels(), 0);
}

// ---------------------------------------------------------------------------
// What passes through untouched.

#[tokio::test(start_paused = true)]
async fn respond_async_passes_the_accepted_answer_with_the_monitor_through_baton() {
    let api = JobApi::start(Script {
        urls: UrlStyle::Absolute,
        ..script(Dialect::Location303)
    })
    .await;
    let baton = TestBaton::start(&dialect_file("dialect-location-303.toml", &api)).await;
    let answer = submit(&baton, &api, &[("prefer", "respond-async")]).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.header("location"), Some("/status/job-1"));
    assert_eq!(answer.header("preference-applied"), Some("respond-async"));
    assert_eq!(api.polls(), 0);
    // The rewritten monitor works through Baton's pass-through route.
    let status = crate::support::get(&baton.url("/status/job-1")).await;
    assert_eq!(status.json(), json!({"status": "Running"}));
}

#[tokio::test(start_paused = true)]
async fn answers_that_are_not_jobs_pass_through_unchanged() {
    let api = JobApi::start(Script {
        sync_answer: true,
        ..script(Dialect::Location303)
    })
    .await;
    let baton = TestBaton::start(&dialect_file("dialect-location-303.toml", &api)).await;
    let answer = submit(&baton, &api, &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"sync": true}));

    let api = JobApi::start(Script {
        reject_submit: Some(422),
        ..script(Dialect::StatusField)
    })
    .await;
    let baton = TestBaton::start(&dialect_file("dialect-status-field.toml", &api)).await;
    let answer = submit(&baton, &api, &[]).await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.json(), json!({"title": "rejected"}));
    assert_eq!(api.polls(), 0);

    // A Google-style 200 without an operation name is the answer itself.
    let api = JobApi::start(Script {
        sync_answer: true,
        ..script(Dialect::Google)
    })
    .await;
    let baton = TestBaton::start(&dialect_file("dialect-google-operation.toml", &api)).await;
    assert_eq!(
        submit(&baton, &api, &[]).await.json(),
        json!({"sync": true})
    );
    assert_eq!(api.polls(), 0);
}

#[tokio::test(start_paused = true)]
async fn submit_headers_are_added_to_the_submit_only() {
    let api = JobApi::start(script(Dialect::Location303)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"location-303\"\nsubmit_headers = { Prefer = \"respond-async\" }\npoll_headers = { Accept = \"application/json\" }",
    ))
    .await;
    assert_eq!(submit(&baton, &api, &[]).await.status, 201);
    let requests = api.requests();
    assert_eq!(requests[0].headers["prefer"], "respond-async");
    assert!(
        !requests[0].headers.contains_key("accept")
            || requests[0].headers["accept"] != "application/json"
    );
    for poll in &requests[1..] {
        assert!(!poll.headers.contains_key("prefer"), "{}", poll.uri);
        assert_eq!(poll.headers["accept"], "application/json", "{}", poll.uri);
    }
}

// ---------------------------------------------------------------------------
// Results that live elsewhere: Azure's final-state-via choices.

/// An Operation-Location API whose finished status points at the resource
/// (`resourceLocation`), which also lives at the URI the client wrote to.
async fn resource_api() -> crate::support::Backend {
    use crate::support::Backend;
    Backend::start(|request: http::Request<hyper::body::Incoming>| async move {
        let reply = |status: u16, headers: &[(&str, &str)], body: &str| {
            let mut builder = http::Response::builder().status(status);
            for (n, v) in headers {
                builder = builder.header(*n, *v);
            }
            builder.body(body::full(body.to_owned())).unwrap()
        };
        match (request.method().as_str(), request.uri().path()) {
            ("PUT" | "POST", "/documents/9") => {
                reply(202, &[("operation-location", "/operations/1")], "")
            }
            ("GET", "/operations/1") => reply(
                200,
                &[("content-type", "application/json")],
                r#"{"id":"1","status":"Succeeded","resourceLocation":"/documents/9"}"#,
            ),
            ("GET", "/documents/9") => {
                reply(200, &[("content-type", "text/plain")], "document nine")
            }
            _ => reply(404, &[], ""),
        }
    })
    .await
}

fn resource_config(backend: std::net::SocketAddr, method: &str, result: &str) -> String {
    format!(
        r#"
[backends.docs]
url = "http://{backend}"

[[routes]]
name = "documents"
match = {{ methods = ["{method}"], path = "/documents/{{id}}" }}
backend = "docs"

[routes.async]
preset = "operation-location"
result = {result}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn result_from_a_url_in_the_status_body() {
    let api = resource_api().await;
    let baton = TestBaton::start(&resource_config(
        api.addr,
        "POST",
        r#"{ from = "url-pointer", pointer = "/resourceLocation" }"#,
    ))
    .await;
    let request = Request::post(baton.url("/documents/9"))
        .body(body::full("x"))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "document nine");
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    let calls: Vec<String> = api
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(
        calls,
        ["POST /documents/9", "GET /operations/1", "GET /documents/9"]
    );
}

#[tokio::test(start_paused = true)]
async fn result_by_getting_the_original_uri() {
    let api = resource_api().await;
    let baton = TestBaton::start(&resource_config(
        api.addr,
        "PUT",
        r#"{ from = "original-uri" }"#,
    ))
    .await;
    let request = Request::put(baton.url("/documents/9"))
        .body(body::full("x"))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "document nine");
    let calls: Vec<String> = api
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect();
    assert_eq!(
        calls,
        ["PUT /documents/9", "GET /operations/1", "GET /documents/9"],
        "the original URI is re-read with GET, never re-PUT"
    );
}

#[tokio::test(start_paused = true)]
async fn a_configured_cancel_request_is_sent_instead_of_a_delete() {
    let api = JobApi::start(endless(Dialect::Google)).await;
    let baton = TestBaton::start(&async_config(
        &api,
        "preset = \"google-operation\"\nwait = \"5s\"\ncancel = { on_timeout = true, method = \"POST\", url = \"{status_url}:cancel\" }",
    ))
    .await;
    submit(&baton, &api, &[]).await.problem(504);
    api.wait_until(|a| a.cancels() == 1).await;
    let cancel = api
        .requests()
        .into_iter()
        .find(|s| s.uri.path().ends_with(":cancel"))
        .unwrap();
    assert_eq!(cancel.method, http::Method::POST);
    assert_eq!(cancel.uri.path(), "/v1/operations/job-1:cancel");
    assert!(!api
        .requests()
        .iter()
        .any(|s| s.method == http::Method::DELETE));
}

/// A job API whose every job takes `length`, told by the clock rather than
/// by a count of polls; records when each job finished.
async fn timed_jobs(length: Duration) -> (crate::support::Backend, Arc<Mutex<Vec<Instant>>>) {
    let started: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let finished: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (s, f) = (started.clone(), finished.clone());
    let backend =
        crate::support::Backend::start(move |request: http::Request<hyper::body::Incoming>| {
            let (started, finished) = (s.clone(), f.clone());
            async move {
                let path = request.uri().path().to_owned();
                let reply = |status: u16, location: Option<String>, body: &str| {
                    let mut b = http::Response::builder().status(status);
                    if let Some(l) = location {
                        b = b.header("location", l);
                    }
                    b.body(body::full(body.to_owned())).unwrap()
                };
                if path == "/reports" {
                    let mut started = started.lock().unwrap();
                    started.push(Instant::now());
                    return reply(202, Some(format!("/status/{}", started.len() - 1)), "");
                }
                let id: usize = path
                    .rsplit('/')
                    .next()
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0);
                let begun = started.lock().unwrap()[id];
                if begun.elapsed() < length {
                    return reply(200, None, r#"{"status":"Running"}"#);
                }
                let mut finished = finished.lock().unwrap();
                if finished.len() <= id {
                    finished.resize(id + 1, begun + length);
                }
                reply(200, None, r#"{"status":"Succeeded"}"#)
            }
        })
        .await;
    (backend, finished)
}

#[tokio::test(start_paused = true)]
async fn adaptive_polling_learns_the_job_length_and_answers_promptly_with_few_polls() {
    let length = Duration::from_secs(20);
    let (backend, finished) = timed_jobs(length).await;
    let toml = crate::support::jobs::route_config(
        backend.addr,
        "/reports",
        "preset = \"location-303\"\nwait = \"2m\"\npoll = { max_interval = \"30s\" }",
    );
    let baton = TestBaton::start(&toml).await;
    let polls_of = |backend: &crate::support::Backend, id: usize| {
        backend
            .seen()
            .iter()
            .filter(|s| s.uri.path() == format!("/status/{id}"))
            .count()
    };
    for id in 0..4 {
        let answer = post(&baton, "/reports", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let delay = Instant::now() - finished.lock().unwrap()[id];
        if id == 3 {
            // Learned: polled just before the usual length, then in steps.
            assert!(
                polls_of(&backend, id) <= 3,
                "{} polls",
                polls_of(&backend, id)
            );
            assert!(
                delay <= length / 10,
                "answered {delay:?} after the job finished"
            );
        } else {
            assert!(polls_of(&backend, id) >= 5, "still learning: plain backoff");
        }
    }
}
