//! Redis for the cluster tests: where it is (`BATON_TEST_REDIS`, default
//! `redis://127.0.0.1:6379`), a namespace of each test's own, and a relay
//! that a test can cut to make Redis "go down" without stopping it for
//! everyone else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The Redis URL for tests, or `None` (with a loud note) when none answers.
pub async fn url() -> Option<String> {
    let url =
        std::env::var("BATON_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let addr = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let answers = async {
        let mut stream = TcpStream::connect(&addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await.ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), answers).await {
        Ok(Some(())) => Some(url),
        _ => {
            eprintln!(
                "\n*** SKIPPED: no Redis answers at {url} (set BATON_TEST_REDIS); .ci/run starts one ***\n"
            );
            None
        }
    }
}

/// A namespace no other test uses.
pub fn namespace() -> String {
    format!("test-{:016x}", fastrand::u64(..))
}

/// A `[cluster]` table for `url` and `namespace`.
pub fn cluster_table(url: &str, namespace: &str, lease: &str) -> String {
    format!("[cluster]\nredis = \"{url}\"\nnamespace = \"{namespace}\"\nlease = \"{lease}\"\n")
}

/// A TCP relay to Redis that can be cut and restored on the same address.
pub struct Relay {
    pub addr: SocketAddr,
    target: String,
    serving: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    pub async fn start(redis_url: &str) -> Relay {
        let target = redis_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            target,
            serving: Mutex::new(None),
            connections: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target.clone();
        let connections = Arc::clone(&self.connections);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(relay);
            }
        });
        *self.serving.lock().unwrap() = Some(task);
    }

    /// Redis "goes down": open connections drop and new ones are refused.
    pub fn cut(&self) {
        if let Some(task) = self.serving.lock().unwrap().take() {
            task.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Redis is back, on the same address.
    pub async fn restore(&self) {
        // The aborted accept loop releases the port once it has stopped.
        tokio::task::yield_now().await;
        self.serve(bind(self.addr));
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

/// Sends one command to the Redis at `url` and returns its raw reply, for
/// tests that change shared state behind Baton's back (an expiry, say).
pub async fn command(url: &str, args: &[&str]) -> String {
    let addr = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 512];
    let n = stream.read(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}
