//! The config files and the config loader, without a server.
//!
//! This module owns three things:
//!
//! - every `config/*.toml` shipped with the crate loads, and
//!   `config/example.toml` documents every key the loader accepts with the
//!   defaults the code really uses, so neither goes stale;
//! - every way `Config::parse` refuses a file names the right key, line and
//!   column and says something a config author can act on;
//! - what a valid file turns into: defaults filled, durations and sizes
//!   parsed, routes kept in file order.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use baton::config::defaults;
use baton::{Config, ConfigError};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");

/// Every key the loader accepts, per table (`src/config/raw.rs`).
const SERVER_KEYS: &[&str] = &[
    "listen",
    "admin",
    "max_header_size",
    "max_request_body",
    "header_read_timeout",
    "keep_alive",
    "max_connections",
    "shutdown_grace",
    "max_held",
    "threads",
    "continuation_key",
    "continuation_keys",
    "continuation_ttl",
    "idempotency_memory",
    "redact_headers",
    "callback_listen",
    "callback_url",
    "trusted_proxies",
    "idle_timeout",
    "body_read_timeout",
    "http2_keep_alive_interval",
    "http2_keep_alive_timeout",
    "request_buffering",
    "request_buffer_memory",
];
const BACKEND_KEYS: &[&str] = &[
    "url",
    "connect_timeout",
    "response_timeout",
    "pool_idle_timeout",
    "pool_max_idle",
    "preserve_host",
    "ca_file",
    "body_idle_timeout",
];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "backend",
    "strip_prefix",
    "add_prefix",
    "max_request_body",
    "request_buffering",
    "allow_encoded_slashes",
    "upgrades",
    "async",
];
const ASYNC_KEYS: &[&str] = &[
    "preset",
    "wait",
    "max_wait",
    "submit_headers",
    "poll_headers",
    "forward_headers",
    "allow_origins",
    "max_status_body",
    "max_result_body",
    "max_hops",
    "on_timeout",
    "max_held",
    "idempotency",
    "callback",
    "job",
    "handle",
    "state",
    "result",
    "failure",
    "poll",
    "cancel",
];
const ASYNC_JOB_KEYS: &[&str] = &["statuses", "needs_handle"];
const ASYNC_CALLBACK_KEYS: &[&str] = &[
    "mode",
    "header",
    "pointer",
    "secret",
    "signature_header",
    "status_header",
    "result_pointer",
    "poll_interval",
];
const ASYNC_IDEMPOTENCY_KEYS: &[&str] = &[
    "enabled",
    "header",
    "scope_header",
    "ttl",
    "max_stored_body",
];
const ASYNC_HANDLE_KEYS: &[&str] = &["header", "pointer", "template", "id_pointer"];
const ASYNC_STATE_KEYS: &[&str] = &[
    "running_statuses",
    "redirect_statuses",
    "not_found",
    "pointer",
    "running",
    "succeeded",
    "failed",
    "canceled",
    "done_pointer",
    "error_pointer",
];
const ASYNC_RESULT_KEYS: &[&str] = &["from", "pointer", "template"];
const ASYNC_FAILURE_KEYS: &[&str] = &["status", "pointers"];
const ASYNC_POLL_KEYS: &[&str] = &[
    "initial",
    "factor",
    "jitter",
    "min_interval",
    "max_interval",
    "timeout",
    "max_failures",
    "adaptive",
];
const ASYNC_CANCEL_KEYS: &[&str] = &["on_disconnect", "on_timeout", "method", "url"];
const MATCH_KEYS: &[&str] = &["methods", "path", "host"];
const TOP_KEYS: &[&str] = &["server", "backends", "routes", "cluster"];
const CLUSTER_KEYS: &[&str] = &["redis", "namespace", "lease"];

/// A valid backend on lines 1 and 2, for sources that test routes.
const BACKEND: &str = "[backends.app]\nurl = \"http://127.0.0.1:3000\"\n";

/// Parses `src`, which must be refused as invalid; returns
/// `(key, line, column, message)`.
fn err(src: &str) -> (String, usize, usize, String) {
    err_in(src, None)
}

/// [`err`] with relative paths resolving against `dir`.
fn err_in(src: &str, dir: Option<&Path>) -> (String, usize, usize, String) {
    match Config::parse(src, "test.toml", dir) {
        Ok(config) => panic!("expected an error, but this parsed:\n{src}\nas {config:#?}"),
        Err(ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        }) => {
            assert_eq!(file, "test.toml", "the error names the file");
            (key, line, column, message)
        }
        Err(e @ ConfigError::Read { .. }) => panic!("expected Invalid, got {e:?} for:\n{src}"),
    }
}

