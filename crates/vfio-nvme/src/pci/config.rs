//! PCI configuration space of an NVMe function (a VF, or the PF).
//!
//! A type 0 header with class code 01:08:02 (mass storage, NVM, NVMe I/O controller), one 64-bit
//! memory BAR (BAR0), and two capabilities: MSI-X at 40h and PCI Express (endpoint) at 50h. The
//! extended space (100h–FFFh) holds no capability, but for the PF's SR-IOV capability
//! ([`super::sriov`], placed with [`ConfigSpace::with_capability`]). Writes go through a
//! per-byte write mask, so read-only fields stay read-only and BAR sizing (write all ones, read
//! back the size mask) works.

use std::sync::Mutex;

use super::BAR0_SIZE;
use super::CONFIG_SIZE;
use super::MSIX_PBA_OFFSET;
use super::MSIX_TABLE_OFFSET;
use super::face::PciFaceMismatch;

/// Offset of the MSI-X capability.
pub const MSIX_CAP: usize = 0x40;
/// Offset of the PCI Express capability.
pub const PCIE_CAP: usize = 0x50;
/// MSI-X Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X Message Control: Function Mask.
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;
/// PCI Command register: Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// PCI Command register: Bus Master Enable.
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// Configuration space contents and which bits the host may change.
#[derive(Debug)]
pub struct ConfigSpace {
    inner: Mutex<Bytes>,
    /// Capabilities added beyond the standard ones, as (offset, reset value, write mask), put
    /// back by a reset.
    added: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct Bytes {
    data: Vec<u8>,
    writable: Vec<u8>,
}

impl Bytes {
    fn put(&mut self, offset: usize, value: &[u8], writable: &[u8]) {
        self.data[offset..offset + value.len()].copy_from_slice(value);
        self.writable[offset..offset + writable.len()].copy_from_slice(writable);
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.data[offset], self.data[offset + 1]])
    }
}

impl ConfigSpace {
    /// The configuration space of a VF with `vendor`/`device` IDs and `vectors` MSI-X vectors.
    pub fn new(vendor: u16, device: u16, vectors: u16) -> Self {
        let size = CONFIG_SIZE as usize;
        let mut b = Bytes {
            data: vec![0; size],
            writable: vec![0; size],
        };
        b.put(0x00, &vendor.to_le_bytes(), &[0, 0]);
        b.put(0x02, &device.to_le_bytes(), &[0, 0]);
        // Command: I/O space, memory space, bus master, INTx disable are writable.
        b.put(0x04, &0u16.to_le_bytes(), &0x0407u16.to_le_bytes());
        // Status: capabilities list present.
        b.put(0x06, &0x0010u16.to_le_bytes(), &[0, 0]);
        // Revision 0, class code 01:08:02 (programming interface 02h = NVMe I/O controller).
        b.put(0x08, &[0x00, 0x02, 0x08, 0x01], &[0; 4]);
        // Cache line size is writable; header type 0.
        b.put(0x0C, &[0, 0, 0, 0], &[0xFF, 0, 0, 0]);
        // BAR0: 64-bit non-prefetchable memory; the size sets which address bits are writable.
        let mask = !(BAR0_SIZE as u32 - 1);
        b.put(0x10, &0x4u32.to_le_bytes(), &(mask & !0xF).to_le_bytes());
        b.put(0x14, &0u32.to_le_bytes(), &u32::MAX.to_le_bytes());
        // Subsystem vendor/device.
        b.put(0x2C, &vendor.to_le_bytes(), &[0, 0]);
        b.put(0x2E, &device.to_le_bytes(), &[0, 0]);
        // Capabilities pointer; interrupt line writable; no INTx pin (MSI-X only).
        b.put(0x34, &[MSIX_CAP as u8], &[0]);
        b.put(0x3C, &[0, 0], &[0xFF, 0]);
        // MSI-X: table in BAR0 at 2000h, PBA in BAR0 at 3000h; enable and function mask writable.
        let table_size = vectors.saturating_sub(1) & 0x7FF;
        b.put(MSIX_CAP, &[0x11, PCIE_CAP as u8], &[0, 0]);
        b.put(
            MSIX_CAP + 2,
            &table_size.to_le_bytes(),
            &(MSIX_ENABLE | MSIX_FUNCTION_MASK).to_le_bytes(),
        );
        b.put(
            MSIX_CAP + 4,
            &(MSIX_TABLE_OFFSET as u32).to_le_bytes(),
            &[0; 4],
        );
        b.put(
            MSIX_CAP + 8,
            &(MSIX_PBA_OFFSET as u32).to_le_bytes(),
            &[0; 4],
        );
        // PCI Express capability v2, endpoint; 512-byte max payload; FLR capable.
        b.put(PCIE_CAP, &[0x10, 0x00], &[0, 0]);
        b.put(PCIE_CAP + 2, &0x0002u16.to_le_bytes(), &[0, 0]);
        let devcap: u32 = 0b010 | (1 << 28);
        b.put(PCIE_CAP + 4, &devcap.to_le_bytes(), &[0; 4]);
        // Device Control writable (the FLR bit, 15, is handled as a reset by the device).
        b.put(
            PCIE_CAP + 8,
            &0x2810u16.to_le_bytes(),
            &0xFFFFu16.to_le_bytes(),
        );
        b.put(PCIE_CAP + 10, &0u16.to_le_bytes(), &[0, 0]);
        // Link capabilities: 8 GT/s, x4; link status: same, trained.
        b.put(PCIE_CAP + 12, &0x0000_0043u32.to_le_bytes(), &[0; 4]);
        b.put(PCIE_CAP + 16, &0u16.to_le_bytes(), &0xFFFFu16.to_le_bytes());
        b.put(PCIE_CAP + 18, &0x0043u16.to_le_bytes(), &[0, 0]);
        // Device Capabilities 2 / Control 2.
        b.put(PCIE_CAP + 36, &0u32.to_le_bytes(), &[0; 4]);
        b.put(PCIE_CAP + 40, &0u16.to_le_bytes(), &0xFFFFu16.to_le_bytes());
        Self {
            inner: Mutex::new(b),
            added: Vec::new(),
        }
    }

