//! The faults the chaos run injects, each carried out against the real servers: signals to
//! their processes, migrations interrupted by hand over the vfu client, a relay that flips a
//! stream byte, device resets.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::MigrateOptions;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::orchestrator::OrchestratorError;
use vfio_migration::DeviceState;
use vfu::client::Client;
use vfu::client::ClientError;

use super::cluster::Server;
use super::guest::RaiseOnDrop;
use super::guest::lock;
use super::guest::note;
use crate::common::send_signal;

/// A migration state a client can leave a device in by disconnecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Left {
    /// Saving, the device running.
    PreCopy,
    /// Saving, the device suspended.
    StopCopy,
    /// Suspended.
    Stop,
    /// Loading a stream (only on a server without the guest).
    Resuming,
}

/// Where in a migration a device reset comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResetIn {
    /// No migration.
    Running,
    /// Pre-copy under way.
    PreCopy,
    /// Stop-copy under way.
    StopCopy,
}

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGSTOP of the source during a migration, for less than the client's timeout.
    StopSourceShort,
    /// SIGSTOP of the source during a migration, for longer than the client's timeout.
    StopSourceLong,
    /// SIGSTOP of the source in the blackout (once it is in STOP_COPY), for longer than the
    /// client's timeout.
    StopSourceInBlackout,
    /// SIGSTOP of the destination during a migration, for less than the client's timeout.
    StopDestinationShort,
    /// SIGSTOP of the destination during a migration, for longer than the client's timeout.
    StopDestinationLong,
    /// SIGKILL of the destination mid-stream, then a restart.
    KillDestination,
    /// The VMM disconnects from the guest's server with the device in this state; a new VMM
    /// takes over the guest.
    DisconnectSource(Left),
    /// A client disconnects from the other server with its device in this state.
    DisconnectIdle(Left),
    /// A device reset of the guest's device.
    Reset(ResetIn),
    /// A relay over the vfu client flips one bit of the stream; the destination must refuse it.
    FlipByte,
}

impl Fault {
    /// Every fault kind.
    pub const ALL: [Fault; 17] = [
        Fault::StopSourceShort,
        Fault::StopSourceLong,
        Fault::StopSourceInBlackout,
        Fault::StopDestinationShort,
        Fault::StopDestinationLong,
        Fault::KillDestination,
        Fault::DisconnectSource(Left::PreCopy),
        Fault::DisconnectSource(Left::StopCopy),
        Fault::DisconnectSource(Left::Stop),
        Fault::DisconnectIdle(Left::PreCopy),
        Fault::DisconnectIdle(Left::StopCopy),
        Fault::DisconnectIdle(Left::Stop),
        Fault::DisconnectIdle(Left::Resuming),
        Fault::Reset(ResetIn::Running),
        Fault::Reset(ResetIn::PreCopy),
        Fault::Reset(ResetIn::StopCopy),
        Fault::FlipByte,
    ];
}

/// How one migration attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// The device runs on the destination; releasing the source failed with this, if it did.
    Completed(Option<String>),
    /// The migration failed and the device kept running on the source.
    Aborted(String),
    /// The migration failed and the orchestrator could not resume the source.
    Stranded(String),
    /// The destination never said whether it started the device; nothing was resumed.
    Undecided(String),
}

/// Migrates the guest's device to `to`.
pub fn migrate(orch: &mut Orchestrator, to: &Path) -> Outcome {
    match orch.migrate(to, &MigrateOptions::default()) {
        Ok(report) => Outcome::Completed(report.source_release_error),
        Err(e @ OrchestratorError::Stranded { .. }) => Outcome::Stranded(e.to_string()),
        Err(e @ OrchestratorError::Undecided(_)) => Outcome::Undecided(e.to_string()),
        // A failure before anything stopped (connecting, mapping, starting DMA logging) leaves
        // the source as it was: an abort too.
        Err(e) => Outcome::Aborted(e.to_string()),
    }
}

/// Migrates to `to` while another thread stops process `pid` after `delay` for `hold`.
/// Returns the outcome and whether the stop came while the migration was still under way.
pub fn migrate_with_stop(
    orch: &mut Orchestrator,
    to: &Path,
    pid: u32,
    delay: Duration,
    hold: Duration,
) -> (Outcome, bool) {
    let stopped = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(delay);
            stopped.store(true, Ordering::Release);
            send_signal(pid, "STOP");
            std::thread::sleep(hold);
            send_signal(pid, "CONT");
        });
        let outcome = migrate(orch, to);
        (outcome, stopped.load(Ordering::Acquire))
    })
}

