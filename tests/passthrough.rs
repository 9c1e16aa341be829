//! Pass-through routes: Baton as a faithful reverse proxy. Methods, bodies
//! and headers arrive intact; hop-by-hop fields do not cross; failures of
//! the client or the backend come back as problem+json.

use std::time::Duration;

use baton::body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    self, client, closed_port, config, counting_relay, get, raw, raw_header, send, Backend,
    TestBaton, HANG,
};

#[tokio::test]
async fn methods_status_headers_and_bodies_pass_through() {
    let backend = Backend::start(|request: Request<Incoming>| async move {
        let status = match *request.method() {
            http::Method::POST => StatusCode::CREATED,
            http::Method::DELETE => StatusCode::NO_CONTENT,
            _ => StatusCode::OK,
        };
        let method = request.method().to_string();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let reply = if status == StatusCode::NO_CONTENT {
            Bytes::new()
        } else {
            Bytes::from(format!("{method}:{}", String::from_utf8_lossy(&body)))
        };
        Response::builder()
            .status(status)
            .header("x-backend", "yes")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .body(body::full(reply))
            .unwrap()
    })
    .await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let client = client();

    for (method, expected, reply) in [
        ("GET", 200, "GET:"),
        ("POST", 201, "POST:payload"),
        ("PUT", 200, "PUT:payload"),
        ("DELETE", 204, ""),
    ] {
        let request_body = if method == "GET" || method == "DELETE" {
            body::empty()
        } else {
            body::full("payload")
        };
        let request = Request::builder()
            .method(method)
            .uri(baton.url("/items/7?sort=asc&x=%20y"))
            .header("x-custom", "kept")
            .header("authorization", "Bearer t")
            .body(request_body)
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status.as_u16(), expected, "{method}");
        assert_eq!(answer.text(), reply, "{method}");
        assert_eq!(answer.header("x-backend"), Some("yes"));
        let cookies: Vec<_> = answer.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"], "repeated fields keep their order");

        let seen = backend.last();
        assert_eq!(seen.method.as_str(), method);
        assert_eq!(seen.uri.to_string(), "/items/7?sort=asc&x=%20y");
        assert_eq!(seen.headers["x-custom"], "kept");
        assert_eq!(seen.headers["authorization"], "Bearer t");
    }
    assert_eq!(backend.count(), 4);
}

#[tokio::test]
async fn chunked_request_body_arrives_whole() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let answer = raw(
        baton.addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Echoed back with the same framing it arrived in.
    assert!(
        answer.ends_with("\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"),
        "{answer}"
    );
    let seen = backend.last();
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(!seen.headers.contains_key("content-length"));
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let mut stream = TcpStream::connect(baton.addr).await.unwrap();
    stream
        .write_all(
            b"PUT /doc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // The client holds its body until Baton says go on.
    let mut interim = [0u8; 25];
    tokio::time::timeout(HANG, stream.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue\r\n"));
    stream.write_all(b"hello").await.unwrap();
    let rest = support::read_to_close(&mut stream).await;
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
    assert!(rest.ends_with("hello"), "{rest}");
    assert!(
        !backend.last().headers.contains_key("expect"),
        "Baton answered the expectation; the backend must not be asked again"
    );
}

#[tokio::test]
async fn http10_client_without_keep_alive_gets_a_complete_answer() {
    let backend = Backend::start(|_| async {
        // A streamed body of unknown length: Baton cannot chunk it for an
        // HTTP/1.0 client, so it must delimit it by closing.
        let stream = futures_util::stream::iter(
            ["part one, ", "part two"]
                .map(|s| Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(s)))),
        );
        Response::new(body::stream(http_body_util::StreamBody::new(stream)))
    })
    .await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let answer = raw(baton.addr, b"GET /old HTTP/1.0\r\nHost: legacy\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\npart one, part two"), "{answer}");
    assert_eq!(raw_header(&answer, "transfer-encoding"), None);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn hop_by_hop_fields_cross_neither_way_and_forwarding_fields_are_added() {
    let backend = Backend::start(|_| async {
        Response::builder()
            .header("connection", "x-backend-hop")
            .header("x-backend-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-end-to-end", "kept")
            .body(body::full("ok"))
            .unwrap()
    })
    .await;
    // The client is a trusted proxy here, so its X-Forwarded-For is kept
    // and appended to (from anyone else it is replaced: see hostile.rs).
    let baton = TestBaton::start(&config(
        backend.addr,
        r#"trusted_proxies = ["127.0.0.1/32"]"#,
        "",
    ))
    .await;
    let answer = raw(
        baton.addr,
        b"GET /h HTTP/1.1\r\nHost: front.example:8080\r\n\
          Connection: close, X-Client-Hop\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=9\r\n\
          Proxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
          Upgrade: h2c\r\nX-Forwarded-For: 203.0.113.7\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = backend.last();
    for name in [
        "x-client-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(!seen.headers.contains_key(name), "backend saw {name}");
    }
    assert_ne!(
        seen.headers.get("connection").map(|v| v.to_str().unwrap()),
        Some("close, X-Client-Hop")
    );
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "front.example:8080");
    assert_eq!(seen.headers["via"], "1.1 baton");
    assert_eq!(seen.headers["host"], backend.addr.to_string().as_str());

    for name in ["x-backend-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(
            raw_header(&answer, name),
            None,
            "client saw {name}: {answer}"
        );
    }
    assert_eq!(raw_header(&answer, "x-end-to-end"), Some("kept"));
    assert_eq!(raw_header(&answer, "via"), Some("1.1 baton"));
}

