//! Moving a command's data between the controller and host memory through its PRPs.

use nvme_spec::command::Command;
use nvme_spec::prp::PageSize;
use nvme_spec::status::Status;

use super::Inner;
use crate::prp;
use crate::prp::Segments;

/// The memory page size hosts must use (CAP.MPSMIN = CAP.MPSMAX = 4 KiB).
pub(super) const PAGE: PageSize = PageSize::SIZE_4K;

/// The data buffer of `cmd` for a transfer of `len` bytes, checked against MDTS.
pub(super) fn segments(inner: &Inner, cmd: &Command, len: u64) -> Result<Segments, Status> {
    if len > inner.config.max_transfer() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    if cmd.cdw0.psdt() != 0 {
        // SGLs are not supported (SGLS = 0): only PRPs describe data.
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    prp::walk(inner.mem.as_ref(), PAGE, cmd.prp1, cmd.prp2, len)
}

/// Copies `data` to the host buffer of `cmd` (controller to host).
pub(super) fn to_host(inner: &Inner, cmd: &Command, data: &[u8]) -> Result<(), Status> {
    let segments = segments(inner, cmd, data.len() as u64)?;
    let mut done = 0usize;
    for seg in segments.as_slice() {
        let piece = &data[done..done + seg.len as usize];
        inner
            .mem
            .write(seg.gpa, piece)
            .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        done += seg.len as usize;
    }
    Ok(())
}

/// Fills `buf` from the host buffer of `cmd` (host to controller).
pub(super) fn from_host(inner: &Inner, cmd: &Command, buf: &mut [u8]) -> Result<(), Status> {
    let segments = segments(inner, cmd, buf.len() as u64)?;
    let mut done = 0usize;
    for seg in segments.as_slice() {
        let piece = &mut buf[done..done + seg.len as usize];
        inner
            .mem
            .read(seg.gpa, piece)
            .map_err(|_| Status::DATA_TRANSFER_ERROR)?;
        done += seg.len as usize;
    }
    Ok(())
}
