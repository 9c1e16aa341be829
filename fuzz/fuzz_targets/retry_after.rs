//! `retry_after`: arbitrary `Retry-After`, `Retry-After-Ms` and
//! `X-Ms-Retry-After-Ms` values fed to `job::schedule::retry_after`.
//!
//! These headers come straight from the job backend on every poll, so
//! Baton must cope with any bytes a header may carry: huge numbers,
//! HTTP-dates far in the past or future (and a `now` at the epoch), stray
//! whitespace. The check is only that no value panics (overflow in the
//! `Duration` arithmetic, a date parser that slices badly).
#![no_main]

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 3] = ["retry-after", "retry-after-ms", "x-ms-retry-after-ms"];

fuzz_target!(|data: &[u8]| {
    // Pieces separated by 0x00 (never valid in a header value anyway): the
    // first goes to `retry-after`, the second to `retry-after-ms`, the
    // third to `x-ms-retry-after-ms`, and any further pieces are extra
    // values appended to those names in turn.
    let mut headers = HeaderMap::new();
    for (i, piece) in data.split(|&b| b == 0).enumerate() {
        let Ok(value) = HeaderValue::from_bytes(piece) else {
            continue;
        };
        headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), value);
    }
    let _ = baton::facade::schedule::retry_after(&headers, SystemTime::now());
    let _ = baton::facade::schedule::retry_after(&headers, SystemTime::UNIX_EPOCH);
});
