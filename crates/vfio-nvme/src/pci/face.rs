//! The PCI face of a function (a VF or the PF) as one piece: its configuration space and its MSI-X
//! state, and how they travel with a migration (the stream's `PciFace` record).
//!
//! The source captures the face in STOP_COPY, next to the controller state; the destination
//! checks it before Set Controller State (the same device: every read-only configuration bit
//! and the vector count agree) and takes it once the controller has taken its state. Masks and
//! pending bits move with it, so a vector that fired while masked on the source fires on the
//! destination when the guest unmasks it. Eventfds do not move: they are the client's
//! configuration, which the client gives the destination itself.

use std::sync::Arc;

use nvme_device::PCI_DEVICE_ID;
use nvme_device::PCI_VENDOR_ID;

use super::config::ConfigSpace;
use super::msix::Msix;
use crate::stream::PCI_FACE_CONFIG_BYTES;
use crate::stream::PciFaceState;

/// Why a function cannot take another function's PCI face.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PciFaceMismatch {
    /// The functions have different numbers of MSI-X vectors (the guest sees the table size).
    #[error(
        "the source function has {source_vectors} MSI-X vectors, this one {destination_vectors}"
    )]
    Vectors {
        /// The source's.
        source_vectors: usize,
        /// This function's.
        destination_vectors: usize,
    },
    /// A configuration byte differs in bits the host cannot write: another kind of device.
    #[error(
        "PCI configuration byte {offset:#04x} is {source_value:#04x} on the source and \
         {destination_value:#04x} here, in bits the host cannot write ({read_only:#04x})"
    )]
    ReadOnly {
        /// The offset in configuration space.
        offset: usize,
        /// The source's byte.
        source_value: u8,
        /// This function's byte.
        destination_value: u8,
        /// The read-only bits of the byte.
        read_only: u8,
    },
    /// The saved configuration space is longer than this function's.
    #[error("the source's configuration space of {len} bytes does not fit this function's")]
    ConfigLength {
        /// Its length.
        len: usize,
    },
}

/// The configuration space and MSI-X state of one function.
#[derive(Debug)]
pub struct PciFace {
    config: ConfigSpace,
    msix: Arc<Msix>,
}

impl PciFace {
    /// The face of a vfio-nvme function with `vectors` MSI-X vectors, after reset.
    pub fn new(vectors: u16) -> Self {
        Self::with_config(
            ConfigSpace::new(PCI_VENDOR_ID, PCI_DEVICE_ID, vectors),
            vectors,
        )
    }

    /// The face with configuration space `config` (e.g. one with an SR-IOV capability) and
    /// `vectors` MSI-X vectors.
    pub fn with_config(config: ConfigSpace, vectors: u16) -> Self {
        Self {
            config,
            msix: Arc::new(Msix::new(vectors)),
        }
    }

    /// The configuration space.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    /// The MSI-X state, which is also what the controller raises interrupts through.
    pub fn msix(&self) -> &Arc<Msix> {
        &self.msix
    }

    /// A configuration write through the write mask; MSI-X follows its Message Control word.
    /// Returns false if the range is outside the space.
    pub fn write_config(&self, offset: u64, data: &[u8]) -> bool {
        if !self.config.write(offset, data) {
            return false;
        }
        self.msix.set_control(self.config.msix_control());
        true
    }

    /// A function-level reset of the face: configuration registers and MSI-X back to their
    /// reset values (eventfds stay).
    pub fn reset(&self) {
        let vectors = self.msix.count() as u16;
        self.config.reset(PCI_VENDOR_ID, PCI_DEVICE_ID, vectors);
        self.msix.reset();
    }

    /// The face as it is now, for the migration stream.
    pub fn capture(&self) -> PciFaceState {
        let (msix_table, masked, pending) = self.msix.saved();
        PciFaceState {
            config: self.config.saved(PCI_FACE_CONFIG_BYTES),
            msix_table,
            masked,
            pending,
        }
    }

