//! How the driver reaches the controller's registers and doorbells.

use std::io;

use super::ShadowEntry;

/// Access to an NVMe controller's BAR0: the register file and the doorbells.
///
/// A vfio-user connection implements it with REGION_READ/REGION_WRITE for registers and stores
/// into the mmapped doorbell page for doorbells; a test can implement it on an in-process
/// controller.
pub trait Bar: Send + Sync {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, offset: u64) -> io::Result<u32>;
    /// Reads the 64-bit register at `offset`.
    fn read64(&self, offset: u64) -> io::Result<u64>;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, offset: u64, value: u32) -> io::Result<()>;
    /// Writes the 64-bit register at `offset` (as two 32-bit writes, low half first, the way
    /// Linux writes ASQ and ACQ, unless the transport can do better).
    fn write64(&self, offset: u64, value: u64) -> io::Result<()> {
        self.write32(offset, value as u32)?;
        self.write32(offset + 4, (value >> 32) as u32)
    }
    /// Writes the doorbell at `offset` in BAR0 (1000h and up). This is the I/O fast path: it
    /// must not block on anything the device does.
    fn doorbell(&self, offset: u64, value: u32);
    /// Publishes `value` for the doorbell at `offset` through its shadow doorbell `entry`
    /// (Doorbell Buffer Config): stores it in host memory and writes the register only when the
    /// controller's EventIdx asks for it. A BAR that must see every doorbell value (a
    /// migration's gate, which meters and holds submissions) overrides it; it is the I/O fast
    /// path like [`doorbell`](Self::doorbell).
    fn shadow_doorbell(&self, offset: u64, value: u32, entry: ShadowEntry<'_>) {
        if entry.publish(value) {
            self.doorbell(offset, value);
        }
    }
}
