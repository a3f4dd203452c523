//! The command line, as clap derive types: the top-level options and every subcommand.
//!
//! Only subcommands that work are listed.

use clap::{Args, Parser, Subcommand};
use vfio_migration::{DeviceState, MigrationFlags};

use crate::fsm_args::{parse_flags, parse_state};

/// The default `--flags`: what our NVMe migration driver advertises.
const ALL_FLAGS: &str = "stop-copy,p2p,pre-copy";

/// vfio-nvme: live-migratable NVMe controllers in user space.
#[derive(Debug, Parser)]
#[command(
    name = "vfio-nvme",
    version,
    about = "Live-migratable NVMe controllers in user space",
    long_about = "Live-migratable NVMe controllers in user space.\n\n\
        vfio-nvme models an NVM subsystem whose secondary controllers (SR-IOV virtual \
        functions) can be live-migrated: a VFIO migration v2 state machine moves each \
        controller's state with the NVMe TP4159 live-migration commands (Suspend, Get/Set \
        Controller State, Resume) issued on the primary controller, and a vfio-user server \
        presents the controller to a VMM as a PCI device. This tool composes those pieces: \
        `demo` is the main job (a live migration A → B → A under a verifying workload), \
        `serve` hosts VFs for QEMU's vfio-user-pci or this tool's own host side, `workload` \
        drives and migrates them, `bench` measures, `state` and `fsm` explain.\n\n\
        Logging goes to stderr and is controlled by RUST_LOG (default: warn)."
)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: live-migrate a VF A → B → A under a verifying workload and report.
    Demo(DemoArgs),
    /// Run the verifying workload against a served VF, optionally live-migrating it mid-run.
    Workload(WorkloadArgs),
    /// Measure IOPS over vfio-user for the null and RAM backends (4 KiB, depth 32, 1 and 4
    /// queues).
    Bench(BenchArgs),
    /// Serve NVMe virtual functions over vfio-user until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Explore the VFIO migration v2 state machine (the kernel's next-state walk).
    Fsm(FsmArgs),
    /// Inspect saved migration streams.
    State(StateArgs),
}

/// `vfio-nvme demo`.
#[derive(Debug, Args)]
#[command(
    long_about = "The main job, on built-in defaults with nothing to prepare.\n\n\
    Starts two vfio-nvme servers (A and B, each one VF with a private 1 GiB RAM namespace), \
    runs a verifying random read/write workload on four queues against A, live-migrates the VF \
    to B under load (pre-copy of the namespace data, TP4159 suspend, controller state, resume), \
    and back to A, then reads back every block written. Prints a report — per migration the \
    total time, pre-copy rounds and bytes, the device blackout, the longest I/O stall and the \
    stream size, IOPS before/during/after — and writes an SVG timeline of IOPS and latency \
    with the migrations marked. Exits 0 only if every check passed."
)]
pub struct DemoArgs {
    /// How long the workload runs (the migrations happen at one and two thirds).
    #[arg(long, value_name = "DURATION", default_value = "12s", value_parser = crate::spec_args::parse_duration)]
    pub time: std::time::Duration,
    /// Directory for the timeline, the JSON report, the server logs and the saved stream.
    #[arg(long, value_name = "DIR", default_value = "vfio-nvme-demo")]
    pub output: std::path::PathBuf,
    /// I/O queues.
    #[arg(long, default_value_t = 4)]
    pub queues: u16,
    /// Queue depth per queue.
    #[arg(long, default_value_t = 32)]
    pub qd: u32,
    /// Also save the first migration's stream (large: it carries every block written) as
    /// stream-a-to-b.bin in the output directory, for `vfio-nvme state decode`.
    #[arg(long)]
    pub save_stream: bool,
}

