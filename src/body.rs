//! The one body type that flows through Baton, and the few ways to make one.
//!
//! Request and response bodies are streamed, never collected: a body from
//! the network is boxed as it is, so bytes move from one socket to the
//! other as they arrive and memory stays bounded by hyper's buffers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A streaming body with a boxed error, `Send` so h2 can drive it.
/// A boxed error with its source chain intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body could not be read; the error module gives each its
/// status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body stalled: nothing arrived for {0:?}")]
    Stalled(Duration),
    #[error("reading the body failed")]
    Read(#[source] BoxError),
}

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
pub(crate) fn limited<B>(body: B, limit: u64) -> Body
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
pub(crate) struct TooLarge {
    pub(crate) limit: u64,
}

/// A body stopped arriving: nothing came for `timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes arrived for {timeout:?}")]
pub(crate) struct Stalled {
    pub(crate) timeout: Duration,
    /// The client's request body (a 408), rather than a backend's answer.
    pub(crate) from_client: bool,
}

/// A body that fails with [`Stalled`] when no frame arrives within
/// `timeout` of the previous one (or of the first poll): a peer that
/// trickles or stops must not hold a connection, a buffer and a backend
/// call open for as long as it likes.
pub(crate) struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    from_client: bool,
    /// Boxed so the body stays `Unpin`; armed at the first wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was last set. The timer is not reset
    /// per frame (a timer-wheel update for each piece of a large body);
    /// when it fires after progress it is set again instead, so a stall is
    /// caught between one and two timeouts after the last frame.
    progressed: bool,
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, timeout: Duration, from_client: bool) -> Self {
        IdleTimeout {
            inner,
            timeout,
            from_client,
            sleep: None,
            progressed: false,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.progressed = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        while sleep.as_mut().poll(cx).is_ready() {
            if !std::mem::take(&mut this.progressed) {
                return Poll::Ready(Some(Err(Box::new(Stalled {
                    timeout,
                    from_client: this.from_client,
                }))));
            }
            sleep.as_mut().reset(Instant::now() + timeout);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose first frame was read ahead (to learn, before a response
/// head goes out, that the body is not broken), then the rest.
pub(crate) struct Prefetched<B> {
    first: Option<Frame<Bytes>>,
    rest: B,
}

impl<B> http_body::Body for Prefetched<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

/// Reads `body`'s first frame, so that a body that fails (or stalls, when
/// `body` has an idle timeout) before its first byte is known before the
/// response head is sent; an error here can still become an answer.
pub(crate) async fn prefetch<B>(mut body: B) -> Result<Prefetched<B>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        return Ok(Prefetched {
            first: None,
            rest: body,
        });
    }
    match body.frame().await {
        None => Ok(Prefetched {
            first: None,
            rest: body,
        }),
        Some(Ok(first)) => Ok(Prefetched {
            first: Some(first),
            rest: body,
        }),
        Some(Err(e)) => Err(e.into()),
    }
}

/// How a client's request body is read.
pub(crate) struct Reading {
    /// More is a 413.
    pub(crate) limit: u64,
    /// Bodies up to this size are read whole before the backend is
    /// called; larger ones stream.
    pub(crate) buffer: u64,
    /// Longest pause between two pieces of the body.
    pub(crate) idle: Duration,
}

/// Reads a whole request body of at most `limit` bytes, within `idle`
/// between pieces and, when given, by `deadline` (the instant, and the
/// whole time it allowed). The one collector every path uses, with one
/// mapping of its failures to the client's answer.
pub(crate) fn collect<B>(
    body: B,
    reading: &Reading,
    deadline: Option<(Instant, Duration)>,
) -> impl Future<Output = Result<Bytes, BodyError>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    // Made here, so the future keeps no borrow of `reading`.
    let collecting = collect_whole(IdleTimeout::new(body, reading.idle, true), reading.limit);
    async move {
        match deadline {
            Some((deadline, allowed)) => tokio::time::timeout_at(deadline, collecting)
                .await
                .unwrap_or(Err(BodyError::Stalled(allowed))),
            None => collecting.await,
        }
    }
}

/// Reads a whole body of at most `limit` bytes, as fast as it comes: the
/// collector under [`collect`], and the one for a backend's answers, which
/// run within the request's deadline already. Whose body it was decides
/// what a failure means (see `error.rs`).
pub(crate) fn collect_whole<B>(
    body: B,
    limit: u64,
) -> impl Future<Output = Result<Bytes, BodyError>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // A plain combinator rather than an `async fn`: the futures that await
    // this hold borrows, and a generic `async fn` here trips the
    // compiler's `Send` inference for them.
    http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .map(move |collected| {
            collected
                .map(http_body_util::Collected::to_bytes)
                .map_err(|e| failure(e, limit))
        })
}