    /// Checks that this function can take `state`: the same vector count and the same
    /// read-only configuration. Changes nothing.
    pub fn check(&self, state: &PciFaceState) -> Result<(), PciFaceMismatch> {
        let ours = self.msix.count() as usize;
        if state.vectors() != ours {
            return Err(PciFaceMismatch::Vectors {
                source_vectors: state.vectors(),
                destination_vectors: ours,
            });
        }
        self.config.check(&state.config)
    }

    /// Takes `state` (after [`check`](Self::check)): configuration registers, MSI-X enable and
    /// function mask, table, masks and pending bits. Nothing fires now.
    pub fn restore(&self, state: &PciFaceState) -> Result<(), PciFaceMismatch> {
        self.check(state)?;
        self.config.restore(&state.config)?;
        self.msix.restore(
            self.config.msix_control(),
            &state.msix_table,
            &state.masked,
            &state.pending,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nvme_device::interrupt::Interrupt;

    use super::*;
    use crate::pci::config::MSIX_CAP;
    use crate::pci::config::MSIX_ENABLE;

    fn pba(face: &PciFace) -> u8 {
        let mut bits = [0u8; 8];
        assert!(face.msix().pba_read(0, &mut bits));
        bits[0]
    }

    /// A face a guest has used: memory and bus mastering on, MSI-X enabled, vector 1 masked
    /// with DEVICE_SET_IRQS and pending, vector 2 masked through its table entry.
    fn used() -> PciFace {
        let face = PciFace::new(4);
        assert!(face.write_config(4, &0x0006u16.to_le_bytes()));
        assert!(face.write_config(MSIX_CAP as u64 + 2, &MSIX_ENABLE.to_le_bytes()));
        let entry: Vec<u8> = (0..12u8).chain([1, 0, 0, 0]).collect();
        assert!(face.msix().table_write(2 * 16, &entry));
        face.msix().set_masked(1, 1, None, true);
        face.msix().signal(1);
        face
    }

    #[test]
    fn a_face_travels_whole_and_a_pending_vector_fires_on_unmask() {
        let source = used();
        assert_eq!(pba(&source), 0b10);
        let saved = source.capture();
        assert_eq!(saved.masked, [false, true, true, false]);
        assert_eq!(saved.pending, [false, true, false, false]);
        let destination = PciFace::new(4);
        destination.restore(&saved).unwrap();
        assert_eq!(destination.capture(), saved);
        assert_eq!(destination.config().command(), 0x0006);
        assert_eq!(
            destination.config().msix_control() & MSIX_ENABLE,
            MSIX_ENABLE
        );
        let mut entry = [0u8; 16];
        assert!(destination.msix().table_read(2 * 16, &mut entry));
        assert_eq!(entry[12], 1);
        // Nothing fired on restore; the unmask delivers the interrupt that waited.
        assert_eq!(pba(&destination), 0b10);
        destination.msix().set_masked(1, 1, None, false);
        assert_eq!(pba(&destination), 0);
        // Vector 2 is still masked: an interrupt waits for its table entry's unmask.
        destination.msix().signal(2);
        assert_eq!(pba(&destination), 0b100);
        assert!(
            destination
                .msix()
                .table_write(2 * 16 + 12, &0u32.to_le_bytes())
        );
        assert_eq!(pba(&destination), 0);
    }

    #[test]
    fn another_kind_of_function_is_refused_and_left_alone() {
        let saved = used().capture();
        let bigger = PciFace::new(5);
        assert_eq!(
            bigger.restore(&saved),
            Err(PciFaceMismatch::Vectors {
                source_vectors: 4,
                destination_vectors: 5
            })
        );
        let mut other_vendor = saved.clone();
        other_vendor.config[0] ^= 1;
        let destination = PciFace::new(4);
        let before = destination.capture();
        assert_eq!(
            destination.check(&other_vendor),
            Err(PciFaceMismatch::ReadOnly {
                offset: 0,
                source_value: 0x57,
                destination_value: 0x56,
                read_only: 0xFF
            })
        );
        assert!(destination.restore(&other_vendor).is_err());
        assert_eq!(
            destination.capture(),
            before,
            "a refused face changes nothing"
        );
    }
}
