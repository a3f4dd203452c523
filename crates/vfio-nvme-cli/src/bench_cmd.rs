//! `vfio-nvme bench`: IOPS of a served VF over vfio-user — null, RAM and file backends at
//! 4 KiB, queue depth 32, with 1 and 4 queues — and what each costs: the CPU of the `serve`
//! process and of this client during the run. Two rows measure cost rather than speed: a
//! trickle (QD1 4 KiB random reads capped at 1,000 IOPS) and an idle attached client. The
//! numbers `docs/BENCHMARKS.md` records (issue 13's acceptance).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::workload::Limit;
use nvme_host::workload::Pattern;
use nvme_host::workload::WorkloadConfig;
use serde::Serialize;

use crate::demo_cmd::Server;
use crate::demo_cmd::spawn_server;
use crate::proc_stat::load_average;
use crate::proc_stat::process_cpu_seconds;
use crate::workload_cmd;

/// Queue depth of the throughput rows.
const DEPTH: u32 = 32;
/// Block size of every row.
const BLOCK: u64 = 4096;
/// LBAs (of 4 KiB) the rows use: 256 MiB, also the size of the file backend's namespace file.
const RANGE_LBAS: u64 = 65536;
/// The trickle row's rate cap, IOPS.
const TRICKLE_IOPS: u32 = 1000;
/// I/O queue pairs the idle row's client creates.
const IDLE_QUEUES: u16 = 4;
/// Guest memory of the idle row's client.
const IDLE_MEMORY: u64 = 8 << 20;
/// Where that memory sits in the device's IOVA space.
const IDLE_IOVA: u64 = 0x1_0000_0000;

/// The rows, in the order they run: name, backend, queues and what the client does.
const ROWS: &[Row] = &[
    Row::load("null-1q", Backend::Null, 1),
    Row::load("null-4q", Backend::Null, 4),
    Row::load("ram-1q", Backend::Ram, 1),
    Row::load("ram-4q", Backend::Ram, 4),
    Row::load("file-1q", Backend::File { direct: false }, 1),
    Row::load("file-4q", Backend::File { direct: false }, 4),
    Row::load("file-direct-1q", Backend::File { direct: true }, 1),
    Row::load("file-direct-4q", Backend::File { direct: true }, 4),
    Row {
        name: "trickle",
        backend: Backend::Ram,
        queues: 1,
        client: Client::Trickle,
    },
    Row {
        name: "idle",
        backend: Backend::Ram,
        queues: IDLE_QUEUES,
        client: Client::Idle,
    },
];

/// A namespace backend of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Null,
    Ram,
    /// A file in the benchmark's directory, through the page cache or with `O_DIRECT`.
    File {
        direct: bool,
    },
}

/// What the client does in a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// Random 50/50 read/write at queue depth 32 per queue, as fast as it goes.
    Load,
    /// QD1 random reads capped at [`TRICKLE_IOPS`].
    Trickle,
    /// Controller enabled, queues created, then nothing.
    Idle,
}

/// One configuration the benchmark can run.
#[derive(Clone, Copy, Debug)]
struct Row {
    name: &'static str,
    backend: Backend,
    queues: u16,
    client: Client,
}

impl Row {
    const fn load(name: &'static str, backend: Backend, queues: u16) -> Self {
        Self {
            name,
            backend,
            queues,
            client: Client::Load,
        }
    }

    /// The row's group for `--only`: its name without the queue count.
    fn group(&self) -> &'static str {
        self.name
            .strip_suffix("-1q")
            .or_else(|| self.name.strip_suffix("-4q"))
            .unwrap_or(self.name)
    }
}

/// Parses one `--only` word: a row name or a group of rows; the error lists both.
pub fn parse_row_selector(text: &str) -> Result<String, String> {
    let word = text.trim();
    if ROWS.iter().any(|r| r.name == word || r.group() == word) {
        return Ok(word.to_owned());
    }
    let names: Vec<&str> = ROWS.iter().map(|r| r.name).collect();
    let mut groups: Vec<&str> = ROWS.iter().map(Row::group).collect();
    groups.dedup();
    Err(format!(
        "`{text}` is no row: use one of {} or a group: {}",
        names.join(", "),
        groups.join(", ")
    ))
}