/// Migrates to `to` while another thread, sharing the VMM's connection to the source (process
/// `pid`), watches for the source to enter STOP_COPY and then stops it, `after` later, for
/// `hold`: the stop lands in the blackout (stop-copy, the destination starting, the source's
/// release). Returns the outcome and whether the stop came before the migration ended.
pub fn migrate_with_blackout_stop(
    orch: &mut Orchestrator,
    to: &Path,
    pid: u32,
    after: Duration,
    hold: Duration,
) -> (Outcome, bool) {
    let source = orch.client().clone();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let state = source
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .migration_state();
                if matches!(state, Ok(DeviceState::StopCopy)) {
                    std::thread::sleep(after);
                    let during = !done.load(Ordering::Acquire);
                    send_signal(pid, "STOP");
                    std::thread::sleep(hold);
                    send_signal(pid, "CONT");
                    return during;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        });
        let outcome = {
            let _done = RaiseOnDrop(&done);
            migrate(orch, to)
        };
        (
            outcome,
            watcher.join().expect("the watcher thread panicked"),
        )
    })
}

/// How long the killer waits, with the destination stopped, for a migration that already
/// switched over to return. A migration still streaming blocks on the stopped destination for
/// its whole reply timeout (5 s), so one that returns within this wait had finished.
const SWITCHED_OVER_WAIT: Duration = Duration::from_millis(2500);

/// Migrates to `to` while another thread kills the destination (process `pid`) after `delay`,
/// unless the migration is already past the switch-over. Returns the outcome and whether the
/// destination was killed.
pub fn migrate_and_kill(
    orch: &mut Orchestrator,
    to: &Path,
    pid: u32,
    delay: Duration,
) -> (Outcome, bool) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            std::thread::sleep(delay);
            // Freeze it first: a migration still streaming now waits on it.
            send_signal(pid, "STOP");
            let deadline = Instant::now() + SWITCHED_OVER_WAIT;
            while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if done.load(Ordering::Acquire) {
                send_signal(pid, "CONT");
                false
            } else {
                send_signal(pid, "KILL");
                true
            }
        });
        let outcome = {
            let _done = RaiseOnDrop(&done);
            migrate(orch, to)
        };
        (outcome, killer.join().expect("the killer thread panicked"))
    })
}

/// Connects to `socket`, retrying while the server still sees its previous client.
pub fn connect(socket: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(socket) {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                note(&format!(
                    "connecting to {}: {e}; retrying",
                    socket.display()
                ));
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to {}: {e}", socket.display()),
        }
    }
}

/// Reads what the source offers now: in pre-copy until a short read or about twice the
/// namespace (a busy guest keeps dirtying data), in stop-copy to the end.
fn read_stream(client: &mut Client, until_end: bool) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    const PRE_COPY_BUDGET: usize = 16 << 20;
    let mut stream = Vec::new();
    loop {
        let data = client.mig_data_read(CHUNK).expect("MIG_DATA_READ");
        let len = data.len();
        stream.extend(data);
        let enough = !until_end && (len < CHUNK || stream.len() >= PRE_COPY_BUDGET);
        if len == 0 || enough {
            return stream;
        }
    }
}

/// Walks the device `client` drives to `state` the way a migration would, reading some data.
fn walk(client: &mut Client, state: Left) {
    let set = |client: &mut Client, to| {
        client
            .set_migration_state(to)
            .unwrap_or_else(|e| panic!("→ {to}: {e}"))
    };
    match state {
        Left::PreCopy => {
            set(client, DeviceState::PreCopy);
            let _ = client.mig_data_read(1 << 20).expect("MIG_DATA_READ");
        }
        Left::StopCopy => {
            set(client, DeviceState::PreCopy);
            let _ = client.mig_data_read(1 << 20).expect("MIG_DATA_READ");
            set(client, DeviceState::StopCopy);
            let _ = client.mig_data_read(1 << 20).expect("MIG_DATA_READ");
        }
        Left::Stop => set(client, DeviceState::Stop),
        Left::Resuming => set(client, DeviceState::Resuming),
    }
}

/// The VMM walks the guest's device to `state` and then crashes (the caller reconnects).
pub fn leave_source_in(orch: &Orchestrator, state: Left) {
    walk(&mut lock(orch), state);
}

