//! Operating Baton: exact metrics after a scripted run, logs that carry the
//! request and job ids but never a secret, and `baton check`'s summary.

use std::collections::HashMap;
use std::process::Command;

use baton::body;
use http::Request;
use serde_json::{json, Value};

use crate::support::jobs::{
    async_config, post, submit_then_hang_up, Dialect, JobApi, Outcome, Script,
};
use crate::support::process::BatonProcess;
use crate::support::{client, get, send, Backend, TestBaton};

/// Parses the text exposition into `series -> value`.
fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn metrics_count_exactly_what_happened() {
    let api = JobApi::start(Script {
        dialect: Dialect::StatusField,
        polls_until_done: 2,
        ..Script::default()
    })
    .await;
    let failing = JobApi::start(Script {
        dialect: Dialect::StatusField,
        polls_until_done: 1,
        outcome: Outcome::Fail(json!("boom")),
        ..Script::default()
    })
    .await;
    let mut toml = async_config(&api, "preset = \"status-field\"");
    toml = toml.replacen(
        "[backends.jobs]",
        "[server]\nadmin = \"127.0.0.1:0\"\n\n[backends.jobs]",
        1,
    );
    toml.push_str(&format!(
        r#"
[backends.failing]
url = "http://{}"

[[routes]]
name = "broken"
match = {{ path = "/broken/*" }}
backend = "failing"
strip_prefix = "/broken"
async = {{ preset = "status-field" }}
"#,
        failing.addr
    ));
    // The catch-all must come last: move it there.
    let default =
        "\n[[routes]]\nname = \"default\"\nmatch = { path = \"/*\" }\nbackend = \"jobs\"\n";
    toml = toml.replacen(default, "", 1) + default;
    let baton = TestBaton::start_with_admin(&toml, true).await;

    // Two jobs that succeed (the second replayed by key), one that fails,
    // a pass-through call and a miss.
    assert_eq!(
        post(&baton, "/tasks", &[("idempotency-key", "k")])
            .await
            .status,
        200
    );
    assert_eq!(
        post(&baton, "/tasks", &[("idempotency-key", "k")])
            .await
            .status,
        200
    );
    assert_eq!(post(&baton, "/tasks", &[]).await.status, 200);
    post(&baton, "/broken/tasks", &[]).await.problem(502);
    let facade_polls = api.polls();
    // The fake counts this pass-through GET of a monitor as a poll too.
    assert_eq!(get(&baton.url("/tasks/job-1")).await.status, 200);
    let reload = toml.clone();
    baton.reload(&reload);

    let text = get(&format!("http://{}/metrics", baton.admin.unwrap()))
        .await
        .text();
    let m = scrape(&text);
    let expect = |series: &str, value: f64| {
        assert_eq!(m.get(series).copied(), Some(value), "{series} in:\n{text}");
    };
    expect(r#"baton_requests_total{route="facade",outcome="ok"}"#, 3.0);
    expect(
        r#"baton_requests_total{route="broken",outcome="job-failed"}"#,
        1.0,
    );
    expect(r#"baton_requests_total{route="default",outcome="ok"}"#, 1.0);
    expect(r#"baton_jobs_total{route="facade",event="submitted"}"#, 2.0);
    expect(r#"baton_jobs_total{route="facade",event="succeeded"}"#, 2.0);
    expect(r#"baton_jobs_total{route="facade",event="replayed"}"#, 1.0);
    expect(r#"baton_jobs_total{route="broken",event="submitted"}"#, 1.0);
    expect(r#"baton_jobs_total{route="broken",event="failed"}"#, 1.0);
    expect(r#"baton_polls_total{route="facade"}"#, facade_polls as f64);
    expect(
        r#"baton_polls_total{route="broken"}"#,
        failing.polls() as f64,
    );
    expect(r#"baton_requests_held{route="facade"}"#, 0.0);
    expect(
        r#"baton_request_duration_seconds_count{route="facade",outcome="ok"}"#,
        3.0,
    );
    expect(
        r#"baton_completion_delay_seconds_count{route="facade"}"#,
        2.0,
    );
    expect(r#"baton_idempotency_records"#, 1.0);
    expect(r#"baton_idempotency_evictions_total"#, 0.0);
    expect(r#"baton_config_reloads_total{result="ok"}"#, 1.0);
    // Submits, polls and fetches to the job API, and the pass-through call.
    let calls = api.requests().len() as f64;
    expect(
        r#"baton_backend_call_duration_seconds_count{backend="jobs"}"#,
        calls,
    );
    assert!(!text.contains("/tasks/"), "no raw paths in labels");
}

#[tokio::test(start_paused = true)]
async fn latched_requests_and_backend_errors_are_counted() {
    let api = JobApi::start(Script {
        dialect: Dialect::Location303,
        polls_until_done: 3,
        ..Script::default()
    })
    .await;
    let refused = crate::support::closed_port().await;
    let mut toml = async_config(&api, "preset = \"location-303\"").replacen(
        "[backends.jobs]",
        "[server]\nadmin = \"127.0.0.1:0\"\n\n[backends.jobs]",
        1,
    );
    toml = format!("[backends.down]\nurl = \"http://{refused}\"\n\n[[routes]]\nname = \"down\"\nmatch = {{ path = \"/down\" }}\nbackend = \"down\"\n\n{toml}");
    let baton = TestBaton::start_with_admin(&toml, true).await;
    let key = [("idempotency-key", "together")];
    let (first, second) = tokio::join!(
        post(&baton, "/reports", &key),
        post(&baton, "/reports", &key)
    );
    assert_eq!((first.status.as_u16(), second.status.as_u16()), (201, 201));
    get(&baton.url("/down")).await.problem(502);
    let m = scrape(
        &get(&format!("http://{}/metrics", baton.admin.unwrap()))
            .await
            .text(),
    );
    assert_eq!(
        m[r#"baton_jobs_total{route="facade",event="submitted"}"#],
        1.0
    );
    assert_eq!(
        m[r#"baton_jobs_total{route="facade",event="latched"}"#],
        1.0
    );
    assert_eq!(
        m[r#"baton_backend_errors_total{backend="down",kind="refused"}"#],
        1.0
    );
    assert_eq!(
        m[r#"baton_requests_total{route="down",outcome="backend-refused"}"#],
        1.0
    );
}

#[tokio::test]
async fn poll_errors_are_counted_by_kind() {
    use crate::support::jobs::Flake;
    let api = JobApi::start(Script {
        dialect: Dialect::Location303,
        flaky: vec![
            (1, Flake::Status503),
            (
                2,
                Flake::Status429 {
                    retry_after_secs: 0,
                },
            ),
        ],
        polls_until_done: 0,
        ..Script::default()
    })
    .await;
    let toml = async_config(&api, "preset = \"location-303\"").replacen(
        "[backends.jobs]",
        "[server]\nadmin = \"127.0.0.1:0\"\n\n[backends.jobs]",
        1,
    );
    let baton = TestBaton::start_with_admin(&toml, true).await;
    assert_eq!(post(&baton, "/reports", &[]).await.status, 201);
    let m = scrape(
        &get(&format!("http://{}/metrics", baton.admin.unwrap()))
            .await
            .text(),
    );
    assert_eq!(
        m[r#"baton_poll_errors_total{route="facade",kind="server_error"}"#],
        1.0
    );
    assert_eq!(
        m[r#"baton_poll_errors_total{route="facade",kind="throttled"}"#],
        1.0
    );
}

/// Runs the binary on `config` with JSON logs at debug level, calls
/// `exercise` with its address, stops it, and returns every log line.
async fn logs_of<F, Fut>(config: &str, exercise: F) -> Vec<String>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let baton = BatonProcess::start(config, &[("RUST_LOG", "debug")]).await;
    exercise(baton.addr.clone()).await;
    baton.signal("TERM");
    let (status, lines) = baton.exit().await;
    assert!(status.success());
    lines
}

#[tokio::test]
async fn logs_carry_ids_but_never_secrets_or_bodies() {
    let api = JobApi::start(Script {
        dialect: Dialect::Location303,
        polls_until_done: 1,
        ..Script::default()
    })
    .await;
    let cookie_backend = Backend::start(|_| async {
        http::Response::builder()
            .header("set-cookie", "session=topsecret-setcookie")
            .body(body::full("ok"))
            .unwrap()
    })
    .await;
    let mut config = async_config(&api, "preset = \"location-303\"").replacen(
        "[backends.jobs]",
        "[server]\nlisten = \"127.0.0.1:0\"\nredact_headers = [\"X-Api-Key\"]\n\n[backends.jobs]",
        1,
    );
    config = config.replacen(
        "\n[[routes]]\nname = \"default\"",
        &format!(
            "\n[backends.cookies]\nurl = \"http://{}\"\n\n[[routes]]\nname = \"cookies\"\nmatch = {{ path = \"/cookies\" }}\nbackend = \"cookies\"\n\n[[routes]]\nname = \"default\"",
            cookie_backend.addr
        ),
        1,
    );
    let lines = logs_of(&config, |address| async move {
        let request = Request::post(format!("http://{address}/reports"))
            .header("authorization", "Bearer topsecret-authorization")
            .header("cookie", "sid=topsecret-cookie")
            .header("x-api-key", "topsecret-apikey")
            .header("x-request-id", "req-ops-1")
            .body(body::full("topsecret-body"))
            .unwrap();
        let answer = send(&client(), request).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let cookies = get(&format!("http://{address}/cookies")).await;
        assert_eq!(
            cookies.header("set-cookie"),
            Some("session=topsecret-setcookie")
        );
    })
    .await;

    assert!(
        lines.iter().any(|l| l.contains("authorization")),
        "headers are logged at debug, redacted"
    );
    for line in &lines {
        assert!(
            !line.contains("topsecret"),
            "a secret or body reached the log: {line}"
        );
    }
    let access: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["target"] == "baton::access")
        .collect();
    let facade = access
        .iter()
        .find(|j| j["fields"]["route"] == "facade")
        .expect("an access line for the facade request");
    assert_eq!(facade["fields"]["request_id"], "req-ops-1");
    assert_eq!(facade["fields"]["job_id"], "job-1");
    assert_eq!(facade["fields"]["status"], 201);
    assert_eq!(facade["fields"]["polls"], 2);
    assert_eq!(facade["fields"]["outcome"], "ok");
    assert_eq!(facade["span"]["request_id"], "req-ops-1");
    assert_eq!(
        facade["span"]["job_id"], "job-1",
        "the request's span carries the job id"
    );
}

#[test]
fn check_prints_the_effective_routes() {
    let path = format!("{}/config/example.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["check", &path])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("api: GET,POST /api/* host api.example.com -> secure (https://api.internal.example:8443/v1) | pass-through"), "{text}");
    assert!(text.contains("reports: POST /reports -> app (http://127.0.0.1:3000) | async, preset location-303 | wait 30s"), "{text}");
    assert!(text.contains("held <= 1000"), "{text}");
    assert!(text.contains("default: * /* -> app"), "{text}");
}

/// The cancel runs after its request is gone; its log line still names the
/// request and the route.
#[tokio::test]
async fn the_cancel_line_carries_the_request_id_and_route() {
    let api = JobApi::start(Script {
        polls_until_done: u32::MAX,
        ..Script::default()
    })
    .await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        async_config(
            &api,
            "preset = \"location-303\"\nwait = \"1s\"\ncancel = { on_timeout = true }",
        )
    );
    let mut baton = BatonProcess::start(&config, &[]).await;
    let request = Request::post(format!("http://{}{}", baton.addr, api.submit_path()))
        .body(body::full("{}"))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 504);
    let request_id = answer.header("x-request-id").unwrap().to_owned();
    let canceled = baton.until("job canceled").await;
    assert_eq!(
        canceled["span"]["request_id"],
        request_id.as_str(),
        "{canceled}"
    );
    assert_eq!(canceled["span"]["route"], "facade", "{canceled}");
    baton.signal("TERM");
    let (status, _) = baton.exit().await;
    assert!(status.success());
}

/// A client that leaves before its answer is counted (and logged) as
/// nginx does, with a 499: an overload of impatient clients is not
/// invisible.
#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_is_counted_as_client_gone() {
    let api = JobApi::start(Script {
        polls_until_done: u32::MAX,
        ..Script::default()
    })
    .await;
    let toml = async_config(&api, "preset = \"location-303\"\nwait = \"10m\"").replacen(
        "[backends.jobs]",
        "[server]\nadmin = \"127.0.0.1:0\"\n\n[backends.jobs]",
        1,
    );
    let baton = TestBaton::start_with_admin(&toml, true).await;
    submit_then_hang_up(&baton, &api).await;
    let metrics = format!("http://{}/metrics", baton.admin.unwrap());
    let gone = "baton_requests_total{route=\"facade\",outcome=\"client-gone\"}";
    tokio::time::timeout(crate::support::HANG, async {
        // The drop that counts it runs when hyper notices the close.
        while scrape(&get(&metrics).await.text()).get(gone).copied() != Some(1.0) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {gone} 1 in the metrics"));
    let scraped = scrape(&get(&metrics).await.text());
    assert_eq!(
        scraped.get("baton_requests_held{route=\"facade\"}"),
        Some(&0.0)
    );
}

/// An overload sheds every extra request, but writes a warning a second
/// at most, counting what it shed: the log is not flooded too.
#[tokio::test]
async fn shed_requests_are_warned_about_once_a_second_with_a_count() {
    let api = JobApi::start(Script {
        polls_until_done: u32::MAX,
        ..Script::default()
    })
    .await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_held = 1\nshutdown_grace = \"1s\"\n{}",
        async_config(&api, "preset = \"location-303\"\nwait = \"1m\"")
    );
    let baton = BatonProcess::start(&config, &[]).await;
    let url = format!("http://{}{}", baton.addr, api.submit_path());
    let held = {
        let url = url.clone();
        tokio::spawn(async move {
            send(
                &client(),
                Request::post(url).body(body::full("{}")).unwrap(),
            )
            .await
        })
    };
    api.wait_until(|a| a.polls() >= 1).await;
    let client = client();
    for _ in 0..20 {
        let answer = send(&client, Request::post(&url).body(body::full("{}")).unwrap()).await;
        assert_eq!(answer.status, 503);
    }
    baton.signal("TERM");
    let (status, lines) = baton.exit().await;
    assert!(status.success());
    assert_eq!(held.await.unwrap().status, 503, "drained");
    let warnings: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shedding requests"))
        })
        .collect();
    let counted: u64 = warnings
        .iter()
        .map(|w| w["fields"]["shed"].as_u64().unwrap())
        .sum();
    assert!(
        (1..=3).contains(&warnings.len()) && counted <= 20,
        "{} warnings for 20 shed requests: {warnings:?}",
        warnings.len()
    );
}
