//! The command line, as clap derive types: the top-level options and every subcommand.
//!
//! Only subcommands that work are listed.

use clap::{Args, Parser, Subcommand};
use vfio_migration::{DeviceState, MigrationFlags};

use crate::fsm_args::{parse_flags, parse_state};

/// The default `--flags`: what our NVMe migration driver advertises.
const ALL_FLAGS: &str = "stop-copy,p2p,pre-copy";

/// The exit statuses, shown at the end of `--help`.
pub const EXIT_STATUS_HELP: &str = "Exit status: 0 success; 1 failure (a server, a connection \
    or a migration failed); 2 usage error (an option's value, whether clap or the controller \
    refused it); 3 verification failed (data read back was lost, stale, torn or misplaced).";

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
        drives and migrates them, `bench` measures, `state` and `fsm` explain, `completions` \
        and `man` document.\n\n\
        Results go to stdout (one JSON object on one line with --json), logs to stderr \
        under RUST_LOG (default: warn), errors to stderr as `error: …`.",
    after_help = EXIT_STATUS_HELP
)]
pub struct Cli {
    /// Print the result as one line of JSON on stdout instead of text (demo, workload,
    /// bench, state, fsm, ctl, pf); `serve` prints one JSON event per line.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each variant's doc comment is its help: the first paragraph the one-line
/// summary, the whole text the long help (`--help`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: live-migrate a VF A → B → A under a verifying workload and report.
    ///
    /// Runs on built-in defaults with nothing to prepare. Starts two vfio-nvme servers (A and
    /// B, each one VF with a private 1 GiB RAM namespace), runs a verifying random read/write
    /// workload on four queues against A, live-migrates the VF to B under load (pre-copy of
    /// the namespace data, TP4159 suspend, controller state, resume), and back to A, then
    /// reads back every block written. Prints a report — per migration the total time,
    /// pre-copy rounds and bytes, the device blackout, the longest I/O stall and the stream
    /// size, IOPS before/during/after — and writes an SVG timeline of IOPS and latency with
    /// the migrations marked. The servers start empty, so data found where the workload
    /// never wrote also counts as a failure.
    ///
    /// Exits 0 only if every check passed (3 if a block read back wrong).
    #[command(after_help = EXIT_STATUS_HELP)]
    Demo(DemoArgs),
    /// Run the verifying workload against a served VF, optionally live-migrating it mid-run.
    ///
    /// Drives --queues I/O queues of --qd commands each with the --rw pattern. With --verify
    /// every written block is stamped (LBA, generation, run identifier, CRC) and every read is
    /// checked against the newest write this run saw complete; at the end every block the run
    /// wrote is read back. The run judges only what it wrote: blocks an earlier run or another
    /// client left are not failures, but a block this run wrote and saw complete that reads
    /// back stale, torn, misplaced or zero is.
    ///
    /// --save-layout FILE keeps what the run wrote (even when a migration fails), and a later
    /// `workload --verify-layout FILE --socket PATH` reads it all back from that server: the
    /// source after an aborted migration, the destination after a successful one.
    #[command(after_help = EXIT_STATUS_HELP)]
    Workload(WorkloadArgs),
    /// Measure IOPS over vfio-user, or with --migration the migration data path.
    ///
    /// Without --migration: starts a server per row and runs 4 KiB random read/write at queue
    /// depth 32 on 1 and 4 queues, without verification, on the null, RAM and file backends
    /// (the file through the page cache and with O_DIRECT; see --dir). Two more rows measure
    /// cost, not speed: `trickle`, QD1 4 KiB random reads capped at 1,000 IOPS (latency
    /// p50/p99), and `idle`, a client that enables the controller, creates 4 queues and then
    /// does nothing. Every row reports the CPU of the `serve` process and of this client
    /// (user + system from /proc/PID/stat over the row, % of one core; 10 ms resolution).
    /// --only picks rows, --serve-arg passes options to every server (I/O path policies).
    ///
    /// With --migration: measures, in one run, single-thread memcpy and a UNIX socketpair
    /// (the machine's own limits), then starts two servers, fills a RAM namespace
    /// (--size) and live-migrates it back and forth (--repeat times): the stream's MB/s, its
    /// ratio to memcpy, CPU-seconds per GiB over the servers and this process, and the same
    /// for the first migration alone (its destination's pages are new, so the kernel zeroes
    /// each as data arrives: what a migration to a freshly started server costs), and one more
    /// migration to a fresh server started with `ram:…,prealloc` (and its start-up time); then the
    /// migration time of an empty namespace (--empty-size), which costs what is allocated, not
    /// its size. Medians of the repetitions; the load average is printed because the figures
    /// depend on what else runs. Use a release build. docs/BENCHMARKS.md records both.
    Bench(BenchArgs),
    /// Serve NVMe virtual functions over vfio-user until SIGINT, SIGTERM or SIGHUP.
    ///
    /// One NVM subsystem is built; each --socket serves one of its secondary controllers (a
    /// VF) as a PCI device to one client at a time — QEMU's vfio-user-pci, Cloud Hypervisor,
    /// or this project's host driver and migration orchestrator. A client that disconnects
    /// leaves the device as it was for the next one. The subsystem's primary controller
    /// carries out live migration with NVMe TP4159 commands, driven inside this process.
    ///
    /// With --pf-socket the primary controller is served too, as the PF: a Linux guest's nvme
    /// driver, nvme-cli (id-ctrl, list-secondary, primary-ctrl-caps, virt-mgmt, lm …) or any
    /// TP4159 host software reaches SR-IOV management and every TP4159 command there. The
    /// server's own migration keeps working meanwhile (it uses a private admin port of the
    /// primary controller, not the PF's admin queue); docs/MIGRATION.md says how the two meet.
    ///
    /// The sockets get --socket-mode (default 0600) and --socket-group, so a VMM running as
    /// another user (QEMU under libvirt) can connect. Under systemd (NOTIFY_SOCKET set) the
    /// server reports READY=1 once every socket listens; docs/vfio-nvme@.service is an
    /// example unit. Runs until SIGINT, SIGTERM or SIGHUP, then removes its sockets.
    ///
    /// Every socket also answers the control protocol (docs/CONTROL.md), so `vfio-nvme ctl
    /// SOCKET status` looks inside while a client is attached, and a migration orchestrator
    /// learns why a destination refused a stream; --control PATH adds a socket that answers
    /// only that protocol, for the whole subsystem. What happens (sockets listening, clients
    /// attached and detached, migration state changes and failures) is reported on stderr, or
    /// with --json as one JSON event per line on stdout.
    Serve(ServeArgs),
    /// Drive TP4159 on a PF the kernel's nvme driver owns, through /dev/nvmeX.
    ///
    /// The seed's architecture by hand: every command goes through the Linux NVMe admin
    /// pass-through (NVME_IOCTL_ADMIN64_CMD) to the PF's admin queue and names a secondary
    /// controller (a VF) by CNTLID — `3`, or `vf2` to look it up in the Secondary Controller
    /// List. `list-secondary` shows the VFs' controllers; `suspend` and `resume` stop and
    /// restart one; `save-state` and `load-state` move a state through a file; `migrate`
    /// does suspend, save, load and resume from one controller to another in one step and
    /// reports each step's time. Works with any TP4159 PF: the state formats come from
    /// Identify CNS 20h (NVMe state v0, plus the vfio-nvme vendor state where listed). Needs
    /// CAP_SYS_ADMIN. A controller the PF does not know is a usage error (exit 2).
    #[command(after_help = EXIT_STATUS_HELP)]
    Pf(crate::pf_cmd::PfArgs),
    /// Look inside a running server: status, Identify data, secondary controllers, queues,
    /// migration.
    ///
    /// Asks the server at SOCKET — a VF's or the PF's socket (answered beside an attached
    /// client, which it does not disturb) or the --control socket — over the control protocol
    /// (docs/CONTROL.md) and prints the answer: text (nvme-cli's layout for id-ctrl, id-ns and
    /// list-secondary), or the result object on one line with --json. On a VF socket,
    /// commands about one controller mean that VF's unless --cntlid says otherwise; on the
    /// control socket they mean the primary controller (id-ctrl, id-ns) or every controller
    /// (queues, migration).
    ///
    /// A missing socket, a socket nobody listens on and a server without the control protocol
    /// are told apart; each exits 1.
    #[command(after_help = EXIT_STATUS_HELP)]
    Ctl(CtlArgs),
    /// Explore the VFIO migration v2 state machine (the kernel's next-state walk).
    ///
    /// Shows the walk the kernel's vfio_mig_get_next_state() takes between two device
    /// states, for the migration flags a device advertises.
    ///
    /// States: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P
    /// — in any case, with `-` or `_` — or their uAPI numbers 0-7.
    Fsm(FsmArgs),
    /// Inspect saved migration streams.
    ///
    /// A stream is saved by `demo --save-stream` or `workload --save-stream FILE`.
    State(StateArgs),
    /// Print a shell completion script on stdout.
    ///
    /// For example `vfio-nvme completions bash > /etc/bash_completion.d/vfio-nvme`, or for
    /// zsh into a directory on $fpath as `_vfio-nvme`.
    Completions(CompletionsArgs),
    /// Write the manual pages (vfio-nvme.1 and one per subcommand).
    ///
    /// Into --dir (e.g. /usr/local/share/man/man1), or the top-level page on stdout without
    /// it (`vfio-nvme man | man -l -`).
    Man(ManArgs),
}

