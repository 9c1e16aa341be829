//! `Upgrade` tunnels: a WebSocket handshake passes through Baton and frames
//! then flow both ways over the upgraded connection.

use baton::body;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::{config, Backend, TestBaton, HANG};

/// A WebSocket server that greets, then echoes every frame it receives.
async fn echo_socket() -> Backend {
    Backend::start(|mut request: Request<Incoming>| async move {
        let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
            return Response::builder()
                .status(StatusCode::BAD_REQUEST)
                .body(body::empty())
                .unwrap();
        };
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let upgraded = upgrade.await.expect("backend side of the upgrade");
            let mut socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            socket
                .send(Message::text("hello from the backend"))
                .await
                .unwrap();
            while let Some(Ok(message)) = socket.next().await {
                if message.is_close() {
                    break;
                }
                socket.send(message).await.unwrap();
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(body::empty())
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn websocket_frames_flow_both_ways_through_baton() {
    let backend = echo_socket().await;
    let baton = TestBaton::start(&config(backend.addr, "", "")).await;
    let (mut socket, response) = tokio::time::timeout(
        HANG,
        tokio_tungstenite::connect_async(format!("ws://{}/chat", baton.addr)),
    )
    .await
    .expect("handshake hung")
    .expect("handshake failed");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(response.headers().contains_key("x-request-id"));

    assert_eq!(
        next(&mut socket).await,
        Message::text("hello from the backend")
    );
    socket.send(Message::text("ping 1")).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("ping 1"));
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut socket).await,
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();

    let seen = backend.last();
    assert_eq!(seen.uri.path(), "/chat");
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    assert!(seen.headers.contains_key("sec-websocket-key"));
}

async fn next<S>(socket: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(HANG, socket.next())
        .await
        .expect("no frame arrived")
        .expect("the socket closed")
        .expect("a broken frame")
}

#[tokio::test]
async fn an_open_tunnel_has_the_grace_period_and_then_is_closed() {
    let backend = echo_socket().await;
    let mut baton =
        TestBaton::start(&config(backend.addr, r#"shutdown_grace = "300ms""#, "")).await;
    let (mut socket, _) = tokio::time::timeout(
        HANG,
        tokio_tungstenite::connect_async(format!("ws://{}/chat", baton.addr)),
    )
    .await
    .expect("handshake hung")
    .expect("handshake failed");
    assert_eq!(
        next(&mut socket).await,
        Message::text("hello from the backend")
    );
    baton.begin_shutdown();
    // Within the grace period the tunnel still carries frames.
    socket.send(Message::text("still there?")).await.unwrap();
    assert_eq!(next(&mut socket).await, Message::text("still there?"));
    // The drain waits for the tunnel, then closes it.
    baton.finished().await.unwrap();
    let after = tokio::time::timeout(HANG, socket.next())
        .await
        .expect("the socket stayed open");
    assert!(
        !matches!(after, Some(Ok(Message::Text(_)))),
        "the tunnel is closed after the grace period: {after:?}"
    );
}
