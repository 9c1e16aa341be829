//! The sync facade at its edges: the ways a job API can lead Baton astray
//! or answer badly, and what the client sees then. Off-origin monitors
//! (refused, or allowed without the client's credentials), redirect loops
//! and hop limits, oversized status and result bodies, missing and hostile
//! handles, unreadable status answers, submits that are not jobs, a backend
//! that refuses the result fetch, and transient poll failures.
//!
//! Where no fake dialect of `support::jobs` misbehaves the right way, a
//! tiny job API is written inline on `support::Backend`. Tests run on
//! paused tokio time: the fakes, Baton and the client share one runtime,
//! so poll delays and deadlines pass instantly.

use std::sync::Arc;

use baton::body::{self, Body};
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::support::jobs::{
    async_config, post, route_config, Dialect, Flake, JobApi, Script, UrlStyle,
};
use crate::support::{closed_port, Answer, Backend, TestBaton};

/// Asserts a problem answer of `status` whose type is `slug`.
fn problem(answer: &Answer, status: u16, slug: &str) -> Value {
    let json = answer.problem(status);
    assert_eq!(
        json["type"],
        format!("urn:baton:problem:{slug}"),
        "problem: {json}"
    );
    json
}

fn detail(problem: &Value) -> &str {
    problem["detail"]
        .as_str()
        .expect("the problem has a detail")
}

/// A whole answer for an inline job API.
fn reply(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(body::full(body)).unwrap()
}

/// An inline job API: `answer` maps a request's method and path to its
/// answer. The request body is read first, so every connection stays
/// reusable for Baton's pool.
async fn job_backend<F>(answer: F) -> Backend
where
    F: Fn(&Method, &str) -> Response<Body> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    Backend::start(move |request: Request<Incoming>| {
        let answer = Arc::clone(&answer);
        async move {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let _ = request.into_body().collect().await;
            answer(&method, &path)
        }
    })
    .await
}

