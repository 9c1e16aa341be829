//! The one body type that flows through Baton, and the few ways to make one.
//!
//! Request and response bodies are streamed, never collected: a body from
//! the network is boxed as it is, so bytes move from one socket to the
//! other as they arrive and memory stays bounded by hyper's buffers.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;

/// A streaming body with a boxed error, `Send` so h2 can drive it.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body held entirely in memory (error pages, small fixed answers).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Boxes any streaming body without reading it.
pub fn stream<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A request body that fails with [`TooLarge`] once more than `limit`
/// bytes have streamed through it, so an oversized chunked upload is cut
/// off without being held.
pub fn limited<B>(body: B, limit: u64) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, limit_usize)
        .map_err(move |err| {
            if err.is::<http_body_util::LengthLimitError>() {
                Box::new(TooLarge { limit }) as BoxError
            } else {
                err
            }
        })
        .boxed_unsync()
}

/// The body went over its limit.
#[derive(Debug, thiserror::Error)]
#[error("body exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    pub limit: u64,
}
