//! Living with change and with the end: SIGHUP reloads swap the routes new
//! requests see while held requests keep theirs (and a bad file changes
//! nothing), and SIGTERM's drain lets held requests finish within the grace
//! period, then answers the rest with a 503 problem carrying their
//! continuation instead of cutting them off.
//!
//! Reload tests that hold a job run on paused tokio time so the reload lands
//! between two polls for certain; the traffic test and the drain tests use
//! the real clock (the drain's grace period is real shutdown timing), and
//! synchronise on events only: the fake saw a poll, `/readyz` flipped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use baton::body;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::support::jobs::{async_config, route_config, JobApi, Script};
use crate::support::process::BatonProcess;
use crate::support::{client, collect, get, until_unready, Answer, Backend, TestBaton, HANG};

/// A backend that answers every request `200` with its own name.
async fn named(name: &'static str) -> Backend {
    Backend::start(move |_: Request<Incoming>| async move { Response::new(body::full(name)) }).await
}

/// Backends `a` and `b`, then `routes` (`[[routes]]` tables naming them).
fn two_backends(a: SocketAddr, b: SocketAddr, routes: &str) -> String {
    format!(
        r#"
[backends.a]
url = "http://{a}"

[backends.b]
url = "http://{b}"

{routes}
"#
    )
}

/// One catch-all route to `backend` ("a" or "b").
fn catch_all(backend: &str) -> String {
    format!("[[routes]]\nname = \"all\"\nmatch = {{ path = \"/*\" }}\nbackend = \"{backend}\"\n")
}

