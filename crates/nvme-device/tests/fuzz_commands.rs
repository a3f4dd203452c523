//! Fuzz targets for everything a guest controls, run by bolero under plain `cargo test`:
//! submission queue entries and doorbell values against an enabled controller, and register
//! writes in any order. After every step the controller must still answer register reads and
//! must not have written outside the guest's mapping; commands that cannot disturb the queues
//! must complete (or the controller must report CSTS.CFS); and after any sequence of register
//! writes a reset and a proper initialisation bring the controller back.

use std::sync::Arc;

use nvme_device::backend::RamBackend;
use nvme_device::controller::ADMIN_COMMANDS;
use nvme_device::controller::Controller;
use nvme_device::controller::Role;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::ControllerBar;
use nvme_device::testing::Function;
use nvme_device::testing::GuardedMemory;
use nvme_device::testing::RawQueue;
use nvme_device::testing::TestHost;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::command::NvmOpcode;
use nvme_spec::identify::Cns;
use nvme_spec::registers::Cap;
use nvme_spec::registers::Csts;
use zerocopy::FromBytes;

/// Guest-physical address of the mapped window.
const BASE: u64 = 0x1_0000_0000;
/// Size of the window the controller reaches.
const WINDOW: u64 = 256 << 10;
/// Unmapped memory on either side of the window, in the same file; it must never change.
const GUARD: u64 = 16 << 10;
/// Queue rings live in the first pages of the window; steered data pointers go above them.
const DATA: u64 = BASE + 0x8000;
const DATA_LEN: u64 = WINDOW - 0x8000;
/// Entries of every queue the harness creates.
const ENTRIES: u32 = 16;
/// I/O queue pairs the harness creates.
const IO_QUEUES: u16 = 2;

/// An enabled primary controller (with the TP4159 commands) over a guarded guest window.
struct Rig {
    host: TestHost,
    guarded: GuardedMemory,
    bar: Arc<ControllerBar>,
}

impl Rig {
    fn new(fill: &[u8]) -> Self {
        // One VF, so that SR-IOV and TP4159 commands have a secondary controller to act on.
        let mut config = SubsystemConfig::new("fuzz", 1);
        config.limits.io_queue_pairs = 4;
        config.limits.max_queue_entries = 64;
        config.limits.msix_vectors = 8;
        let backend = Arc::new(RamBackend::new(1 << 20).unwrap());
        let host = TestHost::new(
            config,
            vec![NamespaceSpec {
                backend,
                block_size: BlockSize::B512,
                attachment: Attachment::Shared,
            }],
        );
        let guarded = GuardedMemory::new(
            WINDOW + 2 * GUARD,
            BASE - GUARD,
            GUARD,
            GUARD,
            &[host.space(Function::Primary)],
        );
        if !fill.is_empty() {
            for at in (0..WINDOW).step_by(fill.len()) {
                let n = (fill.len() as u64).min(WINDOW - at) as usize;
                guarded.memory().write(BASE + at, &fill[..n]).unwrap();
            }
        }
        let bar = host.bar(Function::Primary);
        Self { host, guarded, bar }
    }

    fn ctrl(&self) -> &Controller {
        self.host.controller(Function::Primary)
    }

    fn csts(&self) -> Csts {
        Csts::from(self.ctrl().read_register(0x1C, 4) as u32)
    }

    /// BAR0 offset of doorbell `n`: SQ `n / 2` tail for an even `n`, CQ `n / 2` head for an odd
    /// one, at the controller's CAP.DSTRD.
    fn doorbell(&self, n: u8) -> u64 {
        let stride = Cap::from(self.ctrl().read_register(0, 8)).doorbell_stride();
        let qid = u16::from(n / 2);
        if n.is_multiple_of(2) {
            stride.sq_tail(qid)
        } else {
            stride.cq_head(qid)
        }
    }

    /// Enables the controller with fresh (zeroed) admin rings.
    fn enable(&self) -> RawQueue {
        let admin = testing::raw_enable(&self.bar, self.guarded.memory(), ENTRIES);
        let csts = self.csts();
        assert!(csts.rdy() && !csts.cfs(), "a valid enable failed: {csts:?}");
        assert!(admin.cq_iova() < DATA, "the rings stay below the data area");
        admin
    }
}

