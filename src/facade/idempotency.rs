//! One request's way through the idempotency store: claim the key, then
//! lead, resume, wait for the leader, or replay; and when leading, leave
//! the store the answer (or the job) for the retries to come.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use tokio::time::Instant;

use crate::body::{self, Body};
use crate::config::{AsyncRoute, Idempotency};
use crate::error::{BackendError, BoxError, ClientError, Error, JobError, JobRef};
use crate::facade::bound::{Bound, Cut};
use crate::facade::{self, JobEnv, Progress, Submission};
use crate::proxy::Forward;
use crate::store::Ticket;
use crate::store::{scoped_key, Begin, Fingerprint, Store, Stored};

/// Marks answers that a request did not lead to itself.
pub(crate) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Headers that belong to one request and are not replayed to another.
const PER_REQUEST: [HeaderName; 3] = [
    crate::headers::X_REQUEST_ID,
    crate::telemetry::correlation::TRACEPARENT,
    HeaderName::from_static("preference-applied"),
];

/// The key a request carries, if the route deduplicates and the request
/// could create a job.
pub(crate) fn key_of<'a, B>(
    config: &'a Idempotency,
    request: &'a Request<B>,
) -> Result<Option<&'a HeaderValue>, Error> {
    if matches!(*request.method(), http::Method::GET | http::Method::HEAD) {
        return Ok(None);
    }
    let Some(key) = request.headers().get(&config.header) else {
        return Ok(None);
    };
    // The draft's key is a short opaque string; anything else is a client
    // bug better reported than hashed.
    if key.is_empty() || key.len() > 255 || !key.as_bytes().iter().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::BadRequest(format!(
            "{} must be 1 to 255 visible ASCII characters",
            config.header
        ))
        .into());
    }
    Ok(Some(key))
}

/// The leader's side: what the store must learn when the request ends.
pub(crate) struct Leader {
    store: Arc<dyn Store>,
    key: String,
    max_stored_body: usize,
    pub(crate) progress: Progress,
    finished: bool,
    /// The request's deadline and shutdown's end of grace: an answer
    /// still being read for keeping then goes out as it is, unkept.
    bound: Bound,
}

/// The request's idempotency key, and where its route keeps answers.
pub(crate) struct Keyed<'k> {
    pub(crate) config: &'k Idempotency,
    pub(crate) store: &'k Arc<dyn Store>,
    /// The key as the client sent it: [`run`] scopes it.
    pub(crate) key: HeaderValue,
}

/// The caller's side of the request: when it started, and the slots it
/// reads after [`run`]'s future is gone (so they are borrowed, not owned).
pub(crate) struct Caller<'s> {
    pub(crate) started: Instant,
    /// Headers for the client's answer, whichever way it ends.
    pub(crate) extra: &'s mut HeaderMap,
    /// Set when this request leads; the caller hands it the final answer
    /// with [`Leader::finish`].
    pub(crate) leader: &'s mut Option<Box<Leader>>,
    /// How a request that did not lead got its answer, for the log.
    pub(crate) role: &'s mut Option<&'static str>,
}