/// `vfio-nvme demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the workload runs (the migrations happen at one and two thirds).
    #[arg(long, value_name = "DURATION", default_value = "12s", value_parser = crate::spec_args::parse_duration)]
    pub time: std::time::Duration,
    /// Directory for the timeline, the JSON report, the server logs and the saved stream.
    #[arg(long, value_name = "DIR", default_value = "vfio-nvme-demo")]
    pub output: std::path::PathBuf,
    /// I/O queues (at most what a served controller offers).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::limits::served().io_queue_pairs)))]
    pub queues: u16,
    /// Commands in flight per queue (below a served controller's queue size).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::limits::served_queue_depth())))]
    pub qd: u32,
    /// Also save the first migration's stream (large: it carries every block written) as
    /// stream-a-to-b.bin in the output directory, for `vfio-nvme state decode`.
    #[arg(long)]
    pub save_stream: bool,
    /// How the migrations converge.
    #[command(flatten)]
    pub migration: MigrationArgs,
}

/// How a live migration converges: QEMU's migration parameters of the same names and meaning
/// (see docs/MIGRATION.md, "Convergence").
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Migration convergence")]
pub struct MigrationArgs {
    /// The longest device blackout to accept (QEMU's downtime-limit).
    ///
    /// Pre-copy switches over only when what the device has left would stream within this at
    /// the measured stream rate; inside the limit it keeps copying while each round still
    /// shrinks what is left by a quarter, and raises the throttle when rounds stop doing so (a
    /// round slows the guest, the blackout stops it).
    #[arg(long, value_name = "DURATION", default_value = "300ms", value_parser = crate::spec_args::parse_duration)]
    pub downtime_limit: std::time::Duration,
    /// Cap on the pre-copy stream, bytes per second with a k/M/G suffix, e.g. 100M or 1G/s
    /// (QEMU's max-bandwidth). Default: no cap.
    ///
    /// The blackout streams uncapped. A cap lowers the measured stream rate, so the guest is
    /// throttled sooner and the switch-over needs less left.
    #[arg(long, value_name = "RATE", value_parser = crate::spec_args::parse_rate)]
    pub max_bandwidth: Option<u64>,
    /// Throttle the guest while it dirties more than this, bytes per second with a k/M/G
    /// suffix, e.g. 50M (QEMU's dirty-limit). Default: while it dirties more than half the
    /// stream rate (QEMU's auto-converge).
    ///
    /// Throttling admits the guest's I/O commands at a lower rate (its doorbell writes wait,
    /// at most 50 ms each): 20 % at first, 10 points more each second the dirty rate stays
    /// above the limit (or rounds stop shrinking what is left), at most 99 %. The guest keeps
    /// completing I/O throughout.
    #[arg(long, value_name = "RATE", value_parser = crate::spec_args::parse_rate)]
    pub dirty_limit: Option<u64>,
    /// Give up a migration whose pre-copy has not converged within this: the device resumes
    /// on the source and nothing the guest wrote is lost (exit status 1).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::spec_args::parse_duration)]
    pub migrate_timeout: std::time::Duration,
}

