//! The NVM command set: Read, Write, Flush, Write Zeroes and Dataset Management.

use nvme_spec::command::Command;
use nvme_spec::command::DsmCdw10;
use nvme_spec::command::DsmCdw11;
use nvme_spec::command::DsmRange;
use nvme_spec::command::NvmOpcode;
use nvme_spec::command::ReadWriteCdw12;
use nvme_spec::command::WriteZeroesCdw12;
use nvme_spec::command::slba;
use nvme_spec::status::Status;
use zerocopy::FromBytes;

use super::Counters;
use super::Inner;
use super::lba_log::LbaLog;
use super::transfer;
use crate::backend::BackendError;
use crate::backend::IoKind;
use crate::namespace::Namespace;
use crate::prp::Segments;

/// NSID that addresses every attached namespace (Flush).
const ALL_NAMESPACES: u32 = 0xFFFF_FFFF;
/// Most ranges one Dataset Management command carries (NR is 0's based in 8 bits).
const MAX_DSM_RANGES: usize = 256;

/// Runs one I/O command and returns its status and completion dword 0. Successful changes of
/// user data are recorded in `log` (a no-op unless TP4159 logging is on).
pub(super) fn execute(
    inner: &Inner,
    counters: &mut Counters,
    log: &mut LbaLog,
    cmd: &Command,
) -> (Status, u32) {
    match run(inner, counters, log, cmd) {
        Ok(()) => (Status::SUCCESS, 0),
        Err(status) => (status, 0),
    }
}