/// Runs an async route for a request carrying an idempotency key. On
/// return, `caller.leader` is set when this request led; the caller hands
/// it the final answer with [`Leader::finish`].
pub(crate) async fn run(
    cx: Forward<'_>,
    facade: &AsyncRoute,
    keyed: Keyed<'_>,
    request: Request<Bytes>,
    env: JobEnv<'_>,
    caller: Caller<'_>,
) -> Result<Response<Body>, Error> {
    let Keyed { config, store, key } = keyed;
    let Caller {
        started,
        extra,
        leader,
        role,
    } = caller;
    let key = scoped(&cx.route.name, config, request.headers(), &key);
    let (parts, bytes) = request.into_parts();
    let fingerprint = fingerprint_of(&parts, &bytes);
    let (_, hold) = facade::hold(facade, &parts.headers, extra);
    let mut bound = Bound::new(started + hold, env.drain.clone());

    loop {
        let begin = store
            .begin(&key, fingerprint, config.ttl)
            .await
            .map_err(Error::Unavailable)?;
        match begin {
            Begin::Mismatch => return Err(ClientError::IdempotencyMismatch.into()),
            Begin::Replay(stored) => {
                *role = Some("replayed");
                return replay(&stored);
            }
            Begin::Wait(answer) => match bound.within(answer).await {
                Ok(Some(stored)) => {
                    *role = Some("latched");
                    return replay(&stored);
                }
                // The leader let go; one of those waiting takes over.
                Ok(None) => continue,
                Err(cut) => return Err(waited_out(cut, hold)),
            },
            Begin::Lead => {
                let lead = leader.insert(Box::new(Leader::new(store, key.clone(), config, bound)));
                let request = Box::new(Request::from_parts(parts, body::full(bytes)));
                let env = JobEnv {
                    record: Some((&**store, &key)),
                    ..env
                };
                return Box::pin(facade::handle(
                    cx,
                    facade,
                    request,
                    started,
                    env,
                    extra,
                    &mut lead.progress,
                ))
                .await;
            }
            Begin::Resume(ticket) => {
                let lead = leader.insert(Box::new(Leader::new(store, key, config, bound)));
                let resumed = facade::resume(
                    cx,
                    facade,
                    ticket,
                    &parts.headers,
                    started,
                    env,
                    extra,
                    &mut lead.progress,
                );
                // The head is not kept while the request is held.
                drop(parts);
                return Box::pin(resumed).await;
            }
        }
    }
}

/// The key as the store knows it: the route's, within the client's scope
/// (`scope_header`) where the route has one.
fn scoped(route: &str, config: &Idempotency, headers: &HeaderMap, key: &HeaderValue) -> String {
    let scope = config
        .scope_header
        .as_ref()
        .and_then(|h| headers.get(h))
        .map(|v| v.as_bytes().to_vec());
    scoped_key(route, scope.as_deref(), key.as_bytes())
}

/// What tells a retry from another request under the same key: method,
/// target and the whole body (which facade requests have read before they
/// took their place).
fn fingerprint_of(parts: &http::request::Parts, bytes: &[u8]) -> Fingerprint {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    Fingerprint::of(&parts.method, target, bytes)
}

/// The answer of a request whose hold ended while it waited for the
/// leader: it has no job of its own, so no monitor to give.
fn waited_out(cut: Cut, hold: std::time::Duration) -> Error {
    let kind = match cut {
        Cut::Deadline => JobError::Timeout(hold),
        Cut::Drained => JobError::Drained { monitor: None },
    };
    Error::job(&JobRef::default(), kind)
}