impl MigrationArgs {
    /// The orchestrator's options for these arguments.
    pub fn options(&self) -> nvme_host::orchestrator::MigrateOptions {
        nvme_host::orchestrator::MigrateOptions {
            downtime_limit: self.downtime_limit,
            max_bandwidth: self.max_bandwidth,
            dirty_limit: self.dirty_limit,
            timeout: self.migrate_timeout,
            save_stream: None,
        }
    }
}

/// `--rw`: the access patterns, named as fio names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RwArg {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random reads and writes (--rwmixread of them reads).
    Randrw,
    /// Sequential reads and writes (--rwmixread of them reads).
    #[value(alias = "readwrite")]
    Rw,
}

/// `vfio-nvme workload`.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The socket of the VF to run against (a `vfio-nvme serve` socket).
    #[arg(long, value_name = "PATH")]
    pub socket: std::path::PathBuf,
    /// I/O pattern.
    #[arg(long, value_enum, default_value = "randrw")]
    pub rw: RwArg,
    /// Percentage of reads for randrw and rw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,
    /// Block size of each command (e.g. 4k, 64k): a multiple of the namespace's LBA size, at
    /// most the controller's MDTS.
    #[arg(long, default_value = "4k", value_parser = crate::spec_args::parse_block_size)]
    pub bs: u64,
    /// Commands in flight per queue (below the controller's queue size, CAP.MQES + 1).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=i64::from(nvme_host::workload::MAX_QUEUE_DEPTH)))]
    pub qd: u32,
    /// I/O queues, one thread each (at most what the controller allocates).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=i64::from(nvme_host::workload::MAX_QUEUES)))]
    pub queues: u16,
    /// Run for this long (e.g. 10s, 500ms, 1m). With --migrate-to the run instead lasts until
    /// --migrate-after past the last migration.
    #[arg(long, default_value = "10s", value_parser = crate::spec_args::parse_duration, conflicts_with = "ios")]
    pub time: std::time::Duration,
    /// Run this many I/Os instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub ios: Option<u64>,
    /// Cap submissions at this many I/Os per second over all queues together (default: as
    /// fast as the queues go).
    ///
    /// A token bucket holding 10 ms of tokens (at least one) paces every queue; a queue that
    /// finds it empty sleeps until the next token instead of spinning, so `--qd 1 --rate 1000`
    /// is a trickle that costs this process little CPU: what measuring the server's cost at a
    /// low load needs (`vfio-nvme bench` does that in its trickle row). The report's `rate`
    /// field says which cap was used.
    #[arg(long, value_name = "IOPS", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,
    /// Stamp every written block and check every read (and read everything back at the end).
    #[arg(long)]
    pub verify: bool,
    /// Namespace to use (default: the controller's first active namespace).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub nsid: Option<u32>,
    /// Drive the controller's doorbell registers only, without shadow doorbells.
    ///
    /// By default this host does what Linux's nvme driver does when Identify Controller
    /// offers Doorbell Buffer Config (OACS bit 8): it hands the controller a page of shadow
    /// doorbells and writes a doorbell register only when the controller's EventIdx asks
    /// for it (a worker about to sleep). With `serve --doorbells trapped` that is what keeps
    /// a busy queue free of socket messages; this flag measures a client without them.
    #[arg(long)]
    pub no_shadow_doorbells: bool,
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
    /// How the migrations converge.
    #[command(flatten)]
    pub migration: MigrationArgs,
    /// Save what this run wrote (its layout) to this file, also when a migration fails, for
    /// a later --verify-layout.
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub save_layout: Option<std::path::PathBuf>,
    /// Run no workload: read back from --socket every block an earlier run saved in this
    /// layout file (--save-layout) and check it (with --queues and --qd readers).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["verify", "save_layout", "migrate_to", "ios", "time", "nsid", "rw", "bs", "rate"]
    )]
    pub verify_layout: Option<std::path::PathBuf>,
}