fn run(
    inner: &Inner,
    counters: &mut Counters,
    log: &mut LbaLog,
    cmd: &Command,
) -> Result<(), Status> {
    if cmd.cdw0.fuse() != 0 {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    match NvmOpcode(cmd.cdw0.opcode()) {
        NvmOpcode::READ => read_write(inner, counters, cmd, false),
        NvmOpcode::WRITE => {
            read_write(inner, counters, cmd, true)?;
            let nlb = ReadWriteCdw12::from(cmd.cdw12).nlb();
            log.record(cmd.nsid, slba(cmd.cdw10, cmd.cdw11), nlb.into(), false);
            Ok(())
        }
        NvmOpcode::FLUSH => flush(inner, cmd),
        NvmOpcode::WRITE_ZEROES => {
            write_zeroes(inner, cmd)?;
            let cdw12 = WriteZeroesCdw12::from(cmd.cdw12);
            let slba = slba(cmd.cdw10, cmd.cdw11);
            log.record(cmd.nsid, slba, cdw12.nlb().into(), cdw12.deac());
            Ok(())
        }
        NvmOpcode::DATASET_MANAGEMENT => dataset_management(inner, log, cmd),
        _ => Err(Status::INVALID_COMMAND_OPCODE),
    }
}

fn namespace(inner: &Inner, nsid: u32) -> Result<&Namespace, Status> {
    inner
        .namespace(nsid)
        .map(|ns| ns.as_ref())
        .ok_or(Status::INVALID_NAMESPACE_OR_FORMAT)
}

/// The status of a failed storage operation.
pub(super) fn storage_error(err: BackendError, write: bool) -> Status {
    match err {
        BackendError::Dma(_) => Status::DATA_TRANSFER_ERROR,
        BackendError::Io(_) if write => Status::WRITE_FAULT,
        BackendError::Io(_) => Status::UNRECOVERED_READ_ERROR,
    }
}

/// The request an asynchronous backend queue runs for Read, Write or Flush `cmd` of one
/// namespace, checked as the synchronous path checks it: kind, byte offset, length and the
/// data buffer's guest-memory pieces.
pub(super) fn request(
    inner: &Inner,
    cmd: &Command,
) -> Result<(IoKind, u64, u64, Segments), Status> {
    let ns = namespace(inner, cmd.nsid)?;
    let kind = match NvmOpcode(cmd.cdw0.opcode()) {
        NvmOpcode::READ => IoKind::Read,
        NvmOpcode::WRITE => IoKind::Write {
            fua: ReadWriteCdw12::from(cmd.cdw12).fua(),
        },
        NvmOpcode::FLUSH => return Ok((IoKind::Flush, 0, 0, Segments::default())),
        _ => return Err(Status::INVALID_COMMAND_OPCODE),
    };
    let blocks = u64::from(ReadWriteCdw12::from(cmd.cdw12).nlb()) + 1;
    let (offset, len) = ns.byte_range(slba(cmd.cdw10, cmd.cdw11), blocks)?;
    let segments = transfer::segments(inner, cmd, len)?;
    Ok((kind, offset, len, segments))
}

fn read_write(
    inner: &Inner,
    counters: &mut Counters,
    cmd: &Command,
    write: bool,
) -> Result<(), Status> {
    let ns = namespace(inner, cmd.nsid)?;
    let cdw12 = ReadWriteCdw12::from(cmd.cdw12);
    let blocks = u64::from(cdw12.nlb()) + 1;
    let (offset, len) = ns.byte_range(slba(cmd.cdw10, cmd.cdw11), blocks)?;
    let segments = transfer::segments(inner, cmd, len)?;
    let backend = ns.backend();
    let mut done = 0;
    for seg in segments.as_slice() {
        let result = if write {
            backend.write_from_guest(offset + done, inner.mem.as_ref(), seg.gpa, seg.len)
        } else {
            backend.read_to_guest(offset + done, inner.mem.as_ref(), seg.gpa, seg.len)
        };
        if let Err(err) = result {
            let status = storage_error(err, write);
            if status != Status::DATA_TRANSFER_ERROR {
                counters.media_errors += 1;
            }
            return Err(status);
        }
        done += seg.len;
    }
    if write {
        if cdw12.fua() {
            backend.flush().map_err(|_| Status::WRITE_FAULT)?;
        }
        counters.write_commands += 1;
        counters.bytes_written += len;
    } else {
        counters.read_commands += 1;
        counters.bytes_read += len;
    }
    Ok(())
}

fn flush(inner: &Inner, cmd: &Command) -> Result<(), Status> {
    if cmd.nsid == ALL_NAMESPACES {
        for ns in inner.attached() {
            ns.backend().flush().map_err(|_| Status::WRITE_FAULT)?;
        }
        return Ok(());
    }
    namespace(inner, cmd.nsid)?
        .backend()
        .flush()
        .map_err(|_| Status::WRITE_FAULT)
}

fn write_zeroes(inner: &Inner, cmd: &Command) -> Result<(), Status> {
    let ns = namespace(inner, cmd.nsid)?;
    let cdw12 = WriteZeroesCdw12::from(cmd.cdw12);
    let blocks = u64::from(cdw12.nlb()) + 1;
    let (offset, len) = ns.byte_range(slba(cmd.cdw10, cmd.cdw11), blocks)?;
    let backend = ns.backend();
    let result = if cdw12.deac() {
        backend.deallocate(offset, len)
    } else {
        backend.write_zeroes(offset, len)
    };
    result.map_err(|_| Status::WRITE_FAULT)
}

fn dataset_management(inner: &Inner, log: &mut LbaLog, cmd: &Command) -> Result<(), Status> {
    let ns = namespace(inner, cmd.nsid)?;
    let count = usize::from(DsmCdw10::from(cmd.cdw10).nr()) + 1;
    if !DsmCdw11::from(cmd.cdw11).ad() {
        // Only deallocation changes anything; integral-read/write hints are accepted and ignored.
        return Ok(());
    }
    let mut raw = [0u8; MAX_DSM_RANGES * 16];
    let raw = &mut raw[..count * 16];
    transfer::from_host(inner, cmd, raw)?;
    // Check every range before changing anything, so a bad range fails the whole command.
    let mut ranges = [DsmRange::default(); MAX_DSM_RANGES];
    for (slot, chunk) in ranges.iter_mut().zip(raw.chunks_exact(16)) {
        *slot = DsmRange::read_from_bytes(chunk).unwrap_or_default();
        ns.byte_range(slot.slba, u64::from(slot.nlb))?;
    }
    for range in &ranges[..count] {
        if range.nlb > 0 {
            let (offset, len) = ns.byte_range(range.slba, u64::from(range.nlb))?;
            ns.backend()
                .deallocate(offset, len)
                .map_err(|_| Status::WRITE_FAULT)?;
            // The entry's NLB is 0's based; DSM's is a count.
            log.record(cmd.nsid, range.slba, range.nlb - 1, true);
        }
    }
    Ok(())
}
