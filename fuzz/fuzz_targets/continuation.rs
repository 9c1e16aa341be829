//! `continuation`: arbitrary tokens to `Continuation::open`, the one
//! parser of the path of a Baton-served monitor (`/.baton/jobs/{token}`).
//!
//! Any client may send any token. It must be refused without a panic, and
//! a token that opens must be one Baton sealed: the fuzzer cannot forge
//! one, so an `Ok` from fuzz input is a failure. Each input is also sealed
//! into a real token (as a job's status URL) that must open to the same
//! ticket, and must stop opening when any byte of it is changed.
#![no_main]

use std::time::Duration;

use baton::facade::continuation::{Continuation, Refused, Ticket, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Continuation::new(
        b"fuzz-continuation-secret-of-32-bytes",
        &[],
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(data);
    assert!(keys.open(&text).is_err(), "a token nobody sealed opened");

    let ticket = Ticket {
        route: "fuzz".into(),
        status_url: text.to_string(),
        job_id: text.chars().take(8).collect(),
        original: "http://backend/fuzz".into(),
        callback: None,
    };
    let path = keys.monitor(&ticket);
    let token = path.strip_prefix(PREFIX).expect("a monitor path");
    assert_eq!(keys.open(token), Ok(ticket));
    if let Some(&first) = data.first() {
        let mut changed = token.as_bytes().to_vec();
        let at = usize::from(first) % changed.len();
        changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(changed).expect("base64 stays ASCII");
        assert_eq!(keys.open(&changed), Err(Refused::Unknown));
    }
});