/// `vfio-nvme bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// How long each configuration runs (I/O benchmark).
    #[arg(long, default_value = "3s", value_parser = crate::spec_args::parse_duration)]
    pub time: std::time::Duration,
    /// Measure the migration data path instead of I/O (see the command's help).
    #[arg(long)]
    pub migration: bool,
    /// Run only these rows, comma-separated: row names (null-1q, null-4q, ram-1q, ram-4q,
    /// file-1q, file-4q, file-direct-1q, file-direct-4q, trickle, idle) or groups (null, ram,
    /// file, file-direct: both queue counts). Default: every row.
    #[arg(long, value_name = "ROWS", value_delimiter = ',', value_parser = crate::bench_cmd::parse_row_selector, conflicts_with = "migration")]
    pub only: Vec<String>,
    /// Pass ARG to every `vfio-nvme serve` the benchmark starts; repeat for several, e.g.
    /// `--serve-arg=--io-workers --serve-arg=2` to compare I/O path policies.
    #[arg(
        long = "serve-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "migration"
    )]
    pub serve_args: Vec<String>,
    /// Directory of the file rows' 256 MiB namespace file (default: the first of $TMPDIR,
    /// /var/tmp and the current directory that is not tmpfs; the output names it and its
    /// filesystem). The file-direct rows are skipped where it refuses O_DIRECT.
    #[arg(long, value_name = "DIR", conflicts_with = "migration")]
    pub dir: Option<std::path::PathBuf>,
    /// Options appended to the file rows' namespace specification, e.g. `aio=uring`.
    #[arg(long, value_name = "OPTS", conflicts_with = "migration")]
    pub file_opts: Option<String>,
    /// Drive the controller's doorbell registers only, without shadow doorbells.
    ///
    /// By default this host does what Linux's nvme driver does when Identify Controller
    /// offers Doorbell Buffer Config (OACS bit 8): it hands the controller a page of shadow
    /// doorbells and writes a doorbell register only when the controller's EventIdx asks
    /// for it (a worker about to sleep). With `serve --doorbells trapped` that is what keeps
    /// a busy queue free of socket messages; this flag measures a client without them.
    #[arg(long, conflicts_with = "migration")]
    pub no_shadow_doorbells: bool,
    /// Size of the fully written namespace migrated (--migration), e.g. 1G or 256M.
    #[arg(long, default_value = "1G", value_parser = crate::spec_args::parse_size, requires = "migration")]
    pub size: u64,
    /// Size of the empty namespace migrated (--migration).
    #[arg(long, default_value = "4G", value_parser = crate::spec_args::parse_size, requires = "migration")]
    pub empty_size: u64,
    /// Migrations measured per namespace (--migration); the medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), requires = "migration")]
    pub repeat: u32,
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
    /// Decode a saved migration stream: its header, records and end totals.
    ///
    /// Shows the header (source device, controller limits, namespaces), the records (user
    /// data ranges per namespace, deallocations, the controller state) and the end totals. An
    /// invalid or truncated stream is described up to its first problem, which is then
    /// reported (exit code 1; with --json, `passed` is false).
    Decode {
        /// The stream file (e.g. written by `vfio-nvme demo` or `--save-stream`).
        file: std::path::PathBuf,
    },
}

