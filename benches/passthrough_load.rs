//! Pass-through under load, side by side: wrk against Baton and against
//! nginx configured as a keep-alive reverse proxy, both in front of the
//! same trivial backend, in alternating rounds (A B A B …) so the machine's
//! drift hits both alike.
//!
//! `cargo bench --bench passthrough_load` (needs `wrk` and `nginx` on the
//! PATH: `apt-get install wrk nginx`; without them it says so and stops).
//! Prints requests/s, p99 latency and the proxy's own CPU time per request
//! (utime + stime from /proc, summed over nginx's workers), and the ratios.
//! Two more contenders run in the same rounds: Baton with `threads = 1`,
//! and the floor of its stack on one thread (hyper's server and
//! hyper-util's client forwarding and nothing else: this bench re-run as
//! that proxy), so the gap to nginx splits into the stack's and Baton's.
//! `BATON_AGAINST=path/to/baton` adds another Baton build (say, one with
//! another allocator) to the same alternating rounds, as the row `other`.
//! Then Baton's CPU per facade request (submit, one poll that finds the job
//! done, result fetch) against its CPU per pass-through request.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod support;
use support::{clock_ticks, cpu_ticks, free_port, rss, wait_ready, Killed};

const ROUNDS: usize = 3;
const SECONDS: u32 = 5;
const CONNECTIONS: u32 = 64;

/// Set when this bench runs as the floor proxy: `port,backend_port`.
const FLOOR: &str = "BATON_BENCH_FLOOR";

