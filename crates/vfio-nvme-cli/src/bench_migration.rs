//! `vfio-nvme bench --migration`: the migration data path against the machine's own limits,
//! measured in one run — single-thread memcpy and a UNIX socketpair as peers, then a fully
//! written RAM namespace migrated between two servers (stream MB/s, its ratio to memcpy,
//! CPU-seconds per GiB over the servers and this process), then the migration of an empty
//! namespace (what pre-copy costs when nothing is allocated). The numbers docs/BENCHMARKS.md
//! records in "Migration data path".

use std::io::Read as _;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
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

/// Guest memory of the migrating orchestrator (the bench's guest does no I/O while migrating).
const GUEST_BYTES: u64 = 16 << 20;
/// Where that memory sits in the device's IOVA space.
const GUEST_IOVA: u64 = 0x1_0000_0000;
/// Size of the buffers the memcpy peer copies between.
const MEMCPY_BYTES: usize = 256 << 20;
/// Bytes the socketpair peer moves, in writes of [`SOCKET_CHUNK`].
const SOCKET_BYTES: usize = 1 << 30;
/// Write size of the socketpair peer (the stream's chunk size).
const SOCKET_CHUNK: usize = 1 << 20;
/// Block size of the fill.
const FILL_BLOCK: u64 = 128 << 10;

/// What one `bench --migration` run measured (medians over the repetitions).
#[derive(Debug, Serialize)]
pub struct MigrationBench {
    /// Load average (1 minute) when the run started: the machine is shared.
    pub load_average: f64,
    /// Repetitions each figure is the median of.
    pub repeat: u32,
    /// Size of the fully written namespace, bytes.
    pub namespace_bytes: u64,
    /// Single-thread memcpy, MB/s.
    pub memcpy_mb_s: f64,
    /// One UNIX socketpair, 1 MiB writes, MB/s.
    pub socketpair_mb_s: f64,
    /// Stream rate of the full namespace's migration, MB/s (stream bytes / migration time).
    pub stream_mb_s: f64,
    /// `stream_mb_s / memcpy_mb_s`.
    pub stream_to_memcpy: f64,
    /// CPU-seconds (user + system) of the servers and this process per GiB streamed.
    pub cpu_s_per_gib: f64,
    /// Stream rate of the first migration alone, MB/s: its destination's namespace memory was
    /// never touched, so the kernel allocates and zeroes every page as the data arrives — what
    /// a migration to a freshly started server costs (the later ones reuse the pages).
    pub fresh_stream_mb_s: f64,
    /// CPU-seconds per GiB of that first migration.
    pub fresh_cpu_s_per_gib: f64,
    /// Stream rate of one more migration, to a fresh server whose namespace was preallocated
    /// (`ram:…,prealloc`) when it started, MB/s.
    pub prealloc_stream_mb_s: f64,
    /// CPU-seconds per GiB of that migration.
    pub prealloc_cpu_s_per_gib: f64,
    /// How long that server took to start (allocating and zeroing the namespace), ms.
    pub prealloc_start_ms: f64,
    /// Bytes of one migration's stream.
    pub stream_bytes: u64,
    /// Device blackout of that migration, ms.
    pub blackout_ms: f64,
    /// Size of the empty namespace, bytes.
    pub empty_bytes: u64,
    /// Migration of the empty namespace, without its blackout, ms (the pre-copy work plus
    /// connecting to the destination).
    pub empty_precopy_ms: f64,
    /// Stream bytes of the empty namespace's migration.
    pub empty_stream_bytes: u64,
}

