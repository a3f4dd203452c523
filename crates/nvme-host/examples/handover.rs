//! The host side of the seed's architecture end to end (`tests/guest/run-pf.sh`, issue 15): a
//! host does verified I/O on one VF while the PF's owner — a guest whose stock nvme driver owns
//! the PF — moves the VF's controller to another VF with `vfio-nvme pf migrate` through the
//! kernel's admin pass-through; the host then rings the other VF's doorbells for the same
//! queues and continues. Commands it queued during the move must complete there exactly once,
//! and every block it wrote must read back.
//!
//! ```text
//! handover --from VF_SOCKET --to VF_SOCKET --nsid N --ready FILE --migrated FILE [--timeout SECS]
//! ```
//!
//! It maps one memfd (the "guest memory" holding its queues and buffers) into both VFs and
//! enables both (each with an admin queue of its own: the move carries NVMe state v0, the I/O
//! queues), creates an I/O queue pair on the first, writes to namespace N (shared by both),
//! creates `--ready`, then keeps writes in flight — cycling over a range of blocks — until
//! `--migrated` exists (the harness creates it when the guest reports the move). Prints `HANDOVER PASS …` or
//! `HANDOVER FAIL …`; exits 0, 1 (a failure) or 3 (data read back wrong).

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use nvme_driver::driver::Bar;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_host::orchestrator::SwitchableBar;
use nvme_host::vfio_user_bar::VfioUserBar;
use nvme_host::vfio_user_bar::dma_map_host_memory;
use nvme_spec::command::Command;
use vfu::client::Client;

const IOVA: u64 = 0x1_0000_0000;
const MEMORY: u64 = 16 << 20;
/// Blocks written before the move.
const EARLY: u64 = 64;
/// The blocks the writes in flight cycle over, after the early ones.
const CYCLE: u64 = 1024;
/// Writes kept in flight while waiting for the move (they stall while the controller is
/// suspended and complete on the destination).
const IN_FLIGHT: usize = 8;
/// Blocks rewritten on the destination afterwards.
const LATE: u64 = 16;

struct Args {
    from: PathBuf,
    to: PathBuf,
    ready: PathBuf,
    migrated: PathBuf,
    nsid: u32,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut from, mut to, mut ready, mut migrated) = (None, None, None, None);
    let mut nsid = None;
    let mut timeout = Duration::from_secs(600);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--from" => from = Some(PathBuf::from(value()?)),
            "--to" => to = Some(PathBuf::from(value()?)),
            "--ready" => ready = Some(PathBuf::from(value()?)),
            "--migrated" => migrated = Some(PathBuf::from(value()?)),
            "--nsid" => {
                let n = value()?;
                nsid = Some(n.parse().map_err(|_| format!("bad --nsid {n}"))?);
            }
            "--timeout" => {
                let secs = value()?;
                let secs: u64 = secs.parse().map_err(|_| format!("bad --timeout {secs}"))?;
                timeout = Duration::from_secs(secs);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let need = |v: Option<PathBuf>, name: &str| v.ok_or(format!("{name} is required"));
    Ok(Args {
        from: need(from, "--from")?,
        to: need(to, "--to")?,
        ready: need(ready, "--ready")?,
        migrated: need(migrated, "--migrated")?,
        nsid: nsid.ok_or("--nsid is required")?,
        timeout,
    })
}

/// Connects to the VF at `socket` with `memory` mapped; returns its BAR0.
fn connect(socket: &Path, memory: &HostMemory) -> Result<Arc<dyn Bar>, String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", socket.display());
    let mut client = Client::connect(socket).map_err(|e| what(&e))?;
    dma_map_host_memory(&mut client, memory).map_err(|e| what(&e))?;
    let bar = VfioUserBar::new(Arc::new(Mutex::new(client))).map_err(|e| what(&e))?;
    Ok(Arc::new(bar))
}

/// A block's contents: its LBA and generation, repeated.
fn pattern(lba: u64, generation: u64, len: u64) -> Vec<u8> {
    (0..len / 16)
        .flat_map(|_| {
            let mut w = lba.to_le_bytes().to_vec();
            w.extend_from_slice(&generation.to_le_bytes());
            w
        })
        .collect()
}

