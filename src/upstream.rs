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

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use crate::body::{self, Body};
use crate::config::{BackendConfig, Config};
use crate::error::{chain, BackendError, BoxError, ClientError, Error};

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// A backend and the client that reaches it.
#[derive(Clone)]
pub struct Upstream {
    pub config: Arc<BackendConfig>,
    client: HttpClient,
}

/// Upstreams by backend name, built once per config.
#[derive(Clone, Default)]
pub struct Upstreams {
    by_name: HashMap<String, Upstream>,
}

/// The system trust store could not be used for an `https://` backend.
#[derive(Debug, thiserror::Error)]
#[error("backend `{backend}`: no usable system root certificates ({detail}); set `ca_file`")]
pub struct TrustError {
    backend: String,
    detail: String,
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Self, TrustError> {
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
            let upstream = Upstream {
                config: Arc::clone(backend),
                client: build_client(backend, roots),
            };
            by_name.insert(backend.name.clone(), upstream);
        }
        Ok(Upstreams { by_name })
    }

    pub fn get(&self, backend: &str) -> Option<&Upstream> {
        self.by_name.get(backend)
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
        .timer(TokioTimer::new())
        .build(connector)
}

impl Upstream {
    /// Sends `request` and waits for the response head, at most the
    /// backend's response timeout. The body then streams on its own time.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, Error> {
        let timeout = self.config.response_timeout;
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(self.classify(err)),
            Err(_) => Err(Error::backend(
                &self.config.name,
                BackendError::Timeout(timeout),
            )),
        }
    }

    /// Names the cause of a failed call and decides whose fault it was: a
    /// client body that broke or overflowed is the client's, not the
    /// backend's.
    fn classify(&self, err: hyper_util::client::legacy::Error) -> Error {
        let cause = chain(&err);
        let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
        while let Some(e) = source {
            if let Some(too_large) = e.downcast_ref::<body::TooLarge>() {
                return Error::Client(ClientError::BodyTooLarge {
                    limit: too_large.limit,
                });
            }
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                let kind = BackendError::Tls {
                    cause: tls.to_string(),
                    source: Box::new(tls.clone()),
                };
                return Error::backend(&self.config.name, kind);
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if err.is_connect() {
                    match io.kind() {
                        std::io::ErrorKind::ConnectionRefused => {
                            return Error::backend(
                                &self.config.name,
                                BackendError::Refused(cause.into()),
                            )
                        }
                        std::io::ErrorKind::TimedOut => {
                            return Error::backend(
                                &self.config.name,
                                BackendError::ConnectTimeout(self.config.connect_timeout),
                            )
                        }
                        _ => {}
                    }
                }
            }
            if let Some(hyper_err) = e.downcast_ref::<hyper::Error>() {
                if hyper_err.is_user() && !err.is_connect() {
                    return Error::Client(ClientError::BodyRead(cause.into()));
                }
            }
            source = e.source();
        }
        let boxed: BoxError = Box::new(err);
        let kind = if is_connect(&boxed) {
            BackendError::Connect {
                cause,
                source: boxed,
            }
        } else {
            BackendError::Broken {
                cause,
                source: boxed,
            }
        };
        Error::backend(&self.config.name, kind)
    }
}

fn is_connect(err: &BoxError) -> bool {
    err.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(|e| e.is_connect())
}
