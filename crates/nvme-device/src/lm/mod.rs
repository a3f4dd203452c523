//! TP4159 host-managed live migration on the primary controller.
//!
//! The primary controller (the PF) manages its secondary controllers (the VFs) with Migration
//! Send (Suspend, Resume, Set Controller State), Migration Receive (Get Controller State), Track
//! Send (LBA change logging) and Controller Data Queues. Every command names its target by
//! CNTLID, resolved through the subsystem's list of secondary controllers.
//!
//! The seam with the controller is narrow both ways. The controller calls in through the entry
//! points below: the four commands (rows of [`crate::controller::ADMIN_COMMANDS`]), Feature 21h,
//! the TP4159 fields of Identify, and `PrimaryLm`, the migration state a primary controller
//! keeps and resets. This module reaches a secondary controller only through
//! `controller::Secondary` (suspend and resume handshake, capture and restore of its state, its
//! LBA change log) and never sees a controller's queue state. The save format itself is the
//! controller's ([`crate::controller::snapshot`]).
//!
//! * `migration` runs Suspend, Resume, Set and Get Controller State;
//! * `cdq` runs Controller Data Queues, Feature 21h and Track Send, and feeds a secondary's LBA
//!   change log into a User Data Migration Queue;
//! * `ring` is the mechanics of a CDQ ring.

#![forbid(unsafe_code)]

mod cdq;
mod migration;
mod ring;

use std::sync::Arc;

pub(crate) use cdq::controller_data_queue;
pub(crate) use cdq::get_feature as get_cdq_feature;
pub(crate) use cdq::set_feature as set_cdq_feature;
pub(crate) use cdq::track_send;
pub(crate) use migration::receive as migration_receive;
pub(crate) use migration::send as migration_send;
use nvme_spec::command::Command;
use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::Trattr;
use nvme_spec::lm::LmCommand;
use nvme_spec::lm::SupportedControllerStateFormats;
use nvme_spec::lm::Uuid;
use nvme_spec::status::Status;

use crate::controller::Inner;
use crate::controller::Secondary;

/// The UUID that names this project's vendor-specific controller state format (CSUUIDI 1 in
/// Identify CNS 20h). The format carries everything NVMECS v0 leaves out: registers, the admin
/// queue, features, asynchronous events, interrupt configuration and namespace identity.
pub const VENDOR_STATE_UUID: Uuid = Uuid([
    0x7c, 0x3e, 0x5a, 0x1d, 0x4b, 0x2f, 0x4e, 0x8a, 0x9d, 0x61, 0x0f, 0x6e, 0x76, 0x6e, 0x6d, 0x65,
]);

/// The NVMe controller state format versions supported (CSVI 1 selects version 0).
pub const NVME_STATE_VERSIONS: [u16; 1] = [0];

/// Identify CNS 20h: NVMe state version 0, and our vendor UUID when the controller offers it.
pub(crate) fn supported_formats(inner: &Inner) -> Vec<u8> {
    let vendor = inner.config.migration.vendor_state;
    SupportedControllerStateFormats {
        versions: NVME_STATE_VERSIONS.to_vec(),
        uuids: vendor.then_some(VENDOR_STATE_UUID).into_iter().collect(),
    }
    .encode()
    .unwrap_or_else(|_| vec![0; nvme_spec::identify::IDENTIFY_DATA_SIZE])
}

/// Fills the TP4159 fields of the primary controller's Identify Controller data: LBA change
/// logging only when the controller offers it.
pub(crate) fn advertise(id: &mut IdentifyController, inner: &Inner) {
    let logging = inner.config.migration.user_data_logging;
    id.trattr = Trattr::new().with_tudcs(logging);
    id.mcudmq = u16::from(logging);
    id.mnsudmq = if logging {
        inner.secondary_count().max(1)
    } else {
        0
    };
    id.mcmr = 1;
    id.nmcmr = inner.secondary_count().max(1);
}

/// The TP4159 state a primary controller keeps with its queue state.
#[derive(Debug, Default)]
pub(crate) struct PrimaryLm {
    /// The CDQs this controller created.
    cdqs: Vec<Arc<cdq::Cdq>>,
    /// Set Controller State transfers in progress, per target CNTLID.
    incoming: Vec<(u16, migration::Incoming)>,
}

impl PrimaryLm {
    /// The CDQ `cdqid`, or Invalid Controller Data Queue.
    fn find(&self, cdqid: u16) -> Result<&Arc<cdq::Cdq>, Status> {
        self.cdqs
            .iter()
            .find(|q| q.id == cdqid)
            .ok_or(Status::INVALID_CONTROLLER_DATA_QUEUE)
    }

    /// The primary controller `inner` was reset: every CDQ it created is deleted (which stops
    /// the logging into it) and the Set Controller State transfers it was collecting are dropped.
    pub(crate) fn reset(&mut self, inner: &Inner) {
        while let Some(id) = self.cdqs.first().map(|q| q.id) {
            let _ = cdq::delete(inner, self, id);
        }
        self.incoming.clear();
    }
}

/// Decodes a TP4159 command; a wrong SEL or set reserved bits are Invalid Field in Command.
fn decode<T: LmCommand>(cmd: &Command) -> Result<T, Status> {
    let decoded = T::decode(cmd).map_err(|_| Status::INVALID_FIELD_IN_COMMAND)?;
    if !decoded.reserved.is_empty() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    Ok(decoded.op)
}

/// The online secondary controller `cntlid` names, or Invalid Controller Identifier: a
/// secondary taken offline with Virtualization Management is not a migratable controller
/// until it is back online.
fn target(inner: &Inner, cntlid: u16) -> Result<Secondary, Status> {
    inner
        .secondary(cntlid)
        .filter(Secondary::is_online)
        .ok_or(Status::INVALID_CONTROLLER_IDENTIFIER)
}
