//! The `baton` binary as a process: started on a config file with JSON
//! logs, found by its own "listening" line, signalled, and read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::mpsc;

use super::HANG;

pub struct BatonProcess {
    child: Option<Child>,
    pub addr: String,
    path: PathBuf,
    logs: mpsc::UnboundedReceiver<Value>,
    /// Every line written to stdout so far.
    lines: Arc<Mutex<Vec<String>>>,
}

impl BatonProcess {
    /// Writes `config` to a file of its own and runs `baton run` on it
    /// with `env`, until it logs that it listens.
    pub async fn start(config: &str, env: &[(&str, &str)]) -> BatonProcess {
        let path =
            std::env::temp_dir().join(format!("baton-process-{:016x}.toml", fastrand::u64(..)));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args([
                "--log-format",
                "json",
                "run",
                "--config",
                path.to_str().unwrap(),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, logs) = mpsc::unbounded_channel();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(json);
                }
            }
        });
        let mut process = BatonProcess {
            child: Some(child),
            addr: String::new(),
            path,
            logs,
            lines,
        };
        let listening = process.until("listening").await;
        process.addr = listening["fields"]["address"].as_str().unwrap().to_owned();
        process
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// The next JSON log line whose message is `message`.
    pub async fn until(&mut self, message: &str) -> Value {
        tokio::time::timeout(HANG, async {
            loop {
                let line = self
                    .logs
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("baton's output ended before {message:?}"));
                if line["fields"]["message"] == message {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {message:?}"))
    }

    /// Sends `kill -NAME` (`TERM`, `HUP`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits for the process to exit; then every line it wrote.
    pub async fn exit(mut self) -> (ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        // The reader thread sees the pipe close right after the exit.
        let lines = tokio::time::timeout(HANG, async {
            loop {
                if self.logs.recv().await.is_none() {
                    return self.lines.lock().unwrap().clone();
                }
            }
        })
        .await
        .unwrap();
        (status, lines)
    }
}

impl Drop for BatonProcess {
    /// Kills the process if a test failed before it exited on its own.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