    /// Adds a capability: `value` at `offset`, with `writable` (as long as `value`) saying
    /// which bits the host may change. The capability keeps its place across resets.
    ///
    /// # Panics
    ///
    /// If it does not fit in configuration space or `writable` is not as long as `value` (a
    /// bug in the caller, not something a host can cause).
    pub fn with_capability(mut self, offset: usize, value: Vec<u8>, writable: Vec<u8>) -> Self {
        assert!(offset + value.len() <= CONFIG_SIZE as usize && writable.len() == value.len());
        self.lock().put(offset, &value, &writable);
        self.added.push((offset, value, writable));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bytes> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies `buf.len()` bytes at `offset`; returns false if the range is outside the space.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let b = self.lock();
        let Some(range) = range(offset, buf.len(), b.data.len()) else {
            return false;
        };
        buf.copy_from_slice(&b.data[range]);
        true
    }

    /// Applies a write through the write mask; returns false if the range is outside the space.
    pub fn write(&self, offset: u64, data: &[u8]) -> bool {
        let mut b = self.lock();
        let Some(range) = range(offset, data.len(), b.data.len()) else {
            return false;
        };
        for (i, value) in range.zip(data) {
            let mask = b.writable[i];
            b.data[i] = (b.data[i] & !mask) | (value & mask);
        }
        true
    }

    /// The MSI-X Message Control word.
    pub fn msix_control(&self) -> u16 {
        self.lock().u16_at(MSIX_CAP + 2)
    }

    /// The PCI Command register.
    pub fn command(&self) -> u16 {
        self.lock().u16_at(0x04)
    }

    /// Whether a write of `data` at `offset` touched the PCIe Device Control's Initiate
    /// Function Level Reset bit with a 1.
    pub fn is_flr(offset: u64, data: &[u8]) -> bool {
        let bit = (PCIE_CAP + 8 + 1) as u64;
        offset <= bit
            && bit < offset + data.len() as u64
            && data[(bit - offset) as usize] & 0x80 != 0
    }

    /// Sets the MSI-X Table Size to `vectors` (at least one: the field is N − 1).
    pub fn set_msix_table_size(&self, vectors: u16) {
        let size = vectors.saturating_sub(1) & 0x7FF;
        let mut b = self.lock();
        let control = (b.u16_at(MSIX_CAP + 2) & !0x7FF) | size;
        b.data[MSIX_CAP + 2..MSIX_CAP + 4].copy_from_slice(&control.to_le_bytes());
    }

    /// The first `len` bytes as they are now (what migrates).
    pub fn saved(&self, len: usize) -> Vec<u8> {
        let b = self.lock();
        b.data[..len.min(b.data.len())].to_vec()
    }

    /// Checks that `saved` (the first bytes of another function's space) differs from this
    /// space only in bits the host can write: the same device, with the same read-only fields.
    pub fn check(&self, saved: &[u8]) -> Result<(), PciFaceMismatch> {
        let b = self.lock();
        for (offset, &value) in saved.iter().enumerate() {
            let (Some(&ours), Some(&writable)) = (b.data.get(offset), b.writable.get(offset))
            else {
                return Err(PciFaceMismatch::ConfigLength { len: saved.len() });
            };
            if (value ^ ours) & !writable != 0 {
                return Err(PciFaceMismatch::ReadOnly {
                    offset,
                    source_value: value,
                    destination_value: ours,
                    read_only: !writable,
                });
            }
        }
        Ok(())
    }

