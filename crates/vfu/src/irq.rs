//! `DEVICE_GET_IRQ_INFO` (command 7) and `DEVICE_SET_IRQS` (command 8).

use bitflags::bitflags;
use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire;

bitflags! {
    /// `vfio_irq_info.flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct IrqInfoFlags: u32 {
        /// The IRQ type can signal an eventfd.
        const EVENTFD = 1 << 0;
        /// MASK/UNMASK actions are supported.
        const MASKABLE = 1 << 1;
        /// The IRQ masks itself when triggered (INTx).
        const AUTOMASKED = 1 << 2;
        /// Vectors are set up as a set; enabling more requires disabling all (MSI).
        const NORESIZE = 1 << 3;
    }
}

/// `DEVICE_GET_IRQ_INFO` request and reply body (16 bytes, `struct vfio_irq_info`): argsz 0,
/// flags 4, index 8, count 12. The request sets argsz and index; the reply fills flags and count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct IrqInfo {
    /// Request: largest reply accepted. Reply: 16.
    pub argsz: u32,
    /// [`IrqInfoFlags`] bits (reply).
    pub flags: u32,
    /// IRQ type index (`VFIO_PCI_*_IRQ_INDEX`).
    pub index: u32,
    /// Number of vectors of this type (reply).
    pub count: u32,
}

const _: () = assert!(size_of::<IrqInfo>() == 16);

impl IrqInfo {
    /// The flags as a typed set (unknown bits kept).
    pub fn flags(&self) -> IrqInfoFlags {
        IrqInfoFlags::from_bits_retain(self.flags)
    }
}

wire::fixed_payload!(
    IrqInfo,
    Command::DEVICE_GET_IRQ_INFO,
    "irq_info",
    IrqInfo::check
);

impl IrqInfo {
    /// The decoder's check: `argsz` covers the 16-byte structure.
    fn check(&self, _limits: &Limits) -> Result<(), DecodeError> {
        wire::check_argsz(
            Command::DEVICE_GET_IRQ_INFO,
            self.argsz,
            size_of::<Self>(),
            "smaller than the 16-byte irq info",
        )
    }
}

/// The fixed part of `DEVICE_SET_IRQS` (20 bytes, `struct vfio_irq_set`): argsz 0, flags 4,
/// index 8, start 12, count 16; data follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
pub struct VfioIrqSet {
    /// Size of the request payload including data (there is no reply payload).
    pub argsz: u32,
    /// One DATA_* bit and one ACTION_* bit.
    pub flags: u32,
    /// IRQ type index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
}

const _: () = assert!(size_of::<VfioIrqSet>() == 20);

/// `VFIO_IRQ_SET_DATA_NONE`.
pub const IRQ_SET_DATA_NONE: u32 = 1 << 0;
/// `VFIO_IRQ_SET_DATA_BOOL`.
pub const IRQ_SET_DATA_BOOL: u32 = 1 << 1;
/// `VFIO_IRQ_SET_DATA_EVENTFD`.
pub const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
/// `VFIO_IRQ_SET_ACTION_MASK`.
pub const IRQ_SET_ACTION_MASK: u32 = 1 << 3;
/// `VFIO_IRQ_SET_ACTION_UNMASK`.
pub const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
/// `VFIO_IRQ_SET_ACTION_TRIGGER`.
pub const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

const DATA_MASK: u32 = IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD;
const ACTION_MASK: u32 = IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER;

/// What a `DEVICE_SET_IRQS` does to the selected vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqAction {
    /// Mask (or, with eventfds, signal on mask).
    Mask,
    /// Unmask (or, with eventfds, signal on unmask).
    Unmask,
    /// Trigger (or, with eventfds, the eventfd the server signals for the interrupt).
    Trigger,
}

impl IrqAction {
    fn bits(self) -> u32 {
        match self {
            Self::Mask => IRQ_SET_ACTION_MASK,
            Self::Unmask => IRQ_SET_ACTION_UNMASK,
            Self::Trigger => IRQ_SET_ACTION_TRIGGER,
        }
    }
}

/// The data of a `DEVICE_SET_IRQS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqSetData {
    /// Act on every selected vector. With `start == 0 && count == 0` this disables every
    /// vector of the index.
    None,
    /// Act on vector `start + i` only where `flags[i]` is true (`count` bytes on the wire).
    Bool(Vec<bool>),
    /// Eventfds in the ancillary data: either `count` of them (one per vector), or none, which
    /// de-assigns every selected vector (the kernel's fd value -1 for each). No payload bytes.
    Eventfd,
}

/// A `DEVICE_SET_IRQS` request (no reply payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqSet {
    /// The action.
    pub action: IrqAction,
    /// The data type and data.
    pub data: IrqSetData,
    /// IRQ type index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors (equals the bool array's length for [`IrqSetData::Bool`]).
    pub count: u32,
}

