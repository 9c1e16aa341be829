//! The request target, made canonical once before anything reads it.
//!
//! Routing, prefix rewriting and the backend must all see the same path,
//! or a path that one of them reads differently escapes its route:
//! `/pub/../secret` matches `/pub/*` as written, and a backend that
//! resolves the dots serves `/secret`. So the path is normalised first
//! (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded
//! (`%2e` is a dot, `%41` an `A`), other escapes get upper-case hex, and
//! dot-segments are removed (§5.2.4). What cannot be made safe is refused:
//! a path that climbs above the root, a malformed escape, an encoded NUL.
//!
//! An encoded slash or backslash (`%2F`, `%5C`, or a raw `\`, which some
//! backends treat as a separator) is kept encoded, because decoding it
//! would change which segments the path has; a route must opt in to
//! receiving one ([`has_encoded_slash`] is the check), and even then no
//! piece between such separators may be a dot-segment.

use std::borrow::Cow;

/// Why a request target cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    #[error("the path has an encoded NUL")]
    Nul,
    #[error("the path has an encoded slash or a backslash, which this route does not accept")]
    EncodedSlash,
    #[error("the path has a dot-segment with parameters (`..;`)")]
    DotParameters,
}

/// The canonical form of `path` (no query): borrowed when it already is.
/// With `allow_encoded_slash`, encoded separators pass (still encoded);
/// without, they are an error.
pub fn normalize(path: &str, allow_encoded_slash: bool) -> Result<Cow<'_, str>, TargetError> {
    if !path.starts_with('/') {
        return Err(TargetError::NotAbsolute);
    }
    let normalized = if is_plain(path) {
        Cow::Borrowed(path)
    } else {
        match remove_dot_segments(&decode_unreserved(path)?)? {
            // Escapes already in canonical form: nothing changed.
            same if same == path => Cow::Borrowed(path),
            changed => Cow::Owned(changed),
        }
    };
    if has_encoded_slash(&normalized) && (!allow_encoded_slash || hides_dot_segment(&normalized)) {
        return Err(TargetError::EncodedSlash);
    }
    if normalized.contains(';') && normalized.split('/').any(is_dot_with_parameters) {
        return Err(TargetError::DotParameters);
    }
    Ok(normalized)
}

/// Whether a normalised path carries an encoded separator (`%2F`, `%5C`)
/// or a raw backslash.
pub(crate) fn has_encoded_slash(path: &str) -> bool {
    path.contains('\\') || encoded_separators(path).next().is_some()
}

/// Nothing to do: no escapes, no backslash, and no dot-segment (the
/// common case, checked without allocating).
fn is_plain(path: &str) -> bool {
    !path.contains(['%', '\\']) && !path.split('/').any(|s| s == "." || s == "..")
}

/// Decodes escapes of unreserved characters and upper-cases the rest.
fn decode_unreserved(path: &str) -> Result<String, TargetError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'%' {
            out.push(byte);
            i += 1;
            continue;
        }
        let (Some(high), Some(low)) = (
            bytes.get(i + 1).and_then(|b| hex_value(*b)),
            bytes.get(i + 2).and_then(|b| hex_value(*b)),
        ) else {
            return Err(TargetError::BadEscape);
        };
        let decoded = high << 4 | low;
        if decoded == 0 {
            return Err(TargetError::Nul);
        }
        if is_unreserved(decoded) {
            out.push(decoded);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(high)], HEX[usize::from(low)]]);
        }
        i += 3;
    }
    // Only ASCII was replaced by ASCII, so the text stays UTF-8.
    String::from_utf8(out).map_err(|_| TargetError::BadEscape)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §5.2.4 on an absolute path, except that climbing above the
/// root is an error rather than clamped: a client that asks for it is
/// probing, not navigating.
fn remove_dot_segments(path: &str) -> Result<String, TargetError> {
    let mut kept: Vec<&str> = Vec::new();
    // A path ending in a dot-segment names a directory: `/a/b/..` is `/a/`.
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                kept.pop().ok_or(TargetError::AboveRoot)?;
                trailing_slash = true;
            }
            other => kept.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || (trailing_slash && !out.ends_with('/')) {
        out.push('/');
    }
    Ok(out)
}

/// The positions of `%2F` and `%5C` (upper-case after normalising).
fn encoded_separators(path: &str) -> impl Iterator<Item = usize> + '_ {
    path.match_indices('%').filter_map(|(at, _)| {
        let escape = path.get(at..at + 3)?;
        (escape.eq_ignore_ascii_case("%2F") || escape.eq_ignore_ascii_case("%5C")).then_some(at)
    })
}

/// `..;x` or `.;x`: Tomcat and other servlet containers drop a segment's
/// `;parameters` and then resolve the dots, so `/pub/..;/admin` is
/// `/admin` to them while it looks like a plain segment to anyone else.
fn is_dot_with_parameters(segment: &str) -> bool {
    segment
        .split_once(';')
        .is_some_and(|(name, _)| name == "." || name == "..")
}