/// `vfio-nvme workload`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The socket of the VF to run against (a `vfio-nvme serve` socket).
    #[arg(long, value_name = "PATH")]
    pub socket: std::path::PathBuf,
    /// I/O pattern: read, write, randread, randwrite, randrw, rw.
    #[arg(long, default_value = "randrw")]
    pub rw: String,
    /// Percentage of reads for randrw and rw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,
    /// Block size of each command (e.g. 4k, 64k).
    #[arg(long, default_value = "4k", value_parser = crate::spec_args::parse_size)]
    pub bs: u64,
    /// Commands in flight per queue.
    #[arg(long, default_value_t = 32)]
    pub qd: u32,
    /// I/O queues (one thread each).
    #[arg(long, default_value_t = 4)]
    pub queues: u16,
    /// Run for this long (e.g. 10s, 500ms, 1m). With --migrate-to the run instead lasts until
    /// --migrate-after past the last migration.
    #[arg(long, default_value = "10s", value_parser = crate::spec_args::parse_duration, conflicts_with = "ios")]
    pub time: std::time::Duration,
    /// Run this many I/Os instead of a duration.
    #[arg(long)]
    pub ios: Option<u64>,
    /// Stamp every written block and check every read (and read everything back at the end).
    #[arg(long)]
    pub verify: bool,
    /// Namespace to use (default: the controller's first active namespace).
    #[arg(long)]
    pub nsid: Option<u32>,
    /// Live-migrate the VF to this server's socket during the run.
    #[arg(long, value_name = "PATH")]
    pub migrate_to: Option<std::path::PathBuf>,
    /// When to migrate, after the start (and, with --migrate-back, between the migrations).
    #[arg(long, default_value = "5s", value_parser = crate::spec_args::parse_duration)]
    pub migrate_after: std::time::Duration,
    /// Migrate back to the original server after another --migrate-after.
    #[arg(long, requires = "migrate_to")]
    pub migrate_back: bool,
    /// Save a copy of the (first) migration stream to this file.
    #[arg(long, value_name = "FILE", requires = "migrate_to")]
    pub save_stream: Option<std::path::PathBuf>,
}

/// `vfio-nvme bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How long each configuration runs.
    #[arg(long, default_value = "3s", value_parser = crate::spec_args::parse_duration)]
    pub time: std::time::Duration,
}

/// `vfio-nvme state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// What to do with a stream.
    #[command(subcommand)]
    pub command: StateCommand,
}

/// The `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Decode a saved migration stream: its header (source device, controller limits,
    /// namespaces), its records (user data ranges per namespace, deallocations, the controller
    /// state) and its end totals. An invalid or truncated stream is described up to its first
    /// problem, which is then reported (exit code 1).
    Decode {
        /// The stream file (e.g. written by `vfio-nvme demo` or `--save-stream`).
        file: std::path::PathBuf,
    },
}

/// `vfio-nvme serve`.
#[derive(Debug, Args)]
#[command(long_about = "Serve NVMe virtual functions over vfio-user.\n\n\
        One NVM subsystem is built; each --socket serves one of its secondary controllers (a \
        VF) as a PCI device to one client at a time — QEMU's vfio-user-pci, Cloud Hypervisor, or \
        this project's host driver and migration orchestrator. A client that disconnects leaves \
        the device as it was for the next one. The subsystem's primary controller stays in this \
        process and carries out live migration with NVMe TP4159 commands.\n\n\
        Runs until SIGINT or SIGTERM, then removes its sockets.")]
pub struct ServeArgs {
    /// Socket to serve a VF on (created with mode 0600); repeat for more VFs.
    #[arg(long = "socket", value_name = "PATH", required = true)]
    pub sockets: Vec<std::path::PathBuf>,

    /// A namespace: ram:SIZE | file:PATH | null:SIZE, then options ,lba=512|4096 (block size,
    /// default 512), ,shared (one namespace for the PF and every VF, on storage both ends of a
    /// migration reach: not copied during migration), ,direct and ,size=SIZE (file only:
    /// O_DIRECT, and create or extend the file). Repeatable. Default: one private 1 GiB RAM
    /// namespace per VF.
    #[arg(long = "namespace", value_name = "SPEC", value_parser = crate::spec_args::parse_namespace)]
    pub namespaces: Vec<vfio_nvme::served::NamespaceConfig>,