/// Asserts that `src` is refused at exactly `key`, `line`, `column`, with a
/// message containing `needle`.
#[track_caller]
fn check(src: &str, key: &str, line: usize, column: usize, needle: &str) {
    check_in(src, None, key, line, column, needle);
}

#[track_caller]
fn check_in(src: &str, dir: Option<&Path>, key: &str, line: usize, column: usize, needle: &str) {
    let (k, l, c, message) = err_in(src, dir);
    assert_eq!(
        (k.as_str(), l, c),
        (key, line, column),
        "wrong key/line/column (message: {message:?}) for:\n{src}"
    );
    assert!(
        message.contains(needle),
        "message {message:?} should contain {needle:?}, for:\n{src}"
    );
}

/// The smallest part a config must have: a route (and its backend).
const ONE_ROUTE: &str = "\n[backends.only]\nurl = \"http://only.internal\"\n\n[[routes]]\nname = \"only\"\nmatch = { path = \"/*\" }\nbackend = \"only\"\n";

/// Parses `src`, adding [`ONE_ROUTE`] when it defines no route of its own
/// (the tests that use this look at other tables).
fn parse(src: &str) -> Config {
    let src = if src.contains("[[routes]]") {
        src.to_owned()
    } else {
        format!("{src}{ONE_ROUTE}")
    };
    match Config::parse(&src, "test.toml", None) {
        Ok(config) => config,
        Err(e) => panic!("expected this to parse:\n{src}\nbut: {e}"),
    }
}

/// The names a serde "unknown field" message says it expected.
fn expected_fields(message: &str) -> Vec<String> {
    let (_, expected) = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("no expected fields in {message:?}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// The shipped files

#[test]
fn every_shipped_config_loads() {
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(CONFIG_DIR).expect("config/ is readable") {
        let path = entry.expect("config/ entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{} does not load: {e}", path.display());
            }
            loaded.push(path);
        }
    }
    assert!(
        loaded.iter().any(|p| p.ends_with("example.toml")),
        "config/example.toml was not among {loaded:?}"
    );
    assert!(
        loaded.iter().any(|p| p.ends_with("baton.toml")),
        "config/baton.toml was not among {loaded:?}"
    );
}

#[test]
fn key_lists_match_what_the_loader_accepts() {
    // The loader's own "unknown field" messages list what each table takes;
    // if raw.rs grows a key, this fails until the lists above (and so the
    // example check below) include it.
    let route = "[[routes]]\nname = \"r\"\nbackend = \"app\"\nmatch = { path = \"/*\" }\n";
    let nested: Vec<(String, &[&str])> = [
        ("", ASYNC_KEYS),
        (".job", ASYNC_JOB_KEYS),
        (".idempotency", ASYNC_IDEMPOTENCY_KEYS),
        (".callback", ASYNC_CALLBACK_KEYS),
        (".handle", ASYNC_HANDLE_KEYS),
        (".state", ASYNC_STATE_KEYS),
        (".result", ASYNC_RESULT_KEYS),
        (".failure", ASYNC_FAILURE_KEYS),
        (".poll", ASYNC_POLL_KEYS),
        (".cancel", ASYNC_CANCEL_KEYS),
    ]
    .into_iter()
    .map(|(table, keys)| (format!("{route}[routes.async{table}]\nnope = 1\n"), keys))
    .collect();
    for (src, keys) in &nested {
        let (_, _, _, message) = err(src);
        assert!(message.contains("unknown field `nope`"), "{message}");
        assert_eq!(expected_fields(&message), *keys, "for:\n{src}");
    }
    let (_, _, _, message) = err("[cluster]\nredis = \"redis://h\"\nnope = 1\n");
    assert_eq!(expected_fields(&message), CLUSTER_KEYS);
    let cases: [(&str, &[&str]); 5] = [
        ("nope = 1\n", TOP_KEYS),
        ("[server]\nnope = 1\n", SERVER_KEYS),
        (
            "[backends.app]\nurl = \"http://h\"\nnope = 1\n",
            BACKEND_KEYS,
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"app\"\nmatch = { path = \"/*\" }\nnope = 1\n",
            ROUTE_KEYS,
        ),
        (
            "[[routes]]\nname = \"r\"\nbackend = \"app\"\nmatch = { path = \"/*\", nope = 1 }\n",
            MATCH_KEYS,
        ),
    ];
    for (src, keys) in cases {
        let (_, _, _, message) = err(src);
        assert!(message.contains("unknown field `nope`"), "{message}");
        assert_eq!(expected_fields(&message), keys, "for:\n{src}");
    }
}