/// Whether a backend that decodes encoded separators would find a
/// dot-segment: `/a/..%2Fsecret` is `/a/../secret` to it.
fn hides_dot_segment(path: &str) -> bool {
    let mut pieces = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = encoded_separators(rest).next() {
        pieces.push_str(&rest[..at]);
        pieces.push('/');
        rest = &rest[at + 3..];
    }
    pieces.push_str(rest);
    pieces
        .split(['/', '\\'])
        .any(|piece| piece == "." || piece == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, TargetError> {
        normalize(path, false).map(Cow::into_owned)
    }

    #[test]
    fn examples() {
        assert_eq!(n("/"), Ok("/".into()));
        assert_eq!(n("/a/b"), Ok("/a/b".into()));
        assert_eq!(n("/a/./b"), Ok("/a/b".into()));
        assert_eq!(n("/a/b/../c"), Ok("/a/c".into()));
        assert_eq!(n("/a/b/.."), Ok("/a/".into()));
        assert_eq!(n("/a/b/."), Ok("/a/b/".into()));
        assert_eq!(n("/a/.."), Ok("/".into()));
        assert_eq!(n("/a//b"), Ok("/a//b".into()));
        assert_eq!(n("/.well-known/x"), Ok("/.well-known/x".into()));
        assert_eq!(n("/a/%2e%2E/b"), Ok("/b".into()));
        assert_eq!(n("/%41%7e%20"), Ok("/A~%20".into()));
        assert_eq!(n("/a%3fb"), Ok("/a%3Fb".into()));
        assert_eq!(n("/%252e%252e/x"), Ok("/%252e%252e/x".into()));
        assert_eq!(n("/.."), Err(TargetError::AboveRoot));
        assert_eq!(n("/a/../../b"), Err(TargetError::AboveRoot));
        assert_eq!(n("/a/..%2fb"), Err(TargetError::EncodedSlash));
        assert_eq!(n("/a/..%5Cb"), Err(TargetError::EncodedSlash));
        assert_eq!(n("/a\\b"), Err(TargetError::EncodedSlash));
        assert_eq!(n("/a%2"), Err(TargetError::BadEscape));
        assert_eq!(n("/a%zz"), Err(TargetError::BadEscape));
        assert_eq!(n("/a%00"), Err(TargetError::Nul));
        assert_eq!(n("*"), Err(TargetError::NotAbsolute));
        assert_eq!(n("/pub/..;/admin"), Err(TargetError::DotParameters));
        assert_eq!(n("/pub/%2e;x/admin"), Err(TargetError::DotParameters));
        assert_eq!(n("/a;b/c"), Ok("/a;b/c".into()));
        assert_eq!(
            normalize("/a%2fb", true).map(Cow::into_owned),
            Ok("/a%2Fb".into())
        );
        assert_eq!(normalize("/a/..%2fb", true), Err(TargetError::EncodedSlash));
    }

    /// Pieces that exercise every branch: dots plain and encoded, encoded
    /// separators, escapes of reserved and unreserved bytes, bad escapes.
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2E%2e".to_owned()),
            Just(".%2e".to_owned()),
            Just("%2f".to_owned()),
            Just("%5C".to_owned()),
            Just("\\".to_owned()),
            Just("%25".to_owned()),
            Just("%41".to_owned()),
            Just("%7e".to_owned()),
            Just(";".to_owned()),
            Just("..;x".to_owned()),
            Just("%3f".to_owned()),
            Just("%".to_owned()),
            Just("%0".to_owned()),
            Just("%00".to_owned()),
            Just(String::new()),
            "[a-z.~_-]{1,4}",
            "[ -~]{0,3}",
        ]
    }

    fn path() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        proptest::collection::vec(proptest::collection::vec(piece(), 1..3), 0..8).prop_map(
            |segments| {
                let mut path = String::new();
                for segment in segments {
                    path.push('/');
                    path.push_str(&segment.concat());
                }
                if path.is_empty() {
                    path.push('/');
                }
                path
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn normal_forms_have_no_dot_segment_and_are_fixed_points(
            path in path(),
            allow in proptest::bool::ANY,
        ) {
            if let Ok(out) = normalize(&path, allow) {
                proptest::prop_assert!(out.starts_with('/'), "{out}");
                for segment in out.split('/') {
                    proptest::prop_assert!(segment != "." && segment != "..", "{path} -> {out}");
                    proptest::prop_assert!(!segment.eq_ignore_ascii_case("%2e"), "{path} -> {out}");
                }
                proptest::prop_assert!(!hides_dot_segment(&out), "{path} -> {out}");
                proptest::prop_assert!(
                    !out.split('/').any(is_dot_with_parameters),
                    "{path} -> {out}"
                );
                if !allow {
                    proptest::prop_assert!(!has_encoded_slash(&out), "{path} -> {out}");
                }
                let again = normalize(&out, allow);
                proptest::prop_assert_eq!(again.as_deref(), Ok(&*out));
            }
        }

        #[test]
        fn anything_printable_is_normalised_or_refused_without_panic(raw in "/[ -~]{0,40}") {
            let _ = normalize(&raw, true);
            let _ = normalize(&raw, false);
        }
    }
}