/// What a failed body read means, whoever sent the body.
pub(crate) fn failure(err: BoxError, limit: u64) -> BodyError {
    if err.is::<http_body_util::LengthLimitError>() || err.is::<TooLarge>() {
        return BodyError::TooLarge { limit };
    }
    if let Some(stalled) = err.downcast_ref::<Stalled>() {
        return BodyError::Stalled(stalled.timeout);
    }
    BodyError::Read(err)
}

/// Reads a request body for forwarding: whole, when it fits the buffer
/// (and the shared `budget` has room), so that a body the client abandons,
/// stalls or overflows reaches the backend as nothing at all; otherwise
/// streamed behind the limit and the idle timeout.
pub(crate) async fn request<B>(
    body: B,
    declared: Option<u64>,
    reading: &Reading,
    budget: &Arc<Semaphore>,
) -> Result<Body, BodyError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if declared.is_some_and(|n| n > reading.limit) {
        return Err(BodyError::TooLarge {
            limit: reading.limit,
        });
    }
    if body.is_end_stream() {
        return Ok(empty());
    }
    let mut body = IdleTimeout::new(body, reading.idle, true);
    if reading.buffer == 0 || declared.is_some_and(|n| n > reading.buffer) {
        return Ok(limited(body, reading.limit));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total: u64 = 0;
    // The budget this body holds, one permit grown chunk by chunk.
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let Some(frame) = body.frame().await else {
            return Ok(buffered(chunks, declared, held));
        };
        let frame = frame.map_err(|e| failure(e, reading.limit))?;
        let Ok(data) = frame.into_data() else {
            // Trailers end a body; a proxy that buffers drops them, as
            // nginx does.
            continue;
        };
        total += data.len() as u64;
        if total > reading.limit {
            return Err(BodyError::TooLarge {
                limit: reading.limit,
            });
        }
        let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(u32::MAX);
        let permit = Arc::clone(budget).try_acquire_many_owned(kib).ok();
        let fits = total <= reading.buffer && permit.is_some();
        match (held.as_mut(), permit) {
            (Some(held), Some(permit)) => held.merge(permit),
            (None, permit) => held = permit,
            (Some(_), None) => {}
        }
        chunks.push(data);
        if !fits {
            // Too large to hold, or Baton holds enough already: what was
            // read goes first, the rest streams behind it.
            let rest = http_body_util::BodyStream::new(body);
            let joined =
                http_body_util::StreamBody::new(frames(chunks).chain(rest).map(move |frame| {
                    // What was buffered stays counted until it has been sent.
                    let _held = &held;
                    frame
                }));
            return Ok(limited(joined, reading.limit));
        }
    }
}

/// A body read whole, as it goes to the backend: in one piece when the
/// client declared its length, else chunked in the pieces it came in. The
/// budget it holds is returned when the body is dropped (sent).
fn buffered(
    mut chunks: Vec<Bytes>,
    declared: Option<u64>,
    held: Option<OwnedSemaphorePermit>,
) -> Body {
    let body = match declared {
        Some(_) => {
            let whole = match chunks.len() {
                1 => chunks.pop().unwrap_or_default(),
                _ => chunks.concat().into(),
            };
            full(whole)
        }
        None => http_body_util::StreamBody::new(frames(chunks)).boxed_unsync(),
    };
    body.map_frame(move |frame| {
        let _held = &held;
        frame
    })
    .boxed_unsync()
}

/// Chunks read ahead, as the frames of a body again.
pub(crate) fn frames(
    chunks: Vec<Bytes>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
    futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(c))))
}
