//! Migration Send (41h: Suspend, Resume, Set Controller State) and Migration Receive (42h: Get
//! Controller State) on the primary controller.
//!
//! Suspend is the handshake of `DESIGN.md`, which the secondary controller carries out
//! (`Secondary::suspend`): it stops fetching and waits for the pass in progress, in which every
//! fetched command ran to completion and posted its completion. From then on nothing of the
//! target changes until Resume, so Get Controller State is stable and deterministic.
//!
//! Set Controller State collects chunks (SEQIND first/middle/last, byte offsets) in the primary's
//! [`PrimaryLm`], one transfer per target, and on the last chunk parses the TP4159 container here
//! and hands its parts to the target, which validates everything before changing anything.

use nvme_spec::command::Command;
use nvme_spec::lm::ControllerState;
use nvme_spec::lm::ControllerStateAttributes;
use nvme_spec::lm::ControllerStateHeader;
use nvme_spec::lm::EntrySequence;
use nvme_spec::lm::GetControllerState;
use nvme_spec::lm::GetControllerStateDw0;
use nvme_spec::lm::MAX_CONTROLLER_STATE_LEN;
use nvme_spec::lm::MigrationSend;
use nvme_spec::lm::NvmeControllerStateV0;
use nvme_spec::lm::Resume;
use nvme_spec::lm::SequenceIndicator;
use nvme_spec::lm::SetControllerState;
use nvme_spec::lm::Suspend;
use nvme_spec::lm::SuspendType;
use nvme_spec::status::Status;

use super::PrimaryLm;
use super::cdq;
use super::decode;
use super::target;
use crate::controller::Inner;
use crate::controller::snapshot::vendor::VendorState;

/// A Set Controller State transfer in progress.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// CSVI of the first chunk; later chunks must repeat it.
    csvi: u8,
    /// CSUUIDI of the first chunk; later chunks must repeat it.
    csuuidi: u8,
    /// The target's reset count at the first chunk: a reset of the target since voids the
    /// transfer (the state it carries no longer applies to the reset controller).
    resets: u64,
    /// The bytes received so far, from offset 0.
    data: Vec<u8>,
}

/// Which parts of the controller state a CSVI/CSUUIDI pair selects: (NVMECS v0, vendor). The
/// vendor format is CSUUIDI 1 only where the controller lists it in Identify CNS 20h.
fn parts(inner: &Inner, csvi: u8, csuuidi: u8) -> Result<(bool, bool), Status> {
    let vendor_max = u8::from(inner.config.migration.vendor_state);
    match (csvi, csuuidi) {
        (0 | 1, i) if i <= vendor_max => Ok((csvi == 1, csuuidi == 1)),
        _ => Err(Status::INVALID_FIELD_IN_COMMAND),
    }
}

/// Migration Send (41h).
pub(crate) fn send(inner: &Inner, lm: &mut PrimaryLm, cmd: &Command) -> Result<u32, Status> {
    match decode::<MigrationSend>(cmd)? {
        MigrationSend::Suspend(op) => suspend(inner, lm, op),
        MigrationSend::Resume(op) => resume(inner, op),
        MigrationSend::SetControllerState(op) => set_state(inner, lm, cmd, op),
    }
}

fn suspend(inner: &Inner, lm: &mut PrimaryLm, op: Suspend) -> Result<u32, Status> {
    let vf = target(inner, op.cntlid)?;
    match op.stype {
        SuspendType::NOTIFICATION => return Ok(0),
        SuspendType::SUSPEND => {}
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    }
    // One "suspended" marker per suspension: a Suspend of a controller that is suspended
    // already (a driver repeating it, e.g. RUNNING_P2P → STOP) changes nothing and posts none.
    // Returns once every command the target fetched has completed.
    let (mut vf, newly) = vf.suspend();
    if newly {
        vf.lba_log().flush();
        vf.lba_log().marker(EntrySequence::LAST_SUSPENDED);
    }
    if op.dudmq {
        cdq::delete_udmq_of(lm, &mut vf);
    }
    Ok(0)
}

fn resume(inner: &Inner, op: Resume) -> Result<u32, Status> {
    // An offline secondary is not suspended (going offline lifted any suspension): Resume
    // answers so, like for any secondary that is not suspended.
    let vf = inner
        .secondary(op.cntlid)
        .ok_or(Status::INVALID_CONTROLLER_IDENTIFIER)?;
    let mut vf = vf.lock();
    if !vf.is_suspended() {
        return Err(Status::CONTROLLER_NOT_SUSPENDED);
    }
    if vf.lba_log().active() {
        vf.lba_log().marker(EntrySequence::FIRST);
    }
    vf.resume();
    Ok(0)
}