/// A client connects to `idle` (the server without the guest), leaves its device in `state`
/// and disconnects; in RESUMING it has loaded part of a real stream from the guest's device.
/// Then the next client must find RUNNING and a device whose controller comes up.
pub fn leave_idle_in(orch: &Orchestrator, idle: &Server, state: Left) {
    let mut client = connect(idle.socket());
    walk(&mut client, state);
    if state == Left::Resuming {
        let mut source = lock(orch);
        source
            .set_migration_state(DeviceState::PreCopy)
            .expect("source → PRE_COPY");
        let part = source.mig_data_read(1 << 20).expect("MIG_DATA_READ");
        source
            .set_migration_state(DeviceState::Running)
            .expect("source back to RUNNING");
        drop(source);
        client.mig_data_write(&part).expect("MIG_DATA_WRITE");
    }
    drop(client);
    check_fresh_device(idle);
}

/// The next client of `server` finds RUNNING, and the controller comes up and answers
/// Identify (a controller left suspended would never fetch it).
fn check_fresh_device(server: &Server) {
    let mut client = connect(server.socket());
    let state = client.migration_state();
    assert!(
        matches!(state, Ok(DeviceState::Running)),
        "after a disconnect server {} showed its next client {state:?}, not RUNNING",
        server.name()
    );
    drop(client);
    let memory = HostMemory::new(4 << 20, 0x4_0000_0000).expect("memory");
    let orch = super::guest::attach(server.socket(), &memory);
    let driver = Driver::new(orch.bar(), memory.clone());
    assert!(
        driver.is_ok(),
        "after a disconnect the controller of server {} does not come up: {:?}",
        server.name(),
        driver.err()
    );
}

/// A device reset of the guest's device, in `phase` of a migration; afterwards the device is
/// RUNNING and the old migration session is gone.
pub fn reset_in(orch: &Orchestrator, phase: ResetIn) {
    let mut client = lock(orch);
    match phase {
        ResetIn::Running => {}
        ResetIn::PreCopy => walk(&mut client, Left::PreCopy),
        ResetIn::StopCopy => walk(&mut client, Left::StopCopy),
    }
    client.reset().expect("device reset");
    assert_eq!(
        client.migration_state().expect("migration state"),
        DeviceState::Running,
        "a reset in {phase:?} did not return to RUNNING"
    );
    if phase != ResetIn::Running {
        assert!(
            matches!(client.mig_data_read(4096), Err(ClientError::Errno { .. })),
            "the migration session survived a reset in {phase:?}"
        );
    }
}

/// Saves the guest's device's whole stream by hand, flips bit `bit` of byte `at % len`, and
/// feeds it to `idle`: the destination must refuse it and say why in its log; the source goes
/// back to RUNNING. Returns the destination's reason.
pub fn relay_flipped(orch: &Orchestrator, idle: &Server, at: u64, bit: u32) -> String {
    let mut source = lock(orch);
    source
        .set_migration_state(DeviceState::PreCopy)
        .expect("source → PRE_COPY");
    let mut stream = read_stream(&mut source, false);
    source
        .set_migration_state(DeviceState::StopCopy)
        .expect("source → STOP_COPY");
    stream.extend(read_stream(&mut source, true));
    let at = (at % stream.len() as u64) as usize;
    stream[at] ^= 1 << bit;
    let logged = idle.log().len();
    let mut dest = connect(idle.socket());
    dest.set_migration_state(DeviceState::Resuming)
        .expect("destination → RESUMING");
    let refused = match dest.mig_data_write(&stream) {
        Err(e) => e,
        Ok(()) => dest
            .set_migration_state(DeviceState::Stop)
            .expect_err(&format!(
                "the destination accepted a stream with bit {bit} of byte {at} (of {}) flipped",
                stream.len()
            )),
    };
    assert!(
        matches!(refused, ClientError::Errno { .. }),
        "the destination refused the flipped stream with {refused}, not an errno"
    );
    drop(dest);
    source
        .set_migration_state(DeviceState::Running)
        .expect("the source resumes after the refused stream");
    drop(source);
    // The destination logs why; wait for the line (the log is written asynchronously to us).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = idle.log();
        let new = &log[logged.min(log.len())..];
        if let Some(line) = new
            .lines()
            .find(|l| l.contains("migration data rejected") || l.contains("failed: "))
        {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the destination refused byte {at} flipped without saying why; its log:\n{new}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