#[test]
fn example_mentions_every_key() {
    let example = std::fs::read_to_string(EXAMPLE).expect("config/example.toml is readable");
    // A key is shown when assigned, or when it heads its own table.
    let assigned = |key: &str| {
        example.contains(&format!(".{key}]"))
            || [format!("{key} ="), format!("{key}=")]
                .iter()
                .any(|needle| {
                    example.match_indices(needle.as_str()).any(|(at, _)| {
                        // A whole key, not the tail of a longer one.
                        example[..at]
                            .chars()
                            .next_back()
                            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
                    })
                })
    };
    let missing: Vec<&str> = [
        SERVER_KEYS,
        BACKEND_KEYS,
        ROUTE_KEYS,
        MATCH_KEYS,
        ASYNC_KEYS,
        ASYNC_JOB_KEYS,
        ASYNC_IDEMPOTENCY_KEYS,
        ASYNC_CALLBACK_KEYS,
        ASYNC_HANDLE_KEYS,
        ASYNC_STATE_KEYS,
        ASYNC_RESULT_KEYS,
        ASYNC_FAILURE_KEYS,
        ASYNC_POLL_KEYS,
        ASYNC_CANCEL_KEYS,
        CLUSTER_KEYS,
    ]
    .concat()
    .into_iter()
    .filter(|key| !assigned(key))
    .collect();
    assert!(
        missing.is_empty(),
        "config/example.toml does not show these keys: {missing:?}"
    );
}