/// Runs the benchmark `repeat` times (median of each figure) with a `size`-byte full namespace
/// and an `empty`-byte empty one.
pub fn run(size: u64, empty: u64, repeat: u32, json: bool) -> anyhow::Result<String> {
    let repeat = repeat.max(1);
    let load_average = load_average();
    let dir = std::env::temp_dir().join(format!("vfio-nvme-bench-mig-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, size, empty, repeat);
    let _ = std::fs::remove_dir_all(&dir);
    let Measurements {
        mut full,
        empties,
        memcpy,
        socketpair,
        prealloc_start,
    } = result?;
    let prealloc = full
        .pop()
        .context("no migration to the preallocated server")?;
    let stream_mb_s = median(full.iter().map(|r| r.mb_s));
    let memcpy_mb_s = median(memcpy.iter().copied());
    let bench = MigrationBench {
        load_average,
        repeat,
        namespace_bytes: size,
        memcpy_mb_s,
        socketpair_mb_s: median(socketpair.iter().copied()),
        stream_mb_s,
        stream_to_memcpy: stream_mb_s / memcpy_mb_s,
        cpu_s_per_gib: median(full.iter().map(|r| r.cpu_s_per_gib)),
        fresh_stream_mb_s: full.first().map_or(0.0, |r| r.mb_s),
        fresh_cpu_s_per_gib: full.first().map_or(0.0, |r| r.cpu_s_per_gib),
        prealloc_stream_mb_s: prealloc.mb_s,
        prealloc_cpu_s_per_gib: prealloc.cpu_s_per_gib,
        prealloc_start_ms: ms(prealloc_start),
        stream_bytes: full.first().map_or(0, |r| r.stream_bytes),
        blackout_ms: median(full.iter().map(|r| r.blackout_ms)),
        empty_bytes: empty,
        empty_precopy_ms: median(empties.iter().map(|r| r.precopy_ms)),
        empty_stream_bytes: empties.first().map_or(0, |r| r.stream_bytes),
    };
    if json {
        return serde_json::to_string(&bench).context("cannot render the results");
    }
    Ok(format!(
        "load average {:.2} at the start; medians of {} run(s)\n\
         memcpy (1 thread)       {:>9.0} MB/s\n\
         UNIX socketpair         {:>9.0} MB/s\n\
         migration stream        {:>9.0} MB/s  = {:.1} % of memcpy  ({} MiB namespace, {} stream bytes)\n\
         CPU per GiB streamed    {:>9.2} s (the servers and this process)\n\
         first, to a fresh server{:>9.0} MB/s, {:.2} CPU-s per GiB (its new pages zeroed by the kernel)\n\
         to a fresh prealloc one {:>9.0} MB/s, {:.2} CPU-s per GiB (ram:…,prealloc; it took {:.0} ms to start)\n\
         blackout                {:>9.1} ms\n\
         empty {} MiB namespace  {:>9.1} ms of migration before the blackout ({} stream bytes)\n",
        bench.load_average,
        bench.repeat,
        bench.memcpy_mb_s,
        bench.socketpair_mb_s,
        bench.stream_mb_s,
        bench.stream_to_memcpy * 100.0,
        size >> 20,
        bench.stream_bytes,
        bench.cpu_s_per_gib,
        bench.fresh_stream_mb_s,
        bench.fresh_cpu_s_per_gib,
        bench.prealloc_stream_mb_s,
        bench.prealloc_cpu_s_per_gib,
        bench.prealloc_start_ms,
        bench.blackout_ms,
        empty >> 20,
        bench.empty_precopy_ms,
        bench.empty_stream_bytes,
    ))
}

/// One measured migration.
struct Measured {
    mb_s: f64,
    cpu_s_per_gib: f64,
    stream_bytes: u64,
    blackout_ms: f64,
    precopy_ms: f64,
}

/// Everything [`measure`] measured.
struct Measurements {
    /// The full namespace's migrations, back and forth, then one to the preallocated server.
    full: Vec<Measured>,
    empties: Vec<Measured>,
    memcpy: Vec<f64>,
    socketpair: Vec<f64>,
    /// Start-up time of the preallocated server.
    prealloc_start: Duration,
}

fn measure(dir: &Path, size: u64, empty: u64, repeat: u32) -> anyhow::Result<Measurements> {
    let mut memcpy = Vec::new();
    let mut socketpair = Vec::new();
    for _ in 0..repeat {
        memcpy.push(memcpy_mb_s());
        socketpair.push(socketpair_mb_s()?);
    }
    let back_and_forth = |n: u32| (0..n as usize).map(|i| (i + 1) % 2).collect::<Vec<_>>();
    let (full, prealloc_start) = {
        let [a, b] = pair(dir, "full", size)?;
        fill(&a.1, size)?;
        let started = Instant::now();
        let c = server(dir, "full-prealloc", size, ",prealloc")?;
        let prealloc_start = started.elapsed();
        let mut order = back_and_forth(repeat);
        order.push(2);
        (migrations(&[a, b, c], &order)?, prealloc_start)
    };
    let empties = migrations(&pair(dir, "empty", empty)?, &back_and_forth(repeat))?;
    Ok(Measurements {
        full,
        empties,
        memcpy,
        socketpair,
        prealloc_start,
    })
}

/// A server with one `bytes`-byte RAM namespace (4 KiB blocks, `options` appended to its
/// specification) at `{name}.sock` in `dir`.
fn server(
    dir: &Path,
    name: &str,
    bytes: u64,
    options: &str,
) -> anyhow::Result<(Server, std::path::PathBuf)> {
    let spec = format!("ram:{}M,lba=4096{options}", bytes >> 20);
    let socket = dir.join(format!("{name}.sock"));
    let server = spawn_server(&socket, &["--namespace", &spec])?;
    Ok((server, socket))
}

/// Two servers with one `bytes`-byte RAM namespace each.
fn pair(dir: &Path, name: &str, bytes: u64) -> anyhow::Result<[(Server, std::path::PathBuf); 2]> {
    Ok([
        server(dir, &format!("{name}-a"), bytes, "")?,
        server(dir, &format!("{name}-b"), bytes, "")?,
    ])
}

/// Writes every block of the namespace at `socket` with the workload's stamped (non-zero) data.
fn fill(socket: &Path, size: u64) -> anyhow::Result<()> {
    let config = WorkloadConfig {
        rw: Pattern::Write,
        block_size: FILL_BLOCK,
        queue_depth: 8,
        queues: 1,
        limit: Limit::Ios(size / FILL_BLOCK),
        // Verifying writes stamp every block: without it the data would be zeros, which the
        // stream carries as deallocations.
        verify: true,
        ..WorkloadConfig::default()
    };
    workload_cmd::run(socket, &config, &[], None, None, &|_, _| {}, &|_, _| {})
        .context("cannot fill the namespace")?;
    Ok(())
}

/// Migrates the device, which starts on `servers[0]`, to `servers[i]` for each `i` of `order`
/// in turn, measuring each migration (CPU over every server in `servers` and this process).
fn migrations(
    servers: &[(Server, std::path::PathBuf)],
    order: &[usize],
) -> anyhow::Result<Vec<Measured>> {
    let memory =
        HostMemory::new(GUEST_BYTES, GUEST_IOVA).context("cannot allocate guest memory")?;
    let mut orch = Orchestrator::connect(&servers[0].1, memory)
        .with_context(|| format!("cannot attach to {}", servers[0].1.display()))?;
    let mut out = Vec::new();
    for &i in order {
        let to = &servers[i].1;
        let cpu_before = cpu_seconds(servers)?;
        let started = Instant::now();
        let report = orch
            .migrate(to, &MigrateOptions::default())
            .with_context(|| format!("migration to {} failed", to.display()))?;
        let wall = started.elapsed();
        let cpu = cpu_seconds(servers)? - cpu_before;
        let gib = report.stream_bytes as f64 / f64::from(1u32 << 30);
        out.push(Measured {
            mb_s: report.stream_bytes as f64 / wall.as_secs_f64() / 1e6,
            cpu_s_per_gib: cpu / gib,
            stream_bytes: report.stream_bytes,
            blackout_ms: ms(report.blackout),
            precopy_ms: ms(report.total.saturating_sub(report.blackout)),
        });
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User + system CPU-seconds of the servers and this process so far.
fn cpu_seconds(servers: &[(Server, std::path::PathBuf)]) -> anyhow::Result<f64> {
    let mut total = process_cpu_seconds("self")?;
    for (server, _) in servers {
        total += process_cpu_seconds(&server.pid().to_string())?;
    }
    Ok(total)
}

/// Single-thread memcpy between two touched buffers, best of three passes, MB/s.
fn memcpy_mb_s() -> f64 {
    let src = vec![0x5au8; MEMCPY_BYTES];
    let mut dst = vec![0u8; MEMCPY_BYTES];
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        best = best.min(started.elapsed());
        std::hint::black_box(&dst);
    }
    MEMCPY_BYTES as f64 / best.as_secs_f64() / 1e6
}

/// [`SOCKET_BYTES`] through a UNIX stream socketpair in 1 MiB writes, MB/s.
fn socketpair_mb_s() -> anyhow::Result<f64> {
    let (mut tx, mut rx) = UnixStream::pair().context("cannot create a socketpair")?;
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![0x5au8; SOCKET_CHUNK];
        for _ in 0..SOCKET_BYTES / SOCKET_CHUNK {
            tx.write_all(&chunk)?;
        }
        Ok(())
    });
    let mut buf = vec![0u8; SOCKET_CHUNK];
    let mut got = 0;
    while got < SOCKET_BYTES {
        let n = rx.read(&mut buf).context("socketpair read failed")?;
        anyhow::ensure!(n > 0, "the socketpair closed early");
        got += n;
    }
    let elapsed = started.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the socketpair writer panicked"))?
        .context("socketpair write failed")?;
    Ok(SOCKET_BYTES as f64 / elapsed.as_secs_f64() / 1e6)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
