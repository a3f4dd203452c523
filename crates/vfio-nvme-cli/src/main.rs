//! `vfio-nvme`: the command-line tool of the vfio-nvme project.
//!
//! It only parses arguments, wires the workspace's crates together and prints; every piece of
//! protocol or state-machine logic lives in a library crate. `serve` hosts NVMe virtual
//! functions over vfio-user; `fsm` shows the VFIO migration v2 state machine of the
//! `vfio-migration` crate; the others (`migrate`, `demo`, …) are added as they start to work,
//! never as stubs.
//!
//! Conventions: results go to stdout (JSON with the global `--json`), logs to stderr under
//! `RUST_LOG` (default `warn`), errors to stderr as `error: …` with exit code 1, and usage
//! errors are clap's, with exit code 2.
#![forbid(unsafe_code)]

mod bench_cmd;
mod cli;
mod demo_cmd;
mod fsm_args;
mod fsm_cmd;
mod progress;
mod serve_cmd;
mod spec_args;
mod state_cmd;
mod timeline_svg;
mod workload_cmd;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", render(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text an outer message
/// already quotes (many library errors repeat their source in their own message).
fn render(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` (default: `warn`; directives that
/// do not parse are skipped rather than fatal).
fn init_logging() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs the parsed command and prints its output on stdout.
fn run(cli: &Cli) -> anyhow::Result<()> {
    tracing::debug!(command = ?cli.command, json = cli.json, "running");
    let output = match &cli.command {
        Command::Fsm(args) => fsm_cmd::run(&args.command, cli.json)?,
        Command::Demo(args) => {
            let (text, passed) = demo_cmd::run(
                &demo_cmd::DemoOptions {
                    time: args.time,
                    output: args.output.clone(),
                    queues: args.queues,
                    queue_depth: args.qd,
                    save_stream: args.save_stream,
                },
                cli.json,
            )?;
            if !passed {
                println!("{text}");
                anyhow::bail!("the demo failed: see the report above");
            }
            text
        }
        Command::Workload(args) => workload_cmd::run_cli(args, cli.json)?,
        Command::Bench(args) => bench_cmd::run(args.time, cli.json)?,
        Command::State(args) => match &args.command {
            cli::StateCommand::Decode { file } => state_cmd::decode(file, cli.json)?,
        },
        Command::Serve(args) => {
            let namespaces = if args.namespaces.is_empty() {
                vec![vfio_nvme::served::NamespaceConfig {
                    backend: vfio_nvme::served::BackendConfig::Ram(1 << 30),
                    block_size: nvme_device::namespace::BlockSize::B512,
                    shared: false,
                }]
            } else {
                args.namespaces.clone()
            };
            serve_cmd::run(&args.sockets, &namespaces, &args.name)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| if cli.json { writeln!(stdout) } else { Ok(()) })
        .and_then(|()| stdout.flush())
        .context("could not write the output to stdout")
}