#[tokio::test]
async fn host_is_rewritten_or_kept_per_backend() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "preserve_host = true")).await;
    let request = Request::get(baton.url("/"))
        .header("host", "public.example")
        .body(body::empty())
        .unwrap();
    send(&client(), request).await;
    assert_eq!(backend.last().headers["host"], "public.example");
}

#[tokio::test]
async fn path_prefix_is_stripped_and_rewritten_on_whole_segments() {
    let backend = Backend::echo().await;
    let toml = format!(
        r#"
[backends.app]
url = "http://{}/base/"

[[routes]]
name = "api"
match = {{ path = "/api/*" }}
backend = "app"
strip_prefix = "/api"
add_prefix = "/v2"

[[routes]]
name = "rest"
match = {{ path = "/*" }}
backend = "app"
"#,
        backend.addr
    );
    let baton = TestBaton::start(&toml).await;
    for (path, target) in [
        ("/api/orders/1?x=1", "/base/v2/orders/1?x=1"),
        ("/api", "/base/v2/"),
        ("/apix", "/base/apix"),
    ] {
        let answer = get(&baton.url(path)).await;
        assert_eq!(answer.header("x-echo-target"), Some(target), "{path}");
    }
}

#[tokio::test]
async fn routes_match_in_order_on_method_path_and_host() {
    let first = Backend::echo().await;
    let second = Backend::echo().await;
    let toml = format!(
        r#"
[backends.one]
url = "http://{}"
[backends.two]
url = "http://{}"

[[routes]]
name = "orders-by-id"
match = {{ methods = ["GET"], path = "/orders/{{id}}" }}
backend = "one"

[[routes]]
name = "tenant-host"
match = {{ path = "/*", host = "*.tenants.example" }}
backend = "one"

[[routes]]
name = "api"
match = {{ path = "/api/*" }}
backend = "two"
"#,
        first.addr, second.addr
    );
    let baton = TestBaton::start(&toml).await;
    let client = client();
    let call = |method: &str, path: &str, host: &str| {
        Request::builder()
            .method(method)
            .uri(baton.url(path))
            .header("host", host)
            .body(body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&client, call("GET", "/orders/9", "a")).await.status,
        200
    );
    assert_eq!((first.count(), second.count()), (1, 0));
    assert_eq!(
        send(&client, call("GET", "/api/x", "acme.tenants.example:80"))
            .await
            .status,
        200
    );
    assert_eq!(
        (first.count(), second.count()),
        (2, 0),
        "the earlier host route wins"
    );
    assert_eq!(
        send(&client, call("POST", "/api/x", "other")).await.status,
        200
    );
    assert_eq!((first.count(), second.count()), (2, 1));
    let miss = send(&client, call("POST", "/orders/9", "other")).await;
    let problem = miss.problem(404);
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("POST /orders/9"));
    assert_eq!(
        (first.count(), second.count()),
        (2, 1),
        "no backend saw the miss"
    );
}

#[tokio::test]
async fn request_id_is_generated_forwarded_and_returned() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let answer = get(&baton.url("/")).await;
    let generated = answer.header("x-request-id").unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    assert_eq!(backend.last().headers["x-request-id"], generated.as_str());

    let request = Request::get(baton.url("/"))
        .header("x-request-id", "abc-123")
        .body(body::empty())
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.header("x-request-id"), Some("abc-123"));
    assert_eq!(backend.last().headers["x-request-id"], "abc-123");
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<baton::body::Body>();
    let request = Request::post(baton.url("/h2"))
        .body(body::full("over h2"))
        .unwrap();
    let response = tokio::time::timeout(HANG, h2.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let answer = support::collect(response).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "over h2");
    let seen = backend.last();
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "backends are spoken to in HTTP/1.1"
    );
    assert_eq!(seen.headers["via"], "2 baton");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        baton.addr.to_string().as_str()
    );
}

