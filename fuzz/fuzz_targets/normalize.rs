//! `normalize`: the request-target normaliser, `target::normalize`, on
//! arbitrary paths, with and without `allow_encoded_slash`.
//!
//! Routes match on the normalised path and the backend is sent it, so a
//! path that still has a dot segment after normalising (`/pub/../admin`,
//! or its percent-encoded spelling `/pub/%2e%2E/admin`) would let a client
//! reach what no route allows. For every input that starts with `/` (one
//! is prefixed when missing), an `Ok(out)` must:
//! - start with `/`;
//! - have no segment `.` or `..`, literal or with any dot written `%2e` /
//!   `%2E`;
//! - be a fixed point: normalising `out` again gives `out` unchanged.
//!
//! An `Err` (a path the normaliser refuses) is fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// `segment` with each `%2e` / `%2E` read as the dot it encodes.
fn dots_decoded(segment: &str) -> String {
    segment.replace("%2e", ".").replace("%2E", ".")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    for allow_encoded_slash in [false, true] {
        let Ok(out) = baton::target::normalize(&path, allow_encoded_slash) else {
            continue;
        };
        assert!(
            out.starts_with('/'),
            "{path:?} -> {out:?}: no leading slash"
        );
        for segment in out.split('/') {
            let decoded = dots_decoded(segment);
            assert!(
                decoded != "." && decoded != "..",
                "{path:?} -> {out:?}: dot segment {segment:?} left (allow_encoded_slash = {allow_encoded_slash})"
            );
        }
        match baton::target::normalize(&out, allow_encoded_slash) {
            Ok(again) => assert_eq!(
                again, out,
                "{path:?} -> {out:?}: not idempotent (allow_encoded_slash = {allow_encoded_slash})"
            ),
            Err(e) => panic!(
                "{path:?} -> {out:?}, which is then refused: {e:?} (allow_encoded_slash = {allow_encoded_slash})"
            ),
        }
    }
});
