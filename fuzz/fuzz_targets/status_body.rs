//! `status_body`: the job-state reader, `job::dialect::read`, on arbitrary
//! status answers for each built-in dialect.
//!
//! Every poll of a job hands Baton a status code and body written by the
//! backend, and `read` turns them into a `JobState` with the route's
//! `StateRules` (the preset's pointer, done flag, state names, failure
//! pointers). A backend that answers garbage must produce an `Err`, never
//! a panic in a held request. The rules come from a real configuration
//! with one async route per preset (plus the hand-written dialect from
//! `config/dialect-custom.toml`), so the fuzzer reads bodies exactly the
//! way a running Baton would.
//!
//! Beside "no panic", one property is checked: `StatusAnswer::lookup`
//! skims the body along the pointer's path instead of building the whole
//! document, and whenever the body is valid JSON that skim must find the
//! same value a full parse does.
//!
//! Input layout: byte 0 picks the route (its low bits) and whether the
//! answer carries `Location` and `Retry-After` (bit 7); bytes 1-2 give the
//! status code (folded into 100..=599); the rest is the body.
#![no_main]

use std::sync::OnceLock;

use baton::config::{AsyncRoute, StateReader};
use baton::facade::job_state::{read, StatusAnswer};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

[backends.jobs]
url = "http://127.0.0.1:3000"

[[routes]]
name = "location-303"
match = { methods = ["POST"], path = "/a" }
backend = "jobs"
async = { preset = "location-303" }

[[routes]]
name = "operation-location"
match = { methods = ["POST"], path = "/b" }
backend = "jobs"
async = { preset = "operation-location" }

[[routes]]
name = "google-operation"
match = { methods = ["POST"], path = "/c" }
backend = "jobs"
async = { preset = "google-operation" }

[[routes]]
name = "status-field"
match = { methods = ["POST"], path = "/d" }
backend = "jobs"
async = { preset = "status-field" }

[[routes]]
name = "accepted-while-running"
match = { methods = ["POST"], path = "/e" }
backend = "jobs"
async = { preset = "accepted-while-running" }

[[routes]]
name = "custom"
match = { methods = ["POST"], path = "/f" }
backend = "jobs"

[routes.async]
job = { statuses = [200], needs_handle = true }
handle = { template = "/api/jobs/{/job/ref}/status", id_pointer = "/job/ref" }
state = { pointer = "/phase", running = ["working"], succeeded = ["finished"], failed = ["broken"], canceled = ["stopped"], not_found = "running" }
result = { from = "url-template", template = "{status_url}/results" }
failure = { status = 500, pointers = ["/problem"] }
"#;

fn routes() -> &'static [std::sync::Arc<AsyncRoute>] {
    static ROUTES: OnceLock<Vec<std::sync::Arc<AsyncRoute>>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let config = baton::Config::parse(CONFIG, "status_body.toml", None)
            .unwrap_or_else(|e| panic!("the fuzz target's own config: {e}"));
        let routes: Vec<_> = config
            .routes
            .iter()
            .map(|r| r.facade.clone().expect("every route is async"))
            .collect();
        assert_eq!(routes.len(), 6);
        routes
    })
}

fuzz_target!(|data: &[u8]| {
    let [pick, hi, lo, body @ ..] = data else {
        return;
    };
    let routes = routes();
    let route = &routes[usize::from(pick & 0x7f) % routes.len()];
    let status = 100 + u16::from_be_bytes([*hi, *lo]) % 500;
    let status = StatusCode::from_u16(status).expect("100..=599 is a status code");
    let mut headers = HeaderMap::new();
    if pick & 0x80 != 0 {
        headers.insert(
            http::header::LOCATION,
            HeaderValue::from_static("/result/1"),
        );
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    let body = Bytes::copy_from_slice(body);

    let mut answer = StatusAnswer::new(status, headers, body.clone());
    let _ = read(&route.state, &route.failure.pointers, &mut answer);

    // The skimming lookup agrees with a full parse on valid JSON.
    let pointer = match &route.state.reader {
        StateReader::Status => return,
        StateReader::Field { pointer, .. } | StateReader::Done { pointer, .. } => pointer,
    };
    let Ok(full) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return;
    };
    let fresh = StatusAnswer::new(status, HeaderMap::new(), body);
    let skimmed = fresh.lookup(pointer).map_err(|e| e.to_string());
    assert_eq!(
        skimmed,
        Ok(full.pointer(pointer).cloned()),
        "lookup({pointer}) disagrees with the full parse"
    );
});
