//! Bodies stream through Baton: a body far larger than any buffer passes
//! both ways without Baton's memory growing by its size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use baton::body;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::support::{client, config, Backend, TestBaton, HANG};

const CHUNK: usize = 64 * 1024;
const TOTAL: u64 = 1024 * 1024 * 1024;

/// The process's peak resident memory so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// `TOTAL` bytes made of one shared chunk, produced as they are read.
fn generated() -> baton::body::Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let count = TOTAL as usize / CHUNK;
    let frames = futures_util::stream::iter(0..count)
        .map(move |_| Ok::<_, std::io::Error>(Frame::data(chunk.clone())));
    body::stream(StreamBody::new(frames))
}

/// Reads a body to its end, keeping only the byte count.
async fn drain(mut incoming: Incoming) -> u64 {
    let mut total = 0;
    while let Some(frame) = incoming.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            total += data.len() as u64;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let backend = Backend::start(move |request: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            if request.uri().path() == "/download" {
                return Response::new(generated());
            }
            let n = drain(request.into_body()).await;
            counter.store(n, Ordering::SeqCst);
            Response::new(body::full(n.to_string()))
        }
    })
    .await;
    let baton = TestBaton::start(&config(backend.addr, r#"max_request_body = "2GiB""#, "")).await;
    let client = client();
    let before = peak_rss();

    let upload = Request::post(baton.url("/upload"))
        .body(generated())
        .unwrap();
    let response = tokio::time::timeout(HANG, client.request(upload))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(received.load(Ordering::SeqCst), TOTAL);

    let download = Request::get(baton.url("/download"))
        .body(body::empty())
        .unwrap();
    let response = tokio::time::timeout(HANG, client.request(download))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let got = tokio::time::timeout(HANG, drain(response.into_body()))
        .await
        .unwrap();
    assert_eq!(got, TOTAL);

    let growth = peak_rss().saturating_sub(before);
    eprintln!("peak RSS growth: {} KiB", growth >> 10);
    assert!(
        growth < 64 << 20,
        "peak memory grew by {} MiB moving {} MiB each way",
        growth >> 20,
        TOTAL >> 20
    );
}