    /// Subsystem name, part of its NQN and serial number.
    #[arg(long, default_value = "vfio-nvme")]
    pub name: String,
}

/// `vfio-nvme fsm`: the state machine of the `vfio-migration` crate, for debugging a migration.
#[derive(Debug, Args)]
#[command(
    long_about = "Explore the VFIO migration v2 state machine: the walk the kernel's \
        vfio_mig_get_next_state() takes between two device states, for the migration flags \
        a device advertises.\n\n\
        States: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, \
        PRE_COPY_P2P — in any case, with `-` or `_` — or their uAPI numbers 0-7."
)]
pub struct FsmArgs {
    /// Which view of the state machine to print.
    #[command(subcommand)]
    pub command: FsmCommand,
}

/// The views of the state machine.
#[derive(Debug, Subcommand)]
pub enum FsmCommand {
    /// Print the arcs a SET from FROM to TO walks, one driver arc per step.
    ///
    /// Fails (exit code 1) with the kernel's reason when there is no walk, e.g. STOP_COPY to
    /// PRE_COPY, or when a state needs a flag the device lacks.
    Path {
        /// The current device state (name or uAPI number).
        #[arg(value_parser = parse_state)]
        from: DeviceState,
        /// The requested device state (name or uAPI number).
        #[arg(value_parser = parse_state)]
        to: DeviceState,
        /// The device's migration flags.
        #[command(flatten)]
        flags: FlagsArg,
    },
    /// Print the next-state matrix of the states the flags support.
    ///
    /// Rows are current states, columns target states, and a cell is the first arc of the walk
    /// (`-` when already there, `ERR` when the kernel refuses the SET with EINVAL). With
    /// `--json`: `{"flags": [...], "table": {CURRENT: {TARGET: NEXT or null}}}`, where the
    /// diagonal holds the state itself.
    Table {
        /// The device's migration flags.
        #[command(flatten)]
        flags: FlagsArg,
    },
}

/// `--flags`, shared by the `fsm` views.
#[derive(Debug, Args)]
pub struct FlagsArg {
    /// Comma list of the device's migration flags: stop-copy (required), p2p, pre-copy.
    ///
    /// The default is all three, which is what our NVMe migration driver advertises.
    #[arg(long = "flags", value_name = "LIST", value_parser = parse_flags, default_value = ALL_FLAGS)]
    pub flags: MigrationFlags,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn path_parses_states_and_defaults_to_all_flags() {
        let cli = Cli::try_parse_from(["vfio-nvme", "fsm", "path", "running", "3"]).unwrap();
        assert!(!cli.json);
        let Command::Fsm(FsmArgs {
            command: FsmCommand::Path { from, to, flags },
        }) = cli.command
        else {
            panic!("expected fsm path, got {:?}", cli.command);
        };
        assert_eq!(from, DeviceState::Running);
        assert_eq!(to, DeviceState::StopCopy);
        assert_eq!(flags.flags, MigrationFlags::all());
    }

    #[test]
    fn json_is_global_and_flags_are_parsed() {
        let cli = Cli::try_parse_from([
            "vfio-nvme",
            "fsm",
            "table",
            "--flags",
            "stop-copy,p2p",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Fsm(FsmArgs {
            command: FsmCommand::Table { flags },
        }) = cli.command
        else {
            panic!("expected fsm table, got {:?}", cli.command);
        };
        assert_eq!(flags.flags, MigrationFlags::STOP_COPY | MigrationFlags::P2P);
    }

    #[test]
    fn bad_values_are_usage_errors_naming_the_value() {
        let err = Cli::try_parse_from(["vfio-nvme", "fsm", "path", "runing", "stop"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("runing"), "{err}");

        let err = Cli::try_parse_from(["vfio-nvme", "fsm", "table", "--flags", "p2p"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("stop-copy"), "{err}");
    }

    #[test]
    fn subcommands_that_do_not_exist_yet_are_not_accepted() {
        let err = Cli::try_parse_from(["vfio-nvme", "migrate"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSubcommand);
    }
}