fn main() {
    if let Ok(ports) = std::env::var(FLOOR) {
        return floor_proxy(&ports);
    }
    for tool in ["wrk", "nginx"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("\n*** SKIPPED passthrough_load: `{tool}` is not installed (apt-get install wrk nginx) ***\n");
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("a scratch directory");
    let backend_port = free_port();
    let nginx_port = free_port();
    let baton_port = free_port();

    let backend = Nginx::start(
        &dir.join("backend"),
        &backend_conf(backend_port, &dir.join("html")),
        1,
    );
    let proxy = Nginx::start(&dir.join("proxy"), &proxy_conf(nginx_port, backend_port), 2);
    let baton = start_baton(
        &dir,
        Path::new(env!("CARGO_BIN_EXE_baton")),
        baton_port,
        backend_port,
        None,
    );
    // The same Baton on one thread, and the floor of its stack on one
    // thread: hyper's server and hyper-util's client with nothing between.
    let one_port = free_port();
    let baton_one = start_baton(
        &dir.join("one"),
        Path::new(env!("CARGO_BIN_EXE_baton")),
        one_port,
        backend_port,
        Some(1),
    );
    let floor_port = free_port();
    let floor = Killed(
        Command::new(std::env::current_exe().expect("this bench's path"))
            .env(FLOOR, format!("{floor_port},{backend_port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("the floor proxy starts"),
    );
    let other = std::env::var_os("BATON_AGAINST").map(|binary| {
        let port = free_port();
        let other = start_baton(
            &dir.join("other"),
            Path::new(&binary),
            port,
            backend_port,
            None,
        );
        wait_ready(port);
        (other, port)
    });
    for port in [nginx_port, baton_port, one_port, floor_port, backend_port] {
        wait_ready(port);
    }

    println!(
        "machine: {} cores; wrk -t2 -c{CONNECTIONS} -d{SECONDS}s, {ROUNDS} alternating rounds each",
        num_cpus()
    );
    println!(
        "baton-1: Baton with `threads = 1`; hyper-1: hyper's server and hyper-util's client, \
         one thread, forwarding and nothing else (the floor of Baton's stack)"
    );
    let mut contenders: Vec<(&str, u16, Vec<u32>)> = vec![
        ("nginx", nginx_port, Vec::new()),
        ("baton", baton_port, vec![baton.id()]),
        ("baton-1", one_port, vec![baton_one.id()]),
        ("hyper-1", floor_port, vec![floor.id()]),
    ];
    if let Some((other, port)) = &other {
        contenders.push(("other", *port, vec![other.id()]));
    }
    // The large body streams: it shows what the allocator settings Baton is
    // built with cost (run with `BATON_AGAINST` and jemalloc's stock
    // settings, README "Performance").
    for (label, path) in [
        ("small body (2 B)", "/small"),
        ("4 KiB body", "/4k"),
        ("10 MiB body", "/10m"),
    ] {
        let mut runs: Vec<Vec<Run>> = contenders.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for ((name, port, pids), runs) in contenders.iter().zip(&mut runs) {
                // nginx's workers are looked up each round: it may replace one.
                let pids = if *name == "nginx" {
                    proxy.pids()
                } else {
                    pids.clone()
                };
                runs.push(run(*port, path, &pids, None));
            }
        }
        let summaries: Vec<Summary> = runs.iter().map(|r| Summary::of(r)).collect();
        println!("\n{label}");
        println!(
            "  {:<8} {:>10} {:>8} {:>11}   {:>22}",
            "", "req/s", "p99 ms", "CPU µs/req", "vs nginx: req/s p99 CPU"
        );
        let n = &summaries[0];
        for ((name, _, _), s) in contenders.iter().zip(&summaries) {
            println!(
                "  {:<8} {:>10.0} {:>8.2} {:>11.1}   {:>8.2}x {:>5.2}x {:>5.2}x",
                name,
                s.rps,
                s.p99_ms,
                s.cpu_us,
                s.rps / n.rps,
                s.p99_ms / n.p99_ms,
                s.cpu_us / n.cpu_us
            );
        }
        let (one, floor) = (&summaries[2], &summaries[3]);
        println!(
            "  baton-1/hyper-1: req/s {:.2}x, p99 {:.2}x, CPU per request {:.2}x",
            one.rps / floor.rps,
            one.p99_ms / floor.p99_ms,
            one.cpu_us / floor.cpu_us
        );
    }
    drop(floor);
    drop(baton_one);
    // The facade: the same backend plays a job API whose jobs are done at
    // the first poll. Alternating with pass-through rounds on Baton.
    let post = dir.join("post.lua");
    fs::write(&post, "wrk.method = \"POST\"\nwrk.body = \"{}\"\n").expect("wrk script");
    let mut facade_runs = Vec::new();
    let mut plain_runs = Vec::new();
    // Resident memory after the first round (pools, arenas and the route's
    // timings warm) and after the last: what each facade request leaves
    // behind, if anything grows with the count of requests.
    let mut rss_warm = 0;
    for round in 0..ROUNDS {
        facade_runs.push(run(baton_port, "/jobs", &[baton.id()], Some(&post)));
        plain_runs.push(run(baton_port, "/small", &[baton.id()], None));
        if round == 0 {
            rss_warm = rss(baton.id());
        }
    }
    let rss_end = rss(baton.id());
    let later_requests: f64 = facade_runs[1..]
        .iter()
        .chain(&plain_runs[1..])
        .map(|r| r.rps * f64::from(SECONDS))
        .sum();
    let f = Summary::of(&facade_runs);
    let p = Summary::of(&plain_runs);
    println!(
        "
facade (submit + 1 poll + fetch) vs pass-through, Baton's CPU"
    );
    println!(
        "  facade       {:>10.0} req/s {:>10.1} µs/req",
        f.rps, f.cpu_us
    );
    println!(
        "  pass-through {:>10.0} req/s {:>10.1} µs/req",
        p.rps, p.cpu_us
    );
    println!(
        "  facade / pass-through CPU: {:.2}x (target <= 3.30x: 1.1 x 3 backend calls)",
        f.cpu_us / p.cpu_us
    );
    println!(
        "  Baton RSS after the first round {:.1} MiB, after the last {:.1} MiB: {:+.2} bytes per request over {:.0} more requests",
        rss_warm as f64 / 1048576.0,
        rss_end as f64 / 1048576.0,
        (rss_end as f64 - rss_warm as f64) / later_requests,
        later_requests
    );
    drop(baton);
    drop(proxy);
    drop(backend);
    let _ = fs::remove_dir_all(&dir);
}

struct Run {
    rps: f64,
    p99_ms: f64,
    cpu_us: f64,
}

struct Summary {
    rps: f64,
    p99_ms: f64,
    cpu_us: f64,
}

impl Summary {
    /// Medians: one noisy round does not decide.
    fn of(runs: &[Run]) -> Summary {
        let median = |f: fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        Summary {
            rps: median(|r| r.rps),
            p99_ms: median(|r| r.p99_ms),
            cpu_us: median(|r| r.cpu_us),
        }
    }
}

/// One wrk run against `port`, with the CPU `pids` used meanwhile.
fn run(port: u16, path: &str, pids: &[u32], script: Option<&Path>) -> Run {
    let before = cpu_ticks(pids);
    let mut args = vec![
        "-t2".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{SECONDS}s"),
        "--latency".to_owned(),
    ];
    if let Some(script) = script {
        args.push("-s".to_owned());
        args.push(script.display().to_string());
    }
    args.push(format!("http://127.0.0.1:{port}{path}"));
    let out = Command::new("wrk").args(&args).output().expect("wrk runs");
    let after = cpu_ticks(pids);
    let text = String::from_utf8_lossy(&out.stdout);
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let rps = field(&text, "Requests/sec:").unwrap_or(0.0);
    let p99_ms = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(millis)
        .unwrap_or(f64::NAN);
    let ticks = after.saturating_sub(before) as f64;
    let cpu_us = ticks * 1_000_000.0 / clock_ticks() / requests.max(1.0);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("warning: errors during the run on port {port}:\n{text}");
    }
    Run {
        rps,
        p99_ms,
        cpu_us,
    }
}

fn field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// wrk's latency figure (`812.00us`, `1.21ms`, `2.00s`) in milliseconds.
fn millis(text: &str) -> f64 {
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// An nginx with its own prefix and config; stopped when dropped.
struct Nginx {
    prefix: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, conf: &str, workers: u32) -> Nginx {
        fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let conf = format!(
            "worker_processes {workers};\npid {}/nginx.pid;\nerror_log {}/logs/error.log;\n{conf}",
            prefix.display(),
            prefix.display()
        );
        fs::write(prefix.join("nginx.conf"), conf).expect("nginx config");
        let status = Command::new("nginx")
            .args([
                "-p",
                &prefix.display().to_string(),
                "-c",
                &prefix.join("nginx.conf").display().to_string(),
            ])
            .status()
            .expect("nginx starts");
        assert!(
            status.success(),
            "nginx failed to start; see {}/logs/error.log",
            prefix.display()
        );
        Nginx {
            prefix: prefix.to_owned(),
        }
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        let master: u32 = fs::read_to_string(self.prefix.join("nginx.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        let mut pids = vec![master];
        if let Ok(children) = fs::read_to_string(format!("/proc/{master}/task/{master}/children")) {
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .args([
                "-p",
                &self.prefix.display().to_string(),
                "-c",
                &self.prefix.join("nginx.conf").display().to_string(),
                "-s",
                "stop",
            ])
            .stderr(Stdio::null())
            .status();
    }
}

fn backend_conf(port: u16, root: &Path) -> String {
    fs::create_dir_all(root).expect("backend root");
    fs::write(root.join("small"), "ok").expect("small body");
    fs::write(root.join("4k"), "x".repeat(4096)).expect("4 KiB body");
    fs::write(root.join("10m"), "x".repeat(10 << 20)).expect("10 MiB body");
    format!(
        r#"events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    open_file_cache max=16;
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        absolute_redirect off;
        root {};
        # A job API whose jobs are done at the first poll.
        location = /jobs {{ add_header Location /status always; return 202; }}
        location = /status {{ return 303 /result; }}
        location = /result {{ return 200 '{{"done":true}}'; }}
    }}
}}"#,
        root.display()
    )
}