/// What `bench` is asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How long each row runs.
    pub time: Duration,
    /// Rows or groups to run; empty for all.
    pub only: Vec<String>,
    /// Extra arguments for every `serve` started.
    pub serve_args: Vec<String>,
    /// Directory of the file backend's namespace file; `None` to pick one that is not tmpfs.
    pub dir: Option<PathBuf>,
    /// Options appended to the file rows' namespace specification (e.g. `aio=uring`).
    pub file_opts: Option<String>,
    /// Whether the client hands the controller shadow doorbells (as Linux does).
    pub shadow_doorbells: bool,
}

/// One measured row.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// Row name (`null-1q`, …, `trickle`, `idle`).
    pub row: String,
    /// Namespace backend (`file-direct` for the file backend with `O_DIRECT`).
    pub backend: String,
    /// I/O queues.
    pub queues: u16,
    /// Queue depth per queue (0 in the idle row).
    pub queue_depth: u32,
    /// Block size.
    pub block_size: u64,
    /// Pattern (`idle` in the idle row).
    pub pattern: String,
    /// The client's submission cap, IOPS, if any.
    pub rate: Option<u32>,
    /// I/Os per second.
    pub iops: f64,
    /// Throughput.
    pub mb_per_s: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// CPU (user + system) of the `serve` process over the row, in % of one core.
    pub serve_cpu_pct: f64,
    /// CPU of this process (the client: driver and workload) over the row, in % of one core.
    pub client_cpu_pct: f64,
    /// Wall time the CPU figures are over, seconds.
    pub wall_s: f64,
    /// Commands completed.
    pub ios: u64,
    /// Microseconds of `serve` CPU per command: the efficiency figure, steadier than IOPS when
    /// the server does not get a whole core (0 without commands).
    pub serve_us_per_io: f64,
}

/// What a row that could not run says instead of figures.
#[derive(Debug, Serialize)]
pub struct Skipped {
    /// Row name.
    pub row: String,
    /// Why.
    pub reason: String,
}

/// The whole benchmark's output.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Load average (1 minute) when the run started: the machine may be shared.
    pub load_average: f64,
    /// Seconds each row ran.
    pub time_s: f64,
    /// Extra `serve` arguments used.
    pub serve_args: Vec<String>,
    /// Whether the client used shadow doorbells where the controller offered them.
    pub shadow_doorbells: bool,
    /// Where the file rows' namespace file was (when a file row ran).
    pub file_dir: Option<PathBuf>,
    /// That directory's filesystem type, from /proc/self/mounts.
    pub file_fs: Option<String>,
    /// The measured rows.
    pub rows: Vec<BenchResult>,
    /// The selected rows that could not run.
    pub skipped: Vec<Skipped>,
}

/// Runs the selected rows for `options.time` each.
pub fn run(options: &BenchOptions, json: bool) -> anyhow::Result<String> {
    let rows: Vec<Row> = ROWS
        .iter()
        .filter(|r| {
            options.only.is_empty() || options.only.iter().any(|w| w == r.name || w == r.group())
        })
        .copied()
        .collect();
    let load = load_average();
    let sockets = std::env::temp_dir().join(format!("vfio-nvme-bench-{}", std::process::id()));
    std::fs::create_dir_all(&sockets)
        .with_context(|| format!("cannot create {}", sockets.display()))?;
    let needs_file = rows
        .iter()
        .any(|r| matches!(r.backend, Backend::File { .. }));
    let file_dir = if needs_file {
        Some(match &options.dir {
            Some(dir) => dir.clone(),
            None => default_dir(),
        })
    } else {
        None
    };
    let result = measure(options, &rows, &sockets, file_dir.as_deref());
    let _ = std::fs::remove_dir_all(&sockets);
    let (results, skipped) = result?;
    let report = BenchReport {
        load_average: load,
        time_s: options.time.as_secs_f64(),
        serve_args: options.serve_args.clone(),
        shadow_doorbells: options.shadow_doorbells,
        file_fs: file_dir.as_deref().and_then(fs_type),
        file_dir,
        rows: results,
        skipped,
    };
    if json {
        return serde_json::to_string(&report).context("cannot render the results");
    }
    Ok(render(&report))
}