#[test]
fn example_defaults_agree_with_the_code() {
    let source = std::fs::read_to_string(EXAMPLE).expect("config/example.toml is readable");
    let config = Config::parse(&source, EXAMPLE, Some(Path::new(CONFIG_DIR)))
        .unwrap_or_else(|e| panic!("{e}"));

    let server = &config.server;
    let listen: SocketAddr = defaults::LISTEN.parse().expect("default listen parses");
    assert_eq!(server.listen, listen, "listen");
    assert_eq!(server.max_header_size, defaults::MAX_HEADER_SIZE);
    assert_eq!(server.max_request_body, defaults::MAX_REQUEST_BODY);
    assert_eq!(server.header_read_timeout, defaults::HEADER_READ_TIMEOUT);
    assert!(server.keep_alive, "keep_alive defaults to true");
    assert_eq!(server.max_connections, defaults::MAX_CONNECTIONS);
    assert_eq!(server.shutdown_grace, defaults::SHUTDOWN_GRACE);
    assert_eq!(server.max_held, defaults::MAX_HELD);
    assert_eq!(server.idempotency_memory, defaults::IDEMPOTENCY_MEMORY);
    assert_eq!(server.idle_timeout, defaults::IDLE_TIMEOUT);
    assert_eq!(server.body_read_timeout, defaults::BODY_READ_TIMEOUT);
    assert_eq!(
        server.http2_keep_alive_interval,
        defaults::HTTP2_KEEP_ALIVE_INTERVAL
    );
    assert_eq!(
        server.http2_keep_alive_timeout,
        defaults::HTTP2_KEEP_ALIVE_TIMEOUT
    );
    assert_eq!(
        server.request_buffer_memory,
        defaults::REQUEST_BUFFER_MEMORY
    );

    let app = config
        .backends
        .iter()
        .find(|b| b.name == "app")
        .expect("example.toml defines [backends.app]");
    assert_eq!(app.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(app.response_timeout, defaults::RESPONSE_TIMEOUT);
    assert_eq!(app.pool_idle_timeout, defaults::POOL_IDLE_TIMEOUT);
    assert_eq!(app.pool_max_idle, defaults::POOL_MAX_IDLE);
    assert!(!app.preserve_host, "preserve_host defaults to false");
    assert_eq!(app.body_idle_timeout, defaults::BODY_IDLE_TIMEOUT);
    assert!(app.ca_certificates.is_none());

    // The relative ca_file resolved against config/.
    let secure = config
        .backends
        .iter()
        .find(|b| b.name == "secure")
        .expect("example.toml defines [backends.secure]");
    assert!(secure
        .ca_certificates
        .as_ref()
        .is_some_and(|certs| !certs.is_empty()));
}

// ---------------------------------------------------------------------------
// Errors: syntax and shape

#[test]
fn syntax_errors() {
    check(
        "[server]\nlisten = \n",
        "(syntax)",
        2,
        10,
        "string values must be quoted",
    );
    check("[server\n", "(syntax)", 1, 8, "unclosed table");
    check(
        "[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
        "(syntax)",
        3,
        1,
        "duplicate key",
    );
}

#[test]
fn unknown_key_in_server() {
    let src = r#"[server]
listen = "127.0.0.1:8080"
  bogus = 1
"#;
    check(
        src,
        "server.bogus",
        3,
        3,
        "unknown field `bogus`, expected one of",
    );
}

#[test]
fn unknown_key_in_backend() {
    let src = r#"[backends.app]
url = "http://h"
timeout = "1s"
"#;
    check(
        src,
        "backends.app.timeout",
        3,
        1,
        "unknown field `timeout`, expected one of `url`",
    );
}

#[test]
fn unknown_key_in_route() {
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { path = "/*" }
backend = "app"
weight = 1
"#;
    check(src, "routes[0].weight", 7, 1, "unknown field `weight`");
}

#[test]
fn unknown_key_in_match() {
    // Inline: the column is the key's.
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { path = "/*", query = "x" }
backend = "app"
"#;
    check(src, "routes[0].match.query", 5, 24, "unknown field `query`");

    // As a sub-table of the second route: the index is right too.
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { path = "/x" }
backend = "app"
[[routes]]
name = "s"
backend = "app"
[routes.match]
path = "/*"
query = "x"
"#;
    check(src, "routes[1].match.query", 12, 1, "unknown field `query`");
}

#[test]
fn unknown_key_at_top_level() {
    // A server key written before any table header.
    let src = r#"# comment

listen = "0.0.0.0:80"
[server]
"#;
    check(
        src,
        "listen",
        3,
        1,
        "unknown field `listen`, expected one of `server`, `backends`, `routes`",
    );
}

#[test]
fn missing_backend_url() {
    // Points at the backend's header.
    let src = r#"[server]

[backends.app]
connect_timeout = "1s"
"#;
    check(src, "backends.app.url", 3, 1, "missing field `url`");

    // Inline table: points at its `{`.
    check(
        "backends = { app = { connect_timeout = \"1s\" } }\n",
        "backends.app.url",
        1,
        20,
        "missing field `url`",
    );
}

#[test]
fn missing_route_fields() {
    // The route's `[[routes]]` header is line 4.
    let src = format!("{BACKEND}\n[[routes]]\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n");
    check(&src, "routes[0].name", 4, 1, "missing field `name`");

    let src = format!("{BACKEND}\n[[routes]]\nname = \"r\"\nbackend = \"app\"\n");
    check(&src, "routes[0].match", 4, 1, "missing field `match`");

    let src = format!("{BACKEND}\n[[routes]]\nname = \"r\"\nmatch = {{ path = \"/*\" }}\n");
    check(&src, "routes[0].backend", 4, 1, "missing field `backend`");
}

#[test]
fn missing_match_path() {
    // Inline: points at the match table's `{`.
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
backend = "app"
match = { methods = ["GET"] }
"#;
    check(src, "routes[0].match.path", 6, 9, "missing field `path`");

    // Sub-table: points at its header.
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
backend = "app"

[routes.match]
host = "a.example"
"#;
    check(src, "routes[0].match.path", 7, 1, "missing field `path`");
}

#[test]
fn wrong_types() {
    check(
        "[server]\nheader_read_timeout = 10\n",
        "server.header_read_timeout",
        2,
        23,
        "invalid type: integer `10`, expected a string",
    );
    check(
        "[server]\nkeep_alive = \"yes\"\n",
        "server.keep_alive",
        2,
        14,
        "expected a boolean",
    );
    check(
        "[backends.app]\nurl = \"http://h\"\npreserve_host = \"true\"\n",
        "backends.app.preserve_host",
        3,
        17,
        "expected a boolean",
    );
    check(
        "[server]\nmax_connections = 1.5\n",
        "server.max_connections",
        2,
        19,
        "invalid type: floating point",
    );
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { methods = "GET", path = "/*" }
backend = "app"
"#;
    check(src, "routes[0].match.methods", 5, 21, "expected a sequence");
    check(
        "[routes]\nname = \"r\"\n",
        "routes",
        1,
        1,
        "expected a sequence",
    );
}

// ---------------------------------------------------------------------------
// Errors: values

#[test]
fn bad_duration() {
    check(
        "[server]\nshutdown_grace = \"30 parsecs\"\n",
        "server.shutdown_grace",
        2,
        18,
        "\"30 parsecs\" is not a duration",
    );
    let (_, _, _, message) = err("[server]\nshutdown_grace = \"30 parsecs\"\n");
    assert!(
        message.contains("\"250ms\""),
        "suggests a format: {message}"
    );
}

#[test]
fn zero_duration() {
    check(
        "[backends.app]\nurl = \"http://h\"\nconnect_timeout = \"0s\"\n",
        "backends.app.connect_timeout",
        3,
        19,
        "must be greater than zero",
    );
    check(
        "[server]\nheader_read_timeout = \"0ms\"\n",
        "server.header_read_timeout",
        2,
        23,
        "must be greater than zero",
    );
}

#[test]
fn absurd_durations_are_refused_naming_the_key() {
    // Any of these, added to "now", would overflow the clock.
    for value in ["400days", "100y", "18446744073709551615s"] {
        let (_, line, _, message) = err(&format!(
            "[backends.app]\nurl = \"http://h\"\nresponse_timeout = \"{value}\"\n"
        ));
        assert_eq!(line, 3, "{value}");
        assert!(
            message.contains("longest duration") || message.contains("not a duration"),
            "{value}: {message}"
        );
    }
    check(
        "[server]\nshutdown_grace = \"500000h\"\n",
        "server.shutdown_grace",
        2,
        18,
        "longer than the longest duration Baton accepts",
    );
}

#[test]
fn bad_size() {
    check(
        "[server]\nmax_request_body = \"ten megs\"\n",
        "server.max_request_body",
        2,
        20,
        "\"ten megs\" is not a size",
    );
}

#[test]
fn header_size_out_of_range() {
    for (value, line) in [("100B", 2), ("2MiB", 3)] {
        let src = format!(
            "[server]\n{}max_header_size = \"{value}\"\n",
            "\n".repeat(line - 2)
        );
        check(
            &src,
            "server.max_header_size",
            line,
            19,
            &format!("\"{value}\" is out of range"),
        );
    }
}

#[test]
fn counts_out_of_range() {
    check(
        "[server]\nmax_connections = 0\n",
        "server.max_connections",
        2,
        19,
        "0 is out of range: must be at least 1",
    );
    check(
        "[server]\nmax_connections = 2000000\n",
        "server.max_connections",
        2,
        19,
        "2000000 is out of range",
    );
    check(
        "[server]\nthreads = 5000\n",
        "server.threads",
        2,
        11,
        "5000 is out of range: must be at least 0 and at most 1024",
    );
    check(
        "[backends.app]\nurl = \"http://h\"\npool_max_idle = -1\n",
        "backends.app.pool_max_idle",
        3,
        17,
        "-1 is out of range: must be at least 0",
    );
}

#[test]
fn bad_addresses() {
    check(
        "[server]\nlisten = \"localhost:8080\"\n",
        "server.listen",
        2,
        10,
        "\"localhost:8080\" is not an address; write IP:PORT",
    );
    check(
        "[server]\nlisten = \"127.0.0.1:8080\"\nadmin = \"9090\"\n",
        "server.admin",
        3,
        9,
        "\"9090\" is not an address; write IP:PORT",
    );
}

#[test]
fn bad_backend_urls() {
    for (url, needle) in [
        ("ftp://h", "must be an absolute http:// or https:// URL"),
        ("/relative", "must be an absolute http:// or https:// URL"),
        ("http:h", "must be an absolute http:// or https:// URL"),
        ("http://u:p@h", "credentials in the URL are not supported"),
        ("http://h/?q=1", "a backend URL cannot carry a query"),
        ("http://h h", "is not a URL"),
    ] {
        let src = format!("[backends.app]\nurl = \"{url}\"\n");
        check(&src, "backends.app.url", 2, 7, needle);
        let (_, _, _, message) = err(&src);
        assert!(
            message.contains(&format!("{url:?}")),
            "names the URL: {message}"
        );
    }
}

#[test]
fn invalid_backend_name() {
    // Points at the backend's header.
    check(
        "[server]\n[backends.\"bad name\"]\nurl = \"http://h\"\n",
        "backends.bad name",
        2,
        1,
        "backend names are letters, digits, `-` and `_`",
    );
}

#[test]
fn ca_file_on_http_backend() {
    check(
        "[backends.app]\nurl = \"http://h\"\nca_file = \"ca.pem\"\n",
        "backends.app.ca_file",
        3,
        11,
        "only applies to an https:// backend",
    );
}

#[test]
fn ca_file_unreadable_or_empty() {
    // Relative to the directory given, and the message says where it looked.
    let dir = Path::new("/nonexistent-baton-dir");
    check_in(
        "[backends.app]\nurl = \"https://h\"\nca_file = \"ca.pem\"\n",
        Some(dir),
        "backends.app.ca_file",
        3,
        11,
        "cannot read CA certificates from /nonexistent-baton-dir/ca.pem",
    );
    // A file that exists but holds no certificate.
    check_in(
        "[backends.app]\nurl = \"https://h\"\nca_file = \"Cargo.toml\"\n",
        Some(Path::new(MANIFEST_DIR)),
        "backends.app.ca_file",
        3,
        11,
        "holds no PEM certificate",
    );
}

#[test]
fn route_to_unknown_backend() {
    let src = r#"[backends.zeta]
url = "http://127.0.0.1:3000"
[backends.alpha]
url = "http://127.0.0.1:3001"

[[routes]]
name = "r"
match = { path = "/*" }
backend = "nope"
"#;
    check(
        src,
        "routes[0].backend",
        9,
        11,
        "unknown backend \"nope\"; defined backends: [alpha, zeta]",
    );
}

#[test]
fn duplicate_route_name_points_at_the_second() {
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"

[[routes]]
name = "r"
match = { path = "/x" }
backend = "app"

[[routes]]
match = { path = "/*" }
  name = "r"
backend = "app"
"#;
    check(
        src,
        "routes[1].name",
        11,
        10,
        "route name \"r\" is already used by an earlier route",
    );
}

#[test]
fn invalid_route_name() {
    for name in ["my route", "", "a.b"] {
        let src = format!(
            "{BACKEND}[[routes]]\nname = \"{name}\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n"
        );
        check(
            &src,
            "routes[0].name",
            4,
            8,
            "route names are letters, digits, `-` and `_`",
        );
    }
}

#[test]
fn bad_methods() {
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { methods = ["GET", "post"], path = "/*" }
backend = "app"
"#;
    check(
        src,
        "routes[0].match.methods[1]",
        5,
        29,
        "did you mean \"POST\"?",
    );

    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { methods = ["GE T"], path = "/*" }
backend = "app"
"#;
    check(
        src,
        "routes[0].match.methods[0]",
        5,
        22,
        "\"GE T\" is not an HTTP method",
    );
}

#[test]
fn bad_path_patterns() {
    for (path, needle) in [
        ("api", "must start with `/`"),
        ("/a/*/b", "`*` is only allowed as the whole last segment"),
        ("/a*", "`*` is only allowed as the whole last segment"),
        ("/orders/{id", "opens `{` without closing it"),
        ("/{a}/{a}", "parameter `a` appears twice"),
        ("/{}", "parameter name \"\" must be letters"),
        ("/x{a}", "a parameter must be a whole segment"),
    ] {
        let src = format!(
            "{BACKEND}[[routes]]\nname = \"r\"\nmatch = {{ path = \"{path}\" }}\nbackend = \"app\"\n"
        );
        check(&src, "routes[0].match.path", 5, 18, needle);
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    // "ü" and "ï" are two bytes each; the bad path's quote is character 40.
    let src = r#"[backends.app]
url = "http://127.0.0.1:3000"
[[routes]]
name = "r"
match = { host = "ünï.example", path = "api" }
backend = "app"
"#;
    check(src, "routes[0].match.path", 5, 40, "must start with `/`");
}

#[test]
fn bad_host_patterns() {
    for host in ["api.example.com:8080", "a b", "*.", "", "ünï.example"] {
        let src = format!(
            "{BACKEND}[[routes]]\nname = \"r\"\nmatch = {{ path = \"/*\", host = \"{host}\" }}\nbackend = \"app\"\n"
        );
        check(
            &src,
            "routes[0].match.host",
            5,
            31,
            "must be a host name like `api.example.com` or `*.example.com`",
        );
    }
}

#[test]
fn bad_prefixes() {
    for (key, column) in [("strip_prefix", 16), ("add_prefix", 14)] {
        for (value, needle) in [
            ("api", "must start with `/` and not end with one"),
            ("/api/", "must start with `/` and not end with one"),
            ("/a*", "must be a plain path prefix"),
            ("/a?b", "must be a plain path prefix"),
        ] {
            let src = format!(
                "{BACKEND}[[routes]]\nname = \"r\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n{key} = \"{value}\"\n"
            );
            check(&src, &format!("routes[0].{key}"), 7, column, needle);
        }
    }
}

#[test]
fn missing_file_is_a_read_error() {
    let path = Path::new(CONFIG_DIR).join("does-not-exist.toml");
    let e = Config::load(&path).expect_err("a missing file does not load");
    let shown = e.to_string();
    let ConfigError::Read { file, source } = e else {
        panic!("expected a read error, got {shown}");
    };
    assert_eq!(file, path.display().to_string());
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        shown.starts_with(&format!("{}: cannot read the config", path.display())),
        "names the file: {shown}"
    );
}

#[test]
fn invalid_display_is_file_line_column_key_message() {
    let e = Config::parse("[server]\nmax_connections = 0\n", "baton.toml", None)
        .expect_err("max_connections = 0 is refused");
    let shown = e.to_string();
    assert!(
        shown.starts_with("baton.toml:2:19: `server.max_connections`: 0 is out of range"),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------
// Valid files

#[test]
fn omitted_keys_get_defaults() {
    let config = parse(
        r#"[backends.app]
url = "http://127.0.0.1:3000"

[[routes]]
name = "default"
match = { path = "/*" }
backend = "app"
"#,
    );
    let server = &config.server;
    assert_eq!(server.listen.to_string(), defaults::LISTEN);
    assert_eq!(
        server.threads,
        std::thread::available_parallelism().map_or(1, usize::from),
        "one lane per core"
    );
    assert_eq!(server.admin, None);
    assert_eq!(server.max_header_size, defaults::MAX_HEADER_SIZE);
    assert_eq!(server.max_request_body, defaults::MAX_REQUEST_BODY);
    assert_eq!(server.header_read_timeout, defaults::HEADER_READ_TIMEOUT);
    assert!(server.keep_alive);
    assert_eq!(server.max_connections, defaults::MAX_CONNECTIONS);
    assert_eq!(server.shutdown_grace, defaults::SHUTDOWN_GRACE);
    assert_eq!(server.max_held, defaults::MAX_HELD);
    assert_eq!(server.idempotency_memory, defaults::IDEMPOTENCY_MEMORY);

    let [app] = &config.backends[..] else {
        panic!("one backend: {:?}", config.backends);
    };
    assert_eq!(app.name, "app");
    assert_eq!(app.scheme.as_str(), "http");
    assert_eq!(app.authority.as_str(), "127.0.0.1:3000");
    assert_eq!(app.base_path, "");
    assert_eq!(app.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(app.response_timeout, defaults::RESPONSE_TIMEOUT);
    assert_eq!(app.pool_idle_timeout, defaults::POOL_IDLE_TIMEOUT);
    assert_eq!(app.pool_max_idle, defaults::POOL_MAX_IDLE);
    assert!(!app.preserve_host);
    assert!(app.ca_certificates.is_none());

    let [route] = &config.routes[..] else {
        panic!("one route: {:?}", config.routes);
    };
    assert_eq!(&*route.name, "default");
    assert!(route.methods.is_empty());
    assert!(route.host.is_none());
    assert_eq!(route.backend.name, "app");
    assert_eq!(route.strip_prefix, None);
    assert_eq!(route.add_prefix, None);
}

#[test]
fn a_file_with_only_a_route_is_all_defaults() {
    let config = parse("");
    assert_eq!(config.server.listen.to_string(), defaults::LISTEN);
    assert_eq!(config.backends.len(), 1);
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn a_file_without_routes_is_refused() {
    for src in [
        "",
        "[server]\nlisten = \"127.0.0.1:0\"\n",
        "[backends.app]\nurl = \"http://h\"\n",
    ] {
        check(src, "routes", 1, 1, "the config has no [[routes]]");
    }
}

#[test]
fn durations_sizes_and_counts_parse() {
    let config = parse(
        r#"[server]
listen = "0.0.0.0:80"
admin = "[::1]:9090"
max_header_size = "64KiB"
max_request_body = "10MiB"
header_read_timeout = "250ms"
keep_alive = false
max_connections = 1
shutdown_grace = "2m"

[backends.app]
url = "https://h.example:8443/v1/"
connect_timeout = "1s 500ms"
response_timeout = "1h"
pool_idle_timeout = "90s"
pool_max_idle = 0
preserve_host = true
"#,
    );
    let server = &config.server;
    assert_eq!(server.listen.to_string(), "0.0.0.0:80");
    assert_eq!(
        server.admin.map(|a| a.to_string()).as_deref(),
        Some("[::1]:9090")
    );
    assert_eq!(server.max_header_size, 64 * 1024);
    assert_eq!(server.max_request_body, 10 * 1024 * 1024);
    assert_eq!(server.header_read_timeout, Duration::from_millis(250));
    assert!(!server.keep_alive);
    assert_eq!(server.max_connections, 1);
    assert_eq!(server.shutdown_grace, Duration::from_secs(120));

    let app = &config.backends[0];
    assert_eq!(app.scheme.as_str(), "https");
    assert_eq!(app.authority.as_str(), "h.example:8443");
    assert_eq!(app.base_path, "/v1", "the trailing slash is dropped");
    assert_eq!(app.connect_timeout, Duration::from_millis(1500));
    assert_eq!(app.response_timeout, Duration::from_secs(3600));
    assert_eq!(app.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(app.pool_max_idle, 0);
    assert!(app.preserve_host);
}

#[test]
fn header_size_bounds_are_inclusive() {
    for (value, bytes) in [("1KiB", 1024), ("1MiB", 1024 * 1024)] {
        let config = parse(&format!("[server]\nmax_header_size = \"{value}\"\n"));
        assert_eq!(config.server.max_header_size, bytes, "{value}");
    }
}

#[test]
fn routes_keep_file_order_and_backends_sort_by_name() {
    let config = parse(
        r#"[backends.zeta]
url = "http://127.0.0.1:3001"
[backends.alpha]
url = "http://127.0.0.1:3000"

[[routes]]
name = "orders"
match = { methods = ["GET", "DELETE"], path = "/orders/{id}", host = "*.Example.com" }
backend = "zeta"
strip_prefix = "/orders"
add_prefix = "/v2"

[[routes]]
name = "api"
match = { path = "/api/*" }
backend = "alpha"
strip_prefix = "/"

[[routes]]
name = "catch-all"
match = { path = "/*" }
backend = "zeta"
"#,
    );
    let names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["orders", "api", "catch-all"]);
    let backends: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(backends, ["alpha", "zeta"]);

    let orders = &config.routes[0];
    assert_eq!(orders.methods, [http::Method::GET, http::Method::DELETE]);
    assert_eq!(orders.backend.name, "zeta");
    assert_eq!(orders.strip_prefix.as_deref(), Some("/orders"));
    assert_eq!(orders.add_prefix.as_deref(), Some("/v2"));
    assert!(orders
        .host
        .as_ref()
        .is_some_and(|h| h.matches("shop.example.com:443")));
    assert!(orders.path.matches("/orders/42"));

    let api = &config.routes[1];
    assert_eq!(api.backend.name, "alpha");
    assert_eq!(
        api.strip_prefix.as_deref(),
        Some(""),
        "\"/\" strips nothing"
    );

    // First match wins, in file order.
    let find = |path: &str| {
        baton::config::router::find(
            &config.routes,
            &http::Method::GET,
            Some("x.example.com"),
            path,
        )
        .map(|r| &*r.name)
    };
    assert_eq!(find("/orders/1"), Some("orders"));
    assert_eq!(find("/api/orders/1"), Some("api"));
    assert_eq!(find("/other"), Some("catch-all"));
}

#[test]
fn zero_body_limit_is_refused_rather_than_read_as_unlimited() {
    check(
        "[server]\nmax_request_body = \"0B\"\n",
        "server.max_request_body",
        2,
        20,
        "must be at least 1 B",
    );
}

#[test]
fn size_limits_are_inclusive_and_say_so() {
    let src = "[server]\nmax_header_size = \"1MiB\"\n";
    assert_eq!(parse(src).server.max_header_size, 1024 * 1024);
    check(
        "[server]\nmax_header_size = \"2MiB\"\n",
        "server.max_header_size",
        2,
        19,
        "at most 1.0 MiB",
    );
}

#[test]
fn url_without_a_host_says_so() {
    check(
        "[backends.app]\nurl = \"http://\"\n",
        "backends.app.url",
        2,
        7,
        "has no host",
    );
}

#[test]
fn backend_errors_come_in_file_order() {
    // `zeta` sorts after `alpha` but comes first in the file.
    let src = "[backends.zeta]\nurl = \"ftp://z\"\n\n[backends.alpha]\nurl = \"ftp://a\"\n";
    check(src, "backends.zeta.url", 2, 7, "http://");
}

#[test]
fn a_callback_only_route_cannot_cancel() {
    let src = "[server]\ncallback_listen = \"127.0.0.1:9\"\n[backends.app]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\nname = \"r\"\nmatch = { path = \"/run\" }\nbackend = \"app\"\n[routes.async]\ncallback = { mode = \"callback\" }\ncancel = { on_timeout = true }\n";
    let (key, line, _, message) = err(src);
    assert_eq!(key, "routes[0].async.cancel");
    assert_eq!(line, 9, "points at the [routes.async] table");
    assert!(message.contains("no monitor to cancel"), "{message}");
}
