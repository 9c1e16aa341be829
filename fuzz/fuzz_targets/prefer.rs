//! `prefer`: arbitrary `Prefer` header values (one or several) fed to
//! `job::prefer::Prefer::parse`.
//!
//! `Prefer` comes from the client on every async-route request and decides
//! how long Baton holds it (`wait=N`) or whether it answers at once
//! (`respond-async`). Any bytes a client sends must parse to some
//! `Prefer` without panicking, and a `wait` it yields must be one the
//! value asked for, so a `Some` wait is checked to appear in the input.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Pieces separated by 0x00 (never valid in a header value) become
    // separate `Prefer` fields, in order.
    let mut headers = HeaderMap::new();
    for piece in data.split(|&b| b == 0) {
        if let Ok(value) = HeaderValue::from_bytes(piece) {
            headers.append(baton::facade::prefer::PREFER, value);
        }
    }
    let prefer = baton::facade::prefer::Prefer::parse(&headers);
    if let Some(wait) = prefer.wait {
        // Only a `wait` the client wrote can come out: its digits (without
        // leading zeros) appear in one of the values.
        let digits = wait.as_secs().to_string();
        let seen = headers
            .get_all(baton::facade::prefer::PREFER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains(&digits));
        assert!(seen, "wait {digits} is not in the Prefer values");
    }
});
