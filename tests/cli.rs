//! The `baton` binary: `check`, `run`, exit codes, and SIGTERM.

use std::process::Command;

use crate::support::process::BatonProcess;
use crate::support::{get, Backend};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(BATON).args(args).output().expect("run baton")
}

fn temp_config(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("baton-cli-{:016x}.toml", fastrand::u64(..)));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn check_accepts_the_shipped_configs() {
    for file in ["config/example.toml", "config/baton.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = baton(&["check", &path]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
}

/// The allocator settings held requests' memory depends on are compiled
/// into the binary (`.cargo/config.toml`), so a build that lost them would
/// hold each request in about 2.7 KiB more (BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[test]
fn the_binary_returns_freed_pages_at_once_and_caches_64_blocks() {
    let path = format!("{}/config/baton.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BATON)
        .args(["check", &path])
        // jemalloc prints its settings at exit when asked to.
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run baton");
    assert!(out.status.success());
    let stats = String::from_utf8_lossy(&out.stderr);
    for line in [
        "opt.dirty_decay_ms: 0 ",
        "opt.muzzy_decay_ms: 0 ",
        "opt.tcache_nslots_small_min: 64",
    ] {
        assert!(stats.contains(line), "`{line}` not in jemalloc's stats");
    }
}

#[test]
fn bad_config_exits_64_naming_file_line_column_and_key() {
    let path = temp_config("[server]\nlisten = \"127.0.0.1:0\"\n\n[backends.app]\nurl = \"http://127.0.0.1:1\"\nconect_timeout = \"1s\"\n");
    for args in [
        vec!["check", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let out = baton(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!(
            "{}:6:1: `backends.app.conect_timeout`: unknown field `conect_timeout`",
            path.display()
        );
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
    }
    let missing = baton(&["run", "--config", "/nonexistent/baton.toml"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/baton.toml"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn version_and_help() {
    let version = baton(&["--version"]);
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("baton {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8_lossy(&baton(&["--help"]).stdout).into_owned();
    for command in ["run", "check"] {
        assert!(help.contains(command), "{help}");
    }
}

#[tokio::test]
async fn run_serves_until_sigterm_then_exits_cleanly() {
    let backend = Backend::echo().await;
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[backends.app]\nurl = \"http://{}\"\n[[routes]]\nname = \"all\"\nmatch = {{ path = \"/*\" }}\nbackend = \"app\"\n",
        backend.addr
    );
    // The address comes from Baton's own "listening" log line.
    let baton = BatonProcess::start(&config, &[]).await;
    let answer = get(&format!("http://{}/via-process", baton.addr)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-echo-target"), Some("/via-process"));
    baton.signal("TERM");
    let (status, _) = baton.exit().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let path = temp_config(
        "[server]\nlisten = \"127.0.0.1:0\"\n[backends.app]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\nname = \"all\"\nmatch = { path = \"/*\" }\nbackend = \"app\"\n",
    );
    let mut child = Command::new(BATON)
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run baton");
    let stdout = child.stdout.take().expect("a pipe");
    // The process logs, then serves; a failed start ends the stream.
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("listening"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(path);
    let line = listening.expect("Baton logged that it listens");
    assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line:?}");
}

#[test]
fn a_config_without_routes_is_refused() {
    for contents in ["", "[server]\nlisten = \"127.0.0.1:0\"\n"] {
        let path = temp_config(contents);
        let out = baton(&["check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(64), "{contents:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(":1:1: `routes`: the config has no [[routes]]"),
            "{stderr}"
        );
        let _ = std::fs::remove_file(path);
    }
}