/// Submits `cmd` on `queue` and rings; false if the queue is full.
fn submit(queue: &mut RawQueue, cmd: &Command) -> bool {
    if queue.is_full() {
        return false;
    }
    queue.submit(*cmd);
    true
}

/// Consumes every new completion on every queue; returns how many each had.
fn drain(queues: &mut [RawQueue]) -> Vec<u32> {
    queues
        .iter_mut()
        .map(|queue| {
            let mut got = 0;
            while queue.next().is_some() {
                got += 1;
            }
            if got > 0 {
                queue.ring_head();
            }
            got
        })
        .collect()
}

/// Waits until queue `qid` gets a completion or the controller fails.
fn wait(rig: &Rig, queues: &mut [RawQueue], qid: u16, what: &str) {
    testing::eventually(what, || {
        let progressed = drain(queues)[usize::from(qid)] > 0;
        (progressed || rig.csts().cfs()).then_some(())
    });
}

/// A rig with I/O queue pairs 1 and 2 created through the admin queue; the queues in qid order.
fn enabled(fill: &[u8]) -> (Rig, Vec<RawQueue>) {
    let rig = Rig::new(fill);
    let mut queues = vec![rig.enable()];
    for qid in 1..=IO_QUEUES {
        let queue = RawQueue::new(rig.guarded.memory(), rig.bar.clone(), qid, ENTRIES, ENTRIES);
        assert!(queue.cq_iova() < DATA, "the rings stay below the data area");
        let cq = Command::create_io_cq(qid, qid, ENTRIES, queue.cq_iova(), true, qid);
        let sq = Command::create_io_sq(qid, qid, ENTRIES, queue.sq_iova(), qid);
        queues.push(queue);
        for cmd in [cq, sq] {
            assert!(submit(&mut queues[0], &cmd));
            wait(&rig, &mut queues, 0, "queue creation");
        }
    }
    (rig, queues)
}

/// Admin commands that may change the queue set or never complete: after one, the harness
/// no longer insists on completions.
fn disturbs_queues(opcode: u8) -> bool {
    matches!(
        AdminOpcode(opcode),
        AdminOpcode::DELETE_IO_SQ
            | AdminOpcode::CREATE_IO_SQ
            | AdminOpcode::DELETE_IO_CQ
            | AdminOpcode::CREATE_IO_CQ
            | AdminOpcode::ASYNC_EVENT_REQUEST
            | AdminOpcode::TRACK_SEND
            | AdminOpcode::MIGRATION_SEND
            | AdminOpcode::MIGRATION_RECEIVE
            | AdminOpcode::CONTROLLER_DATA_QUEUE
    )
}

/// The admin opcodes a primary controller supports, from the controller's own table.
fn admin_opcodes() -> Vec<AdminOpcode> {
    ADMIN_COMMANDS
        .iter()
        .filter(|c| c.supported_by(Role::Primary))
        .map(|c| c.opcode)
        .collect()
}

const IO_OPCODES: [NvmOpcode; 5] = [
    NvmOpcode::FLUSH,
    NvmOpcode::WRITE,
    NvmOpcode::READ,
    NvmOpcode::WRITE_ZEROES,
    NvmOpcode::DATASET_MANAGEMENT,
];

/// Takes `n` bytes from the front of `input` (zero-padded when it runs out).
fn take<const N: usize>(input: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = input.len().min(N);
    out[..n].copy_from_slice(&input[..n]);
    *input = &input[n..];
    out
}

/// Makes a raw entry more likely to reach deep code: a known opcode, NSID 1, data pointers
/// inside the window (above the rings) and a small transfer, as the `steer` bits ask.
fn steer(mut cmd: Command, steer: u8, admin: bool) -> Command {
    if steer & 1 != 0 {
        let pick = usize::from(cmd.cdw0.opcode());
        let opcode = if admin {
            let opcodes = admin_opcodes();
            opcodes[pick % opcodes.len()].0
        } else {
            IO_OPCODES[pick % IO_OPCODES.len()].0
        };
        cmd.cdw0 = cmd.cdw0.with_opcode(opcode);
    }
    if steer & 2 != 0 {
        cmd.prp1 = DATA + (cmd.prp1 % DATA_LEN) / 4 * 4;
        cmd.prp2 = DATA + (cmd.prp2 % DATA_LEN) / 4096 * 4096;
    }
    if steer & 4 != 0 {
        cmd.nsid = 1;
        cmd.cdw0 = cmd.cdw0.with_fuse(0).with_psdt(0);
    }
    if steer & 8 != 0 {
        // Read/Write/Write Zeroes: a few blocks near the start of the namespace.
        cmd.cdw10 %= 2048;
        cmd.cdw11 = 0;
        cmd.cdw12 &= !0xFFFF | 0x3F;
    }
    cmd
}