/// The table a terminal gets.
fn render(report: &BenchReport) -> String {
    let mut out = format!(
        "load average {:.2} at the start; {:.1} s per row{}{}\n",
        report.load_average,
        report.time_s,
        if report.shadow_doorbells {
            ""
        } else {
            "; client without shadow doorbells"
        },
        if report.serve_args.is_empty() {
            String::new()
        } else {
            format!("; serve {}", report.serve_args.join(" "))
        }
    );
    if let Some(dir) = &report.file_dir {
        out.push_str(&format!(
            "file backend: {} MiB file in {} ({})\n",
            (RANGE_LBAS * BLOCK) >> 20,
            dir.display(),
            report.file_fs.as_deref().unwrap_or("filesystem unknown")
        ));
    }
    out.push_str(
        "row            backend     queues depth   bs pattern             IOPS     MB/s   p50 µs   p99 µs serve% client% serve µs/IO\n",
    );
    for r in &report.rows {
        let pattern = match r.rate {
            Some(rate) => format!("{}@{rate}/s", r.pattern),
            None => r.pattern.clone(),
        };
        out.push_str(&format!(
            "{:<14} {:<11} {:>6} {:>5} {:>4} {:<15} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>6.1} {:>7.1} {:>11.2}\n",
            r.row,
            r.backend,
            r.queues,
            r.queue_depth,
            r.block_size,
            pattern,
            r.iops,
            r.mb_per_s,
            r.p50_us,
            r.p99_us,
            r.serve_cpu_pct,
            r.client_cpu_pct,
            r.serve_us_per_io,
        ));
    }
    for s in &report.skipped {
        out.push_str(&format!("{:<14} skipped: {}\n", s.row, s.reason));
    }
    out
}

type Measured = (Vec<BenchResult>, Vec<Skipped>);

