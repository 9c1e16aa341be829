//! Completion by callback (dialect F): the job API is handed a URL with a
//! single-use token and POSTs the outcome there; polling is an optional
//! fallback; a callback may land on another instance than the one holding
//! the client.

use std::sync::Arc;

use baton::body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::support::jobs::{Dialect, JobApi, Script};
use crate::support::redis::{cluster_table, namespace, url};
use crate::support::{client, send, Answer, Backend, TestBaton};

/// A job API that takes any submit with a 202 and no monitor, noting that
/// it did.
async fn accepting_backend() -> (Backend, Arc<Notify>) {
    let arrived = Arc::new(Notify::new());
    let signal = arrived.clone();
    let backend = Backend::start(move |_: Request<Incoming>| {
        let signal = signal.clone();
        async move {
            signal.notify_one();
            Response::builder().status(202).body(body::empty()).unwrap()
        }
    })
    .await;
    (backend, arrived)
}

fn config(
    backend: std::net::SocketAddr,
    callbacks: std::net::SocketAddr,
    callback: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[server]
callback_listen = "{callbacks}"

[backends.jobs]
url = "http://{backend}"

[[routes]]
name = "run"
match = {{ methods = ["POST"], path = "/run" }}
backend = "jobs"

[routes.async]
wait = "30s"
{extra}

[routes.async.callback]
{callback}
"#
    )
}

async fn call_back(url: &str, headers: &[(&str, &str)], body: &str) -> StatusCode {
    let mut request = Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body::full(body.to_owned())).unwrap();
    send(&client(), request).await.status
}

/// Sends the client's blocking request and returns it with the callback
/// URL the job API received.
async fn submit(
    baton: &TestBaton,
    backend: &Backend,
    arrived: &Notify,
) -> (tokio::task::JoinHandle<Answer>, String) {
    let url = baton.url("/run");
    let held = tokio::spawn(async move {
        let request = Request::post(url).body(body::full(r#"{"n":1}"#)).unwrap();
        send(&client(), request).await
    });
    arrived.notified().await;
    let callback = backend.last().headers["x-callback-url"]
        .to_str()
        .unwrap()
        .to_owned();
    (held, callback)
}

#[tokio::test]
async fn the_callback_becomes_the_answer_once() {
    let (backend, arrived) = accepting_backend().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = config(
        backend.addr,
        listener.local_addr().unwrap(),
        "mode = \"callback\"",
        "",
    );
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let (held, callback) = submit(&baton, &backend, &arrived).await;
    let token = callback.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 32, "128 random bits: {callback}");
    assert!(callback.starts_with(&format!("http://{}/callbacks/", baton_callbacks(&toml))));

    let forged = callback.replace(token, &"0".repeat(32));
    assert_eq!(call_back(&forged, &[], "x").await, 404, "an unknown token");
    assert_eq!(
        call_back(
            &callback,
            &[
                ("x-callback-status", "201"),
                ("content-type", "application/json")
            ],
            r#"{"done":true}"#
        )
        .await,
        204
    );
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json(), json!({"done": true}));
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        call_back(&callback, &[], "again").await,
        404,
        "a used token"
    );
    assert_eq!(backend.count(), 1, "no polls: the job API has no monitor");
}

