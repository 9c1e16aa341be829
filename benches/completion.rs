//! Completion → answer: how long after a job finishes does its client get
//! the answer, and how many polls did that take — for jobs of 0.1 s, 1 s,
//! 10 s and 60 s (each ±10 %, no Retry-After), with adaptive polling and
//! with plain backoff, side by side.
//!
//! The schedule is what is measured, not the machine's speed, so this runs
//! Baton, a job API and the client over real loopback HTTP on a paused
//! tokio clock: an hour of jobs takes seconds and every figure is exact.
//!
//! `cargo bench --bench completion`

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::body;
use baton::{Baton, Config, Listeners};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::time::Instant;

const JOBS: usize = 40;
const WARM_UP: usize = 3;

/// Jobs of the API: when each started, how long it takes, when it was
/// first reported done, and how many polls it got.
#[derive(Default)]
struct Jobs {
    started: Vec<Instant>,
    length: Vec<Duration>,
    polls: Vec<u32>,
}

async fn job_api(jobs: Arc<Mutex<Jobs>>, mean: Duration) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let jobs = Arc::clone(&jobs);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let jobs = Arc::clone(&jobs);
                    async move { Ok::<_, Infallible>(answer(&jobs, &request, mean)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn answer(jobs: &Mutex<Jobs>, request: &Request<Incoming>, mean: Duration) -> Response<body::Body> {
    let mut jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
    let path = request.uri().path();
    if path == "/jobs" {
        let id = jobs.started.len();
        jobs.started.push(Instant::now());
        jobs.length.push(mean.mul_f64(0.9 + 0.2 * fastrand::f64()));
        jobs.polls.push(0);
        return Response::builder()
            .status(202)
            .header("location", format!("/jobs/{id}"))
            .body(body::empty())
            .expect("a response");
    }
    let id: usize = path
        .rsplit('/')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(usize::MAX);
    if id >= jobs.started.len() {
        return Response::builder()
            .status(404)
            .body(body::empty())
            .expect("a response");
    }
    jobs.polls[id] += 1;
    let state = if jobs.started[id].elapsed() >= jobs.length[id] {
        "Succeeded"
    } else {
        "Running"
    };
    Response::new(body::full(format!(r#"{{"status":"{state}"}}"#)))
}

struct Figures {
    median_ms: f64,
    p99_ms: f64,
    polls_mean: f64,
    polls_max: u32,
}

async fn measure(mean: Duration, adaptive: bool) -> Figures {
    let jobs = Arc::new(Mutex::new(Jobs::default()));
    let api = job_api(Arc::clone(&jobs), mean).await;
    let toml = format!(
        r#"
[backends.jobs]
url = "http://{api}"

[[routes]]
name = "jobs"
match = {{ path = "/jobs" }}
backend = "jobs"

[routes.async]
preset = "location-303"
wait = "10m"
poll = {{ adaptive = {adaptive} }}
"#
    );
    let mut config = Config::parse(&toml, "bench.toml", None).expect("a valid config");
    // One lane, on this runtime and its paused clock.
    config.server.threads = 1;
    let baton = Baton::new(config).await.expect("baton");
    let main = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = main.local_addr().expect("an address");
    let listeners = Listeners {
        main,
        admin: None,
        callbacks: None,
    };
    tokio::spawn(baton.run(listeners, std::future::pending()));
    let client = Client::builder(TokioExecutor::new()).build_http::<body::Body>();
    let mut delays = Vec::new();
    for id in 0..JOBS {
        let request = Request::post(format!("http://{addr}/jobs"))
            .body(body::empty())
            .expect("a request");
        let response = client.request(request).await.expect("an answer");
        assert_eq!(response.status(), 200, "job {id}");
        let answered = Instant::now();
        let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
        if id >= WARM_UP {
            delays.push(answered - (jobs.started[id] + jobs.length[id]));
        }
    }
    delays.sort_unstable();
    let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
    let polls = &jobs.polls[WARM_UP..];
    Figures {
        median_ms: delays[delays.len() / 2].as_secs_f64() * 1000.0,
        p99_ms: delays[(delays.len() * 99 / 100).min(delays.len() - 1)].as_secs_f64() * 1000.0,
        polls_mean: polls.iter().map(|&p| p as f64).sum::<f64>() / polls.len() as f64,
        polls_max: polls.iter().copied().max().unwrap_or(0),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    println!("{JOBS} jobs per length ({WARM_UP} warm-up not counted), each ±10 %, no Retry-After");
    println!(
        "{:>7} {:>9} | {:>11} {:>11} {:>10} {:>9} | target median",
        "job", "schedule", "median", "p99", "polls avg", "polls max"
    );
    for mean in [0.1, 1.0, 10.0, 60.0].map(Duration::from_secs_f64) {
        for adaptive in [true, false] {
            let f = runtime.block_on(measure(mean, adaptive));
            let target = (mean.as_secs_f64() * 100.0).max(50.0);
            println!(
                "{:>6}s {:>9} | {:>9.0}ms {:>9.0}ms {:>10.1} {:>9} | <= {target:.0}ms, <= 8 polls: {}",
                mean.as_secs_f64(),
                if adaptive { "adaptive" } else { "backoff" },
                f.median_ms,
                f.p99_ms,
                f.polls_mean,
                f.polls_max,
                if f.median_ms <= target && f.polls_max <= 8 { "met" } else { "NOT met" }
            );
        }
    }
}
