//! Micro-benchmarks of the per-request hot paths: route matching over a
//! hundred routes, header hygiene, reading a job's state out of a 4 KiB
//! status body, Retry-After parsing, and request-target normalisation.
//!
//! `cargo bench --bench hot_paths`; figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::SystemTime;

use baton::config::router;
use baton::config::{NotFound, StateReader, StateRules};
use baton::facade::job_state::{self, StatusAnswer};
use baton::facade::schedule;
use baton::headers;
use baton::Config;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

/// A config with 100 routes of every pattern shape, the catch-all last.
fn hundred_routes() -> Config {
    let mut toml = String::from("[backends.app]\nurl = \"http://127.0.0.1:3000\"\n");
    for i in 0..99 {
        let path = match i % 3 {
            0 => format!("/exact/{i}"),
            1 => format!("/prefix/{i}/*"),
            _ => format!("/items/{i}/{{id}}/detail"),
        };
        toml.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nmatch = {{ methods = [\"GET\", \"POST\"], path = \"{path}\" }}\nbackend = \"app\"\n"
        ));
    }
    toml.push_str("[[routes]]\nname = \"default\"\nmatch = { path = \"/*\" }\nbackend = \"app\"\n");
    Config::parse(&toml, "bench.toml", None).expect("the bench config is valid")
}

fn route_matching(c: &mut Criterion) {
    let config = hundred_routes();
    let mut group = c.benchmark_group("route_matching_100_routes");
    for (name, path) in [
        ("first", "/exact/0"),
        ("middle_param", "/items/50/abc123/detail"),
        ("last_prefix", "/prefix/97/a/b/c"),
        ("catch_all", "/nowhere/at/all"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                router::find(
                    black_box(&config.routes),
                    &Method::GET,
                    Some("example.com"),
                    black_box(path),
                )
            })
        });
    }
    group.finish();
}

fn header_hygiene(c: &mut Criterion) {
    let mut request = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("content-length", "4096"),
        ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc"),
        ("connection", "keep-alive, x-hop"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-request-id", "0123456789abcdef0123456789abcdef"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        request.append(name, HeaderValue::from_static(value));
    }
    let client: IpAddr = "10.1.2.3".parse().expect("an address");
    let host = HeaderValue::from_static("api.example.com");
    c.bench_function("header_hygiene_12_fields", |b| {
        b.iter(|| {
            let mut h = black_box(&request).clone();
            headers::strip_hop_by_hop(&mut h);
            headers::add_forwarded(&mut h, client, Some(&host), false);
            headers::add_via(&mut h, Version::HTTP_11);
            h
        })
    });
}

fn job_state(c: &mut Criterion) {
    let rules = StateRules {
        running_statuses: vec![StatusCode::ACCEPTED],
        redirect_statuses: vec![StatusCode::SEE_OTHER],
        not_found: NotFound::Gone,
        reader: StateReader::Field {
            pointer: "/status".into(),
            running: vec!["running".into()],
            succeeded: vec!["succeeded".into()],
            failed: vec!["failed".into()],
            canceled: vec!["canceled".into()],
        },
    };
    // A realistic 4 KiB status document with the state near the end.
    let rows: Vec<serde_json::Value> = (0..40)
        .map(|i| serde_json::json!({"page": i, "words": 312 + i, "lang": "en", "confidence": 0.97}))
        .collect();
    let mut body = serde_json::json!({"id": "op-7781", "createdDateTime": "2026-11-26T01:00:00Z", "analyzeResult": {"pages": rows}, "status": "Running"});
    let short = 4096usize.saturating_sub(body.to_string().len() + 12);
    body["note"] = "x".repeat(short).into();
    let text = Bytes::from(body.to_string());
    assert!((4000..=4200).contains(&text.len()), "{}", text.len());
    c.bench_function("job_state_pointer_4KiB", |b| {
        b.iter(|| {
            let mut answer =
                StatusAnswer::new(StatusCode::OK, HeaderMap::new(), black_box(text.clone()));
            job_state::read(&rules, &[], &mut answer)
        })
    });
}

fn retry_after(c: &mut Criterion) {
    let now = SystemTime::now();
    let mut seconds = HeaderMap::new();
    seconds.insert("retry-after", HeaderValue::from_static("5"));
    let mut date = HeaderMap::new();
    let when = httpdate::fmt_http_date(now + std::time::Duration::from_secs(30));
    date.insert("retry-after", HeaderValue::from_str(&when).expect("a date"));
    let mut millis = HeaderMap::new();
    millis.insert("x-ms-retry-after-ms", HeaderValue::from_static("1500"));
    let mut group = c.benchmark_group("retry_after");
    group.bench_function("seconds", |b| {
        b.iter(|| schedule::retry_after(black_box(&seconds), now))
    });
    group.bench_function("http_date", |b| {
        b.iter(|| schedule::retry_after(black_box(&date), now))
    });
    group.bench_function("ms_header", |b| {
        b.iter(|| schedule::retry_after(black_box(&millis), now))
    });
    group.finish();
}

/// The request-target normaliser: the common path it leaves alone, and a
/// path with escapes and dot-segments it rewrites.
fn target_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("target_normalize");
    group.bench_function("plain", |b| {
        b.iter(|| baton::target::normalize(black_box("/api/v1/orders/42/items"), false).is_ok())
    });
    group.bench_function("dots_and_escapes", |b| {
        b.iter(|| {
            baton::target::normalize(black_box("/api/v1/./orders/%34%32/../42/it%65ms"), false)
                .is_ok()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    route_matching,
    header_hygiene,
    job_state,
    retry_after,
    target_normalize
);
criterion_main!(benches);