/// The paths a backend was asked for, in order.
fn paths(backend: &Backend) -> Vec<String> {
    backend
        .seen()
        .iter()
        .map(|s| s.uri.path().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// Where followed URLs may point.

#[tokio::test(start_paused = true)]
async fn off_origin_status_url_is_refused_before_any_call() {
    let other = Backend::start(|_| async { reply(200, &[], "") }).await;
    let api = JobApi::start(Script {
        urls: UrlStyle::OffOrigin(other.addr),
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(&api, r#"preset = "location-303""#)).await;

    let answer = post(&baton, api.submit_path(), &[]).await;
    let problem = problem(&answer, 502, "job-off-origin");
    let url = format!("http://{}/status/job-1", other.addr);
    assert!(detail(&problem).contains(&url), "{problem}");
    assert_eq!(other.count(), 0, "Baton never called the other origin");
    assert_eq!((api.submits(), api.polls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn allow_listed_origin_is_followed_without_the_clients_credentials() {
    let other = job_backend(|_, path| match path {
        "/status/job-1" => reply(303, &[("location", "/result/job-1")], ""),
        "/result/job-1" => reply(
            200,
            &[("content-type", "application/json")],
            r#"{"ok":true}"#,
        ),
        _ => reply(404, &[], ""),
    })
    .await;
    let api = JobApi::start(Script {
        urls: UrlStyle::OffOrigin(other.addr),
        ..Script::default()
    })
    .await;
    let table = format!(
        "preset = \"location-303\"\nforward_headers = [\"X-Tenant\"]\nallow_origins = [\"http://127.0.0.1:{}\"]",
        other.addr.port()
    );
    let baton = TestBaton::start(&async_config(&api, &table)).await;

    let credentials = [
        ("authorization", "Bearer secret"),
        ("cookie", "session=abc"),
        ("x-tenant", "acme"),
    ];
    let answer = post(&baton, api.submit_path(), &credentials).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"ok": true}));

    assert_eq!(paths(&other), ["/status/job-1", "/result/job-1"]);
    let request_id = answer.header("x-request-id").unwrap();
    for seen in other.seen() {
        for (name, _) in credentials {
            assert!(
                !seen.headers.contains_key(name),
                "{name} went off-origin to {}",
                seen.uri
            );
        }
        assert_eq!(seen.headers["x-request-id"], request_id, "{}", seen.uri);
    }
    assert_eq!((api.submits(), api.polls(), api.fetches()), (1, 0, 0));
    let submit = &api.requests()[0];
    for (name, value) in credentials {
        assert_eq!(submit.headers[name], value, "the submit carries {name}");
    }
}

// ---------------------------------------------------------------------------
// Fetching the result: redirects and sizes.

#[tokio::test(start_paused = true)]
async fn redirect_loop_fetching_the_result_is_a_502() {
    let api = job_backend(|method, path| match (method.as_str(), path) {
        ("POST", "/reports") => reply(202, &[("location", "/status/1")], ""),
        ("GET", "/status/1") => reply(303, &[("location", "/r/a")], ""),
        ("GET", "/r/a") => reply(302, &[("location", "/r/b")], ""),
        ("GET", "/r/b") => reply(302, &[("location", "/r/a")], ""),
        _ => reply(404, &[], ""),
    })
    .await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/reports",
        r#"preset = "location-303""#,
    ))
    .await;

    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-too-many-hops");
    assert_eq!(problem["job_id"], "1");
    assert_eq!(problem["status_url"], "/status/1");
    assert_eq!(
        paths(&api),
        ["/reports", "/status/1", "/r/a", "/r/b"],
        "the loop is seen, not walked"
    );
}

/// A result behind a chain of redirects: `/r/1` → `/r/2` → … → `/r/{last}`,
/// which answers 200.
async fn redirect_chain(last: u32) -> Backend {
    job_backend(move |_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(303, &[("location", "/r/1")], ""),
        _ => match path.strip_prefix("/r/").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if n < last => reply(302, &[("location", &format!("/r/{}", n + 1))], ""),
            Some(n) if n == last => reply(200, &[("content-type", "text/plain")], "done"),
            _ => reply(404, &[], ""),
        },
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn redirect_chain_longer_than_max_hops_is_a_502() {
    let table = "preset = \"location-303\"\nmax_hops = 2";

    // Two redirects after the monitor's 303: within the limit.
    let api = redirect_chain(3).await;
    let baton = TestBaton::start(&route_config(api.addr, "/reports", table)).await;
    let answer = post(&baton, "/reports", &[]).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text());
    assert_eq!(answer.text(), "done");

    // Three: one too many, and the fourth resource is never asked for.
    let api = redirect_chain(4).await;
    let baton = TestBaton::start(&route_config(api.addr, "/reports", table)).await;
    let answer = post(&baton, "/reports", &[]).await;
    problem(&answer, 502, "job-too-many-hops");
    assert_eq!(
        paths(&api),
        ["/reports", "/status/1", "/r/1", "/r/2", "/r/3"]
    );
}

#[tokio::test(start_paused = true)]
async fn status_body_over_max_status_body_is_a_502() {
    let big = json!({"status": "Running", "pad": "x".repeat(4096)}).to_string();
    let api = job_backend(move |_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(200, &[("content-type", "application/json")], big.clone()),
        _ => reply(404, &[], ""),
    })
    .await;
    let table = "preset = \"location-303\"\nmax_status_body = \"1KiB\"";
    let baton = TestBaton::start(&route_config(api.addr, "/reports", table)).await;

    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-body-too-large");
    assert!(detail(&problem).contains("status body"), "{problem}");
    assert!(detail(&problem).contains("1024"), "{problem}");
    assert_eq!(problem["job_id"], "1");
    assert_eq!(paths(&api), ["/reports", "/status/1"], "one poll, no retry");
}

#[tokio::test(start_paused = true)]
async fn result_declared_over_max_result_body_is_a_502() {
    let api = job_backend(|_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(303, &[("location", "/result/1")], ""),
        "/result/1" => reply(
            200,
            &[("content-type", "application/octet-stream")],
            vec![b'r'; 4096],
        ),
        _ => reply(404, &[], ""),
    })
    .await;
    let table = "preset = \"location-303\"\nmax_result_body = \"1KiB\"";
    let baton = TestBaton::start(&route_config(api.addr, "/reports", table)).await;

    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-body-too-large");
    assert!(detail(&problem).contains("result body"), "{problem}");
    assert_eq!(problem["status_url"], "/status/1");
    assert_eq!(paths(&api), ["/reports", "/status/1", "/result/1"]);
}

// ---------------------------------------------------------------------------
// The submit's answer: handles missing or hostile, answers that are not jobs.

/// A job API whose submit answers 202 with a body but no handle header.
async fn handleless() -> Backend {
    job_backend(|_, path| match path {
        "/reports" => reply(
            202,
            &[("content-type", "application/json"), ("x-queue", "7")],
            r#"{"queued":true}"#,
        ),
        _ => reply(404, &[], ""),
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn accepted_without_a_handle_is_a_502_unless_the_route_needs_one() {
    let api = handleless().await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/reports",
        r#"preset = "location-303""#,
    ))
    .await;
    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-no-handle");
    // Header names are case-insensitive; Baton writes them in lower case.
    assert!(
        detail(&problem).to_ascii_lowercase().contains("location"),
        "the detail names the missing header: {problem}"
    );
    assert_eq!(api.count(), 1);

    let api = handleless().await;
    let table = "preset = \"location-303\"\njob = { needs_handle = true }";
    let baton = TestBaton::start(&route_config(api.addr, "/reports", table)).await;
    let answer = post(&baton, "/reports", &[]).await;
    assert_eq!(answer.status.as_u16(), 202, "{}", answer.text());
    assert_eq!(answer.text(), r#"{"queued":true}"#);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-queue"), Some("7"));
    assert_eq!(paths(&api), ["/reports"], "no polls");
}

/// A task API whose submit names a task id that would climb out of the
/// `/tasks/{id}` template.
async fn escaping_task_api() -> Backend {
    job_backend(|_, path| match path {
        "/tasks" => reply(
            202,
            &[("content-type", "application/json")],
            r#"{"task_id":"../admin","state":"PENDING"}"#,
        ),
        "/admin" => reply(200, &[("content-type", "text/plain")], "admin console"),
        _ => reply(
            200,
            &[("content-type", "application/json")],
            r#"{"state":"SUCCESS","result":"leaked"}"#,
        ),
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn template_handle_that_escapes_its_path_is_never_followed() {
    let api = escaping_task_api().await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/tasks",
        r#"preset = "status-field""#,
    ))
    .await;
    let answer = post(&baton, "/tasks", &[]).await;
    assert!(
        !answer.text().contains("admin console") && !answer.text().contains("leaked"),
        "{}",
        answer.text()
    );
    assert_eq!(paths(&api), ["/tasks"], "no call to /admin, no poll");
}

#[tokio::test(start_paused = true)]
async fn template_handle_that_escapes_its_path_is_a_bad_answer() {
    let api = escaping_task_api().await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/tasks",
        r#"preset = "status-field""#,
    ))
    .await;
    let answer = post(&baton, "/tasks", &[]).await;
    let problem = problem(&answer, 502, "job-bad-answer");
    assert!(detail(&problem).contains("/task_id"), "{problem}");
    assert_eq!(paths(&api), ["/tasks"], "no call to /admin, no poll");
}

#[tokio::test(start_paused = true)]
async fn status_monitor_answering_403_is_a_bad_answer() {
    let api = job_backend(|_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(403, &[("content-type", "text/plain")], "forbidden"),
        _ => reply(404, &[], ""),
    })
    .await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/reports",
        r#"preset = "location-303""#,
    ))
    .await;
    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-bad-answer");
    assert!(detail(&problem).contains("403"), "{problem}");
    assert_eq!(problem["job_id"], "1");
    assert_eq!(problem["status_url"], "/status/1");
    assert_eq!(
        paths(&api),
        ["/reports", "/status/1"],
        "a 403 is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn status_body_that_is_not_json_is_a_bad_answer() {
    let api = job_backend(|_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(200, &[("content-type", "text/html")], "<html>busy</html>"),
        _ => reply(404, &[], ""),
    })
    .await;
    let baton = TestBaton::start(&route_config(
        api.addr,
        "/reports",
        r#"preset = "location-303""#,
    ))
    .await;
    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-bad-answer");
    assert!(detail(&problem).contains("not JSON"), "{problem}");
    assert_eq!(paths(&api), ["/reports", "/status/1"]);
}

