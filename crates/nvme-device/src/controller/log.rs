//! Get Log Page: Error Information, SMART / Health, Firmware Slot, Changed Namespace List and
//! Commands Supported and Effects.

use std::collections::VecDeque;

use nvme_spec::command::Command;
use nvme_spec::command::CompletionStatus;
use nvme_spec::command::GetLogPageCdw10;
use nvme_spec::command::GetLogPageCdw11;
use nvme_spec::command::NvmOpcode;
use nvme_spec::command::log_page_len;
use nvme_spec::command::log_page_offset;
use nvme_spec::identify::NamespaceList;
use nvme_spec::identify::pad_ascii;
use nvme_spec::log::CommandEffects;
use nvme_spec::log::CommandsSupportedEffects;
use nvme_spec::log::ErrorInformation;
use nvme_spec::log::FirmwareSlotInformation;
use nvme_spec::log::LogPageId;
use nvme_spec::log::SmartHealth;
use nvme_spec::status::Status;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;

use super::ADMIN_COMMANDS;
use super::Inner;
use super::Role;
use super::State;
use super::transfer;

/// Error Information log entries kept (ELPE + 1).
pub(crate) const ERROR_LOG_ENTRIES: usize = 64;
/// Composite temperature reported in SMART / Health, kelvin (37 °C).
const TEMPERATURE: u16 = 310;

/// The Error Information log: the newest entries, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorLog {
    /// Entries, newest first.
    pub entries: VecDeque<ErrorInformation>,
    /// Error count of the newest entry (never 0 for a real entry).
    pub count: u64,
}

impl ErrorLog {
    /// Records a failed command.
    pub fn record(&mut self, sqid: u16, cmd: &Command, status: Status) {
        self.count += 1;
        let mut entry = ErrorInformation::new_zeroed();
        entry.error_count = self.count;
        entry.sqid = sqid;
        entry.cid = cmd.cdw0.cid();
        entry.status = CompletionStatus::new_with(status, false);
        entry.nsid = cmd.nsid;
        entry.opcode = cmd.cdw0.opcode();
        if self.entries.len() == ERROR_LOG_ENTRIES {
            self.entries.pop_back();
        }
        self.entries.push_front(entry);
    }
}

/// Data units (thousands of 512-byte units, rounded up) for `bytes`.
fn data_units(bytes: u64) -> u128 {
    u128::from(bytes.div_ceil(512)).div_ceil(1000)
}

/// The SMART / Health log: the counters, and the controller's running time as Power On Hours
/// (both travel with a migrated controller).
fn smart(inner: &Inner, state: &State) -> SmartHealth {
    let mut log = SmartHealth::new_zeroed();
    log.set_composite_temperature(TEMPERATURE);
    log.available_spare = 100;
    log.available_spare_threshold = 10;
    let c = &super::total_counters(state, &inner.lock_workers());
    log.data_units_read = data_units(c.bytes_read);
    log.data_units_written = data_units(c.bytes_written);
    log.host_read_commands = u128::from(c.read_commands);
    log.host_write_commands = u128::from(c.write_commands);
    log.power_cycles = u128::from(c.power_cycles);
    log.power_on_hours = u128::from(inner.uptime().as_secs() / 3600);
    log.unsafe_shutdowns = u128::from(c.unsafe_shutdowns);
    log.controller_busy_time = u128::from(c.busy_ns / 60_000_000_000);
    log.media_errors = u128::from(c.media_errors);
    log.error_log_entries = u128::from(c.error_count);
    log
}

fn firmware(inner: &Inner) -> FirmwareSlotInformation {
    let mut log = FirmwareSlotInformation::new_zeroed();
    log.afi = 1;
    log.frs[0] = pad_ascii::<8>(&inner.identity().firmware);
    log
}