/// `vfio-nvme serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Socket to serve a VF on; repeat for more VFs.
    #[arg(long = "socket", value_name = "PATH", required = true)]
    pub sockets: Vec<std::path::PathBuf>,

    /// Also serve the primary controller (the PF) on this socket, with an SR-IOV capability
    /// describing the VFs. Its client manages the VFs' controllers with Virtualization
    /// Management and TP4159.
    #[arg(long, value_name = "PATH")]
    pub pf_socket: Option<std::path::PathBuf>,

    /// With --pf-socket: start every VF's controller offline with no resources, as QEMU's
    /// model and real devices do, for the PF's host to assign queue (VQ) and interrupt (VI)
    /// resources and bring it online (nvme virt-mgmt). Default: online, each with 64 I/O queue
    /// pairs and 65 vectors, so the VFs work at once.
    #[arg(long, requires = "pf_socket")]
    pub offline_vfs: bool,

    /// The controller state formats the primary controller offers for migration (Identify
    /// CNS 20h): `v0,vendor` (NVMe state v0 and the vfio-nvme vendor state, which carries
    /// registers, admin queue, features and identity too) or `v0` (NVMe state v0 only, the I/O
    /// queues, as a third-party TP4159 PF such as QEMU's model offers). With `v0` the
    /// destination's host enables the controller itself before the state is set.
    #[arg(long = "state-formats", value_name = "LIST", default_value = "v0,vendor", value_parser = crate::spec_args::parse_state_formats)]
    pub vendor_state: bool,

    /// The primary controller does not log user data changes (no User Data Migration
    /// Queues), like a TP4159 PF without TRATTR.TUDCS: only VFs whose namespaces are all
    /// `,shared` can then migrate.
    #[arg(long)]
    pub no_user_data_logging: bool,

    /// A namespace: ram:SIZE | file:PATH | null:SIZE, then options ,lba=512|4096 (block size,
    /// default 512), ,shared (one namespace for the PF and every VF, on storage both ends of a
    /// migration reach: not copied during migration), ,direct and ,size=SIZE (file only:
    /// O_DIRECT, and create or extend the file), ,aio=uring|threads|sync (file only: how guest
    /// I/O reaches the file: io_uring, the default, falling back to threads with a warning
    /// where io_uring is refused; a few I/O threads per worker; or pread/pwrite inside the
    /// poller, which stalls its queues while the file works), ,inline-writes=on|off (file with
    /// io_uring, buffered: on, the default, has the worker write to the page cache itself
    /// rather than through io_uring, which on ext4 hands every buffered write to a kernel
    /// thread; a write that blocks for over 1 ms sends the next 100 ms (doubling under
    /// pressure, up to 10 s) of writes through io_uring again, and writes of 128 KiB and more
    /// that other commands follow at once go through io_uring, whose threads copy them side by
    /// side), ,prealloc (ram only: allocate every page at start, like QEMU's prealloc=on, so
    /// a migration into this server does not wait for the kernel to allocate and zero each
    /// page as data arrives; costs the whole size in RAM and start-up time). Repeatable. Default: one private 1 GiB RAM namespace
    /// per VF.
    #[arg(long = "namespace", value_name = "SPEC", value_parser = crate::spec_args::parse_namespace)]
    pub namespaces: Vec<vfio_nvme::served::NamespaceConfig>,

    /// Subsystem name, part of its NQN and serial number. Default: a name unique to this
    /// server (from the time and process), so two default servers never share an NQN or
    /// serial.
    #[arg(long, value_parser = crate::spec_args::parse_subsystem_name)]
    pub name: Option<String>,

    /// Permission bits of the sockets, in octal (e.g. 0660 to let --socket-group in).
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = crate::spec_args::parse_mode)]
    pub socket_mode: u32,

    /// Group to give the sockets, by name or number (this user must belong to it).
    #[arg(long, value_name = "GROUP", value_parser = crate::spec_args::parse_group)]
    pub socket_group: Option<u32>,

    /// Also listen on this socket for the control protocol only (the whole subsystem, for
    /// `vfio-nvme ctl`); it gets the --socket-mode and --socket-group of the others.
    #[arg(long, value_name = "PATH")]
    pub control: Option<std::path::PathBuf>,

    /// I/O worker threads per controller. I/O completion queue N (with the submission queues
    /// bound to it) is served by worker (N-1) mod WORKERS, so a guest with several queues gets
    /// several cores; more workers than cores, or than the guest's queues, only cost threads.
    #[arg(long, value_name = "WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(crate::limits::served().io_queue_pairs)))]
    pub io_workers: u16,

    /// How long a worker keeps polling the doorbells after the last command it found, before
    /// it starts to sleep (e.g. 20us, 0, 1ms), at least: while commands keep arriving just
    /// after it fell asleep the spin doubles, up to 8 times this, and it comes back to this
    /// when they come further apart. The guest's doorbell writes land in shared memory and cannot wake
    /// a sleeping worker, so spinning longer lowers the latency of a steady stream of commands
    /// at the price of CPU (each command of a trickle costs one spin). Default: 20us.
    #[arg(long, value_name = "DURATION", value_parser = crate::spec_args::parse_poll_duration)]
    pub poll_spin: Option<std::time::Duration>,

    /// A worker's first sleep after spinning; sleeps double while nothing arrives, up to
    /// --poll-sleep-max. When the guest's commands come back after a regular gap (one command
    /// or batch at a time, like dd), sleeps stop at twice this until one and a half such gaps
    /// have passed, so the next command waits at most that long. Default: 50us.
    #[arg(long, value_name = "DURATION", value_parser = crate::spec_args::parse_poll_duration)]
    pub poll_sleep_min: Option<std::time::Duration>,

    /// A worker's longest sleep while its guest is active (had a command in the last 100 such
    /// sleeps): the most latency a command arriving after a quiet period waits for. Lower it
    /// for latency, raise it for CPU. Default: 1ms.
    #[arg(long, value_name = "DURATION", value_parser = crate::spec_args::parse_poll_duration)]
    pub poll_sleep_max: Option<std::time::Duration>,

    /// A worker's longest sleep once its guest has been idle for 100 --poll-sleep-max sleeps
    /// (sleeps go on doubling up to it): how often an idle enabled controller looks at its
    /// doorbells (each look a thread wake-up; a disabled, offline or suspended controller does
    /// not poll at all), and the most latency the first command after such a pause waits
    /// for. At most --poll-sleep-max: idle guests are polled like active ones. Default: 2ms.
    #[arg(long, value_name = "DURATION", value_parser = crate::spec_args::parse_poll_duration)]
    pub poll_idle_max: Option<std::time::Duration>,

    /// on: while the guest's commands come back after a regular gap (one command or batch at
    /// a time, like dd or a log writer), a worker's sleeps stop at twice --poll-sleep-min until
    /// one and a half gaps have passed, so such a guest waits at most that long for the worker
    /// to see its doorbell; costs a few more wake-ups per gap (a 1,000 IOPS trickle: about ten
    /// per command). off: sleeps always double up to --poll-sleep-max. Default: on.
    #[arg(long, value_name = "on|off", value_parser = crate::spec_args::parse_on_off)]
    pub poll_rhythm: Option<bool>,

    /// How the clients' doorbell writes reach the server. trapped (the default): BAR0's
    /// doorbell page is not mappable, every doorbell register write is a message (a few
    /// microseconds), and an idle worker sleeps until one arrives instead of polling: an idle
    /// guest costs nothing, and a command after a quiet period is seen at once. Made for
    /// guests that use shadow doorbells (Linux does, when Identify says the controller offers
    /// Doorbell Buffer Config, as every controller here does): while a worker polls it keeps
    /// EventIdx where the guest's writes never pass it, so they are plain memory, and a worker
    /// about to sleep arms EventIdx so the guest's next submission writes the register and
    /// wakes it (while a worker meets a regular guest's rhythm, see --poll-rhythm, it sleeps
    /// armed until three quarters of the guest's gap and then polls the shadow until the
    /// command comes). shared: the client maps the doorbell page, a doorbell costs it one
    /// store, and the workers poll for them as the --poll-* options say (a little of a core
    /// while idle, more for a trickle). Choose shared for clients that write doorbell
    /// registers without shadow doorbells (the project's own host driver with `workload
    /// --no-shadow-doorbells`, guests whose driver ignores Doorbell Buffer Config): trapped,
    /// they pay a message per doorbell, a fifth to a third of shared doorbells' IOPS at depth 32,
    /// and the server logs a warning naming the controller when one does.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = DoorbellsArg::Trapped)]
    pub doorbells: DoorbellsArg,
}

