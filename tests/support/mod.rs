//! The test harness: a real Baton on 127.0.0.1:0, fake backends that record
//! what reached them, and clients that speak real HTTP (hyper for ordinary
//! calls, raw TCP where a test must control the bytes on the wire).

#![allow(dead_code)] // each test module uses its own slice of the harness

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::body::{self, Body};
use baton::{Baton, Config, Listeners};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A safety net so a broken build fails a test instead of hanging CI; never
/// used to wait for something to happen. Long, because under a paused
/// clock it is virtual time and must outlast the longest hold a test sets.
pub const HANG: Duration = Duration::from_secs(600);

/// A running Baton.
pub struct TestBaton {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    reloader: baton::Reloader,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestBaton {
    /// Starts Baton with `toml` (its `[server] listen` is ignored: the
    /// listener is bound on port 0).
    pub async fn start(toml: &str) -> TestBaton {
        Self::start_with_admin(toml, false).await
    }

    pub async fn start_with_admin(toml: &str, admin: bool) -> TestBaton {
        let config = Config::parse(toml, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        Self::start_config(config, admin).await
    }

    /// Starts Baton with an already validated config.
    pub async fn start_config(config: Config, admin: bool) -> TestBaton {
        Self::start_full(config, admin, None).await
    }

    /// Starts Baton taking job API callbacks on `callbacks` (bind it first
    /// and name its address as `[server] callback_listen`).
    pub async fn start_with_callbacks(toml: &str, callbacks: TcpListener) -> TestBaton {
        let config = Config::parse(toml, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        Self::start_full(config, false, Some(callbacks)).await
    }

    /// Starts Baton with `[server] threads` as the file says (default: one
    /// lane per core), where the others run on the test's runtime alone.
    pub async fn start_threaded(toml: &str) -> TestBaton {
        let config = Config::parse(toml, "test.toml", None).unwrap_or_else(|e| panic!("{e}"));
        Self::start_lanes(config, false, None).await
    }

    async fn start_full(
        mut config: Config,
        admin: bool,
        callbacks: Option<TcpListener>,
    ) -> TestBaton {
        // One lane: every connection runs on the test's runtime, whose
        // clock a test may pause.
        config.server.threads = 1;
        Self::start_lanes(config, admin, callbacks).await
    }

    async fn start_lanes(config: Config, admin: bool, callbacks: Option<TcpListener>) -> TestBaton {
        let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = if admin {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let addr = main.local_addr().unwrap();
        let admin = admin_listener.as_ref().map(|l| l.local_addr().unwrap());
        let baton = Baton::new(config).await.unwrap_or_else(|e| panic!("{e}"));
        let reloader = baton.reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            main,
            admin: admin_listener,
            callbacks,
        };
        let task = tokio::spawn(baton.run(listeners, async {
            let _ = stopped.await;
        }));
        TestBaton {
            addr,
            admin,
            reloader,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Swaps in a new configuration, as SIGHUP does.
    pub fn reload(&self, toml: &str) {
        let config = Config::parse(toml, "reload.toml", None).unwrap_or_else(|e| panic!("{e}"));
        self.reloader
            .reload(config)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Starts the drain (as SIGTERM would) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return after [`begin_shutdown`].
    pub async fn finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("finished called twice");
        tokio::time::timeout(HANG, task)
            .await
            .expect("Baton did not stop")
            .expect("Baton's task panicked")
    }
}

impl Drop for TestBaton {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits until the admin listener reports the drain (it flips once the
/// client listener is closed).
pub async fn until_unready(baton: &TestBaton) {
    let readyz = format!("http://{}/readyz", baton.admin.expect("an admin listener"));
    tokio::time::timeout(HANG, async {
        while get(&readyz).await.status != 503 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("/readyz never turned 503");
}

/// A minimal config in front of one backend, plus `extra` TOML appended to
/// the backend's table (`extra_backend`) and the server table.
pub fn config(backend: SocketAddr, server_extra: &str, backend_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server_extra}

[backends.app]
url = "http://{backend}"
{backend_extra}

[[routes]]
name = "all"
match = {{ path = "/*" }}
backend = "app"
"#
    )
}

/// What a fake backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

/// A fake backend on 127.0.0.1:0 that records every request head it gets
/// and answers with `handler`.
pub struct Backend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start<F, Fut>(handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, handler)
    }

    pub fn serve<F, Fut>(listener: TcpListener, handler: F) -> Backend
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        recorded.lock().unwrap().push(Seen {
                            method: request.method().clone(),
                            uri: request.uri().clone(),
                            version: request.version(),
                            headers: request.headers().clone(),
                        });
                        let answer = handler(request);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, seen, task }
    }

    /// Answers every request by echoing it: the request body comes back
    /// streamed, with the method and target in `x-echo-*` headers.
    pub async fn echo() -> Backend {
        Self::start(|request: Request<Incoming>| async move {
            let method = request.method().to_string();
            let target = request.uri().to_string();
            Response::builder()
                .header("x-echo-method", method)
                .header("x-echo-target", target)
                .body(body::stream(request.into_body()))
                .unwrap()
        })
        .await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the backend saw no request")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub type TestClient = Client<HttpConnector, Body>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A collected answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts an RFC 9457 problem answer and returns its JSON.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let json = self.json();
        assert_eq!(json["status"], status);
        assert!(json["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:baton:problem:"));
        assert!(!json["title"].as_str().unwrap().is_empty());
        assert!(!json["request_id"].as_str().unwrap().is_empty());
        assert_eq!(
            json["request_id"].as_str(),
            self.header("x-request-id"),
            "the problem carries the request id"
        );
        json
    }
}

/// Sends `request` through `client` and collects the answer.
pub async fn send(client: &TestClient, request: Request<Body>) -> Answer {
    let response = tokio::time::timeout(HANG, client.request(request))
        .await
        .expect("no answer")
        .expect("request failed");
    collect(response).await
}

pub async fn collect(response: Response<Incoming>) -> Answer {
    let (parts, incoming) = response.into_parts();
    let body = tokio::time::timeout(HANG, incoming.collect())
        .await
        .expect("body did not finish")
        .expect("body failed")
        .to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Answer {
    let request = Request::get(url).body(body::empty()).unwrap();
    send(&client(), request).await
}

/// Writes `bytes` on a fresh connection and reads until the peer closes.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_to_close(&mut stream).await
}

pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(HANG, stream.read_to_end(&mut out))
        .await
        .expect("the connection was not closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Case-insensitive lookup of a header line in a raw HTTP/1 head.
pub fn raw_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}
/// A Baton on a runtime of its own, so a test can kill it whole (tasks,
/// lease renewals and all) as a crash would.
pub struct Doomed {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Doomed {
    pub fn start(toml: &str) -> Doomed {
        let mut config = Config::parse(toml, "doomed.toml", None).unwrap();
        // All of it on the runtime the crash stops.
        config.server.threads = 1;
        // A runtime cannot be started from inside the test's own.
        let (addr, runtime) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let addr = runtime.block_on(async {
                let baton = Baton::new(config).await.unwrap();
                let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = main.local_addr().unwrap();
                let listeners = Listeners {
                    main,
                    admin: None,
                    callbacks: None,
                };
                tokio::spawn(baton.run(listeners, std::future::pending()));
                addr
            });
            (addr, runtime)
        })
        .join()
        .unwrap();
        Doomed {
            addr,
            runtime: Some(runtime),
        }
    }

    pub fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        self.crash();
    }
}

pub mod faults;
pub mod jobs;
pub mod process;
pub mod raw;
pub mod redis;

/// A relay in front of `target` that counts the connections it accepts.
pub async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = relay.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, accepted)
}
