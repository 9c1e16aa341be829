//! `baton demo`: the sample job API behind Baton answers a blocking POST
//! with the finished report — in-process on a paused clock, and as the
//! real command a new user runs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use baton::body;
use http::Request;
use serde_json::json;
use tokio::net::TcpListener;

use crate::support::{client, send, TestBaton};

#[tokio::test(start_paused = true)]
async fn the_demo_job_api_is_answered_synchronously() {
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = baton::ops::demo::config(api.local_addr().unwrap());
    tokio::spawn(baton::ops::demo::serve_job_api(
        api,
        baton::ops::demo::REPORT_TIME,
    ));
    let baton = TestBaton::start_config(config, false).await;
    let request = Request::post(baton.url("/reports"))
        .header("content-type", "application/json")
        .body(body::full(r#"{"quarter":"Q3"}"#))
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["quarter"], json!("Q3"));
    assert_eq!(answer.json()["report"], json!(1));
    assert!(started.elapsed() >= baton::ops::demo::REPORT_TIME);
}

#[tokio::test]
async fn baton_demo_prints_a_curl_line_that_works() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (found, url) = tokio::sync::oneshot::channel();
    // Keeps reading after the curl line, so the demo's log never fills the pipe.
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("curl -i -X POST ") {
                if let Some(found) = found.take() {
                    let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        }
    });
    let url = url.await.expect("the demo printed no curl line");
    let request = Request::post(url.as_str())
        .header("content-type", "application/json")
        .body(body::full(r#"{"quarter":"Q4"}"#))
        .unwrap();
    let answer = send(&client(), request).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["quarter"], json!("Q4"));
}