/// The host's view of its queue: what is in flight and how often each command completed.
struct Io {
    qp: QueuePair,
    nsid: u32,
    block: u64,
    buffers: Vec<DmaBuffer>,
    /// CID → (LBA, generation, buffer) of the writes in flight.
    in_flight: BTreeMap<u16, (u64, u64, usize)>,
    /// (LBA → generation) of every write that completed.
    written: BTreeMap<u64, u64>,
    /// Completions for a CID not in flight (a command completing twice).
    duplicates: Vec<u16>,
    errors: Vec<String>,
}

impl Io {
    fn submit_write(&mut self, lba: u64, generation: u64) -> Result<(), String> {
        // A buffer of its own per write in flight.
        let slot = (0..self.buffers.len())
            .find(|i| !self.in_flight.values().any(|w| w.2 == *i))
            .ok_or("no free buffer")?;
        let buf = &self.buffers[slot];
        buf.write(0, &pattern(lba, generation, self.block));
        let cmd = Command::write(0, self.nsid, lba, 0, buf.iova(), 0);
        let cid = self.qp.submit(cmd).map_err(|e| e.to_string())?;
        self.in_flight.insert(cid, (lba, generation, slot));
        Ok(())
    }

    /// Reaps completions; returns how many.
    fn reap(&mut self) -> usize {
        let mut done = Vec::new();
        let n = self.qp.poll(|c| done.push(c));
        for c in done {
            match self.in_flight.remove(&c.cid) {
                Some((lba, generation, _)) if c.status.status().is_success() => {
                    self.written.insert(lba, generation);
                }
                Some((lba, ..)) => self.errors.push(format!(
                    "write of LBA {lba} failed: {:?}",
                    c.status.status()
                )),
                None => self.duplicates.push(c.cid),
            }
        }
        n
    }