/// Sends a POST with a small body and hands back the raw outcome, so a
/// test can tell a reset connection from an answer.
fn spawn_post(
    url: String,
) -> tokio::task::JoinHandle<Result<Response<Incoming>, hyper_util::client::legacy::Error>> {
    tokio::spawn(async move {
        let request = Request::post(url)
            .body(body::full(r#"{"report":"q3"}"#))
            .unwrap();
        tokio::time::timeout(HANG, client().request(request))
            .await
            .expect("no answer")
    })
}

/// Waits for a spawned request and collects its answer; a connection error
/// fails the test, naming it.
async fn answer_of(
    task: tokio::task::JoinHandle<Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
) -> Answer {
    let response = task
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the held request got no answer, only {e:?}"));
    collect(response).await
}

// ---------------------------------------------------------------------------
// Reload.

#[tokio::test]
async fn reload_switches_adds_and_removes_routes_for_new_requests() {
    let (a, b) = (named("A").await, named("B").await);
    let baton = TestBaton::start(&two_backends(a.addr, b.addr, &catch_all("a"))).await;
    assert_eq!(get(&baton.url("/x")).await.text(), "A");

    baton.reload(&two_backends(a.addr, b.addr, &catch_all("b")));
    let answer = get(&baton.url("/x")).await;
    assert_eq!((answer.status.as_u16(), answer.text().as_str()), (200, "B"));

    let added = "[[routes]]\nname = \"new\"\nmatch = { path = \"/new/*\" }\nbackend = \"a\"\n";
    baton.reload(&two_backends(
        a.addr,
        b.addr,
        &format!("{added}\n{}", catch_all("b")),
    ));
    assert_eq!(get(&baton.url("/new/1")).await.text(), "A", "a new route");
    assert_eq!(get(&baton.url("/x")).await.text(), "B");

    baton.reload(&two_backends(a.addr, b.addr, added));
    let removed = get(&baton.url("/x")).await;
    let problem = removed.problem(404);
    assert_eq!(problem["type"], "urn:baton:problem:no-route");
    assert_eq!(get(&baton.url("/new/2")).await.text(), "A");
    assert_eq!((a.count(), b.count()), (3, 2));
}

/// Holds a request on an async route, reloads to `after` (given the
/// address of a second backend) between two polls, and checks the held
/// request still finishes against the job API it started with. Returns the
/// second backend, and the answer a new `POST /reports` got after the
/// reload.
async fn held_request_survives(after: impl Fn(SocketAddr) -> String) -> (Backend, Answer) {
    let api = JobApi::start(Script {
        polls_until_done: 3,
        ..Script::default()
    })
    .await;
    let other = Backend::echo().await;
    let baton = TestBaton::start(&async_config(&api, "preset = \"location-303\"")).await;
    let held = spawn_post(baton.url(api.submit_path()));
    api.wait_until(|a| a.polls() >= 1).await;

    // The clock is paused and nothing awaits between here and the check,
    // so the next poll cannot have happened: the request is mid-job.
    baton.reload(&after(other.addr));
    assert!(!held.is_finished(), "the job needs more polls");

    let fresh = crate::support::jobs::post(&baton, api.submit_path(), &[]).await;
    let answer = answer_of(held).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.json(), json!({"answer": 42}));
    assert_eq!(
        (api.submits(), api.polls(), api.fetches()),
        (1, 4, 1),
        "every poll and the fetch went to the job API the request started on"
    );
    for seen in other.seen() {
        assert_eq!(
            seen.uri.path(),
            "/reports",
            "the new backend saw only the new request"
        );
    }
    (other, fresh)
}

#[tokio::test(start_paused = true)]
async fn held_request_keeps_its_route_when_the_route_is_removed() {
    let (other, fresh) = held_request_survives(|other| {
        format!(
            "[backends.other]\nurl = \"http://{other}\"\n\n{}",
            catch_all("other")
        )
    })
    .await;
    // New requests see the new config: a plain pass-through to the echo.
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("x-echo-method"), Some("POST"));
    assert_eq!(other.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn held_request_keeps_its_backend_when_the_route_is_repointed() {
    let (other, fresh) =
        held_request_survives(|other| route_config(other, "/reports", "preset = \"location-303\""))
            .await;
    // The same route now fronts the echo, whose 200 is not a job: it
    // passes through as the answer.
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("x-echo-target"), Some("/reports"));
    assert_eq!(fresh.text(), r#"{"report":"q3"}"#);
    assert_eq!(other.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_concurrent_traffic_fail_no_request() {
    const CLIENTS: usize = 8;
    const EACH: usize = 50;
    const RELOADS: usize = 20;
    const TOTAL: usize = CLIENTS * EACH;
    let (a, b) = (named("A").await, named("B").await);
    let to_a = two_backends(a.addr, b.addr, &catch_all("a"));
    let to_b = two_backends(a.addr, b.addr, &catch_all("b"));
    let baton = TestBaton::start(&to_a).await;

    // Counts finished requests, so reloads spread over the traffic.
    let (done, mut progress) = watch::channel(0usize);
    let done = Arc::new(done);
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let done = Arc::clone(&done);
        let url = baton.url(&format!("/client/{n}"));
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut failures = Vec::new();
            let mut ok = 0;
            for _ in 0..EACH {
                let request = Request::get(&url).body(body::empty()).unwrap();
                let outcome = match tokio::time::timeout(HANG, client.request(request)).await {
                    Err(_) => Err("no answer".to_owned()),
                    Ok(Err(e)) => Err(format!("connection error: {e:?}")),
                    Ok(Ok(response)) => {
                        let status = response.status();
                        match response.into_body().collect().await {
                            Ok(bytes) => {
                                let bytes = bytes.to_bytes();
                                if status == StatusCode::OK && (bytes == "A" || bytes == "B") {
                                    Ok(())
                                } else {
                                    Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)))
                                }
                            }
                            Err(e) => Err(format!("{status}, then the body failed: {e}")),
                        }
                    }
                };
                match outcome {
                    Ok(()) => ok += 1,
                    Err(failure) => failures.push(failure),
                }
                done.send_modify(|n| *n += 1);
            }
            (ok, failures)
        }));
    }

    for i in 0..RELOADS {
        let target = i * TOTAL / RELOADS;
        progress
            .wait_for(|n| *n >= target)
            .await
            .expect("a client task died");
        baton.reload(if i % 2 == 0 { &to_b } else { &to_a });
        tokio::task::yield_now().await;
    }

    let mut ok = 0;
    let mut failures = Vec::new();
    for client in clients {
        let (n, failed) = client.await.unwrap();
        ok += n;
        failures.extend(failed);
    }
    assert_eq!((ok, failures.len()), (TOTAL, 0), "failures: {failures:#?}");
    assert_eq!(
        a.count() + b.count(),
        TOTAL,
        "each request reached one backend"
    );
    assert!(
        a.count() > 0 && b.count() > 0,
        "traffic reached both configs: A {} B {}",
        a.count(),
        b.count()
    );
}

