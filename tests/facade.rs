//! The sync facade end to end: a blocking client request through Baton to
//! a fake job API of each dialect, and every way a job can end.
//!
//! Tests where the clock matters run on paused tokio time: Baton, the fake
//! backend and the client share one runtime, so a 30 s deadline passes
//! instantly and exactly.

use std::time::Duration;

use baton::body;
use http::{Request, StatusCode};
use serde_json::json;
use tokio::time::Instant;

use crate::support::jobs::{Dialect, Flake, JobApi, Outcome, RetryAfter, Script, UrlStyle};
use crate::support::{client, send, Answer, TestBaton};

/// A shipped dialect example, pointed at `api`.
fn dialect_file(file: &str, api: &JobApi) -> String {
    let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(text.contains("http://127.0.0.1:3000"), "{file} names the placeholder backend");
    text.replace("http://127.0.0.1:3000", &format!("http://{}", api.addr))
}

/// One async route on `api`'s submit path with the given `[routes.async]`
/// body, and a pass-through route for everything else.
fn async_config(api: &JobApi, table: &str) -> String {
    format!(
        r#"
[backends.jobs]
url = "http://{}"

[[routes]]
name = "facade"
match = {{ methods = ["POST"], path = "{}" }}
backend = "jobs"

[routes.async]
{table}

[[routes]]
name = "default"
match = {{ path = "/*" }}
backend = "jobs"
"#,
        api.addr,
        api.submit_path()
    )
}

async fn submit(baton: &TestBaton, api: &JobApi, headers: &[(&str, &str)]) -> Answer {
    let mut request = Request::post(baton.url(api.submit_path()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body::full(r#"{"report":"q3"}"#)).unwrap();
    send(&client(), request).await
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
    assert_eq!(answer.status.as_u16(), expect_status, "{file}: {}", answer.text());
    assert_eq!(answer.json(), json!({"total": 42, "rows": [1, 2]}), "{file}");
    assert!(answer.header("content-type").unwrap().starts_with("application/json"));
    assert_eq!(api.submits(), 1, "{file}: one submit");
    assert_eq!(api.submit_bodies(), [r#"{"report":"q3"}"#], "{file}: the body, once");
    assert_eq!(api.polls(), 3, "{file}: two running answers, then done");
    // Correlation and credentials reach every call on the backend's origin.
    let request_id = answer.header("x-request-id").unwrap();
    let traceparent = answer.header("traceparent").unwrap();
    for seen in api.requests() {
        assert_eq!(seen.headers["x-request-id"], request_id, "{file}: {}", seen.uri);
        assert_eq!(seen.headers["traceparent"], traceparent, "{file}: {}", seen.uri);
        assert_eq!(seen.headers["authorization"], "Bearer secret", "{file}: {}", seen.uri);
    }
    (api, answer)
}

#[tokio::test(start_paused = true)]
async fn dialect_a_location_303() {
    let (api, answer) = happy("dialect-location-303.toml", Dialect::Location303, 201).await;
    assert_eq!(api.fetches(), 1, "the 303's Location is fetched");
    let fetch = api.requests().into_iter().find(|s| s.uri.path().starts_with("/result/")).unwrap();
    assert_eq!(fetch.method, http::Method::GET, "after a 303: GET, never a re-POST");
    assert_eq!(answer.header("x-result"), Some("yes"), "the result's headers come along");
}

#[tokio::test(start_paused = true)]
async fn dialect_b_operation_location() {
    let (api, _) = happy("dialect-operation-location.toml", Dialect::OperationLocation, 200).await;
    let poll = api.requests().into_iter().find(|s| s.uri.path().starts_with("/operations/")).unwrap();
    assert_eq!(poll.headers["accept"], "application/json", "the route's poll headers");
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
    happy("dialect-accepted-while-running.toml", Dialect::AcceptedWhileRunning, 200).await;
}

#[tokio::test(start_paused = true)]
async fn job_api_matching_no_preset_is_fronted_by_config_alone() {
    let (api, _) = happy("dialect-custom.toml", Dialect::Custom, 200).await;
    assert_eq!(api.fetches(), 1, "the result at {{status_url}}/results");
}