fn measure(
    options: &BenchOptions,
    rows: &[Row],
    sockets: &Path,
    file_dir: Option<&Path>,
) -> anyhow::Result<Measured> {
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    let file = match file_dir {
        Some(dir) => Some(NamespaceFile::create(dir)?),
        None => None,
    };
    let direct_refused = file.as_ref().and_then(NamespaceFile::direct_refused);
    for row in rows {
        let spec = match (row.backend, &file) {
            (Backend::Null, _) => "null:4G,lba=4096".to_owned(),
            (Backend::Ram, _) => "ram:1G,lba=4096".to_owned(),
            (Backend::File { direct: true }, _) if direct_refused.is_some() => {
                skipped.push(Skipped {
                    row: row.name.to_owned(),
                    reason: direct_refused.clone().unwrap_or_default(),
                });
                continue;
            }
            (Backend::File { direct: d }, Some(f)) => {
                let mut spec = format!("file:{},lba=4096", f.path.display());
                if d {
                    spec.push_str(",direct");
                }
                if let Some(opts) = &options.file_opts {
                    spec.push(',');
                    spec.push_str(opts);
                }
                spec
            }
            (Backend::File { .. }, None) => {
                anyhow::bail!("row {} has no namespace file", row.name)
            }
        };
        let mut args = vec!["--namespace".to_owned(), spec];
        args.extend(options.serve_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let socket = sockets.join(format!("{}.sock", row.name));
        // The logs live in a directory removed at the end: a failure carries the log's tail.
        let server = spawn_server(&socket, &args).map_err(|e| {
            with_log_tail(e, &socket).context(format!(
                "cannot start the server of row {} (vfio-nvme serve {})",
                row.name,
                args.join(" ")
            ))
        })?;
        let result = run_row(row, &server, &socket, options);
        drop(server);
        let result = result.map_err(|e| {
            with_log_tail(e, &socket).context(format!("benchmark row {} failed", row.name))
        })?;
        results.push(result);
    }
    Ok((results, skipped))
}

/// Lines of a server's log a failure shows.
const LOG_TAIL_LINES: usize = 10;

/// `err` with the last lines of the log of the server at `socket` (`SOCKET.log`) appended.
fn with_log_tail(err: anyhow::Error, socket: &Path) -> anyhow::Error {
    let log = std::fs::read_to_string(socket.with_extension("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    if lines.is_empty() {
        return err;
    }
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    err.context(format!("the server's log ends with:\n{tail}"))
}

/// Runs one row against its server and measures both processes' CPU over it.
fn run_row(
    row: &Row,
    server: &Server,
    socket: &Path,
    options: &BenchOptions,
) -> anyhow::Result<BenchResult> {
    let time = options.time;
    let serve_pid = server.pid().to_string();
    let serve_before = process_cpu_seconds(&serve_pid)?;
    let client_before = process_cpu_seconds("self")?;
    let started = Instant::now();
    let backend = match row.backend {
        Backend::Null => "null",
        Backend::Ram => "ram",
        Backend::File { direct: false } => "file",
        Backend::File { direct: true } => "file-direct",
    }
    .to_owned();
    let mut result = BenchResult {
        row: row.name.to_owned(),
        backend,
        queues: row.queues,
        queue_depth: 0,
        block_size: BLOCK,
        pattern: "idle".to_owned(),
        rate: None,
        iops: 0.0,
        mb_per_s: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        serve_cpu_pct: 0.0,
        client_cpu_pct: 0.0,
        wall_s: 0.0,
        ios: 0,
        serve_us_per_io: 0.0,
    };
    let (rw, queue_depth, rate) = match row.client {
        Client::Idle => {
            idle_client(socket, time, options.shadow_doorbells)?;
            (None, 0, None)
        }
        Client::Load => (Some(Pattern::RandRw { read_percent: 50 }), DEPTH, None),
        Client::Trickle => (Some(Pattern::RandRead), 1, Some(TRICKLE_IOPS)),
    };
    if let Some(rw) = rw {
        let config = WorkloadConfig {
            rw,
            block_size: BLOCK,
            queue_depth,
            queues: row.queues,
            limit: Limit::Duration(time),
            rate,
            verify: false,
            lba_range: Some(0..RANGE_LBAS),
            shadow_doorbells: options.shadow_doorbells,
            ..WorkloadConfig::default()
        };
        let outcome = workload_cmd::run(socket, &config, &[], None, None, &|_, _| {}, &|_, _| {})?;
        let w = &outcome.workload;
        result.queue_depth = queue_depth;
        result.pattern = w.pattern.clone();
        result.rate = rate;
        result.iops = w.iops;
        result.ios = w.ios;
        result.mb_per_s = w.mb_per_s;
        result.p50_us = w.latency.p50_us;
        result.p99_us = w.latency.p99_us;
    }
    let wall = started.elapsed().as_secs_f64();
    result.wall_s = wall;
    let serve_cpu = process_cpu_seconds(&serve_pid)? - serve_before;
    result.serve_cpu_pct = serve_cpu / wall * 100.0;
    if result.ios > 0 {
        result.serve_us_per_io = serve_cpu * 1e6 / result.ios as f64;
    }
    result.client_cpu_pct = (process_cpu_seconds("self")? - client_before) / wall * 100.0;
    Ok(result)
}

/// Attaches to the VF at `socket`, enables the controller, creates [`IDLE_QUEUES`] I/O queue
/// pairs (with shadow doorbells if `shadow` and offered), submits nothing for `time`, then
/// deletes them: what an idle guest costs the server.
fn idle_client(socket: &Path, time: Duration, shadow: bool) -> anyhow::Result<()> {
    let memory = HostMemory::new(IDLE_MEMORY, IDLE_IOVA).context("cannot allocate guest memory")?;
    let orch = Orchestrator::connect(socket, memory.clone())
        .with_context(|| format!("cannot attach to the VF at {}", socket.display()))?;
    let driver = Driver::new(orch.bar(), memory).context("cannot bring up the NVMe controller")?;
    if shadow {
        driver
            .use_shadow_doorbells()
            .context("cannot set up shadow doorbells (Doorbell Buffer Config)")?;
    }
    driver
        .set_queue_count(IDLE_QUEUES)
        .context("Set Features (Number of Queues) failed")?;
    let qps = (1..=IDLE_QUEUES)
        .map(|qid| driver.create_queue_pair(qid, DEPTH + 1, None))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot create the idle client's queues")?;
    std::thread::sleep(time);
    for qp in qps {
        driver
            .delete_queue_pair(qp)
            .context("cannot delete the idle client's queues")?;
    }
    Ok(())
}

/// The file rows' namespace file, written through once so reads find allocated blocks;
/// removed on drop.
struct NamespaceFile {
    path: PathBuf,
}

impl NamespaceFile {
    /// Creates `RANGE_LBAS` blocks of non-zero data in `dir`.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("vfio-nvme-bench-{}.img", std::process::id()));
        let this = Self { path };
        let mut file = File::create(&this.path)
            .with_context(|| format!("cannot create {}", this.path.display()))?;
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(RANGE_LBAS * BLOCK) >> 20 {
            file.write_all(&chunk)
                .with_context(|| format!("cannot write {}", this.path.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("cannot sync {}", this.path.display()))?;
        Ok(this)
    }

    /// Why the file cannot be opened with `O_DIRECT` (tmpfs before Linux 6.6, some network
    /// filesystems), or `None` when it can.
    fn direct_refused(&self) -> Option<String> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)
            .err()
            .map(|e| format!("{} refuses O_DIRECT: {e}", self.path.display()))
    }
}

impl Drop for NamespaceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The first of `$TMPDIR`, `/var/tmp` and the current directory that exists and is not tmpfs
/// (a file benchmark on tmpfs measures memory, not a filesystem); `$TMPDIR` or `/tmp` when
/// all are.
fn default_dir() -> PathBuf {
    let candidates = [
        std::env::var_os("TMPDIR").map(PathBuf::from),
        Some(PathBuf::from("/var/tmp")),
        std::env::current_dir().ok(),
    ];
    candidates
        .iter()
        .flatten()
        .find(|d| d.is_dir() && fs_type(d).is_some_and(|t| t != "tmpfs"))
        .cloned()
        .unwrap_or_else(std::env::temp_dir)
}

/// The filesystem type of the mount holding `dir` (the longest mount point that is a prefix of
/// its canonical path in /proc/self/mounts).
fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            // Mount points escape spaces as \040.
            let point = fields.next()?.replace("\\040", " ");
            let kind = fields.next()?;
            dir.starts_with(&point)
                .then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_name_rows_or_groups_and_the_error_lists_them() {
        assert_eq!(parse_row_selector("null").unwrap(), "null");
        assert_eq!(
            parse_row_selector("file-direct-4q").unwrap(),
            "file-direct-4q"
        );
        assert_eq!(parse_row_selector(" idle ").unwrap(), "idle");
        let err = parse_row_selector("nul").unwrap_err();
        assert!(
            err.contains("null-1q") && err.contains("file-direct"),
            "{err}"
        );
        let groups: Vec<&str> = ROWS.iter().map(Row::group).collect();
        assert_eq!(
            groups,
            [
                "null",
                "null",
                "ram",
                "ram",
                "file",
                "file",
                "file-direct",
                "file-direct",
                "trickle",
                "idle"
            ]
        );
    }

    #[test]
    fn the_root_filesystem_has_a_type() {
        assert!(fs_type(Path::new("/")).is_some());
        assert!(fs_type(Path::new("/no/such/dir")).is_none());
    }
}
