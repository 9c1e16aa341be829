//! Held requests: how many facade requests one Baton process holds at
//! once, what each costs in memory, what waiting costs in CPU, and whether
//! polls share pooled backend connections.
//!
//! Baton runs as its own process (the release binary); this bench plays
//! both the clients (up to 19,000 raw connections, each one blocking POST)
//! and the job API (jobs that run until the end, answering polls with
//! `Retry-After: 60`). A process may open at most 20,000 files here, which
//! bounds the count: each held request is one client socket in Baton.
//! It does so twice: Baton as built (with the allocator settings compiled
//! in from `.cargo/config.toml`), then with jemalloc's stock settings, to
//! show what those settings buy.
//!
//! Then the same count of pending requests against a bare server (this
//! bench re-run as one: Baton's own connection handling, with a service
//! that drops the request and never answers): the connection's floor per
//! pending request, measured the same way, so the figure for Baton splits
//! into the connection's part (hyper's) and the held request's.
//!
//! `cargo bench --bench held` (`HELD=5000` for a smaller run)

use std::convert::Infallible;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use baton::body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

mod support;
use support::{clock_ticks, cpu_ticks, free_port, rss, wait_ready, Killed};

// The bare server (this bench re-run) allocates as Baton does, so the two
// figures split one total.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Set when this bench runs as the bare hyper server: the port to serve.
const BARE: &str = "BATON_HELD_BARE_PORT";

/// jemalloc's settings, as the `baton` binary (its symbols prefixed) reads
/// them from the environment, over those compiled in.
const MALLOC_CONF: &str = "_RJEM_MALLOC_CONF";

/// jemalloc's own defaults, in place of the settings Baton is built with
/// (`.cargo/config.toml`): freed pages kept for ten seconds, and 20 freed
/// blocks per size class cached per thread. Kept pages that a request
/// touched and freed (the first page of hyper's read buffer, above all)
/// are soon reused for the untouched buffers of later connections, and so
/// stay resident while those wait.
const STOCK: &str = "dirty_decay_ms:10000,muzzy_decay_ms:0,tcache_nslots_small_min:20";