    fn wait_all(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.in_flight.is_empty() {
            if self.reap() == 0 {
                if Instant::now() > deadline {
                    return Err(format!("{} writes never completed", self.in_flight.len()));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn write_sync(&mut self, lba: u64, generation: u64) -> Result<(), String> {
        self.submit_write(lba, generation)?;
        self.wait_all(Duration::from_secs(30))
    }

    fn read(&mut self, lba: u64) -> Result<Vec<u8>, String> {
        let buf = &self.buffers[IN_FLIGHT];
        buf.fill(0);
        let cid = self
            .qp
            .submit(Command::read(0, self.nsid, lba, 0, buf.iova(), 0))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut got = None;
            self.qp.poll(|c| got = Some(c));
            match got {
                Some(c) if c.cid == cid && c.status.status().is_success() => break,
                Some(c) if c.cid == cid => return Err(format!("read of LBA {lba} failed")),
                Some(c) => self.duplicates.push(c.cid),
                None if Instant::now() > deadline => return Err(format!("read of {lba} hung")),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        let mut data = vec![0u8; self.block as usize];
        self.buffers[IN_FLIGHT].read(0, &mut data);
        Ok(data)
    }
}

/// What went wrong, and whether it was the data.
enum Failure {
    Run(String),
    Data(String),
}

fn run(args: &Args) -> Result<String, Failure> {
    let run = Failure::Run;
    let memory = HostMemory::new(MEMORY, IOVA).map_err(|e| run(e.to_string()))?;
    let source = connect(&args.from, &memory).map_err(run)?;
    // The destination gets the memory now: it fetches the queued commands as soon as the
    // guest resumes it, before this host has noticed.
    let destination = connect(&args.to, &memory).map_err(run)?;
    let destination_admin =
        Driver::new(destination.clone(), memory.clone()).map_err(|e| run(e.to_string()))?;
    let bar = Arc::new(SwitchableBar::new(source));
    let driver = Driver::new(bar.clone(), memory.clone()).map_err(|e| run(e.to_string()))?;
    let block = driver
        .identify_namespace(args.nsid)
        .map_err(|e| run(e.to_string()))?
        .lba_size()
        .ok_or_else(|| run(format!("namespace {} has no LBA size", args.nsid)))?;
    driver.set_queue_count(1).map_err(|e| run(e.to_string()))?;
    let qp = driver
        .create_queue_pair(1, 64, None)
        .map_err(|e| run(e.to_string()))?;
    let buffers = (0..=IN_FLIGHT)
        .map(|_| memory.alloc(block))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| run(e.to_string()))?;
    let mut io = Io {
        qp,
        nsid: args.nsid,
        block,
        buffers,
        in_flight: BTreeMap::new(),
        written: BTreeMap::new(),
        duplicates: Vec::new(),
        errors: Vec::new(),
    };
    for lba in 0..EARLY {
        io.write_sync(lba, 1).map_err(run)?;
    }
    std::fs::write(&args.ready, b"ready\n").map_err(|e| run(e.to_string()))?;
    println!(
        "HANDOVER-READY {EARLY} blocks written on {}",
        args.from.display()
    );

    // Keep writes in flight until the guest has moved the controller.
    let deadline = Instant::now() + args.timeout;
    // Writes in flight: the n-th goes to block EARLY + n % CYCLE with generation 2 + n / CYCLE,
    // so no two in flight share a block and every block's newest generation is known.
    let mut next = 0u64;
    let mut write_next = |io: &mut Io| {
        let r = io.submit_write(EARLY + next % CYCLE, 2 + next / CYCLE);
        next += 1;
        r
    };
    let mut stalled_since = None;
    while !args.migrated.exists() {
        if Instant::now() > deadline {
            return Err(run("the guest never reported the move".to_owned()));
        }
        if io.in_flight.len() < IN_FLIGHT {
            write_next(&mut io).map_err(run)?;
        }
        if io.reap() == 0 {
            stalled_since.get_or_insert_with(Instant::now);
            std::thread::sleep(Duration::from_millis(1));
        } else {
            stalled_since = None;
        }
    }
    let queued = io.in_flight.len();
    let stalled = stalled_since.map_or(Duration::ZERO, |t| t.elapsed());
    // Switch: from now on the doorbells are the destination's.
    bar.pause();
    bar.resume(Some(destination));
    // Ring the SQ tail again on the destination: writes submitted after the state was saved
    // rang only the source's doorbell.
    write_next(&mut io).map_err(run)?;
    io.wait_all(Duration::from_secs(30)).map_err(run)?;
    std::thread::sleep(Duration::from_millis(100));
    io.reap();
    for lba in 0..LATE {
        io.write_sync(lba, 2).map_err(run)?;
    }
    // The destination's own admin queue still answers beside the moved I/O queue.
    destination_admin
        .identify_namespace(args.nsid)
        .map_err(|e| run(format!("the destination's admin queue: {e}")))?;
    if !io.errors.is_empty() {
        return Err(run(io.errors.join("; ")));
    }
    if !io.duplicates.is_empty() {
        return Err(Failure::Data(format!(
            "commands completed twice: CIDs {:?}",
            io.duplicates
        )));
    }
    let written = io.written.clone();
    for (&lba, &generation) in &written {
        let got = io.read(lba).map_err(run)?;
        if got != pattern(lba, generation, block) {
            return Err(Failure::Data(format!(
                "LBA {lba} does not read back generation {generation}"
            )));
        }
    }
    Ok(format!(
        "{} blocks verified; {queued} writes were queued when the move was reported (stalled \
         {:.1} s) and completed on {} exactly once; {} writes in all",
        written.len(),
        stalled.as_secs_f64(),
        args.to.display(),
        EARLY + next + LATE
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(summary) => {
            println!("HANDOVER PASS {summary}");
            ExitCode::SUCCESS
        }
        Err(Failure::Run(e)) => {
            println!("HANDOVER FAIL {e}");
            ExitCode::from(1)
        }
        Err(Failure::Data(e)) => {
            println!("HANDOVER FAIL {e}");
            ExitCode::from(3)
        }
    }
}
