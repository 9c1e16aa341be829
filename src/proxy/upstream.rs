//! The pooled clients Baton uses to reach backends, and what their
//! failures mean.
//!
//! One hyper-util client per backend, because connect timeouts, pool sizes
//! and trust anchors are per backend. Each keeps idle keep-alive
//! connections, so a busy route does not pay a TCP (or TLS) handshake per
//! request. `https://` goes through rustls with the system's roots or the
//! backend's configured CA file.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::histogram::Histogram;
use rustls::RootCertStore;

use crate::body::{self, Body};
use crate::config::{BackendConfig, Config, Origin};
use crate::error::{chain, BackendError, ClientError, Error};
use crate::telemetry::metrics::{BackendKind, BackendLabel, Metrics};

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A backend and the client that reaches it.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) config: Arc<BackendConfig>,
    client: HttpClient,
    metrics: Arc<Metrics>,
    /// This backend's call-duration histogram, looked up once rather than
    /// hashed into its family on every call.
    duration: Histogram,
    /// `Host` for requests that do not keep the client's, made once; `None`
    /// only if the authority could not be a header value.
    pub(crate) host: Option<HeaderValue>,
    /// Where this backend's URLs point, for the origin checks of the job
    /// calls; made once rather than per request.
    pub(crate) origin: Origin,
}

/// Upstreams by backend name, built once per config: one per lane, so
/// each lane keeps its own pool of backend connections (see
/// [`crate::edge::lanes`]).
#[derive(Clone, Default)]
pub(crate) struct Upstreams {
    by_name: HashMap<String, Vec<Upstream>>,
}

/// The system trust store could not be used for an `https://` backend.
#[derive(Debug, thiserror::Error)]
#[error("backend `{backend}`: no usable system root certificates ({detail}); set `ca_file`")]
pub struct TrustError {
    backend: String,
    detail: String,
}

impl Upstreams {
    pub(crate) fn new(
        config: &Config,
        metrics: &Arc<Metrics>,
        lanes: usize,
    ) -> Result<Self, TrustError> {
        let mut system_roots = None;
        let mut by_name = HashMap::with_capacity(config.backends.len());
        for backend in &config.backends {
            let roots = match (&backend.ca_certificates, backend.scheme.as_str()) {
                (Some(certs), _) => {
                    let mut store = RootCertStore::empty();
                    let (_, _ignored) = store.add_parsable_certificates(certs.iter().cloned());
                    Arc::new(store)
                }
                (None, "https") => match &system_roots {
                    Some(roots) => Arc::clone(roots),
                    None => {
                        let roots = load_system_roots().map_err(|detail| TrustError {
                            backend: backend.name.clone(),
                            detail,
                        })?;
                        system_roots.insert(roots).clone()
                    }
                },
                // Plain http: the TLS half of the connector is never used.
                (None, _) => Arc::new(RootCertStore::empty()),
            };
            let upstreams = (0..lanes.max(1))
                .map(|_| Upstream {
                    config: Arc::clone(backend),
                    client: build_client(backend, Arc::clone(&roots)),
                    metrics: Arc::clone(metrics),
                    duration: metrics
                        .backend_duration
                        .get_or_create(&BackendLabel {
                            backend: backend.name.clone(),
                        })
                        .clone(),
                    host: HeaderValue::from_str(backend.authority.as_str()).ok(),
                    origin: Origin::of(&backend.scheme, &backend.authority),
                })
                .collect();
            by_name.insert(backend.name.clone(), upstreams);
        }
        Ok(Upstreams { by_name })
    }

    /// The backend's upstream for the lane this runs on.
    pub(crate) fn get(&self, backend: &str) -> Option<&Upstream> {
        let lanes = self.by_name.get(backend)?;
        lanes.get(crate::edge::lanes::current() % lanes.len().max(1))
    }
}