fn proxy_conf(port: u16, backend: u16) -> String {
    format!(
        r#"events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}"#
    )
}

/// Baton in front of the same backend, as a process of its own.
fn start_baton(
    dir: &Path,
    binary: &Path,
    port: u16,
    backend: u16,
    threads: Option<usize>,
) -> Killed {
    fs::create_dir_all(dir).expect("a scratch directory");
    let conf = dir.join("baton.toml");
    let threads = threads.map_or(String::new(), |n| format!("threads = {n}\n"));
    fs::write(
        &conf,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{threads}\n[backends.app]\nurl = \"http://127.0.0.1:{backend}\"\npool_max_idle = 64\n\n\
             [[routes]]\nname = \"jobs\"\nmatch = {{ methods = [\"POST\"], path = \"/jobs\" }}\nbackend = \"app\"\n\
             [routes.async]\npreset = \"location-303\"\nidempotency = {{ enabled = false }}\n\
             poll = {{ initial = \"1ms\", min_interval = \"1ms\", jitter = 0.0, adaptive = false }}\n\n\
             [[routes]]\nname = \"all\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n"
        ),
    )
    .expect("baton config");
    Command::new(binary)
        .args(["run", "--config", &conf.display().to_string()])
        // Like nginx's `access_log off`: the comparison is of proxying.
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .map(Killed)
        .expect("baton starts")
}

/// The floor of Baton's stack: hyper's HTTP/1 server and hyper-util's
/// pooled client on one thread, forwarding each request as it came and
/// its answer as it came back, with none of a proxy's hygiene (no
/// hop-by-hop headers stripped, no forwarding headers, no ids, no
/// metrics, no logs). Whatever Baton costs above this is Baton's own.
fn floor_proxy(ports: &str) {
    use http_body_util::Either;
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (port, backend) = ports.split_once(',').expect("port,backend");
    let port: u16 = port.parse().expect("a port");
    let authority = format!("127.0.0.1:{backend}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port");
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build_http::<Incoming>();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (client, authority) = (client.clone(), authority.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                        let client = client.clone();
                        let target = format!(
                            "http://{authority}{}",
                            request.uri().path_and_query().map_or("/", |p| p.as_str())
                        );
                        async move {
                            *request.uri_mut() = target.parse().expect("a URI");
                            Ok::<_, std::convert::Infallible>(match client.request(request).await {
                                Ok(response) => response.map(Either::Left),
                                Err(_) => http::Response::builder()
                                    .status(502)
                                    .body(Either::Right(
                                        http_body_util::Empty::<bytes::Bytes>::new(),
                                    ))
                                    .expect("a response"),
                            })
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