fn baton_callbacks(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("callback_listen = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned()
}

#[tokio::test]
async fn a_callback_before_the_submits_answer_is_not_lost() {
    let backend = Backend::start(|request: Request<Incoming>| async move {
        let callback = request.headers()["x-callback-url"]
            .to_str()
            .unwrap()
            .to_owned();
        // The job is done before the job API even answers the submit.
        assert_eq!(call_back(&callback, &[], "early bird").await, 204);
        Response::builder().status(202).body(body::empty()).unwrap()
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = config(
        backend.addr,
        listener.local_addr().unwrap(),
        "mode = \"callback\"",
        "",
    );
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let answer = send(
        &client(),
        Request::post(baton.url("/run"))
            .body(body::full("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "early bird");
}

#[tokio::test]
async fn the_url_can_travel_in_the_json_body_and_the_answer_can_be_part_of_the_callback() {
    let backend = Backend::start(|request: Request<Incoming>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["n"], 1, "the client's fields are kept");
        let callback = json["notify"]["url"].as_str().unwrap().to_owned();
        tokio::spawn(async move {
            call_back(
                &callback,
                &[("content-type", "application/json")],
                r#"{"result":{"v":7},"meta":{"took":3}}"#,
            )
            .await
        });
        Response::builder().status(202).body(body::empty()).unwrap()
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = config(
        backend.addr,
        listener.local_addr().unwrap(),
        "pointer = \"/notify/url\"\nresult_pointer = \"/result\"",
        "",
    );
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let request = Request::post(baton.url("/run"))
        .body(body::full(r#"{"n":1,"notify":{}}"#))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json(), json!({"v": 7}));
}

#[tokio::test]
async fn unsigned_or_badly_signed_callbacks_have_no_effect() {
    let (backend, arrived) = accepting_backend().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let secret = "a-secret-of-sixteen-plus-bytes";
    let toml = config(
        backend.addr,
        listener.local_addr().unwrap(),
        &format!("secret = \"{secret}\""),
        "",
    );
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let (held, callback) = submit(&baton, &backend, &arrived).await;
    assert_eq!(call_back(&callback, &[], "forged").await, 404);
    let wrong = baton::facade::callback::sign(b"another secret entirely", b"forged");
    assert_eq!(
        call_back(&callback, &[("x-baton-signature", &wrong)], "forged").await,
        404
    );
    let right = baton::facade::callback::sign(secret.as_bytes(), b"genuine");
    assert_eq!(
        call_back(&callback, &[("x-baton-signature", &right)], "genuine").await,
        204
    );
    assert_eq!(held.await.unwrap().text(), "genuine");
}

#[tokio::test(start_paused = true)]
async fn without_a_callback_the_deadline_holds() {
    let (backend, _) = accepting_backend().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = config(
        backend.addr,
        listener.local_addr().unwrap(),
        "mode = \"callback\"",
        "",
    )
    .replace("wait = \"30s\"", "wait = \"5s\"");
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let answer = send(
        &client(),
        Request::post(baton.url("/run"))
            .body(body::full("x"))
            .unwrap(),
    )
    .await;
    let problem = answer.problem(504);
    assert_eq!(problem["type"], "urn:baton:problem:job-timeout");
    assert_eq!(backend.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn callback_plus_poll_falls_back_to_slow_polling() {
    let api = JobApi::start(Script {
        dialect: Dialect::Location303,
        polls_until_done: 2,
        ..Script::default()
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = format!(
        r#"
[server]
callback_listen = "{}"

[backends.jobs]
url = "http://{}"

[[routes]]
name = "run"
match = {{ methods = ["POST"], path = "/reports" }}
backend = "jobs"

[routes.async]
preset = "location-303"
wait = "2m"
poll = {{ max_interval = "1m" }}
callback = {{ mode = "callback+poll", poll_interval = "10s" }}
"#,
        listener.local_addr().unwrap(),
        api.addr
    );
    let baton = TestBaton::start_with_callbacks(&toml, listener).await;
    let started = tokio::time::Instant::now();
    let answer = send(
        &client(),
        Request::post(baton.url("/reports"))
            .body(body::full("x"))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(api.polls(), 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(30),
        "polls 10 s apart: {:?}",
        started.elapsed()
    );
    assert!(api.requests()[0].headers.contains_key("x-callback-url"));
}

#[tokio::test]
async fn a_callback_landing_on_another_instance_answers_the_held_client() {
    let Some(redis) = url().await else { return };
    let (backend, arrived) = accepting_backend().await;
    let cluster = cluster_table(&redis, &namespace(), "5s");
    let listener_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener_b = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr_b = listener_b.local_addr().unwrap();
    let toml_a = format!(
        "{cluster}\n{}",
        config(
            backend.addr,
            listener_a.local_addr().unwrap(),
            "mode = \"callback\"",
            ""
        )
    );
    let toml_b = format!(
        "{cluster}\n{}",
        config(backend.addr, addr_b, "mode = \"callback\"", "")
    );
    let a = TestBaton::start_with_callbacks(&toml_a, listener_a).await;
    let _b = TestBaton::start_with_callbacks(&toml_b, listener_b).await;
    let (held, callback) = submit(&a, &backend, &arrived).await;
    // The load balancer sends the callback to B.
    let token = callback.rsplit('/').next().unwrap();
    let on_b = format!("http://{addr_b}/callbacks/{token}");
    assert_eq!(
        call_back(&on_b, &[("x-callback-status", "200")], "answered via B").await,
        204
    );
    let answer = held.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "answered via B");
    assert_eq!(
        call_back(&callback, &[], "twice").await,
        404,
        "used, on A too"
    );
    let forged = format!("http://{addr_b}/callbacks/{}", "f".repeat(32));
    assert_eq!(call_back(&forged, &[], "x").await, 404);
}

/// A callback that comes after the client stopped waiting is not lost:
/// the job's token stays valid, the callback is taken (204, not 404), and
/// the next request for the job, an idempotent retry or the continuation
/// monitor, answers with it at once. Never a second submit.
#[tokio::test(start_paused = true)]
async fn a_callback_after_the_deadline_reaches_the_retry_and_the_monitor() {
    for next in ["retry", "monitor"] {
        let (backend, arrived) = accepting_backend().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let toml = config(
            backend.addr,
            listener.local_addr().unwrap(),
            "mode = \"callback\"",
            "on_timeout = \"accepted\"",
        )
        .replace("wait = \"30s\"", "wait = \"5s\"");
        let baton = TestBaton::start_with_callbacks(&toml, listener).await;
        let post = || {
            Request::post(baton.url("/run"))
                .header("idempotency-key", "late-1")
                .body(body::full(r#"{"n":1}"#))
                .unwrap()
        };
        let first = post();
        let held = tokio::spawn(async move { send(&client(), first).await });
        arrived.notified().await;
        let callback = backend.last().headers["x-callback-url"]
            .to_str()
            .unwrap()
            .to_owned();
        let first = held.await.unwrap();
        assert_eq!(first.status, 202, "{next}: {}", first.text());
        let monitor = first.header("location").unwrap().to_owned();

        let late = [("x-callback-status", "201")];
        assert_eq!(
            call_back(&callback, &late, "late result").await,
            204,
            "{next}"
        );
        let answer = match next {
            "retry" => send(&client(), post()).await,
            _ => {
                send(
                    &client(),
                    Request::get(baton.url(&monitor))
                        .body(body::empty())
                        .unwrap(),
                )
                .await
            }
        };
        assert_eq!(answer.status, 201, "{next}: {}", answer.text());
        assert_eq!(answer.text(), "late result", "{next}");
        assert_eq!(backend.count(), 1, "{next}: one submit");
    }
}