    /// Takes `saved` as the first bytes of the space, after [`check`](Self::check): the writable
    /// registers as another function's guest and VMM left them. Nothing of a write's side
    /// effects (a function-level reset) happens.
    pub fn restore(&self, saved: &[u8]) -> Result<(), PciFaceMismatch> {
        self.check(saved)?;
        self.lock().data[..saved.len()].copy_from_slice(saved);
        Ok(())
    }

    /// Returns the writable registers to their reset values (a function-level reset keeps the
    /// read-only contents).
    pub fn reset(&self, vendor: u16, device: u16, vectors: u16) {
        let mut fresh = Self::new(vendor, device, vectors).lock().clone();
        for (offset, value, writable) in &self.added {
            fresh.put(*offset, value, writable);
        }
        *self.lock() = fresh;
    }
}

fn range(offset: u64, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(c.read(off, &mut b));
        u32::from_le_bytes(b)
    }

    #[test]
    fn header_identifies_an_nvme_controller() {
        let c = ConfigSpace::new(0x4E56, 0x4C4D, 65);
        assert_eq!(u32_at(&c, 0), 0x4C4D_4E56);
        // Class code 01:08:02 in bytes 9..12, revision 0.
        assert_eq!(u32_at(&c, 8), 0x0108_0200);
        assert_eq!(u32_at(&c, 0x34) & 0xFF, 0x40);
        // MSI-X: id 11h, next 50h, table size 64 (N-1), table/PBA in BAR0.
        assert_eq!(u32_at(&c, 0x40), 0x0040_5011);
        assert_eq!(u32_at(&c, 0x44), 0x2000);
        assert_eq!(u32_at(&c, 0x48), 0x3000);
        assert_eq!(u32_at(&c, 0x50) & 0xFFFF, 0x0010);
    }

    #[test]
    fn bar_sizing_and_read_only_fields() {
        let c = ConfigSpace::new(1, 2, 4);
        assert!(c.write(0x10, &u32::MAX.to_le_bytes()));
        assert_eq!(u32_at(&c, 0x10), !(BAR0_SIZE as u32 - 1) | 0x4);
        assert!(c.write(0x14, &u32::MAX.to_le_bytes()));
        assert_eq!(u32_at(&c, 0x14), u32::MAX);
        assert!(c.write(0x10, &0xFEBF_0000u32.to_le_bytes()));
        assert_eq!(u32_at(&c, 0x10), 0xFEBF_0004);
        // Vendor ID and class code ignore writes.
        assert!(c.write(0, &[0xFF; 4]));
        assert!(c.write(8, &[0xFF; 4]));
        assert_eq!(u32_at(&c, 0), 0x0002_0001);
        assert_eq!(u32_at(&c, 8), 0x0108_0200);
        // Out of range.
        assert!(!c.read(0xFFE, &mut [0u8; 4]));
        assert!(!c.write(u64::MAX, &[1]));
    }

    #[test]
    fn msix_control_and_command() {
        let c = ConfigSpace::new(1, 2, 4);
        assert_eq!(c.msix_control() & MSIX_ENABLE, 0);
        assert!(c.write(0x42, &(MSIX_ENABLE | 0x7FF).to_le_bytes()));
        // Enable is writable, the table size is not.
        assert_eq!(c.msix_control(), MSIX_ENABLE | 3);
        assert!(c.write(4, &0x0006u16.to_le_bytes()));
        assert_eq!(c.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
        assert!(ConfigSpace::is_flr(0x58, &0x8000u16.to_le_bytes()));
        assert!(!ConfigSpace::is_flr(0x58, &0x0010u16.to_le_bytes()));
        c.reset(1, 2, 4);
        assert_eq!(c.msix_control(), 3);
        // The table size follows the vectors a controller offers, keeping the control bits.
        assert!(c.write(0x42, &MSIX_ENABLE.to_le_bytes()));
        c.set_msix_table_size(2);
        assert_eq!(c.msix_control(), MSIX_ENABLE | 1);
        c.set_msix_table_size(0);
        assert_eq!(c.msix_control(), MSIX_ENABLE);
    }

    #[test]
    fn added_capabilities_keep_their_place_and_mask_across_resets() {
        let c = ConfigSpace::new(1, 2, 4).with_capability(
            0x100,
            vec![0x10, 0, 1, 0, 7],
            vec![0, 0, 0, 0, 0xFF],
        );
        assert!(c.write(0x100, &[0xFF; 5]));
        let mut got = [0u8; 5];
        assert!(c.read(0x100, &mut got));
        assert_eq!(got, [0x10, 0, 1, 0, 0xFF]);
        c.reset(1, 2, 4);
        assert!(c.read(0x100, &mut got));
        assert_eq!(got, [0x10, 0, 1, 0, 7]);
    }
}
