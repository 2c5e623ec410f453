//! The command line of interfaces.md: `run`, `demo`, `check`, `render`, `send-test`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage or config error. Logs go to stderr;
//! stdout is reserved for command output.

mod check;
mod demo;
mod render_cmd;
mod run_cmd;
mod send_test;
mod ticket_test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::{self, LogFormat};

pub use demo::{DemoOptions, DemoReport};
pub use render_cmd::RenderFlags;

/// Exit code for a usage or config error.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

/// Kafka → syslog/CEF forwarder for PLURA security events.
#[derive(Debug, Parser)]
#[command(name = "plura-forwarder", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Parsed once per process, so the size of `Render`'s flags does not matter.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the service: consume, route, render, send; stops on SIGTERM/SIGINT after draining.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config/forwarder.toml")]
        config: PathBuf,
    },
    /// Everything embedded (Kafka, sample events, receivers): prints what arrived, exits 0.
    Demo(DemoOptions),
    /// Validate a config file and print a summary; exit 2 on error.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config/forwarder.toml")]
        config: PathBuf,
    },
    /// Render JSON-lines events from stdin to the exact wire bytes on stdout.
    Render(RenderFlags),
    /// The load harness: the product against a minimal forwarder on the same data (performance.md).
    Bench(crate::bench::BenchOptions),
    /// Create one test ticket in a ticket system and print its key and URL, or the error.
    TicketTest {
        /// The `[[ticket]]` name.
        ticket: String,
        /// Config file.
        #[arg(short, long, default_value = "config/forwarder.toml")]
        config: PathBuf,
    },
    /// Send one test message to a syslog destination; report success or the error.
    SendTest {
        /// The `[[syslog]]` name.
        destination: String,
        /// Config file.
        #[arg(short, long, default_value = "config/forwarder.toml")]
        config: PathBuf,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.command {
        // Commands whose stdout is the product keep stderr quiet unless asked.
        Command::Render(_) | Command::Check { .. } | Command::Demo(_) | Command::Bench(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_format, level);
    match cli.command {
        Command::Render(flags) => render_cmd::main(&flags),
        Command::Check { config } => check::main(&config),
        Command::Run { config } => with_runtime(|| run_cmd::main(config)),
        Command::Demo(opts) => with_runtime(|| demo::main(opts)),
        Command::Bench(opts) => with_runtime(|| async move {
            match crate::bench::run(&opts).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }),
        Command::TicketTest { ticket, config } => {
            with_runtime(|| async move { ticket_test::main(&config, &ticket).await })
        }
        Command::SendTest {
            destination,
            config,
        } => with_runtime(|| async move { send_test::main(&config, &destination).await }),
    }
}

/// Loads a config file, or prints its errors (each naming table, key and reason) and gives the
/// exit code of a config error.
fn load_config(path: &std::path::Path) -> Result<crate::config::Config, ExitCode> {
    crate::config::load(path).map_err(|e| {
        for line in e.errors() {
            eprintln!("error: {line}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(|| {
            crate::malloc::collect_if_asked();
        })
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
