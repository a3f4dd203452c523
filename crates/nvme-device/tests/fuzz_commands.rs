//! Fuzz targets for everything a guest controls, run by bolero under plain `cargo test`:
//! submission queue entries and doorbell values against an enabled controller, and register
//! writes in any order. After every step the controller must still answer register reads and
//! must not have written outside the guest's mapping; commands that cannot disturb the queues
//! must complete (or the controller must report CSTS.CFS); and after any sequence of register
//! writes a reset and a proper initialisation bring the controller back.

mod common;

use std::sync::Arc;

use nvme_device::backend::RamBackend;
use nvme_device::controller::Controller;
use nvme_device::controller::ControllerConfig;
use nvme_device::controller::Role;
use nvme_device::controller::SubsystemIdentity;
use nvme_device::namespace::BlockSize;
use nvme_device::namespace::Namespace;
use nvme_device::namespace::NamespaceIdentity;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::command::NvmOpcode;
use nvme_spec::identify::Cns;
use nvme_spec::registers::Csts;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

/// Guest-physical address of the mapped window.
const BASE: u64 = 0x1_0000_0000;
/// Size of the window the controller reaches.
const WINDOW: u64 = 256 << 10;
/// Unmapped memory on either side of the window, in the same file; it must never change.
const GUARD: u64 = 16 << 10;
const SENTINEL: u8 = 0xA5;
/// Queue rings live in the first pages of the window; steered data pointers go above them.
const DATA: u64 = BASE + 0x8000;
const DATA_LEN: u64 = WINDOW - 0x8000;
/// Entries of every queue the harness creates.
const ENTRIES: u32 = 16;
/// I/O queue pairs the harness creates.
const IO_QUEUES: u16 = 2;

/// An enabled primary controller (with the TP4159 commands) over a guarded guest window.
struct Rig {
    ctrl: Controller,
    space: Arc<AddressSpace>,
    file: Mapping,
}

impl Rig {
    fn new(fill: &[u8]) -> Self {
        let file = Mapping::memfd("fuzz-guest", (WINDOW + 2 * GUARD) as usize).unwrap();
        file.fill(0, WINDOW + 2 * GUARD, SENTINEL).unwrap();
        if !fill.is_empty() {
            for at in (0..WINDOW).step_by(fill.len()) {
                let n = (fill.len() as u64).min(WINDOW - at) as usize;
                file.write(GUARD + at, &fill[..n]).unwrap();
            }
        }
        let fd = file.fd().unwrap().try_clone_to_owned().unwrap();
        let window = Mapping::from_fd(fd, GUARD, WINDOW as usize, Protection::ReadWrite).unwrap();
        let space = Arc::new(AddressSpace::new());
        space.map(BASE, window).unwrap();
        let backend = Arc::new(RamBackend::new(1 << 20).unwrap());
        let ns = Namespace::new(
            1,
            backend,
            BlockSize::B512,
            true,
            NamespaceIdentity::derive("F", 1),
        );
        let config = ControllerConfig {
            io_queue_pairs: 4,
            max_queue_entries: 64,
            msix_vectors: 8,
            ..ControllerConfig::new(1, Role::Primary)
        };
        let identity = Arc::new(SubsystemIdentity {
            nqn: "nqn.2026-11.io.vfio-nvme:fuzz".to_owned(),
            serial: "FUZZ".to_owned(),
            model: "fuzz".to_owned(),
            firmware: "0".to_owned(),
        });
        let ctrl = Controller::new(
            config,
            identity,
            vec![Some(Arc::new(ns.unwrap()))],
            space.clone(),
        );
        Self {
            ctrl: ctrl.unwrap(),
            space,
            file,
        }
    }

    fn csts(&self) -> Csts {
        Csts::from(self.ctrl.read_register(0x1C, 4) as u32)
    }

    /// Zeroes the admin rings and enables the controller with them.
    fn enable(&self) {
        self.space.fill(BASE, 0x2000, 0).unwrap();
        self.ctrl
            .write_register(0x24, 4, u64::from((ENTRIES - 1) * 0x1_0001));
        self.ctrl.write_register(0x28, 8, ring(0, false));
        self.ctrl.write_register(0x30, 8, ring(0, true));
        self.ctrl.write_register(0x14, 4, 1 | 6 << 16 | 4 << 20);
        let csts = self.csts();
        assert!(csts.rdy() && !csts.cfs(), "a valid enable failed: {csts:?}");
    }

    fn assert_guard_untouched(&self) {
        let mut bytes = vec![0u8; GUARD as usize];
        for at in [0, GUARD + WINDOW] {
            self.file.read(at, &mut bytes).unwrap();
            assert!(
                bytes.iter().all(|&b| b == SENTINEL),
                "write outside the guest mapping"
            );
        }
    }
}

/// Where the harness puts queue `qid`'s SQ or CQ ring.
fn ring(qid: u16, cq: bool) -> u64 {
    BASE + 0x2000 * u64::from(qid) + if cq { 0x1000 } else { 0 }
}

/// The host side of the harness's queues.
struct Host {
    tails: [u32; 1 + IO_QUEUES as usize],
    heads: [u32; 1 + IO_QUEUES as usize],
    phases: [bool; 1 + IO_QUEUES as usize],
    outstanding: [u32; 1 + IO_QUEUES as usize],
}

impl Host {
    fn new() -> Self {
        Self {
            tails: [0; 3],
            heads: [0; 3],
            phases: [true; 3],
            outstanding: [0; 3],
        }
    }