#[tokio::test]
async fn refused_backend_is_a_502_naming_the_cause() {
    let port = closed_port().await;
    let baton = TestBaton::start(&config(port, "", "")).await;
    let answer = get(&baton.url("/x")).await;
    let problem = answer.problem(502);
    assert_eq!(problem["type"], "urn:baton:problem:backend-refused");
    let detail = problem["detail"].as_str().unwrap();
    // The cause's class, not the backend's name or the library's chain.
    assert!(
        detail.contains("refused the connection") && !detail.contains("app"),
        "{detail}"
    );
}

#[tokio::test]
async fn slow_backend_is_a_504() {
    let backend = Backend::start(|_| std::future::pending()).await;
    let baton = TestBaton::start(&config(backend.addr, "", r#"response_timeout = "200ms""#)).await;
    let answer = get(&baton.url("/slow")).await;
    let problem = answer.problem(504);
    assert_eq!(problem["type"], "urn:baton:problem:backend-timeout");
    assert!(problem["detail"].as_str().unwrap().contains("200ms"));
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn backend_that_closes_without_answering_is_a_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            // Close mid-request: no status line at all.
        }
    });
    let baton = TestBaton::start(&config(addr, "", "")).await;
    let problem = get(&baton.url("/")).await.problem(502);
    assert_eq!(problem["type"], "urn:baton:problem:backend-broken");
}

#[tokio::test]
async fn body_over_the_limit_is_a_413_declared_or_streamed() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, r#"max_request_body = "1KiB""#, "")).await;
    let client = client();

    let declared = Request::post(baton.url("/big"))
        .body(body::full(vec![b'x'; 2048]))
        .unwrap();
    let problem = send(&client, declared).await.problem(413);
    assert!(problem["detail"].as_str().unwrap().contains("1024"));
    assert_eq!(
        backend.count(),
        0,
        "a declared oversize body is refused before the backend"
    );

    let chunked = raw(
        baton.addr,
        format!(
            "POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
            "y".repeat(2048)
        )
        .as_bytes(),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert_eq!(
        raw_header(&chunked, "content-type"),
        Some("application/problem+json")
    );

    let fits = Request::post(baton.url("/ok"))
        .body(body::full(vec![b'z'; 1024]))
        .unwrap();
    assert_eq!(send(&client, fits).await.body.len(), 1024);
}

#[tokio::test]
async fn oversized_header_is_a_431() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(backend.addr, r#"max_header_size = "4KiB""#, "")).await;
    let request = Request::get(baton.url("/"))
        .header("x-big", "a".repeat(5000))
        .body(body::empty())
        .unwrap();
    let problem = send(&client(), request).await.problem(431);
    assert!(problem["detail"].as_str().unwrap().contains("4096"));
    assert_eq!(backend.count(), 0);

    // Far past even hyper's read buffer: still a 431, never a hang.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let answer = raw(baton.addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn slow_header_sender_is_disconnected() {
    let backend = Backend::echo().await;
    let baton = TestBaton::start(&config(
        backend.addr,
        r#"header_read_timeout = "300ms""#,
        "",
    ))
    .await;
    // Half a request head, nothing at all, half an HTTP/2 preface: none
    // may keep its connection (and its memory) open forever.
    for first in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
        &b""[..],
        &b"PRI * HTTP/2.0\r\n"[..],
    ] {
        let mut stream = TcpStream::connect(baton.addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the connection stayed open after {first:?}");
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn keep_alive_connections_to_the_backend_are_reused() {
    let backend = Backend::echo().await;
    let (relay_addr, accepted) = counting_relay(backend.addr).await;
    let baton = TestBaton::start(&config(relay_addr, "", "")).await;
    for _ in 0..5 {
        assert_eq!(get(&baton.url("/")).await.status, 200);
    }
    assert_eq!(backend.count(), 5);
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled connection served all"
    );
}

#[tokio::test]
async fn backend_that_does_not_accept_in_time_is_a_504_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so a new connection neither succeeds nor fails until it times out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let stream = tokio::net::TcpSocket::new_v4().unwrap();
        // Each filler gets a moment to land in the queue; the ones that
        // cannot are left pending, which is the point.
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), stream.connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let baton = TestBaton::start(&config(addr, "", r#"connect_timeout = "300ms""#)).await;
    let problem = get(&baton.url("/")).await.problem(504);
    assert_eq!(problem["type"], "urn:baton:problem:backend-connect-timeout");
    drop(listener);
}
