//! Interrupts: `DEVICE_GET_IRQ_INFO` and `DEVICE_SET_IRQS`, validated against the device's IRQ
//! indices and vector counts and turned into an [`IrqRequest`]. Interrupt descriptors must be
//! eventfds ([`Eventfd::new`]): anything else could block the device's writer for good.

use std::os::fd::OwnedFd;

use vfio_migration::Errno;

use crate::framing::encode_reply;
use crate::header::Header;
use crate::irq::IrqAction;
use crate::irq::IrqInfo;
use crate::irq::IrqSet;
use crate::irq::IrqSetData;
use crate::irq::IrqSetReply;

use super::device::IrqRequest;
use super::eventfd::Eventfd;
use super::session::Handled;
use super::session::Session;
use super::transport::Outgoing;

impl Session<'_> {
    /// `DEVICE_GET_IRQ_INFO`.
    pub(super) fn irq_info(&self, header: &Header, request: &IrqInfo) -> Handled {
        let index = request.index;
        if index >= self.device.num_irqs() {
            return Err(Errno::EINVAL);
        }
        let (count, flags) = self.device.irq_info(index).ok_or(Errno::EINVAL)?;
        let reply = IrqInfo {
            argsz: size_of::<IrqInfo>() as u32,
            flags,
            index,
            count,
        };
        Ok(Outgoing::new(encode_reply(header, &reply)))
    }

    /// `DEVICE_SET_IRQS`: the index must exist and `start + count` must fit its vectors (the
    /// codec already checked that eventfd requests carry 0 or `count` descriptors).
    pub(super) fn set_irqs(&self, header: &Header, set: &IrqSet, fds: Vec<OwnedFd>) -> Handled {
        if set.index >= self.device.num_irqs() {
            tracing::warn!(index = set.index, "DEVICE_SET_IRQS for a missing IRQ index");
            return Err(Errno::EINVAL);
        }
        let (vectors, _) = self.device.irq_info(set.index).ok_or(Errno::EINVAL)?;
        let request = if set.disables_all() && set.start == 0 && set.action == IrqAction::Trigger {
            IrqRequest::DisableAll
        } else {
            let end = set.start.checked_add(set.count);
            if set.count == 0 || end.is_none_or(|end| end > vectors) {
                tracing::warn!(
                    index = set.index,
                    start = set.start,
                    count = set.count,
                    vectors,
                    "DEVICE_SET_IRQS outside the index's vectors"
                );
                return Err(Errno::EINVAL);
            }
            match &set.data {
                IrqSetData::Eventfd => IrqRequest::Eventfds {
                    action: set.action,
                    start: set.start,
                    fds: eventfds(set, fds)?,
                },
                IrqSetData::None => IrqRequest::Action {
                    action: set.action,
                    start: set.start,
                    count: set.count,
                    mask: None,
                },
                IrqSetData::Bool(mask) => IrqRequest::Action {
                    action: set.action,
                    start: set.start,
                    count: set.count,
                    mask: Some(mask.clone()),
                },
            }
        };
        self.device.set_irqs(set.index, request)?;
        Ok(Outgoing::new(encode_reply(header, &IrqSetReply)))
    }
}

/// The eventfds of an eventfd-data `DEVICE_SET_IRQS`, one slot per vector (`None` de-assigns);
/// EINVAL, with a warning naming the vector, for a descriptor that is not an eventfd.
fn eventfds(set: &IrqSet, fds: Vec<OwnedFd>) -> Result<Vec<Option<Eventfd>>, Errno> {
    let slots = set.eventfd_slots(fds).map_err(|err| err.errno())?;
    slots
        .into_iter()
        .map(|(vector, fd)| {
            fd.map(Eventfd::new).transpose().map_err(|err| {
                tracing::warn!(
                    index = set.index,
                    vector,
                    "DEVICE_SET_IRQS refused for IRQ {} vector {vector}: {err}",
                    set.index
                );
                Errno::EINVAL
            })
        })
        .collect()
}