fn load_system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(if errors.is_empty() {
            "none found".to_owned()
        } else {
            errors.join("; ")
        });
    }
    Ok(Arc::new(store))
}

/// hyper's read buffer for backend answers: bounds a response head, and
/// the size of each body read (so not smaller: large bodies would take
/// more, smaller reads).
const MAX_RESPONSE_BUFFER: usize = 128 * 1024;

fn build_client(backend: &BackendConfig, roots: Arc<RootCertStore>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(backend.connect_timeout));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(backend.pool_idle_timeout)
        .pool_max_idle_per_host(backend.pool_max_idle)
        .pool_timer(TokioTimer::new())
        // A response head larger than this is a broken answer (a 502),
        // not something to buffer without bound.
        .http1_max_buf_size(MAX_RESPONSE_BUFFER)
        .timer(TokioTimer::new())
        .build(connector)
}

impl Upstream {
    /// Sends `request` and waits for the response head, at most the
    /// backend's response timeout. The body then streams on its own time.
    pub(crate) async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, Error> {
        self.send_within(request, self.config.response_timeout)
            .await
    }

    /// [`send`](Self::send) with its own limit on the wait for the head.
    pub(crate) async fn send_within(
        &self,
        request: Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<Response<Incoming>, Error> {
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(timeout, self.client.request(request)).await {
            // hyper reads any three digits; HTTP has no status past 599.
            Ok(Ok(response)) if response.status().as_u16() > 599 => Err(Error::backend(
                &self.config.name,
                BackendError::BadAnswer(format!("status {}", response.status().as_u16())),
            )),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.classify(err)),
            Err(_) => Err(Error::backend(
                &self.config.name,
                BackendError::Timeout(timeout),
            )),
        };
        self.duration.observe(started.elapsed().as_secs_f64());
        if let Err(Error::Backend { kind, .. }) = &result {
            self.metrics
                .backend_errors
                .get_or_create(&BackendKind {
                    backend: self.config.name.clone(),
                    kind: kind.slug().to_owned(),
                })
                .inc();
        }
        result
    }

    /// Names the cause of a failed call and decides whose fault it was: a
    /// client body that broke or overflowed is the client's, not the
    /// backend's.
    fn classify(&self, err: hyper_util::client::legacy::Error) -> Error {
        let backend = |kind| Error::backend(&self.config.name, kind);
        if let Some(too_large) = find::<body::TooLarge>(&err) {
            return Error::Client(ClientError::BodyTooLarge {
                limit: too_large.limit,
            });
        }
        if let Some(stalled) = find::<body::Stalled>(&err).filter(|s| s.from_client) {
            return Error::Client(ClientError::BodyTimeout(stalled.timeout));
        }
        if let Some(tls) = find::<rustls::Error>(&err) {
            return backend(BackendError::Tls {
                cause: tls.to_string(),
                source: Box::new(tls.clone()),
            });
        }
        let cause = chain(&err);
        if err.is_connect() {
            return match find::<std::io::Error>(&err).map(std::io::Error::kind) {
                Some(std::io::ErrorKind::ConnectionRefused) => {
                    backend(BackendError::Refused(cause.into()))
                }
                Some(std::io::ErrorKind::TimedOut) => {
                    backend(BackendError::ConnectTimeout(self.config.connect_timeout))
                }
                _ => backend(BackendError::Connect {
                    cause,
                    source: Box::new(err),
                }),
            };
        }
        if find::<hyper::Error>(&err).is_some_and(hyper::Error::is_user) {
            // The client's body stream failed (it hung up mid-upload).
            return Error::Client(ClientError::BodyRead(Box::new(err)));
        }
        backend(BackendError::Broken {
            cause,
            source: Box::new(err),
        })
    }
}

/// The first error of type `T` in `err`'s source chain.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        // An `io::Error` wrapping another error (as tokio-rustls wraps the
        // TLS alert) reports the wrapped error's source, skipping the
        // wrapped error itself; look at it directly.
        source = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}