fn replay(stored: &Stored) -> Result<Response<Body>, Error> {
    match stored {
        Stored::Answer {
            status,
            headers,
            body: bytes,
        } => {
            let mut response = Response::new(body::full(bytes.clone()));
            *response.status_mut() = *status;
            *response.headers_mut() = headers.clone();
            response
                .headers_mut()
                .insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Stored::TooLarge { limit, .. } => Err(Error::job(
            &JobRef::default(),
            JobError::NotReplayable { limit: *limit },
        )),
    }
}

impl Leader {
    fn new(store: &Arc<dyn Store>, key: String, config: &Idempotency, bound: Bound) -> Self {
        Leader {
            store: Arc::clone(store),
            key,
            max_stored_body: config.max_stored_body,
            progress: Progress::default(),
            finished: false,
            bound,
        }
    }

    /// Takes the leader's final answer: keeps it for the retries when it
    /// is final, else leaves the key to the next retry. Final are the
    /// job's own outcome, and a submit's answer that was not a job and is
    /// no "not now" (a synchronous result, a 4xx rejection). Anything else
    /// (Baton stopped following: deadline, poll failures, shutdown; a
    /// result or submit answered 5xx, 429 or 408; a transport error)
    /// keeps an accepted job resumable and lets a key whose submit went
    /// unanswered submit again (the backend saw the key and may
    /// deduplicate).
    /// The answer's body is read here, before its head goes out, so a body
    /// that breaks is still answered with a status line (a 502).
    pub(crate) async fn finish(
        mut self,
        response: Response<Body>,
    ) -> Result<Response<Body>, Error> {
        self.finished = true;
        let is_final = match &self.progress.submit {
            Submission::Accepted(_) => self.progress.settled,
            Submission::Sent => {
                let status = response.status();
                !crate::facade::transient(status) && status != http::StatusCode::REQUEST_TIMEOUT
            }
            Submission::NotSent => false,
        };
        if !is_final {
            self.let_go().await;
            return Ok(response);
        }
        let (response, stored) =
            match capture(response, self.max_stored_body, &mut self.bound).await {
                Ok((response, None)) => {
                    // The deadline or the end of grace came while the answer was
                    // read: it goes out unkept, and the job stays for a retry.
                    self.let_go().await;
                    return Ok(response);
                }
                Ok((response, Some(stored))) => (response, stored),
                Err(e) => {
                    self.let_go().await;
                    let kind = BackendError::Broken {
                        cause: crate::error::chain(&*e),
                        source: e,
                    };
                    return Err(Error::job(&JobRef::default(), JobError::Call(kind)));
                }
            };
        if let Err(e) = self.store.complete(&self.key, stored).await {
            tracing::warn!(error = %e, "the answer could not be kept for retries");
        }
        Ok(response)
    }

    async fn let_go(&self) {
        let_go(&*self.store, &self.key, &self.progress.submit).await;
    }
}

impl Drop for Leader {
    /// A leader dropped unfinished: its client went away mid-request.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let key = std::mem::take(&mut self.key);
        let submit = std::mem::take(&mut self.progress.submit);
        runtime.spawn(async move { let_go(&*store, &key, &submit).await });
    }
}

/// Leaves the key to the next retry: with the job, if there is one.
async fn let_go(store: &dyn Store, key: &str, submit: &Submission) {
    let result = match submit {
        Submission::Accepted(ticket) => match store.submitted(key, Ticket::clone(ticket)).await {
            Ok(()) => store.release(key).await,
            Err(e) => Err(e),
        },
        _ => store.release(key).await,
    };
    if let Err(e) = result {
        // The record's lease runs out on its own; a retry then takes over.
        tracing::warn!(error = %e, "could not hand the idempotency key back");
    }
}

/// Reads the answer's body for keeping, up to `limit`. A larger body still
/// reaches the client whole: the part read so far, then the rest; so does
/// one still being read at the request's deadline or the end of shutdown's
/// grace, which is then not kept (`None`): the head goes out in time, and
/// the rest of the body streams as any result body would. A body that breaks before `limit` is an error: nothing of it
/// was sent yet.
async fn capture(
    response: Response<Body>,
    limit: usize,
    bound: &mut Bound,
) -> Result<(Response<Body>, Option<Stored>), BoxError> {
    let (parts, mut incoming) = response.into_parts();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0;
    loop {
        let Ok(frame) = bound.within(incoming.frame()).await else {
            let body = StreamBody::new(body::frames(chunks).chain(BodyStream::new(incoming)));
            return Ok((Response::from_parts(parts, body::stream(body)), None));
        };
        match frame {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    chunks.push(data);
                }
                if size > limit {
                    let stored = Stored::TooLarge {
                        status: parts.status,
                        limit,
                    };
                    let head = body::frames(chunks);
                    let body = StreamBody::new(head.chain(BodyStream::new(incoming)));
                    return Ok((
                        Response::from_parts(parts, body::stream(body)),
                        Some(stored),
                    ));
                }
            }
            // The answer broke before any of it went out: nothing is kept,
            // and the client gets a 502 rather than a cut connection.
            Some(Err(e)) => return Err(e),
        }
    }
    let bytes: Bytes = match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    };
    let mut kept = parts.headers.clone();
    for name in &PER_REQUEST {
        kept.remove(name);
    }
    let stored = Stored::Answer {
        status: parts.status,
        headers: kept,
        body: bytes.clone(),
    };
    Ok((Response::from_parts(parts, body::full(bytes)), Some(stored)))
}