/// Set Controller State: one chunk.
fn set_state(
    inner: &Inner,
    lm: &mut PrimaryLm,
    cmd: &Command,
    op: SetControllerState,
) -> Result<u32, Status> {
    let (nvme, vendor) = parts(inner, op.csvi, op.csuuidi)?;
    if !(nvme || vendor) || op.uidx != 0 {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let vf = target(inner, op.cntlid)?;
    if !vf.is_suspended() {
        return Err(Status::CONTROLLER_NOT_SUSPENDED);
    }
    let len = op.data_len();
    if len > inner.config.max_transfer() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let incoming = &mut lm.incoming;
    let existing = incoming.iter().position(|(id, _)| *id == op.cntlid);
    let first = matches!(
        op.seqind,
        SequenceIndicator::FIRST | SequenceIndicator::ONLY
    );
    let index = match (first, existing) {
        (true, _) => {
            if op.offset != 0 {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            let fresh = Incoming {
                csvi: op.csvi,
                csuuidi: op.csuuidi,
                resets: vf.resets(),
                data: Vec::new(),
            };
            match existing {
                Some(i) => {
                    incoming[i].1 = fresh;
                    i
                }
                None => {
                    incoming.push((op.cntlid, fresh));
                    incoming.len() - 1
                }
            }
        }
        (false, Some(i)) => i,
        (false, None) => return Err(Status::INVALID_FIELD_IN_COMMAND),
    };
    let buffer = &mut incoming[index].1;
    let start = buffer.data.len();
    let fits = (start as u64)
        .checked_add(len)
        .is_some_and(|end| end <= MAX_CONTROLLER_STATE_LEN as u64);
    let mismatch = if buffer.csvi != op.csvi || buffer.csuuidi != op.csuuidi {
        Some("CSVI/CSUUIDI differ from the transfer's first chunk")
    } else if buffer.resets != vf.resets() {
        Some("the controller was reset during the transfer")
    } else if op.offset != start as u64 {
        Some("the offset is not where the previous chunk ended")
    } else if !fits {
        Some("the state would exceed its largest size")
    } else {
        None
    };
    if let Some(reason) = mismatch {
        tracing::warn!(
            cntlid = op.cntlid,
            offset = op.offset,
            reason,
            "Set Controller State refused"
        );
        incoming.remove(index);
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    if len > 0 {
        buffer.data.resize(start + len as usize, 0);
        if let Err(status) = inner.data_from_host(cmd, &mut buffer.data[start..]) {
            incoming.remove(index);
            return Err(status);
        }
    }
    if !matches!(op.seqind, SequenceIndicator::LAST | SequenceIndicator::ONLY) {
        return Ok(0);
    }
    let (_, complete) = incoming.remove(index);
    let (nvmecs, vendor_state) = parse(inner, &complete).inspect_err(|_| {
        tracing::warn!(
            cntlid = op.cntlid,
            len = complete.data.len(),
            "Set Controller State refused: the data is not a controller state with the parts CSVI/CSUUIDI select"
        );
    })?;
    let mut vf = vf.lock();
    // Locked, the target cannot be reset; it must still be the controller the transfer began
    // for, and still suspended.
    if vf.resets() != complete.resets || !vf.is_suspended() {
        tracing::warn!(
            cntlid = op.cntlid,
            "Set Controller State refused: the controller was reset or resumed during the transfer"
        );
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    vf.restore(nvmecs.as_ref(), vendor_state.as_ref())
        .map_err(|error| {
            tracing::warn!(cntlid = op.cntlid, %error, "Set Controller State refused");
            Status::INVALID_FIELD_IN_COMMAND
        })?;
    Ok(0)
}

/// Parses a complete controller state: the header sizes must match the bytes, and the parts
/// present must be exactly those the CSVI/CSUUIDI of the transfer selected.
fn parse(
    inner: &Inner,
    incoming: &Incoming,
) -> Result<(Option<NvmeControllerStateV0>, Option<VendorState>), Status> {
    let bad = Status::INVALID_FIELD_IN_COMMAND;
    let cs = ControllerState::decode(&incoming.data).map_err(|_| bad)?;
    let (want_nvme, want_vendor) = parts(inner, incoming.csvi, incoming.csuuidi)?;
    if cs.header().ver != 0
        || (cs.header().nvmecss != 0) != want_nvme
        || (cs.header().vss != 0) != want_vendor
    {
        return Err(bad);
    }
    let nvmecs = want_nvme
        .then(|| NvmeControllerStateV0::decode(cs.nvmecs()))
        .transpose()
        .map_err(|_| bad)?;
    let vendor = want_vendor
        .then(|| VendorState::decode(cs.vendor()))
        .transpose()
        .map_err(|_| bad)?;
    Ok((nvmecs, vendor))
}

/// Migration Receive (42h), SEL 0: Get Controller State.
pub(crate) fn receive(inner: &Inner, cmd: &Command) -> Result<u32, Status> {
    let op = decode::<GetControllerState>(cmd)?;
    let (nvme, vendor) = parts(inner, op.csvi, op.csuuidi)?;
    if op.uidx != 0 {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let vf = target(inner, op.cntlid)?;
    let requested = op.data_len();
    if requested > inner.config.max_transfer() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let (bytes, suspended) = {
        let mut vf = vf.lock();
        let suspended = vf.is_suspended();
        (encode(vf.capture(), nvme, vendor, suspended)?, suspended)
    };
    let offset = usize::try_from(op.offset).unwrap_or(usize::MAX);
    if !offset.is_multiple_of(4) || offset >= bytes.len() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let end = bytes.len().min(offset + requested as usize);
    inner.data_to_host(cmd, &bytes[offset..end])?;
    Ok(GetControllerStateDw0::new().with_csup(suspended).into())
}

/// The Controller State data structure of a captured state: header, NVMECS v0 if `nvme`, our
/// vendor state if `vendor`.
fn encode(
    (nvmecs, vendor_state): (NvmeControllerStateV0, VendorState),
    nvme: bool,
    vendor: bool,
    suspended: bool,
) -> Result<Vec<u8>, Status> {
    let cs = ControllerState::new(
        0,
        ControllerStateAttributes::new().with_suspended(suspended),
        if nvme { nvmecs.encode() } else { Vec::new() },
        if vendor {
            vendor_state.encode()
        } else {
            Vec::new()
        },
    )
    .map_err(|_| Status::INTERNAL_ERROR)?;
    let bytes = cs.encode();
    debug_assert!(bytes.len() >= ControllerStateHeader::SIZE);
    Ok(bytes)
}