impl IrqSet {
    /// Whether this is the "disable every vector of this index" request (DATA_NONE, count 0).
    pub fn disables_all(&self) -> bool {
        self.data == IrqSetData::None && self.count == 0
    }

    /// Checks the number of fds that arrived with the request: `count` or 0 for eventfd data,
    /// 0 otherwise.
    pub fn check_fds(&self, fds: usize) -> Result<(), DecodeError> {
        let ok = match self.data {
            IrqSetData::Eventfd => fds == 0 || fds == self.count as usize,
            IrqSetData::None | IrqSetData::Bool(_) => fds == 0,
        };
        if ok {
            return Ok(());
        }
        let expected = match self.data {
            IrqSetData::Eventfd => format!("0 or {}", self.count),
            IrqSetData::None | IrqSetData::Bool(_) => "0".to_owned(),
        };
        Err(DecodeError::FdCount {
            command: Command::DEVICE_SET_IRQS,
            got: fds,
            expected,
        })
    }

    /// Pairs each selected vector with its eventfd: `fds` (after [`Self::check_fds`]) has either
    /// one fd per vector, or none, meaning every vector is de-assigned (`None`, the kernel's -1).
    /// Returns `(vector, fd)` pairs.
    pub fn eventfd_slots<F>(&self, fds: Vec<F>) -> Result<Vec<(u32, Option<F>)>, DecodeError> {
        self.check_fds(fds.len())?;
        let vectors = self.start..self.start.saturating_add(self.count);
        if fds.is_empty() {
            Ok(vectors.map(|v| (v, None)).collect())
        } else {
            Ok(vectors.zip(fds.into_iter().map(Some)).collect())
        }
    }
}

impl Payload for IrqSet {
    const COMMAND: Command = Command::DEVICE_SET_IRQS;

    fn encode(&self, out: &mut Vec<u8>) {
        let (data_bit, data): (u32, Vec<u8>) = match &self.data {
            IrqSetData::None => (IRQ_SET_DATA_NONE, Vec::new()),
            IrqSetData::Bool(flags) => (
                IRQ_SET_DATA_BOOL,
                flags.iter().map(|&b| u8::from(b)).collect(),
            ),
            IrqSetData::Eventfd => (IRQ_SET_DATA_EVENTFD, Vec::new()),
        };
        wire::put(
            out,
            &VfioIrqSet {
                argsz: wire::len_u32(size_of::<VfioIrqSet>() + data.len()),
                flags: data_bit | self.action.bits(),
                index: self.index,
                start: self.start,
                count: self.count,
            },
        );
        out.extend_from_slice(&data);
    }

    /// Decodes and validates: no unknown flag bits, exactly one DATA_* and one ACTION_* bit,
    /// `start + count` within `u32`, `argsz` covering the payload, and exactly `count` bool bytes
    /// for DATA_BOOL (no data bytes otherwise).
    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let c = Self::COMMAND;
        let invalid =
            |field, value: u32, reason| DecodeError::invalid(c, field, value.into(), reason);
        let (fixed, rest) = wire::read::<VfioIrqSet>(c, "irq_set", bytes)?;
        if fixed.flags & !(DATA_MASK | ACTION_MASK) != 0 {
            return Err(invalid("flags", fixed.flags, "unknown bits"));
        }
        let data_bits = fixed.flags & DATA_MASK;
        let action = match fixed.flags & ACTION_MASK {
            IRQ_SET_ACTION_MASK => IrqAction::Mask,
            IRQ_SET_ACTION_UNMASK => IrqAction::Unmask,
            IRQ_SET_ACTION_TRIGGER => IrqAction::Trigger,
            _ => {
                return Err(invalid(
                    "flags",
                    fixed.flags,
                    "needs exactly one ACTION bit",
                ));
            }
        };
        if fixed.start.checked_add(fixed.count).is_none() {
            return Err(invalid("count", fixed.count, "start + count overflows"));
        }
        let data = match data_bits {
            IRQ_SET_DATA_NONE => {
                wire::expect_end(c, "irq_set", rest)?;
                IrqSetData::None
            }
            IRQ_SET_DATA_EVENTFD => {
                wire::expect_end(c, "irq_set", rest)?;
                IrqSetData::Eventfd
            }
            IRQ_SET_DATA_BOOL => {
                let (data, rest) = wire::take(c, "bool data", rest, fixed.count as usize)?;
                wire::expect_end(c, "bool data", rest)?;
                IrqSetData::Bool(data.iter().map(|&b| b != 0).collect())
            }
            _ => return Err(invalid("flags", fixed.flags, "needs exactly one DATA bit")),
        };
        if (fixed.argsz as usize) < bytes.len() {
            return Err(invalid(
                "argsz",
                fixed.argsz,
                "smaller than the request payload",
            ));
        }
        Ok(Self {
            action,
            data,
            index: fixed.index,
            start: fixed.start,
            count: fixed.count,
        })
    }
}

