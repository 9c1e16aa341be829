//! `baton demo`: Baton in front of a small sample job API, both on
//! loopback, so one command shows the facade at work.
//!
//! The sample API speaks dialect A (Location + 303): `POST /reports` answers
//! `202 Accepted` with a status monitor, the monitor says "Running" until
//! the report is ready, then redirects to the result. A client that knows
//! none of this sends one blocking POST to Baton and gets the report.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::sync::lock;
use crate::{Baton, Config, Listeners};

/// How long a sample report takes to "generate".
pub const REPORT_TIME: Duration = Duration::from_secs(3);

/// Runs the demo until `shutdown`: the sample job API on a free loopback
/// port, Baton on `listen` in front of it.
pub async fn run(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = api.local_addr()?;
    tokio::spawn(serve_job_api(api, REPORT_TIME));
    let config = config(api_addr);
    let main = TcpListener::bind(listen)
        .await
        .map_err(|e| DemoError::Listen(listen, e))?;
    let addr = main.local_addr()?;
    let baton = Baton::new(config).await?;
    // Written, not println!'d: a closed stdout must not take the demo down.
    let _ = writeln!(
        std::io::stdout().lock(),
        "Baton is in front of a sample job API at http://{api_addr} (reports take {}s).\n\
         The API answers 202 and a status URL; Baton holds your request until the report is ready:\n\n  \
         curl -i -X POST http://{addr}/reports -H 'content-type: application/json' -d '{{\"quarter\":\"Q3\"}}'\n\n\
         Add -H 'Prefer: respond-async' to see the job API's own 202, or -H 'Prefer: wait=1' for a 504.\n\
         Ctrl-C stops the demo.",
        REPORT_TIME.as_secs()
    );
    baton
        .run(
            Listeners {
                main,
                admin: None,
                callbacks: None,
            },
            shutdown,
        )
        .await?;
    Ok(())
}

/// The demo's configuration: the same TOML a user would write.
pub fn config(api: SocketAddr) -> Config {
    let text = format!(
        r#"
[backends.reports]
url = "http://{api}"

[[routes]]
name = "create-report"
match = {{ methods = ["POST"], path = "/reports" }}
backend = "reports"
async = {{ preset = "location-303", wait = "30s", max_wait = "60s" }}

[[routes]]
name = "default"
match = {{ path = "/*" }}
backend = "reports"
"#
    );
    Config::parse(&text, "<demo>", None).expect("the demo's own config is valid")
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {0}: {1} (is another Baton running? try --listen 127.0.0.1:0)")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Start(#[from] crate::StartError),
}

/// A report being generated.
struct Report {
    started: Instant,
    request: Value,
}

/// Serves the sample job API: reports take `duration`.
pub async fn serve_job_api(listener: TcpListener, duration: Duration) {
    let reports: Arc<Mutex<HashMap<u64, Report>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    // Served like Baton's own listeners, with the demo's server settings.
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let settings = Arc::new(crate::edge::connection::Settings::new(&config(addr).server));
    // Serves for as long as the process runs: the phase never changes.
    let (_serving, phase) = watch::channel(crate::edge::connection::Phase::Serving);
    crate::edge::accept::serve_each(listener, settings, MAX_CONNECTIONS, phase, |_peer| {
        let (reports, next) = (Arc::clone(&reports), Arc::clone(&next));
        service_fn(move |request| {
            let (reports, next) = (Arc::clone(&reports), Arc::clone(&next));
            async move { Ok::<_, Infallible>(job_api(request, &reports, &next, duration).await) }
        })
    })
    .await;
}

/// Open connections the sample API takes at once.
const MAX_CONNECTIONS: usize = 1024;

async fn job_api(
    request: Request<Incoming>,
    reports: &Mutex<HashMap<u64, Report>>,
    next: &std::sync::atomic::AtomicU64,
    duration: Duration,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::POST, ["reports"]) => {
            let body = request
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            lock(reports).insert(
                id,
                Report {
                    started: Instant::now(),
                    request,
                },
            );
            answer(
                StatusCode::ACCEPTED,
                json!({"id": id, "status": "NotStarted"}),
            )
            .with(LOCATION, &format!("/reports/status/{id}"))
            .with(RETRY_AFTER, "1")
        }
        (&Method::GET, ["reports", "status", id]) => {
            let Some(elapsed) = id
                .parse()
                .ok()
                .and_then(|id: u64| lock(reports).get(&id).map(|r| r.started.elapsed()))
            else {
                return answer(StatusCode::NOT_FOUND, json!({"error": "no such report"}));
            };
            if elapsed < duration {
                let progress = (elapsed.as_secs_f64() / duration.as_secs_f64() * 100.0) as u64;
                answer(
                    StatusCode::OK,
                    json!({"status": "Running", "progress": progress}),
                )
                .with(RETRY_AFTER, "1")
            } else {
                answer(StatusCode::SEE_OTHER, json!({"status": "Succeeded"}))
                    .with(LOCATION, &format!("/reports/{id}/result"))
            }
        }
        (&Method::GET, ["reports", id, "result"]) => {
            let found = id.parse().ok().and_then(|id: u64| {
                lock(reports)
                    .get(&id)
                    .filter(|r| r.started.elapsed() >= duration)
                    .map(|r| (id, r.request.clone()))
            });
            match found {
                Some((id, request)) => answer(
                    StatusCode::OK,
                    json!({
                        "report": id,
                        "quarter": request.get("quarter").cloned().unwrap_or(Value::Null),
                        "revenue": 1_250_000,
                        "regions": [{"name": "EMEA", "share": 0.41}, {"name": "Americas", "share": 0.37}, {"name": "APAC", "share": 0.22}],
                    }),
                ),
                None => answer(
                    StatusCode::NOT_FOUND,
                    json!({"error": "no such report, or not ready"}),
                ),
            }
        }
        _ => answer(StatusCode::NOT_FOUND, json!({"error": "try POST /reports"})),
    }
}

fn answer(status: StatusCode, json: Value) -> Response<Body> {
    let mut response = Response::new(body::full(Bytes::from(json.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

trait With {
    fn with(self, name: http::header::HeaderName, value: &str) -> Self;
}

impl With for Response<Body> {
    fn with(mut self, name: http::header::HeaderName, value: &str) -> Self {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            self.headers_mut().insert(name, value);
        }
        self
    }
}
