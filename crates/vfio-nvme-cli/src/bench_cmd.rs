//! `vfio-nvme bench`: IOPS of a served VF over vfio-user for the null and RAM backends at 4 KiB,
//! queue depth 32, with 1 and 4 queues — the numbers `docs/BENCHMARKS.md` records.

use std::time::Duration;

use anyhow::Context as _;
use nvme_host::workload::Limit;
use nvme_host::workload::Pattern;
use nvme_host::workload::WorkloadConfig;
use serde::Serialize;

use crate::workload_cmd;

/// One measured configuration.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    /// Namespace backend.
    pub backend: String,
    /// I/O queues.
    pub queues: u16,
    /// Queue depth per queue.
    pub queue_depth: u32,
    /// Block size.
    pub block_size: u64,
    /// Pattern.
    pub pattern: String,
    /// I/Os per second.
    pub iops: f64,
    /// Throughput.
    pub mb_per_s: f64,
    /// Median latency.
    pub p50_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
}

/// Runs every configuration for `time` each.
pub fn run(time: Duration, json: bool) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    for backend in ["null:4G", "ram:1G"] {
        for queues in [1u16, 4] {
            let socket = dir.join("bench.sock");
            let server = crate::demo_cmd::spawn_server(
                &socket,
                &["--namespace", &format!("{backend},lba=4096")],
            )?;
            let config = WorkloadConfig {
                rw: Pattern::RandRw { read_percent: 50 },
                block_size: 4096,
                queue_depth: 32,
                queues,
                limit: Limit::Duration(time),
                verify: false,
                lba_range: Some(0..65536),
                ..WorkloadConfig::default()
            };
            let outcome =
                workload_cmd::run(&socket, &config, &[], None, None, &|_, _| {}, &|_, _| {})
                    .with_context(|| format!("benchmark {backend} with {queues} queue(s)"))?;
            drop(server);
            let w = &outcome.workload;
            results.push(BenchResult {
                backend: backend.split(':').next().unwrap_or(backend).to_owned(),
                queues,
                queue_depth: 32,
                block_size: 4096,
                pattern: w.pattern.clone(),
                iops: w.iops,
                mb_per_s: w.mb_per_s,
                p50_us: w.latency.p50_us,
                p99_us: w.latency.p99_us,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if json {
        return serde_json::to_string(&results).context("cannot render the results");
    }
    let mut out = String::from(
        "backend queues depth  bs    pattern          IOPS     MB/s   p50 µs   p99 µs\n",
    );
    for r in &results {
        out.push_str(&format!(
            "{:<7} {:>6} {:>5} {:>4} {:<14} {:>9.0} {:>8.1} {:>8.1} {:>8.1}\n",
            r.backend,
            r.queues,
            r.queue_depth,
            r.block_size,
            r.pattern,
            r.iops,
            r.mb_per_s,
            r.p50_us,
            r.p99_us
        ));
    }
    Ok(out)
}