#[test]
fn fuzz_submission_entries_and_doorbells() {
    bolero::check!()
        .with_iterations(400)
        .with_max_len(1024)
        .for_each(|input: &[u8]| {
            let mut input = input;
            let seed_len = usize::from(take::<1>(&mut input)[0]);
            let seed = &input[..seed_len.min(input.len())];
            input = &input[seed.len()..];
            let (rig, mut queues) = enabled(seed);
            // Until something may have disturbed the queues, every entry must complete.
            let mut orderly = true;
            while !input.is_empty() {
                let [op] = take::<1>(&mut input);
                match op % 4 {
                    0..=2 => {
                        let qid = u16::from(op % 4).min(IO_QUEUES);
                        let raw = take::<64>(&mut input);
                        let mut cmd = Command::read_from_bytes(&raw).unwrap();
                        cmd = steer(cmd, op >> 2, qid == 0);
                        if qid == 0 && disturbs_queues(cmd.cdw0.opcode()) {
                            orderly = false;
                        }
                        if submit(&mut queues[usize::from(qid)], &cmd) && orderly {
                            let what = "the completion of a harmless command";
                            wait(&rig, &mut queues, qid, what);
                        }
                    }
                    _ => {
                        // A doorbell write of any value, to any doorbell.
                        let [which] = take::<1>(&mut input);
                        let value = u32::from_le_bytes(take::<4>(&mut input));
                        let offset = rig.doorbell(which % 16);
                        rig.ctrl().write_register(offset, 4, value.into());
                        orderly = false;
                    }
                }
                drain(&mut queues);
                if rig.csts().cfs() {
                    orderly = false;
                }
                let _ = rig.ctrl().read_register(0, 8);
                rig.guarded.assert_untouched();
            }
        });
}

/// Register offsets worth hitting often: INTMS, INTMC, CC, CSTS, NSSR, AQA, ASQ, ACQ (both
/// halves) and the first doorbells.
const REGISTERS: [u64; 14] = [
    0x0C, 0x10, 0x14, 0x1C, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x1000, 0x1004, 0x1008, 0x100C,
];

#[test]
fn fuzz_register_writes() {
    bolero::check!()
        .with_type::<Vec<(u8, u16, u64)>>()
        .with_iterations(400)
        .for_each(|writes: &Vec<(u8, u16, u64)>| {
            let fill: Vec<u8> = writes.iter().flat_map(|w| w.2.to_le_bytes()).collect();
            let rig = Rig::new(&fill);
            for &(kind, offset, value) in writes {
                let size = [4u8, 8, 4, 1, 2, 4, 8, 3][usize::from(kind & 7)];
                let offset = if kind & 8 != 0 {
                    REGISTERS[usize::from(offset) % REGISTERS.len()]
                } else {
                    u64::from(offset)
                };
                let value = match kind >> 4 {
                    // An address inside the window, page aligned or not.
                    1 => BASE + value % WINDOW,
                    2 => BASE + (value % WINDOW) / 4096 * 4096,
                    // A CC that enables with the required entry sizes.
                    3 => (value & !0x00FF_0001) | 1 | 6 << 16 | 4 << 20,
                    _ => value,
                };
                rig.ctrl().write_register(offset, size, value);
                let _ = rig.ctrl().read_register(0x1C, 4);
                let _ = rig.ctrl().read_register(0, 8);
                let _ = rig.ctrl().read_register(offset, size);
            }
            // Whatever happened, a reset and a proper initialisation bring it back.
            rig.ctrl().write_register(0x14, 4, 0);
            assert!(!rig.csts().rdy());
            let mut queues = vec![rig.enable()];
            let identify = Command::identify(7, Cns::CONTROLLER, 0, 0, DATA);
            assert!(submit(&mut queues[0], &identify));
            wait(&rig, &mut queues, 0, "Identify after re-initialisation");
            assert!(!rig.csts().cfs());
            rig.guarded.assert_untouched();
        });
}
