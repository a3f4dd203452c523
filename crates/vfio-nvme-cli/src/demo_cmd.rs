//! `vfio-nvme demo`: the main job. Two servers, a verifying workload on four queues, a live
//! migration A → B and back B → A under load, a report and an SVG timeline.

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use anyhow::bail;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::workload::Baseline;
use nvme_host::workload::Limit;
use nvme_host::workload::Pattern;
use nvme_host::workload::WorkloadConfig;

use crate::output::Output;
use crate::output::Verdict;
use crate::progress::Progress;
use crate::timeline_svg;
use crate::workload_cmd;
use crate::workload_cmd::PlannedMigration;

/// Knobs of the demo (all have defaults; nothing needs preparing).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the workload runs.
    pub time: Duration,
    /// Where the report, timeline, logs and saved stream go.
    pub output: PathBuf,
    /// I/O queues.
    pub queues: u16,
    /// Queue depth.
    pub queue_depth: u32,
    /// Save the first migration's stream in the output directory (it holds every byte the
    /// guest wrote, so it is large).
    pub save_stream: bool,
    /// How the migrations converge (downtime limit, bandwidth and dirty limits, timeout).
    pub migration: MigrateOptions,
}

/// A `vfio-nvme serve` child process, stopped (SIGTERM) on drop.
pub struct Server {
    child: Child,
    socket: PathBuf,
}

/// Starts `vfio-nvme serve --socket SOCKET ARGS...` (this executable) with its log in
/// `SOCKET.log`, and waits for the socket.
pub fn spawn_server(socket: &Path, args: &[&str]) -> anyhow::Result<Server> {
    let _ = std::fs::remove_file(socket);
    let log_path = socket.with_extension("log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create the server log {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the vfio-nvme executable")?;
    let mut child = Command::new(exe)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(args)
        // Readiness is this process's to report, not its children's.
        .env_remove(crate::notify::NOTIFY_SOCKET)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("cannot start a vfio-nvme server")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the server for {} exited early ({status}); see {}",
                socket.display(),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!("the server did not create {} in time", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server {
        child,
        socket: socket.to_owned(),
    })
}

impl Server {
    /// The server's process id (to read its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the demo; returns the report text (or JSON) and, when a check failed, why.
pub fn run(options: &DemoOptions, json: bool) -> anyhow::Result<Output> {
    std::fs::create_dir_all(&options.output)
        .with_context(|| format!("cannot create {}", options.output.display()))?;
    let dir = options.output.canonicalize()?;
    let a = spawn_server(
        &dir.join("a.sock"),
        &["--namespace", "ram:1G,lba=4096", "--name", "demo-a"],
    )?;
    let b = spawn_server(
        &dir.join("b.sock"),
        &["--namespace", "ram:1G,lba=4096", "--name", "demo-b"],
    )?;
    let third = options.time / 3;
    let plan = [
        PlannedMigration {
            to: b.socket.clone(),
            after: third,
            options: MigrateOptions {
                save_stream: options.save_stream.then(|| dir.join("stream-a-to-b.bin")),
                ..options.migration.clone()
            },
        },
        PlannedMigration {
            to: a.socket.clone(),
            after: third,
            options: options.migration.clone(),
        },
    ];
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 50 },
        block_size: 4096,
        queue_depth: options.queue_depth,
        queues: options.queues,
        // Stopped a third of the time after the second migration, however long migrating took.
        limit: Limit::Duration(Duration::from_secs(3600)),
        verify: true,
        // The servers were just started: data where the workload never wrote is a failure.
        baseline: Baseline::Zeros,
        // 128 MiB of the 1 GiB namespace: real pre-copy rounds, quick to verify.
        lba_range: Some(0..32768),
        ..WorkloadConfig::default()
    };
    let progress = Progress::new(options.time, json);
    let outcome = workload_cmd::run(
        &a.socket,
        &config,
        &plan,
        Some(third),
        None,
        &|snapshot, phase| progress.update(snapshot, phase),
        &|to, event| progress.migration(to, event),
    );
    drop(progress);
    drop(a);
    drop(b);
    let outcome = outcome?;
    let passed = outcome.passed() && outcome.migrations.len() == 2;
    let failure = outcome.failure().or_else(|| {
        (!passed).then(|| {
            anyhow::anyhow!(
                "the demo made {} of its 2 migrations",
                outcome.migrations.len()
            )
        })
    });
    let svg_path = dir.join("timeline.svg");
    std::fs::write(
        &svg_path,
        timeline_svg::render(
            &outcome,
            "vfio-nvme demo: live migration A → B → A under load",
        ),
    )
    .with_context(|| format!("cannot write {}", svg_path.display()))?;
    let report = Verdict {
        passed,
        result: &outcome,
    };
    let report_path = dir.join("report.json");
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&report).context("cannot render the report")?,
    )
    .with_context(|| format!("cannot write {}", report_path.display()))?;
    let text = if json {
        serde_json::to_string(&report).context("cannot render the report")?
    } else {
        let stream = if options.save_stream {
            format!(
                "stream:   {} (try `vfio-nvme state decode` on it)\n",
                dir.join("stream-a-to-b.bin").display()
            )
        } else {
            String::new()
        };
        format!(
            "{}\ntimeline: {}\nreport:   {}\n{stream}",
            workload_cmd::describe(&outcome),
            svg_path.display(),
            report_path.display(),
        )
    };
    Ok(Output { text, failure })
}
