//! `Idempotency-Key` (IETF httpapi draft): a retried request re-attaches to
//! the job its first attempt started instead of starting another.
//!
//! A key is scoped by route and, optionally, a client-identity header, and
//! bound to the request's fingerprint (method, target, body digest): the
//! same key with another request is refused. The first request leads:
//! it submits and follows the job. A retry while it runs waits for the
//! leader's answer; a retry after it finished replays that answer; a retry
//! after the leader let go without an answer (its deadline passed) resumes
//! following the job the leader submitted.
//!
//! The [`Store`] trait is the seam between this logic and where records
//! live: [`memory`] for one instance, a shared store for many.

pub(crate) mod memory;
pub(crate) mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use ring::digest;

use serde::{Deserialize, Serialize};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A final answer kept for replay.
#[derive(Debug)]
pub(crate) enum Stored {
    Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// The answer went to the first request but was too large to keep.
    TooLarge { status: StatusCode, limit: usize },
}

impl Stored {
    /// Bytes this record holds, for the store's memory bound.
    pub(crate) fn size(&self) -> usize {
        match self {
            Stored::Answer { headers, body, .. } => {
                body.len()
                    + headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 32)
                        .sum::<usize>()
            }
            Stored::TooLarge { .. } => 0,
        }
    }
}

/// Identifies the request a key was first used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub(crate) fn of(method: &Method, target: &str, body: &[u8]) -> Self {
        let body_digest = digest::digest(&digest::SHA256, body);
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(method.as_str().as_bytes());
        ctx.update(b"\n");
        ctx.update(target.as_bytes());
        ctx.update(b"\n");
        ctx.update(body_digest.as_ref());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Fingerprint(out)
    }
}

/// The store key for a client's key: hashed, so neither the client's key
/// nor its identity header (which may be a credential) is kept as is.
pub fn scoped_key(route: &str, scope: Option<&[u8]>, key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [route.as_bytes(), scope.unwrap_or_default(), key] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    hex::encode(ctx.finish().as_ref())
}

/// What a request with a key should do.
pub(crate) enum Begin {
    /// First with this key: submit and follow; report back to the store.
    Lead,
    /// The job exists and nobody follows it: follow it (no new submit).
    Resume(Ticket),
    /// Another request leads: wait for its answer. `None` means it let go
    /// without one; begin again.
    Wait(BoxFuture<'static, Option<Arc<Stored>>>),
    /// Finished earlier: this is the answer.
    Replay(Arc<Stored>),
    /// The key belongs to a different request.
    Mismatch,
}

pub use crate::cluster::StoreError;

/// An accepted job, as a store keeps it for retries and a continuation
/// token seals it for a client that comes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    #[serde(rename = "r")]
    pub route: String,
    #[serde(rename = "u")]
    pub status_url: String,
    #[serde(rename = "i")]
    pub job_id: String,
    /// The URI of the submit, for results re-read from it.
    #[serde(rename = "o")]
    pub original: String,
    /// The job's callback token, where the route completes by callback:
    /// a later request for the job finds a callback that came after the
    /// first one stopped waiting.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

/// Where idempotency records live.
pub(crate) trait Store: Send + Sync {
    /// Claims `key` for a request with `fingerprint`, or says what to do.
    fn begin(
        &self,
        key: &str,
        fingerprint: Fingerprint,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<Begin>>;
    /// The leader's job was accepted: retries after the leader lets go
    /// (or its instance dies) resume this job rather than submitting
    /// another.
    fn submitted(&self, key: &str, ticket: Ticket) -> BoxFuture<'_, StoreResult<()>>;
    /// The leader's final answer, for everyone waiting and every retry
    /// until the key expires.
    fn complete(&self, key: &str, answer: Stored) -> BoxFuture<'_, StoreResult<()>>;
    /// The leader stops without a final answer (deadline, shutdown, client
    /// gone). A submitted job stays for the next retry; a key whose request
    /// never reached the job API is forgotten.
    fn release(&self, key: &str) -> BoxFuture<'_, StoreResult<()>>;
    /// Records held now.
    fn len(&self) -> usize;
    /// Finished records dropped early to stay within the memory bound.
    fn evictions(&self) -> u64;
}
