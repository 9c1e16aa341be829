//! Broken backends, from raw bytes: answers that are not HTTP, framing that
//! lies, heads too large, bodies that stop, and silence at every stage.
//!
//! Whatever the backend does, the client observes one of two things: a
//! status line (a 502 or 504 problem+json naming the class of the cause,
//! never the backend's name nor the library underneath) whenever its answer
//! had not started, or — once the head is out — a body that visibly ends
//! short, never a clean end. Its read always finishes, the backend sees the
//! client's request exactly once (a POST is never retried), and Baton goes
//! on serving.

use baton::Config;

use crate::support::raw::{
    exchange, read_response, still_serves, Failures, RawBackend, RawResponse, Step,
};
use crate::support::{Backend, TestBaton};

/// The broken backend's configured name: it must never reach a client.
const NAME: &str = "ledger-core-7";

/// What the client must observe.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A problem answer with this status, whose head had not been sent.
    Problem(u16),
    /// A 502 problem answer that also says `Connection: close`.
    ProblemClosing(u16),
    /// The whole body exactly (framed consistently), or a 502.
    WholeOr502(&'static [u8]),
    /// A 502/504 problem, or a started answer whose body visibly ends short.
    CutOrProblem,
    /// Exactly this status and body: the backend's answer was sound.
    Answer(u16, &'static [u8]),
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    expect: Expect,
    /// Appended to the broken backend's table.
    backend_extra: &'static str,
    /// How later requests are answered, where not like the first.
    later: Option<Vec<Step>>,
}

fn case(name: &'static str, steps: Vec<Step>, expect: Expect) -> Case {
    Case {
        name,
        steps,
        expect,
        backend_extra: "",
        later: None,
    }
}

fn write(bytes: impl AsRef<[u8]>) -> Step {
    Step::Write(bytes.as_ref().to_vec())
}

const IDLE: &str = r#"body_idle_timeout = "300ms""#;

/// A sound answer.
const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A second answer nobody asked for.
const POISON: &str = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\npoison";

fn cases() -> Vec<Case> {
    use Expect::*;
    use Step::{Close, Hang};
    let big_field = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "b".repeat(200 * 1024)
    );
    let many_fields = {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..2048 {
            head.push_str(&format!("x-field-{i:04}: {}\r\n", "m".repeat(86)));
        }
        head.push_str("content-length: 2\r\n\r\nok");
        head
    };
    let cl100 = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n";
    let chunked =
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
    vec![
        // Status lines that are not HTTP/1.1's.
        case(
            "status-code-not-a-number",
            vec![write("HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n"), Close],
            Problem(502),
        ),
        case(
            "status-999",
            vec![write("HTTP/1.1 999 Weird\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "status-600",
            vec![write("HTTP/1.1 600 Nope\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "status-099",
            vec![write("HTTP/1.1 099 Low\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "unknown-version",
            vec![write("HTTP/9.9 200 OK\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case("garbage", vec![write("garbage\r\n\r\n"), Close], Problem(502)),
        case("empty-answer-then-close", vec![Close], Problem(502)),
        case(
            "head-cut-midway",
            vec![write("HTTP/1.1 200 OK\r\ncontent-len"), Close],
            Problem(502),
        ),
        case(
            "interim-only-then-close",
            vec![write("HTTP/1.1 100 Continue\r\n\r\n"), Close],
            Problem(502),
        ),
        case(
            "unrequested-101",
            vec![
                write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: evil\r\n\r\n"),
                Close,
            ],
            Problem(502),
        ),
        // Header fields that are not fields.
        case(
            "field-without-colon",
            vec![write("HTTP/1.1 200 OK\r\nNoColonHere\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "nul-in-field-value",
            vec![write("HTTP/1.1 200 OK\r\nx-a: b\0c\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "bare-cr-in-field-value",
            vec![write("HTTP/1.1 200 OK\r\nx-a: b\rinjected: 1\r\ncontent-length: 2\r\n\r\nok"), Close],
            Problem(502),
        ),
        case(
            "obs-fold-in-head",
            vec![write("HTTP/1.1 200 OK\r\nx-a: b\r\n c\r\ncontent-length: 2\r\n\r\nok"), Close],
            WholeOr502(b"ok"),
        ),
        // Framing that lies.
        case(
            "content-length-and-chunked",
            vec![
                write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
                Close,
            ],
            WholeOr502(b"hello world"),
        ),
        case(
            "duplicate-content-length-different",
            vec![write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"), Close],
            Problem(502),
        ),
        case(
            "negative-content-length",
            vec![write("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\nhello"), Close],
            Problem(502),
        ),
        case(
            "signed-content-length",
            vec![write("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello"), Close],
            Problem(502),
        ),
        case(
            "content-length-past-u64",
            vec![write("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\nhello"), Close],
            Problem(502),
        ),
        case(
            "bad-first-chunk-size",
            vec![write(format!("{chunked}zz\r\nhello\r\n0\r\n\r\n")), Close],
            Problem(502),
        ),
        // Bytes after the answer, which must not become a later client's.
        Case {
            later: Some(vec![write(OK)]),
            ..case(
                "extra-answer-after-the-answer",
                vec![write(format!("{OK}{POISON}"))],
                WholeOr502(b"ok"),
            )
        },
        Case {
            later: Some(vec![write(OK)]),
            ..case(
                "no-content-with-a-body",
                vec![write(
                    "HTTP/1.1 204 No Content\r\ncontent-length: 6\r\n\r\npoison",
                )],
                Answer(204, b""),
            )
        },
        case(
            "interim-then-final",
            vec![write(format!("HTTP/1.1 100 Continue\r\n\r\n{OK}"))],
            Answer(200, b"ok"),
        ),
        case(
            "bare-lf-head",
            vec![write("HTTP/1.1 200 OK\ncontent-length: 2\n\nok")],
            WholeOr502(b"ok"),
        ),
        // Heads too large.
        case("oversized-head-one-field", vec![write(&big_field), Close], Problem(502)),
        case("oversized-head-many-fields", vec![write(&many_fields), Close], Problem(502)),
        // Bodies that stop.
        case(
            "body-fails-on-first-read",
            vec![write(cl100), Close],
            ProblemClosing(502),
        ),
        case(
            "truncated-body",
            vec![write(format!("{cl100}0123456789")), Close],
            CutOrProblem,
        ),
        case(
            "truncated-chunked-body",
            vec![write(format!("{chunked}a\r\n0123456789\r\n")), Close],
            CutOrProblem,
        ),
        Case {
            backend_extra: IDLE,
            ..case(
                "stalled-body",
                vec![write(format!("{cl100}0123456789")), Hang],
                CutOrProblem,
            )
        },
        Case {
            backend_extra: IDLE,
            ..case(
                "hang-mid-chunked-body",
                vec![write(format!("{chunked}a\r\n0123456789\r\n")), Hang],
                CutOrProblem,
            )
        },
        // Silence at every stage.
        case("no-answer-at-all", vec![Hang], Problem(504)),
        case(
            "hang-mid-head",
            vec![write("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"), Hang],
            Problem(504),
        ),
        Case {
            backend_extra: IDLE,
            ..case(
                "hang-before-first-body-byte",
                vec![write(cl100), Hang],
                Problem(504),
            )
        },
    ]
}

fn toml(broken: std::net::SocketAddr, healthy: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[backends.{NAME}]
url = "http://{broken}"
response_timeout = "300ms"
{extra}

[backends.healthy]
url = "http://{healthy}"

[[routes]]
name = "healthy"
match = {{ path = "/healthy/*" }}
backend = "healthy"

[[routes]]
name = "ledger"
match = {{ path = "/*" }}
backend = "{NAME}"
"#
    )
}

#[tokio::test]
async fn every_broken_answer_ends_in_a_status_line_or_a_visibly_cut_body() {
    let healthy = Backend::echo().await;
    let mut failures = Failures::default();
    let cases = cases();
    assert!(cases.len() >= 34);
    for case in cases {
        let result = run(&case, &healthy).await;
        failures.check(case.name, result);
    }
    failures.assert_none("broken backends");
}

async fn run(case: &Case, healthy: &Backend) -> Result<(), String> {
    let (first, later) = (case.steps.clone(), case.later.clone());
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let broken = RawBackend::start(move |_| {
        match (
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            &later,
        ) {
            (0, _) | (_, None) => first.clone(),
            (_, Some(later)) => later.clone(),
        }
    })
    .await;
    let toml = toml(broken.addr, healthy.addr, case.backend_extra);
    Config::parse(&toml, "test.toml", None).map_err(|e| format!("config: {e}"))?;
    let baton = TestBaton::start(&toml).await;

    let target = format!("/case/{}", case.name);
    // A keep-alive POST: the client leaves the connection to Baton, so a
    // closing answer must say so.
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: client.example\r\ncontent-type: text/plain\r\ncontent-length: 4\r\n\r\nping"
    );
    let mut stream = tokio::net::TcpStream::connect(baton.addr)
        .await
        .map_err(|e| e.to_string())?;
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let answer = read_response(&mut stream).await?;

    match case.expect {
        Expect::Problem(status) => problem(&answer, status)?,
        Expect::ProblemClosing(status) => {
            problem(&answer, status)?;
            let connection = answer.header("connection").unwrap_or("");
            if !connection.to_ascii_lowercase().contains("close") {
                return Err(format!(
                    "{status} without `Connection: close` (connection: {connection:?})"
                ));
            }
        }
        Expect::WholeOr502(body) => {
            if answer.status == 502 {
                problem(&answer, 502)?;
            } else if answer.status != 200 {
                return Err(format!(
                    "got {:?}; expected 200 with the whole body or a 502",
                    answer.status_line
                ));
            } else {
                if !answer.complete || answer.body != body {
                    return Err(format!(
                        "200 with body {:?} (complete: {}), not the whole {:?}",
                        answer.text(),
                        answer.complete,
                        String::from_utf8_lossy(body)
                    ));
                }
                let lengths = answer.all("content-length");
                if lengths.iter().any(|l| l.parse::<usize>() != Ok(body.len())) {
                    return Err(format!(
                        "the whole body under a wrong content-length {lengths:?}"
                    ));
                }
            }
        }
        Expect::Answer(status, body) => {
            if answer.status != status || !answer.complete || answer.body != body {
                return Err(format!(
                    "got {:?} with body {:?} (complete: {}); expected {status} {:?}",
                    answer.status_line,
                    answer.text(),
                    answer.complete,
                    String::from_utf8_lossy(body)
                ));
            }
        }
        Expect::CutOrProblem => {
            if answer.status == 502 || answer.status == 504 {
                problem(&answer, answer.status)?;
            } else if answer.complete {
                return Err(format!(
                    "{:?} with a body that ended cleanly ({} bytes: {:?}); it must end visibly short",
                    answer.status_line,
                    answer.body.len(),
                    answer.text()
                ));
            }
        }
    }

    let seen: Vec<_> = broken
        .requests()
        .into_iter()
        .filter(|r| r.target == target)
        .collect();
    if seen.len() != 1 {
        return Err(format!(
            "the backend saw the POST {} times (a retry?)",
            seen.len()
        ));
    }
    still_serves(baton.addr, "/healthy/after").await?;
    // The broken route itself is not poisoned for a later client.
    drop(stream);
    let again = exchange(
        baton.addr,
        format!("POST {target} HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\nping")
            .as_bytes(),
    )
    .await?;
    let later = again.first()?;
    if later.text().contains("poison") {
        return Err(format!(
            "a later client got bytes the backend sent after its answer: {:?}",
            later.text()
        ));
    }
    Ok(())
}

/// A problem answer of `status` from a backend failure: the cause's class
/// named, nothing of the backend's configured name or of the library.
fn problem(answer: &RawResponse, status: u16) -> Result<(), String> {
    let json = answer.problem(status)?;
    let kind = json["type"].as_str().unwrap_or("");
    if !kind.starts_with("urn:baton:problem:backend-") {
        return Err(format!("{status} of type {kind:?}, not a backend failure"));
    }
    let detail = json["detail"].as_str().unwrap_or("");
    if detail.trim().is_empty() {
        return Err(format!("{status} with no detail"));
    }
    if detail.contains(NAME) {
        return Err(format!("detail names the backend: {detail:?}"));
    }
    if detail.to_ascii_lowercase().contains("hyper") {
        return Err(format!("detail names the library: {detail:?}"));
    }
    Ok(())
}