/// `serve --doorbells`: how the clients' doorbell writes reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DoorbellsArg {
    /// Through a mapped page of shared memory; the workers poll.
    Shared,
    /// As messages; idle workers sleep until one comes.
    Trapped,
}

impl From<DoorbellsArg> for nvme_device::controller::DoorbellDelivery {
    fn from(arg: DoorbellsArg) -> Self {
        match arg {
            DoorbellsArg::Shared => Self::Shared,
            DoorbellsArg::Trapped => Self::Trapped,
        }
    }
}

impl ServeArgs {
    /// The polling policy the --poll-* options give, the default where one is not given.
    pub fn poll_policy(&self) -> nvme_device::controller::PollPolicy {
        let default = nvme_device::controller::PollPolicy::default();
        nvme_device::controller::PollPolicy {
            spin: self.poll_spin.unwrap_or(default.spin),
            sleep_min: self.poll_sleep_min.unwrap_or(default.sleep_min),
            sleep_max: self.poll_sleep_max.unwrap_or(default.sleep_max),
            idle_max: self.poll_idle_max.unwrap_or(default.idle_max),
            follow_rhythm: self.poll_rhythm.unwrap_or(default.follow_rhythm),
        }
    }
}

/// `vfio-nvme ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The server's socket: a VF's, the PF's or the --control one.
    #[arg(value_name = "SOCKET")]
    pub socket: std::path::PathBuf,

    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What `ctl` asks.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// The subsystem, every controller (CNTLID, function, online, CC/CSTS, queues, migration
    /// state, suspended, client attached, namespaces, socket) and every namespace.
    Status,
    /// Identify Controller, as nvme-cli's `id-ctrl` prints it.
    IdCtrl {
        /// The controller (default: the socket's; the primary on the control socket).
        #[arg(long)]
        cntlid: Option<u16>,
    },
    /// Identify Namespace, as nvme-cli's `id-ns` prints it.
    IdNs {
        /// The namespace.
        #[arg(long, short = 'n', default_value_t = 1)]
        nsid: u32,
        /// The controller it is seen through (default as for id-ctrl).
        #[arg(long)]
        cntlid: Option<u16>,
    },
    /// The primary controller's Secondary Controller List, as nvme-cli's `list-secondary`.
    ListSecondary,
    /// Every queue pair: size, head and tail of both queues, vector, commands completed and
    /// errors since the queue was created on this server.
    Queues {
        /// The controller (default: the socket's; every controller on the control socket).
        #[arg(long)]
        cntlid: Option<u16>,
    },
    /// The migration: state, data session and its bytes, DMA logging, and the last failed
    /// migration request with its reason.
    Migration {
        /// The controller (default as for queues).
        #[arg(long)]
        cntlid: Option<u16>,
    },
}

/// `vfio-nvme completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

/// `vfio-nvme man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (vfio-nvme.1, vfio-nvme-serve.1, …) into this directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// `vfio-nvme fsm`: the state machine of the `vfio-migration` crate, for debugging a migration.
#[derive(Debug, Args)]
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