#[tokio::test(start_paused = true)]
async fn submits_that_are_not_jobs_pass_through_unchanged() {
    let rejecting = JobApi::start(Script {
        reject_submit: Some(422),
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(&rejecting, r#"preset = "location-303""#)).await;
    let answer = post(&baton, rejecting.submit_path(), &[]).await;
    assert_eq!(answer.status.as_u16(), 422);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(answer.json(), json!({"title": "rejected"}));
    assert_eq!((rejecting.submits(), rejecting.polls()), (1, 0));

    let sync = JobApi::start(Script {
        sync_answer: true,
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(&sync, r#"preset = "location-303""#)).await;
    let answer = post(&baton, sync.submit_path(), &[]).await;
    assert_eq!(answer.status.as_u16(), 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.json(), json!({"sync": true}));
    assert_eq!((sync.submits(), sync.polls()), (1, 0));
}

// ---------------------------------------------------------------------------
// Calls that fail.

#[tokio::test(start_paused = true)]
async fn refused_result_fetch_is_a_backend_call_failure() {
    let closed = closed_port().await;
    let result = format!("http://{closed}/result/1");
    let api = job_backend(move |_, path| match path {
        "/reports" => reply(202, &[("location", "/status/1")], ""),
        "/status/1" => reply(303, &[("location", result.as_str())], ""),
        _ => reply(404, &[], ""),
    })
    .await;
    let table = format!(
        "preset = \"location-303\"\nallow_origins = [\"http://127.0.0.1:{}\"]",
        closed.port()
    );
    let baton = TestBaton::start(&route_config(api.addr, "/reports", &table)).await;

    let answer = post(&baton, "/reports", &[]).await;
    let problem = problem(&answer, 502, "job-backend-call");
    assert!(detail(&problem).contains("refused"), "{problem}");
    assert_eq!(problem["job_id"], "1");
    assert_eq!(paths(&api), ["/reports", "/status/1"]);
}

#[tokio::test(start_paused = true)]
async fn transient_poll_failures_are_retried_until_the_job_is_done() {
    let api = JobApi::start(Script {
        flaky: vec![
            (1, Flake::Status503),
            (2, Flake::Reset),
            (
                3,
                Flake::Status429 {
                    retry_after_secs: 2,
                },
            ),
        ],
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(&api, r#"preset = "location-303""#)).await;

    let answer = post(&baton, api.submit_path(), &[]).await;
    assert_eq!(answer.status.as_u16(), 201, "{}", answer.text());
    assert_eq!(answer.json(), json!({"answer": 42}));
    // Three failures, two running answers, the 303; then the result.
    assert_eq!((api.submits(), api.polls(), api.fetches()), (1, 6, 1));
}

#[tokio::test(start_paused = true)]
async fn max_failures_in_a_row_give_up_on_the_job() {
    let api = JobApi::start(Script {
        flaky: (1..=3).map(|n| (n, Flake::Status503)).collect(),
        ..Script::default()
    })
    .await;
    let table = "preset = \"location-303\"\npoll = { max_failures = 3 }";
    let baton = TestBaton::start(&async_config(&api, table)).await;

    let answer = post(&baton, api.submit_path(), &[]).await;
    let problem = problem(&answer, 502, "job-poll-failed");
    assert!(detail(&problem).contains("503"), "{problem}");
    assert_eq!(problem["job_id"], "job-1");
    assert_eq!(problem["status_url"], "/status/job-1");
    assert_eq!((api.submits(), api.polls(), api.fetches()), (1, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_dialect_other_than_location_303_follows_the_same_rules() {
    // Off-origin refusal does not depend on the handle being a Location.
    let other = Backend::start(|_| async { reply(200, &[], "") }).await;
    let api = JobApi::start(Script {
        dialect: Dialect::OperationLocation,
        urls: UrlStyle::OffOrigin(other.addr),
        ..Script::default()
    })
    .await;
    let baton = TestBaton::start(&async_config(&api, r#"preset = "operation-location""#)).await;
    let answer = post(&baton, api.submit_path(), &[]).await;
    problem(&answer, 502, "job-off-origin");
    assert_eq!(other.count(), 0);
    assert_eq!((api.submits(), api.polls()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_status_call_that_hangs_is_cut_at_the_poll_timeout_and_retried() {
    let hung = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = hung.clone();
    let backend = Backend::start(move |request: Request<Incoming>| {
        let flag = flag.clone();
        async move {
            match request.uri().path() {
                "/reports" => Response::builder()
                    .status(202)
                    .header("location", "/status/1")
                    .body(body::empty())
                    .unwrap(),
                // The first status call never answers; the next says done.
                "/status/1" if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                    std::future::pending::<()>().await;
                    unreachable!()
                }
                "/status/1" => Response::builder()
                    .status(303)
                    .header("location", "/result/1")
                    .body(body::empty())
                    .unwrap(),
                _ => Response::new(body::full("the result")),
            }
        }
    })
    .await;
    let baton = TestBaton::start(&route_config(
        backend.addr,
        "/reports",
        "preset = \"location-303\"\npoll = { timeout = \"2s\" }",
    ))
    .await;
    let answer = post(&baton, "/reports", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), "the result");
    let polls = backend
        .seen()
        .iter()
        .filter(|s| s.uri.path() == "/status/1")
        .count();
    assert_eq!(
        polls, 2,
        "the hung call was abandoned and the job polled again"
    );
}