fn main() {
    if let Some(port) = std::env::var(BARE).ok().and_then(|p| p.parse().ok()) {
        return bare_server(port);
    }
    let held: usize = std::env::var("HELD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(19_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let submits = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let api = runtime.block_on(job_api(Arc::clone(&submits), Arc::clone(&polls)));

    println!("-- Baton as built (its allocator settings from .cargo/config.toml)");
    let default = held_by_baton(held, api, &submits, &polls, None);
    println!("-- Baton with jemalloc's stock settings ({MALLOC_CONF}={STOCK})");
    held_by_baton(held, api, &submits, &polls, Some(STOCK));

    // hyper alone, the same way: the floor under Baton's figure.
    let port = free_port();
    let bare = Killed(
        Command::new(std::env::current_exe().expect("this bench's path"))
            .env(BARE, port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("the bare server starts"),
    );
    let bare_pid = bare.0.id();
    wait_ready(port);
    let mut clients = Vec::with_capacity(held);
    open(&mut clients, port, 100);
    sleep(Duration::from_secs(1));
    let bare_before = rss(bare_pid);
    while clients.len() < held {
        let batch = (held - clients.len()).min(500);
        open(&mut clients, port, batch);
    }
    sleep(Duration::from_secs(3));
    let bare_plateau = rss(bare_pid);
    let bare_per_request = (bare_plateau.saturating_sub(bare_before)) as f64 / (held - 100) as f64;
    println!(
        "bare connection (Baton's connection code, a service that never answers): {:.0} bytes ({:.2} KiB) per pending request",
        bare_per_request,
        bare_per_request / 1024.0
    );
    println!(
        "so of Baton's {:.2} KiB (as built), the connection takes {:.2} KiB and the held request {:.2} KiB",
        default / 1024.0,
        bare_per_request / 1024.0,
        (default - bare_per_request) / 1024.0
    );
    drop(clients);
    drop(bare);
}

/// Holds `held` facade requests in a Baton process (with `malloc_conf` as
/// jemalloc's settings, if given), prints what they cost, and returns the
/// bytes per held request at the plateau.
fn held_by_baton(
    held: usize,
    api: std::net::SocketAddr,
    submits: &AtomicUsize,
    polls: &AtomicUsize,
    malloc_conf: Option<&str>,
) -> f64 {
    let dir = std::env::temp_dir().join(format!("baton-held-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let port = free_port();
    let conf = dir.join("baton.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 19500\nmax_held = 19500\n\n\
             [backends.jobs]\nurl = \"http://{api}\"\npool_max_idle = 64\n\n\
             [[routes]]\nname = \"jobs\"\nmatch = {{ path = \"/jobs\" }}\nbackend = \"jobs\"\n\
             [routes.async]\npreset = \"location-303\"\nwait = \"30m\"\npoll = {{ max_interval = \"2m\", adaptive = false }}\n"
        ),
    )
    .expect("the config");
    // `BATON_BINARY` measures another build (an earlier commit's) with the
    // same harness, for before/after figures.
    let binary =
        std::env::var("BATON_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_baton").to_owned());
    let mut command = Command::new(binary);
    if let Some(conf) = malloc_conf {
        command.env(MALLOC_CONF, conf);
    }
    let baton = Killed(
        command
            .args(["run", "--config", &conf.display().to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("baton starts"),
    );
    let pid = baton.0.id();
    wait_ready(port);

    // A few requests first, so the baseline includes warmed-up pools and
    // allocator arenas rather than a cold process.
    let polls_at_start = polls.load(Ordering::Relaxed);
    let submits_at_start = submits.load(Ordering::Relaxed);
    let mut clients = Vec::with_capacity(held);
    hold(&mut clients, port, 100, submits);
    let rss_before = rss(pid);
    let started = Instant::now();
    while clients.len() < held {
        let batch = (held - clients.len()).min(500);
        hold(&mut clients, port, batch, submits);
    }
    let ramp = started.elapsed();
    // The last submits' answers settle before the plateau is read.
    sleep(Duration::from_secs(3));
    let rss_plateau = rss(pid);
    // The CPU window starts once the polls have (the first jobs' first
    // polls come `Retry-After: 60` after their submits), so waiting is
    // measured with its polls, not before them.
    while polls.load(Ordering::Relaxed) == polls_at_start
        && started.elapsed() < Duration::from_secs(90)
    {
        sleep(Duration::from_millis(200));
    }
    let ticks_before = cpu_ticks(&[pid]);
    let polls_before = polls.load(Ordering::Relaxed);
    let quiet = Duration::from_secs(10);
    sleep(quiet);
    let ticks = cpu_ticks(&[pid]) - ticks_before;
    // Again after the wait: what the allocator gave back meanwhile (pages
    // freed during the ramp) no longer counts.
    let rss_settled = rss(pid);
    let polls_during = polls.load(Ordering::Relaxed) - polls_before;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let per_request = (rss_plateau.saturating_sub(rss_before)) as f64 / (held - 100) as f64;

    println!(
        "held requests: {} (ramped in {:.1}s), submits seen by the job API: {}",
        clients.len(),
        ramp.as_secs_f64(),
        submits.load(Ordering::Relaxed) - submits_at_start
    );
    println!(
        "Baton RSS: {:.1} MiB before, {:.1} MiB at plateau",
        rss_before as f64 / 1048576.0,
        rss_plateau as f64 / 1048576.0
    );
    println!(
        "memory per held request: {:.0} bytes ({:.2} KiB; target <= 8 KiB, nginx ~9.9 KB)",
        per_request,
        per_request / 1024.0
    );
    let settled = (rss_settled.saturating_sub(rss_before)) as f64 / (held - 100) as f64;
    println!(
        "  after {}s of waiting: {:.1} MiB, {:.0} bytes ({:.2} KiB) per held request",
        quiet.as_secs(),
        rss_settled as f64 / 1048576.0,
        settled,
        settled / 1024.0
    );
    println!(
        "CPU while waiting: {:.1} % of one core over {}s ({} polls, {:.0}/s)",
        ticks as f64 / clock_ticks() / quiet.as_secs_f64() * 100.0,
        quiet.as_secs(),
        polls_during,
        polls_during as f64 / quiet.as_secs_f64()
    );
    println!(
        "Baton's open files: {fds} for {} held requests (backend connections are pooled)",
        clients.len()
    );
    drop(clients);
    drop(baton);
    let _ = std::fs::remove_dir_all(&dir);
    per_request
}

/// Opens `count` more connections, each sending the same blocking POST.
fn open(clients: &mut Vec<TcpStream>, port: u16, count: usize) {
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("a connection");
        stream
            .write_all(b"POST /jobs HTTP/1.1\r\nHost: bench\r\nContent-Length: 2\r\n\r\n{}")
            .expect("the request");
        clients.push(stream);
    }
}

/// Baton's own connection handling (`baton::edge::connection`: protocol sniff,
/// hyper's HTTP/1 connection, drain) with a service that drops the request
/// and never answers: what a pending request costs before Baton holds
/// anything of its own.
fn bare_server(port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port");
        let config = baton::Config::parse(
            "[backends.b]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"r\"\nmatch = { path = \"/*\" }\nbackend = \"b\"\n",
            "bare.toml",
            None,
        )
        .expect("the default server settings");
        let settings = Arc::new(baton::edge::connection::Settings::new(&config.server));
        let (_phase, phase) = tokio::sync::watch::channel(baton::edge::connection::Phase::Serving);
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let settings = Arc::clone(&settings);
            let phase = phase.clone();
            tokio::spawn(async move {
                let service = service_fn(hold_forever);
                let _ = baton::edge::connection::serve(stream, service, settings, phase).await;
            });
        }
    });
}

