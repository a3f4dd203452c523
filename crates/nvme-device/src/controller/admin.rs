//! The admin command set: [`ADMIN_COMMANDS`], the one table of every admin command a controller
//! supports, and dispatch through it.
//!
//! The table feeds dispatch, the Commands Supported and Effects log and the tests: adding a
//! command is adding a row (its opcode, handler, reported effects and whether only a primary
//! controller offers it).

use nvme_spec::command::AdminOpcode;
use nvme_spec::command::Command;
use nvme_spec::command::GetFeaturesCdw10;
use nvme_spec::command::SetFeaturesCdw10;
use nvme_spec::features::FeatureId;
use nvme_spec::log::CommandEffects;
use nvme_spec::status::Status;

use super::Inner;
use super::Role;
use super::State;
use super::admin_queue::Outcome;
use super::aer;
use super::features;
use super::identify;
use super::log;
use super::queue_management::create_cq;
use super::queue_management::create_sq;
use super::queue_management::delete_cq;
use super::queue_management::delete_sq;
use super::shadow;
use crate::lm;
use crate::lm::PrimaryLm;
use Handler::Deferrable;
use Handler::Immediate;
use Handler::Migration;

/// One admin command a controller supports.
#[derive(Clone, Copy, Debug)]
pub struct AdminCommand {
    /// Its opcode.
    pub opcode: AdminOpcode,
    /// What the Commands Supported and Effects log reports for it.
    pub effects: CommandEffects,
    /// Whether only a primary controller supports it (a secondary answers Invalid Command
    /// Opcode and leaves it out of its effects log).
    pub primary_only: bool,
    handler: Handler,
}

impl AdminCommand {
    /// Whether a controller in `role` supports the command.
    pub fn supported_by(&self, role: Role) -> bool {
        !self.primary_only || role == Role::Primary
    }
}

/// How an admin command runs, with the controller's `state` held.
#[derive(Clone, Copy)]
enum Handler {
    /// Completes at once with the status and dword 0 it returns.
    Immediate(fn(&Inner, &mut State, &Command) -> Result<u32, Status>),
    /// May complete later.
    Deferrable(fn(&Inner, &mut State, &Command) -> Outcome),
    /// A TP4159 command, on the primary controller's migration state.
    Migration(fn(&Inner, &mut PrimaryLm, &Command) -> Result<u32, Status>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Immediate(_) => "Immediate",
            Handler::Deferrable(_) => "Deferrable",
            Handler::Migration(_) => "Migration",
        })
    }
}

/// What the effects log reports for every admin command: supported, no further effects.
const SUPPORTED: CommandEffects = CommandEffects::new().with_csupp(true);

/// A row of [`ADMIN_COMMANDS`] that every controller supports.
const fn every(opcode: AdminOpcode, handler: Handler) -> AdminCommand {
    AdminCommand {
        opcode,
        effects: SUPPORTED,
        primary_only: false,
        handler,
    }
}

/// A row of [`ADMIN_COMMANDS`] that only a primary controller supports.
const fn primary(opcode: AdminOpcode, handler: Handler) -> AdminCommand {
    AdminCommand {
        opcode,
        effects: SUPPORTED,
        primary_only: true,
        handler,
    }
}

/// Every admin command, in opcode order.
pub const ADMIN_COMMANDS: &[AdminCommand] = &[
    every(AdminOpcode::DELETE_IO_SQ, Immediate(delete_sq)),
    every(AdminOpcode::CREATE_IO_SQ, Immediate(create_sq)),
    every(AdminOpcode::GET_LOG_PAGE, Immediate(log::get)),
    every(AdminOpcode::DELETE_IO_CQ, Immediate(delete_cq)),
    every(AdminOpcode::CREATE_IO_CQ, Immediate(create_cq)),
    every(
        AdminOpcode::IDENTIFY,
        Immediate(|inner, _, cmd| identify::identify(inner, cmd)),
    ),
    every(AdminOpcode::ABORT, Immediate(aer::abort)),
    every(AdminOpcode::SET_FEATURES, Immediate(set_features)),
    every(AdminOpcode::GET_FEATURES, Immediate(get_features)),
    every(
        AdminOpcode::ASYNC_EVENT_REQUEST,
        Deferrable(|_, state, cmd| aer::request(state, cmd)),
    ),
    every(AdminOpcode::KEEP_ALIVE, Immediate(|_, _, _| Ok(0))),
    primary(
        AdminOpcode::VIRTUALIZATION_MANAGEMENT,
        Immediate(|inner, _, cmd| crate::sriov::virtualization_management(inner, cmd)),
    ),
    primary(AdminOpcode::TRACK_SEND, Migration(lm::track_send)),
    primary(AdminOpcode::MIGRATION_SEND, Migration(lm::migration_send)),
    primary(
        AdminOpcode::MIGRATION_RECEIVE,
        Migration(|inner, _, cmd| lm::migration_receive(inner, cmd)),
    ),
    primary(
        AdminOpcode::CONTROLLER_DATA_QUEUE,
        Migration(lm::controller_data_queue),
    ),
    every(
        AdminOpcode::DOORBELL_BUFFER_CONFIG,
        Immediate(shadow::config),
    ),
];

/// Runs one admin command.
pub(super) fn execute(inner: &Inner, state: &mut State, cmd: &Command) -> Outcome {
    if cmd.cdw0.fuse() != 0 {
        return Outcome::Complete(Status::INVALID_FIELD_IN_COMMAND, 0);
    }
    let opcode = AdminOpcode(cmd.cdw0.opcode());
    let Some(command) = ADMIN_COMMANDS
        .iter()
        .find(|c| c.opcode == opcode && c.supported_by(inner.config.role))
    else {
        return Outcome::Complete(Status::INVALID_COMMAND_OPCODE, 0);
    };
    match command.handler {
        Handler::Immediate(run) => run(inner, state, cmd).into(),
        Handler::Deferrable(run) => run(inner, state, cmd),
        Handler::Migration(run) => run(inner, &mut state.lm, cmd).into(),
    }
}

/// Set Features; on a primary controller, Feature 21h (Controller Data Queue) is TP4159's.
fn set_features(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    if inner.config.role == Role::Primary
        && SetFeaturesCdw10::from(cmd.cdw10).fid() == FeatureId::CONTROLLER_DATA_QUEUE
    {
        lm::set_cdq_feature(&state.lm, cmd)
    } else {
        features::set(inner, state, cmd)
    }
}

/// Get Features; on a primary controller, Feature 21h (Controller Data Queue) is TP4159's.
fn get_features(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    if inner.config.role == Role::Primary
        && GetFeaturesCdw10::from(cmd.cdw10).fid() == FeatureId::CONTROLLER_DATA_QUEUE
    {
        lm::get_cdq_feature(inner, &state.lm, cmd)
    } else {
        features::get(inner, state, cmd)
    }
}
