//! TP4159 host-managed live migration on the primary controller.
//!
//! The primary controller (the PF) manages its secondary controllers (the VFs) with Migration
//! Send (Suspend, Resume, Set Controller State), Migration Receive (Get Controller State), Track
//! Send (LBA change logging) and Controller Data Queues. Every command names its target by
//! CNTLID, resolved through the subsystem's list of secondary controllers.
//!
//! * [`vendor`] is our vendor-specific controller state format;
//! * `migration` runs Suspend, Resume, Set and Get Controller State;
//! * `cdq` runs Controller Data Queues, Feature 21h and Track Send, and holds the LBA log;
//! * `ring` is the mechanics of a CDQ ring.

#![forbid(unsafe_code)]

mod cdq;
mod migration;
mod ring;
pub mod vendor;

use std::sync::Arc;

pub(crate) use cdq::LbaLog;
pub(crate) use cdq::PrimaryLm;
pub(crate) use cdq::delete_all as delete_all_cdqs;
pub(crate) use migration::forget as forget_incoming;
use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::Trattr;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::SupportedControllerStateFormats;
use nvme_spec::lm::Uuid;
use nvme_spec::status::Status;

use crate::controller::Inner;
use crate::controller::State;

/// The UUID that names this project's vendor-specific controller state format (CSUUIDI 1 in
/// Identify CNS 20h). The format carries everything NVMECS v0 leaves out: registers, the admin
/// queue, features, asynchronous events, interrupt configuration and namespace identity.
pub const VENDOR_STATE_UUID: Uuid = Uuid([
    0x7c, 0x3e, 0x5a, 0x1d, 0x4b, 0x2f, 0x4e, 0x8a, 0x9d, 0x61, 0x0f, 0x6e, 0x76, 0x6e, 0x6d, 0x65,
]);

/// The NVMe controller state format versions supported (CSVI 1 selects version 0).
pub const NVME_STATE_VERSIONS: [u16; 1] = [0];

/// Identify CNS 20h: NVMe state version 0 and our vendor UUID.
pub(crate) fn supported_formats() -> Vec<u8> {
    SupportedControllerStateFormats {
        versions: NVME_STATE_VERSIONS.to_vec(),
        uuids: vec![VENDOR_STATE_UUID],
    }
    .encode()
    .unwrap_or_else(|_| vec![0; nvme_spec::identify::IDENTIFY_DATA_SIZE])
}

/// Fills the TP4159 fields of the primary controller's Identify Controller data.
pub(crate) fn advertise(id: &mut IdentifyController, inner: &Inner) {
    id.trattr = Trattr::new().with_tudcs(true);
    id.mcudmq = 1;
    id.mnsudmq = inner.secondary_count().max(1);
    id.mcmr = 1;
    id.nmcmr = inner.secondary_count().max(1);
}

/// The secondary controllers of a primary controller as (CNTLID, VFN) pairs.
pub(crate) fn peers(inner: &Inner) -> Vec<(u16, u16)> {
    inner.secondary_ids()
}

/// Decodes a TP4159 command; a wrong SEL or set reserved bits are Invalid Field in Command.
fn decode<T: LmCommand>(cmd: &Command) -> Result<T, Status> {
    let decoded = T::decode(cmd).map_err(|_| Status::INVALID_FIELD_IN_COMMAND)?;
    if !decoded.reserved.is_empty() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    Ok(decoded.op)
}

/// The secondary controller `cntlid` names, or Invalid Controller Identifier.
fn target(inner: &Inner, cntlid: u16) -> Result<Arc<Inner>, Status> {
    inner
        .secondary(cntlid)
        .ok_or(Status::INVALID_CONTROLLER_IDENTIFIER)
}

/// Runs a TP4159 admin command on the primary controller, with its `state` held.
pub(crate) fn execute(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    match AdminOpcode(cmd.cdw0.opcode()) {
        AdminOpcode::MIGRATION_SEND => migration::send(inner, state, cmd),
        AdminOpcode::MIGRATION_RECEIVE => migration::receive(inner, cmd),
        AdminOpcode::TRACK_SEND => cdq::track_send(inner, state, cmd),
        AdminOpcode::CONTROLLER_DATA_QUEUE => cdq::controller_data_queue(inner, state, cmd),
        _ => Err(Status::INVALID_COMMAND_OPCODE),
    }
}

/// Set Features 21h (Controller Data Queue).
pub(crate) fn set_cdq_feature(state: &mut State, cmd: &Command) -> Result<u32, Status> {
    cdq::set_feature(state, cmd)
}

/// Get Features 21h (Controller Data Queue).
pub(crate) fn get_cdq_feature(
    inner: &Inner,
    state: &mut State,
    cmd: &Command,
) -> Result<u32, Status> {
    cdq::get_feature(inner, state, cmd)
}