/// The bare server's handler: holds every request, as Baton holds one.
/// A named function rather than a closure: its types are then known in
/// full, which the compiler needs to see the connection's future is Send.
async fn hold_forever(request: Request<Incoming>) -> Result<Response<body::Body>, Infallible> {
    drop(request);
    std::future::pending::<()>().await;
    Ok(Response::new(body::empty()))
}

/// Opens `count` more client connections, each sending a blocking POST,
/// and waits until the job API has seen their submits.
fn hold(clients: &mut Vec<TcpStream>, port: u16, count: usize, submits: &AtomicUsize) {
    let target = submits.load(Ordering::Relaxed) + count;
    open(clients, port, count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while submits.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "the submits stalled at {}",
            submits.load(Ordering::Relaxed)
        );
        sleep(Duration::from_millis(10));
    }
}

/// Jobs that never finish: a 202 and a monitor that says Running, come
/// back in a minute.
async fn job_api(submits: Arc<AtomicUsize>, polls: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (submits, polls) = (Arc::clone(&submits), Arc::clone(&polls));
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (submits, polls) = (Arc::clone(&submits), Arc::clone(&polls));
                    async move {
                        let response = if request.uri().path() == "/jobs" {
                            let id = submits.fetch_add(1, Ordering::Relaxed);
                            Response::builder()
                                .status(202)
                                .header("location", format!("/jobs/{id}"))
                                .header("retry-after", "60")
                                .body(body::empty())
                        } else {
                            polls.fetch_add(1, Ordering::Relaxed);
                            Response::builder()
                                .header("retry-after", "60")
                                .body(body::full(r#"{"status":"Running"}"#))
                        };
                        Ok::<_, Infallible>(response.expect("a response"))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
