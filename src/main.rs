//! The `baton` command: parse arguments, load the config (exit 64 when it
//! is bad, before any port is bound), set up logging, run.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use baton::{Baton, Config, Listeners};

// Page-aligned size classes with no headers in the block: the untouched
// parts of a held connection's buffers stay out of memory (BENCHMARKS.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// sysexits.h EX_USAGE-family code for "your input is wrong".
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "baton", version, about = "A sync-facade reverse proxy")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config.
    Run {
        #[arg(long, short, default_value = "config/baton.toml")]
        config: PathBuf,
    },
    /// Validate a config file and exit: 0 when valid, 64 with the error.
    Check { file: PathBuf },
    /// Start Baton in front of a small sample job API and show how to try it.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match cli.command {
        Command::Check { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: ok ({} backends, {} routes)\n{}",
                    file.display(),
                    config.backends.len(),
                    config.routes.len(),
                    config.describe()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => run(config),
        Command::Demo { listen } => demo(listen),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let server = config.server.clone();
    // The runtime is lane 0 of `[server] threads`: one thread, like the
    // lanes Baton starts beside it (see `baton::edge::lanes`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Trust anchors and the cluster are checked before any port is
        // bound: a config that cannot work never half-starts.
        let baton = match Baton::new(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let listeners = match Listeners::bind(&server).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", server.listen);
                return ExitCode::FAILURE;
            }
        };
        let signals = baton::ops::signals::on_terminate().and_then(|shutdown| {
            baton::ops::signals::reload_on_hangup(path, baton.reloader())?;
            Ok(shutdown)
        });
        let shutdown = match signals {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        match baton.run(listeners, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo(listen: std::net::SocketAddr) -> ExitCode {
    block_on(async move {
        let shutdown = match baton::ops::signals::on_terminate() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        match baton::ops::demo::run(listen, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs `main_loop` on a multi-threaded runtime.
fn block_on(main_loop: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(main_loop),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; in a file or a log
    // pipeline they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
