//! TP4159 on the primary controller, as a host issues it: Migration Send and Receive through
//! the `nvme-driver` host driver on the PF, with the status each command got.

use nvme_driver::driver::Driver;
use nvme_spec::command::Command;
use nvme_spec::lm::ControllerStateHeader;
use nvme_spec::lm::GetControllerState;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::status::Status;

use super::status;

/// Sends the TP4159 command `op` on `pf` and returns its status.
///
/// # Panics
///
/// If the command cannot be encoded or fails outside NVMe.
pub fn send(pf: &Driver, op: impl LmCommand) -> Status {
    status(pf.admin(op.encode().expect("an encodable TP4159 command")))
}

/// Migration Send Suspend of controller `cntlid` (deleting its User Data Migration Queue if
/// `dudmq`).
pub fn suspend(pf: &Driver, cntlid: u16, dudmq: bool) -> Status {
    send(
        pf,
        Suspend {
            cntlid,
            stype: SuspendType::SUSPEND,
            dudmq,
        },
    )
}

/// Migration Send Resume of controller `cntlid`.
pub fn resume(pf: &Driver, cntlid: u16) -> Status {
    send(pf, Resume { cntlid })
}

/// Migration Receive Get Controller State of `cntlid` (NVMe state v0 and the vendor state):
/// `len` bytes from byte `offset`.
///
/// # Panics
///
/// If `len` is not a whole, encodable number of dwords.
pub fn get_state_cmd(cntlid: u16, offset: u64, len: u64) -> Command {
    GetControllerState {
        csvi: 1,
        cntlid,
        csuuidi: 1,
        csuidxp: 0,
        offset,
        uidx: 0,
        numd: GetControllerState::numd_for_len(len).expect("a dword count"),
    }
    .encode()
    .expect("an encodable Get Controller State")
}

/// Reads the whole controller state of `cntlid` in chunks of `chunk` bytes, the header first.
/// Returns it and whether every chunk reported the controller suspended (CSUP).
///
/// # Panics
///
/// If a command fails or the header does not decode.
pub fn get_state(pf: &Driver, cntlid: u16, chunk: u64) -> (Vec<u8>, bool) {
    let header = pf
        .admin_read(get_state_cmd(cntlid, 0, 48), 48)
        .expect("Get Controller State header");
    let total = ControllerStateHeader::decode(&header)
        .and_then(|h| h.total_len())
        .expect("a controller state header") as u64;
    let mut out = Vec::new();
    let mut csup = true;
    while (out.len() as u64) < total {
        let offset = out.len() as u64;
        let len = chunk.min(total - offset);
        let mut cmd = get_state_cmd(cntlid, offset, len);
        let buf = pf.memory().alloc(len).expect("PF memory for a chunk");
        let list = pf.memory().alloc(4096).expect("PF memory for a PRP list");
        pf.set_prps(&mut cmd, &buf, Some(&list), len);
        let done = pf.admin(cmd).expect("Get Controller State");
        csup &= done.dw0 & 1 == 1;
        let mut bytes = vec![0u8; len as usize];
        buf.read(0, &mut bytes);
        out.extend_from_slice(&bytes);
    }
    assert_eq!(&out[..48], &header[..], "the header changed between reads");
    (out, csup)
}

/// One chunk of Migration Send Set Controller State of `cntlid`: `data` at byte `offset`.
pub fn set_chunk(
    pf: &Driver,
    cntlid: u16,
    seqind: SequenceIndicator,
    offset: u64,
    data: &[u8],
) -> Status {
    let op = SetControllerState {
        seqind,
        cntlid,
        csvi: 1,
        csuuidi: 1,
        offset,
        uidx: 0,
        numd: SetControllerState::numd_for_len(data.len() as u64).expect("a dword count"),
    };
    status(pf.admin_write(
        op.encode().expect("an encodable Set Controller State"),
        data,
    ))
}

/// Sets the state of `cntlid` in chunks of `chunk` bytes (first, middle, last; or only). Stops
/// at the first chunk that fails and returns its status.
pub fn set_state(pf: &Driver, cntlid: u16, state: &[u8], chunk: usize) -> Status {
    let chunks: Vec<&[u8]> = state.chunks(chunk).collect();
    let mut offset = 0;
    for (i, piece) in chunks.iter().enumerate() {
        let seqind = match (i == 0, i == chunks.len() - 1) {
            (true, true) => SequenceIndicator::ONLY,
            (true, false) => SequenceIndicator::FIRST,
            (false, true) => SequenceIndicator::LAST,
            (false, false) => SequenceIndicator::MIDDLE,
        };
        let status = set_chunk(pf, cntlid, seqind, offset, piece);
        if status != Status::SUCCESS {
            return status;
        }
        offset += piece.len() as u64;
    }
    Status::SUCCESS
}