/// A config file for the binary: everything to `backend`, with `extra`
/// lines in its backend table (the sixth line of the file).
fn file_config(backend: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[backends.app]\nurl = \"http://{backend}\"\n{extra}\n[[routes]]\nname = \"all\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n"
    )
}

#[tokio::test]
async fn sighup_reloads_the_file_and_a_bad_file_keeps_the_old_config() {
    let (a, b) = (named("A").await, named("B").await);
    let mut baton = BatonProcess::start(&file_config(a.addr, ""), &[]).await;
    let path = baton.config_path().to_owned();
    let url = format!("http://{}/x", baton.addr);
    assert_eq!(get(&url).await.text(), "A");

    // A bad file, which would point at B if it were taken.
    std::fs::write(&path, file_config(b.addr, "conect_timeout = \"1s\"")).unwrap();
    baton.signal("HUP");
    let failed = baton
        .until("reload failed; the running configuration stays")
        .await;
    assert_eq!(failed["level"], "ERROR");
    let error = failed["fields"]["error"].as_str().unwrap();
    let at = format!("{}:6:1: ", path.display());
    assert!(
        error.contains(&at) && error.contains("conect_timeout"),
        "the error names file:line:column and the key: {error}"
    );
    assert_eq!(get(&url).await.text(), "A", "the old config keeps serving");

    std::fs::write(&path, file_config(b.addr, "")).unwrap();
    baton.signal("HUP");
    baton.until("configuration reloaded").await;
    assert_eq!(get(&url).await.text(), "B");
    assert_eq!((a.count(), b.count()), (2, 1));

    baton.signal("TERM");
    let (status, _) = baton.exit().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

// ---------------------------------------------------------------------------
// Drain.

/// A Baton with `shutdown_grace = grace` in front of a job that never
/// finishes, holding one request mid-job; returns them with the request.
async fn held_at_shutdown(
    grace: &str,
    table: &str,
) -> (
    JobApi,
    TestBaton,
    tokio::task::JoinHandle<Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
) {
    let api = JobApi::start(Script {
        polls_until_done: u32::MAX,
        ..Script::default()
    })
    .await;
    let config = format!(
        "[server]\nshutdown_grace = \"{grace}\"\n{}",
        async_config(
            &api,
            &format!("preset = \"location-303\"\nwait = \"10m\"\n{table}")
        )
    );
    let baton = TestBaton::start(&config).await;
    let held = spawn_post(baton.url(api.submit_path()));
    api.wait_until(|a| a.polls() >= 1).await;
    (api, baton, held)
}

#[tokio::test]
async fn drain_answers_held_requests_with_503_at_the_grace_deadline() {
    let (api, mut baton, held) = held_at_shutdown("300ms", "").await;
    baton.begin_shutdown();
    let answer = answer_of(held).await;
    let problem = answer.problem(503);
    assert_eq!(problem["type"], "urn:baton:problem:shutting-down");
    assert!(
        answer.header("retry-after").is_some(),
        "{:?}",
        answer.headers
    );
    assert_eq!(problem["job_id"], "job-1");
    // The route has no continuation (on_timeout = "504"): nowhere to send
    // the client back to.
    assert!(answer.header("location").is_none());
    assert!(problem.get("monitor").is_none(), "{problem}");
    baton.finished().await.unwrap();
    assert_eq!(api.cancels(), 0, "the job goes on");
}

#[tokio::test]
async fn drain_503_carries_the_continuation_where_the_route_has_one() {
    for on_timeout in ["accepted", "redirect"] {
        let (api, mut baton, held) =
            held_at_shutdown("300ms", &format!("on_timeout = \"{on_timeout}\"")).await;
        baton.begin_shutdown();
        let answer = answer_of(held).await;
        let problem = answer.problem(503);
        assert_eq!(problem["type"], "urn:baton:problem:shutting-down");
        assert!(answer.header("retry-after").is_some());
        assert_eq!(problem["job_id"], "job-1");
        let location = answer
            .header("location")
            .unwrap_or_else(|| panic!("{on_timeout}: no Location"));
        assert!(location.starts_with("/.baton/jobs/"), "{location}");
        assert_eq!(problem["monitor"], location, "{on_timeout}");
        baton.finished().await.unwrap();
        assert_eq!(api.cancels(), 0);
    }
}

/// A location-303 job API whose one job runs until the test releases it.
struct GatedJob {
    backend: Backend,
    polled: Arc<Notify>,
    done: Arc<AtomicBool>,
}

impl GatedJob {
    async fn start() -> GatedJob {
        let polled = Arc::new(Notify::new());
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (Arc::clone(&polled), Arc::clone(&done));
        let backend = Backend::start(move |request: Request<Incoming>| {
            let (polled, done) = (Arc::clone(&p), Arc::clone(&d));
            async move {
                let answer = Response::builder();
                let answer = match request.uri().path() {
                    "/reports" => answer.status(202).header("location", "/status/1"),
                    "/status/1" if done.load(Ordering::SeqCst) => {
                        answer.status(303).header("location", "/result/1")
                    }
                    "/status/1" => {
                        polled.notify_one();
                        return Response::new(body::full(r#"{"status":"Running"}"#));
                    }
                    "/result/1" => {
                        return Response::builder()
                            .status(201)
                            .header("content-type", "application/json")
                            .body(body::full(r#"{"answer":"late"}"#))
                            .unwrap()
                    }
                    _ => answer.status(404),
                };
                answer.body(body::empty()).unwrap()
            }
        })
        .await;
        GatedJob {
            backend,
            polled,
            done,
        }
    }

    fn release(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Polls quickly, so the released job is seen done at once.
const QUICK_POLLS: &str = "preset = \"location-303\"\nwait = \"10m\"\npoll = { initial = \"10ms\", min_interval = \"10ms\", max_interval = \"20ms\" }";

#[tokio::test]
async fn drain_lets_a_held_request_that_finishes_in_time_answer_normally() {
    let job = GatedJob::start().await;
    let config = format!(
        "[server]\nshutdown_grace = \"30s\"\n{}",
        route_config(job.backend.addr, "/reports", QUICK_POLLS)
    );
    let mut baton = TestBaton::start_with_admin(&config, true).await;
    let held = spawn_post(baton.url("/reports"));
    job.polled.notified().await;

    baton.begin_shutdown();
    // Draining for certain: /readyz turns 503 only once the drain began.
    until_unready(&baton).await;
    job.release();
    let answer = answer_of(held).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(answer.json(), json!({"answer": "late"}));
    baton.finished().await.unwrap();
}

#[tokio::test]
async fn readyz_turns_503_during_the_drain_while_a_request_is_held() {
    let job = GatedJob::start().await;
    let config = format!(
        "[server]\nshutdown_grace = \"30s\"\n{}",
        route_config(job.backend.addr, "/reports", QUICK_POLLS)
    );
    let mut baton = TestBaton::start_with_admin(&config, true).await;
    let admin = baton.admin.unwrap();
    assert_eq!(get(&format!("http://{admin}/readyz")).await.status, 200);
    let held = spawn_post(baton.url("/reports"));
    job.polled.notified().await;

    baton.begin_shutdown();
    until_unready(&baton).await;
    assert!(!held.is_finished(), "the job was not released yet");
    let health = get(&format!("http://{admin}/healthz")).await;
    assert_eq!(health.status, 200, "alive while draining");
    // Still held: Baton keeps following the job during the drain.
    job.polled.notified().await;
    assert!(!held.is_finished());

    job.release();
    let answer = answer_of(held).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    baton.finished().await.unwrap();
}