/// The Commands Supported and Effects log for this controller's role: the admin commands of
/// [`ADMIN_COMMANDS`] it supports, and the NVM command set.
pub(super) fn effects(role: Role) -> CommandsSupportedEffects {
    let mut log = CommandsSupportedEffects::new_zeroed();
    for command in ADMIN_COMMANDS.iter().filter(|c| c.supported_by(role)) {
        log.admin[usize::from(command.opcode.0)] = command.effects;
    }
    let supported = CommandEffects::new().with_csupp(true);
    for (op, changes_lbas) in [
        (NvmOpcode::FLUSH, false),
        (NvmOpcode::WRITE, true),
        (NvmOpcode::READ, false),
        (NvmOpcode::WRITE_ZEROES, true),
        (NvmOpcode::DATASET_MANAGEMENT, true),
    ] {
        log.io[usize::from(op.0)] = supported.with_lbcc(changes_lbas);
    }
    log
}

/// Get Log Page.
pub(super) fn get(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = GetLogPageCdw10::from(cmd.cdw10);
    let len = log_page_len(cdw10, GetLogPageCdw11::from(cmd.cdw11));
    let offset = log_page_offset(cmd.cdw12, cmd.cdw13);
    if !offset.is_multiple_of(4) || len > inner.config.max_transfer() {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let lid = cdw10.lid();
    let page: Vec<u8> = match lid {
        LogPageId::ERROR_INFORMATION => inner
            .lock_errors()
            .entries
            .iter()
            .flat_map(|e| e.as_bytes().iter().copied())
            .collect(),
        LogPageId::SMART_HEALTH => smart(inner, state).as_bytes().to_vec(),
        LogPageId::FIRMWARE_SLOT => firmware(inner).as_bytes().to_vec(),
        // The attached namespaces never change under a running controller.
        LogPageId::CHANGED_NAMESPACE_LIST => NamespaceList::from_ids([]).as_bytes().to_vec(),
        LogPageId::COMMANDS_SUPPORTED_EFFECTS => effects(inner.config.role).as_bytes().to_vec(),
        _ => return Err(Status::INVALID_LOG_PAGE),
    };
    let full = match lid {
        // The Error Information log is as long as all its entries; unused ones read as zero.
        LogPageId::ERROR_INFORMATION => (ERROR_LOG_ENTRIES * size_of::<ErrorInformation>()) as u64,
        _ => page.len() as u64,
    };
    if offset >= full {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let mut data = vec![0u8; len as usize];
    let start = offset as usize;
    if start < page.len() {
        let n = (page.len() - start).min(data.len());
        data[..n].copy_from_slice(&page[start..start + n]);
    }
    transfer::to_host(inner, cmd, &data)?;
    if !cdw10.rae() {
        state.aer.log_read(lid);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The non-zero entries of an effects table as (opcode, raw entry).
    fn entries(table: &[CommandEffects; 256]) -> Vec<(u8, u32)> {
        (0..=255u8)
            .zip(table.iter())
            .filter(|(_, e)| u32::from(**e) != 0)
            .map(|(op, e)| (op, u32::from(*e)))
            .collect()
    }

    #[test]
    fn commands_supported_and_effects_per_role() {
        let common = [
            0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18,
        ];
        // Virtualization Management (SR-IOV) and TP4159's commands.
        let primary_only = [0x1C, 0x3D, 0x41, 0x42, 0x45];
        // Doorbell Buffer Config, after them in opcode order.
        let last = [0x7C];
        // CSUPP only for admin commands; LBCC as well for the I/O commands that change data.
        let io = vec![(0x00, 1), (0x01, 3), (0x02, 1), (0x08, 3), (0x09, 3)];
        let secondary = effects(Role::Secondary { vfn: 1 });
        let want: Vec<_> = common.iter().chain(&last).map(|&op| (op, 1)).collect();
        assert_eq!(entries(&secondary.admin), want);
        assert_eq!(entries(&secondary.io), io);
        let primary = effects(Role::Primary);
        let want: Vec<_> = common
            .iter()
            .chain(&primary_only)
            .chain(&last)
            .map(|&op| (op, 1))
            .collect();
        assert_eq!(entries(&primary.admin), want);
        assert_eq!(entries(&primary.io), io);
    }
}