/// `DEVICE_SET_IRQS` reply: no payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqSetReply;

wire::empty_payload!(IrqSetReply, Command::DEVICE_SET_IRQS);

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use proptest::prelude::*;
    use vfio_migration::Errno;

    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(offset_of!(IrqInfo, flags), 4);
        assert_eq!(offset_of!(IrqInfo, index), 8);
        assert_eq!(offset_of!(IrqInfo, count), 12);
        assert_eq!(offset_of!(VfioIrqSet, flags), 4);
        assert_eq!(offset_of!(VfioIrqSet, index), 8);
        assert_eq!(offset_of!(VfioIrqSet, start), 12);
        assert_eq!(offset_of!(VfioIrqSet, count), 16);
    }

    #[test]
    fn qemu_msix_eventfd_request_vector() {
        // QEMU: 4 MSI-X vectors (index 2) with eventfds; argsz 20, fds in SCM_RIGHTS.
        let bytes = [
            20, 0, 0, 0, 0x24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0,
        ];
        let set = IrqSet::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(set.action, IrqAction::Trigger);
        assert_eq!(set.data, IrqSetData::Eventfd);
        assert_eq!((set.index, set.start, set.count), (2, 0, 4));
        assert_eq!(set.to_bytes(), bytes);
        assert!(set.check_fds(4).is_ok());
        assert!(set.check_fds(3).is_err());
        let slots = set.eventfd_slots(vec![10, 11, 12, 13]).unwrap();
        assert_eq!(slots[3], (3, Some(13)));
        let cleared = set.eventfd_slots::<i32>(vec![]).unwrap();
        assert_eq!(cleared, vec![(0, None), (1, None), (2, None), (3, None)]);
    }

    #[test]
    fn flag_validation() {
        let l = Limits::default();
        let make = |flags: u32, count: u32, data: &[u8]| {
            let mut b = VfioIrqSet {
                argsz: 20 + data.len() as u32,
                flags,
                index: 0,
                start: 0,
                count,
            }
            .as_bytes()
            .to_vec();
            b.extend_from_slice(data);
            b
        };
        let cases: [(u32, u32, &[u8]); 6] = [
            (
                IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_MASK,
                0,
                &[],
            ),
            (IRQ_SET_DATA_NONE, 0, &[]),
            (
                IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK,
                0,
                &[],
            ),
            (IRQ_SET_ACTION_TRIGGER, 0, &[]),
            (IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER | 1 << 6, 0, &[]),
            (IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER, 3, &[1, 0]),
        ];
        for (flags, count, data) in cases {
            let err = IrqSet::decode(&make(flags, count, data), &l).unwrap_err();
            assert_eq!(err.errno(), Errno::EINVAL, "{flags:#x}: {err}");
        }
        let disable = IrqSet::decode(
            &make(IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, &[]),
            &l,
        )
        .unwrap();
        assert!(disable.disables_all());
        let bools = IrqSet::decode(
            &make(IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_UNMASK, 2, &[1, 0]),
            &l,
        )
        .unwrap();
        assert_eq!(bools.data, IrqSetData::Bool(vec![true, false]));
        assert!(bools.check_fds(1).is_err());
        let mut overflow = make(IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, u32::MAX, &[]);
        overflow[12] = 1;
        assert!(IrqSet::decode(&overflow, &l).is_err());
        let info = IrqInfo {
            argsz: 16,
            flags: 0xb,
            index: 2,
            count: 4,
        };
        assert_eq!(
            IrqInfo::decode(&info.to_bytes(), &l).unwrap().flags(),
            IrqInfoFlags::EVENTFD | IrqInfoFlags::MASKABLE | IrqInfoFlags::NORESIZE
        );
    }

    fn irq_set() -> impl Strategy<Value = IrqSet> {
        let action = prop_oneof![
            Just(IrqAction::Mask),
            Just(IrqAction::Unmask),
            Just(IrqAction::Trigger)
        ];
        (
            action,
            0u32..8,
            0u32..100,
            proptest::collection::vec(any::<bool>(), 0..40),
            0u8..3,
        )
            .prop_map(|(action, index, start, bools, kind)| {
                let count = bools.len() as u32;
                let data = match kind {
                    0 => IrqSetData::None,
                    1 => IrqSetData::Bool(bools),
                    _ => IrqSetData::Eventfd,
                };
                IrqSet {
                    action,
                    data,
                    index,
                    start,
                    count,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(set in irq_set()) {
            prop_assert_eq!(IrqSet::decode(&set.to_bytes(), &Limits::default()).unwrap(), set);
        }
    }

    #[test]
    fn fuzz_decoders() {
        let l = Limits::default();
        bolero::check!()
            .with_iterations(1000)
            .for_each(|bytes: &[u8]| {
                let _ = IrqInfo::decode(bytes, &l);
                let _ = IrqSet::decode(bytes, &l);
            });
    }
}
