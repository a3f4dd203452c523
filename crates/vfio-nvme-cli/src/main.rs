//! `vfio-nvme`: the command-line tool of the vfio-nvme project.
//!
//! It only parses arguments, wires the workspace's crates together and prints; every piece of
//! protocol or state-machine logic lives in a library crate. `demo` is the main job (a live
//! migration A → B → A under a verifying workload); `serve` hosts NVMe virtual functions over
//! vfio-user; `workload` drives and migrates them; `bench` measures; `state` decodes saved
//! migration streams; `fsm` shows the VFIO migration v2 state machine of the `vfio-migration`
//! crate; `ctl` looks inside a running server over its control protocol; `pf` drives TP4159
//! on a kernel-owned PF through the admin pass-through; `completions` and `man` generate
//! shell completions and man pages.
//!
//! Conventions: results go to stdout (one line of JSON with the global `--json`; see the
//! `output` module), logs to stderr under `RUST_LOG` (default `warn`), errors to stderr as
//! `error: …`. Exit status ([`exit`]): 0 success, 1 failure, 2 usage error (clap's, and an
//! option's value that the controller or a file refuses later), 3 verification failed.
#![forbid(unsafe_code)]

mod bench_cmd;
mod bench_migration;
mod cli;
mod control;
mod ctl_cmd;
mod demo_cmd;
mod docs_cmd;
mod exit;
mod fsm_args;
mod fsm_cmd;
mod limits;
mod notify;
mod output;
mod pf_cmd;
mod proc_stat;
mod progress;
mod serve_cmd;
mod serve_events;
mod spec_args;
mod state_cmd;
mod timeline_svg;
mod workload_cmd;

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

use crate::cli::{Cli, Command};
use crate::output::Output;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging();
    let failure = match run(&cli) {
        Ok(output) => match print(&output, cli.json) {
            Ok(()) => output.failure,
            Err(err) => Some(err),
        },
        Err(err) => Some(err),
    };
    let Some(err) = failure else {
        return ExitCode::SUCCESS;
    };
    let (message, status) = match exit::usage_from_config(&err, &matches) {
        Some(usage) => (usage.to_string(), exit::USAGE),
        None => (render(&err), exit::status(&err)),
    };
    if status == exit::USAGE {
        // As clap ends its own usage errors.
        eprintln!("error: {message}\n\nFor more information, try '--help'.");
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(status)
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

/// A usage error for `--json` given to `command`, which prints no JSON.
fn no_json(command: &str) -> anyhow::Error {
    anyhow::Error::new(exit::UsageError {
        option: "--json".to_owned(),
        value: String::new(),
        reason: format!("does not apply to `{command}`, which prints no JSON; leave it out"),
    })
}

/// Runs the parsed command; returns what to print.
fn run(cli: &Cli) -> anyhow::Result<Output> {
    tracing::debug!(command = ?cli.command, json = cli.json, "running");
    Ok(match &cli.command {
        Command::Fsm(args) => Output::passed(fsm_cmd::run(&args.command, cli.json)?),
        Command::Demo(args) => demo_cmd::run(
            &demo_cmd::DemoOptions {
                time: args.time,
                output: args.output.clone(),
                queues: args.queues,
                queue_depth: args.qd,
                save_stream: args.save_stream,
                migration: args.migration.options(),
            },
            cli.json,
        )?,
        Command::Workload(args) => workload_cmd::run_cli(args, cli.json)?,
        Command::Bench(args) if args.migration => Output::passed(bench_migration::run(
            args.size,
            args.empty_size,
            args.repeat,
            cli.json,
        )?),
        Command::Bench(args) => Output::passed(bench_cmd::run(
            &bench_cmd::BenchOptions {
                time: args.time,
                only: args.only.clone(),
                serve_args: args.serve_args.clone(),
                dir: args.dir.clone(),
                file_opts: args.file_opts.clone(),
                shadow_doorbells: !args.no_shadow_doorbells,
            },
            cli.json,
        )?),
        Command::Pf(args) => pf_cmd::run(args, cli.json)?,
        Command::State(args) => match &args.command {
            cli::StateCommand::Decode { file } => state_cmd::decode(file, cli.json)?,
        },
        Command::Completions(_) | Command::Man(_) if cli.json => {
            let name = match &cli.command {
                Command::Completions(_) => "completions",
                _ => "man",
            };
            return Err(no_json(name));
        }
        Command::Ctl(args) => Output::passed(ctl_cmd::run(&args.socket, &args.command, cli.json)?),
        Command::Serve(args) => {
            let namespaces = if args.namespaces.is_empty() {
                vec![vfio_nvme::served::NamespaceConfig {
                    backend: vfio_nvme::served::BackendConfig::Ram {
                        size: 1 << 30,
                        prealloc: false,
                    },
                    block_size: nvme_device::namespace::BlockSize::B512,
                    shared: false,
                }]
            } else {
                args.namespaces.clone()
            };
            let name = args.name.clone().unwrap_or_else(serve_cmd::default_name);
            let socket = vfu::server::SocketOptions {
                mode: args.socket_mode,
                group: args.socket_group,
            };
            let secondary_start = if args.offline_vfs {
                nvme_device::sriov::SecondaryStart::Offline
            } else {
                nvme_device::sriov::SecondaryStart::Online
            };
            Output::passed(serve_cmd::run(
                &serve_cmd::ServeOptions {
                    sockets: &args.sockets,
                    pf_socket: args.pf_socket.as_deref(),
                    control: args.control.as_deref(),
                    secondary_start,
                    migration: nvme_device::controller::MigrationOffer {
                        vendor_state: args.vendor_state,
                        user_data_logging: !args.no_user_data_logging,
                    },
                    namespaces: &namespaces,
                    name: &name,
                    socket: &socket,
                    io_workers: args.io_workers,
                    poll: args.poll_policy(),
                    doorbells: args.doorbells.into(),
                },
                cli.json,
            )?)
        }
        Command::Completions(args) => Output::passed(docs_cmd::completions(args.shell)?),
        Command::Man(args) => Output::passed(docs_cmd::man(args.dir.as_deref())?),
    })
}

/// Prints `output`'s text on stdout (JSON gets its newline).
fn print(output: &Output, json: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.text.as_bytes())
        .and_then(|()| if json { writeln!(stdout) } else { Ok(()) })
        .and_then(|()| stdout.flush())
        .context("could not write the output to stdout")
}