    /// Writes `cmd` at queue `qid`'s tail and rings; false if the queue is full.
    fn submit(&mut self, rig: &Rig, qid: u16, cmd: &Command) -> bool {
        let q = usize::from(qid);
        if self.outstanding[q] >= ENTRIES - 1 {
            return false;
        }
        let at = ring(qid, false) + u64::from(self.tails[q]) * 64;
        rig.space.write(at, cmd.as_bytes()).unwrap();
        self.tails[q] = (self.tails[q] + 1) % ENTRIES;
        self.outstanding[q] += 1;
        rig.ctrl
            .write_register(0x1000 + 8 * u64::from(qid), 4, self.tails[q].into());
        true
    }

    /// Consumes every new completion on every queue; returns those per queue.
    fn drain(&mut self, rig: &Rig) -> [u32; 3] {
        let mut got = [0; 3];
        for qid in 0..=IO_QUEUES {
            let q = usize::from(qid);
            loop {
                let mut raw = [0u8; 16];
                let at = ring(qid, true) + u64::from(self.heads[q]) * 16;
                rig.space.read(at, &mut raw).unwrap();
                let entry = Completion::read_from_bytes(&raw).unwrap();
                if entry.status.phase() != self.phases[q] {
                    break;
                }
                self.heads[q] = (self.heads[q] + 1) % ENTRIES;
                if self.heads[q] == 0 {
                    self.phases[q] = !self.phases[q];
                }
                self.outstanding[q] = self.outstanding[q].saturating_sub(1);
                got[q] += 1;
            }
            if got[q] > 0 {
                rig.ctrl
                    .write_register(0x1000 + 8 * u64::from(qid) + 4, 4, self.heads[q].into());
            }
        }
        got
    }

    /// Waits until queue `qid` gets a completion or the controller fails.
    fn wait(&mut self, rig: &Rig, qid: u16, what: &str) {
        common::eventually(what, || {
            let progressed = self.drain(rig)[usize::from(qid)] > 0;
            (progressed || rig.csts().cfs()).then_some(())
        });
    }
}

/// A rig with I/O queue pairs 1 and 2 created through the admin queue.
fn enabled(fill: &[u8]) -> (Rig, Host) {
    let rig = Rig::new(fill);
    rig.enable();
    // Every ring is zeroed before the host starts looking for completions in any of them.
    rig.space
        .fill(ring(1, false), 0x2000 * u64::from(IO_QUEUES), 0)
        .unwrap();
    let mut host = Host::new();
    for qid in 1..=IO_QUEUES {
        let cq = Command::create_io_cq(qid, qid, ENTRIES, ring(qid, true), true, qid);
        let sq = Command::create_io_sq(qid, qid, ENTRIES, ring(qid, false), qid);
        for cmd in [cq, sq] {
            assert!(host.submit(&rig, 0, &cmd));
            host.wait(&rig, 0, "queue creation");
        }
    }
    (rig, host)
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

const ADMIN_OPCODES: [AdminOpcode; 15] = [
    AdminOpcode::DELETE_IO_SQ,
    AdminOpcode::CREATE_IO_SQ,
    AdminOpcode::GET_LOG_PAGE,
    AdminOpcode::DELETE_IO_CQ,
    AdminOpcode::CREATE_IO_CQ,
    AdminOpcode::IDENTIFY,
    AdminOpcode::ABORT,
    AdminOpcode::SET_FEATURES,
    AdminOpcode::GET_FEATURES,
    AdminOpcode::ASYNC_EVENT_REQUEST,
    AdminOpcode::KEEP_ALIVE,
    AdminOpcode::TRACK_SEND,
    AdminOpcode::MIGRATION_SEND,
    AdminOpcode::MIGRATION_RECEIVE,
    AdminOpcode::CONTROLLER_DATA_QUEUE,
];

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
            ADMIN_OPCODES[pick % ADMIN_OPCODES.len()].0
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
            let (rig, mut host) = enabled(seed);
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
                        if host.submit(&rig, qid, &cmd) && orderly {
                            host.wait(&rig, qid, "the completion of a harmless command");
                        }
                    }
                    _ => {
                        // A doorbell write of any value, to any doorbell.
                        let [which] = take::<1>(&mut input);
                        let value = u32::from_le_bytes(take::<4>(&mut input));
                        let offset = 0x1000 + 4 * u64::from(which % 16);
                        rig.ctrl.write_register(offset, 4, value.into());
                        orderly = false;
                    }
                }
                host.drain(&rig);
                if rig.csts().cfs() {
                    orderly = false;
                }
                let _ = rig.ctrl.read_register(0, 8);
                rig.assert_guard_untouched();
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
                rig.ctrl.write_register(offset, size, value);
                let _ = rig.ctrl.read_register(0x1C, 4);
                let _ = rig.ctrl.read_register(0, 8);
                let _ = rig.ctrl.read_register(offset, size);
            }
            // Whatever happened, a reset and a proper initialisation bring it back.
            rig.ctrl.write_register(0x14, 4, 0);
            assert!(!rig.csts().rdy());
            rig.enable();
            let mut host = Host::new();
            let identify = Command::identify(7, Cns::CONTROLLER, 0, 0, DATA);
            assert!(host.submit(&rig, 0, &identify));
            host.wait(&rig, 0, "Identify after re-initialisation");
            assert!(!rig.csts().cfs());
            rig.assert_guard_untouched();
        });
}
