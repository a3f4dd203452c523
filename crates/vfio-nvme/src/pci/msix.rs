//! MSI-X delivery: one eventfd per vector, with the masks and pending bits of the MSI-X
//! capability.
//!
//! A vector fires when MSI-X is enabled in the capability's Message Control, the function is not
//! masked and the vector is not masked; otherwise its pending bit is set and it fires when the
//! mask is lifted. Vectors are masked and unmasked either with `DEVICE_SET_IRQS` MASK/UNMASK (how
//! vfio clients do it) or by writing the Vector Control word of the table in BAR0 (clients that
//! forward the guest's table writes).
//!
//! QEMU emulates the MSI-X table itself and never forwards per-vector masks, so the table's mask
//! bits start **clear** here, not set as the PCI specification's reset value says; otherwise a
//! QEMU guest would never get an interrupt. A client that forwards table writes sets the bits
//! explicitly, so both kinds of client work.
//!
//! The eventfds come checked from the vfio-user server ([`Eventfd`]): real eventfds, signalled
//! without ever blocking, so a client cannot stall the controller's I/O thread through them.

use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use nvme_device::interrupt::Interrupt;
use vfu::server::Eventfd;

use super::config::MSIX_ENABLE;
use super::config::MSIX_FUNCTION_MASK;

/// Bytes per MSI-X table entry.
const ENTRY: usize = 16;

#[derive(Debug, Default)]
struct Vector {
    eventfd: RwLock<Option<Eventfd>>,
    masked: AtomicBool,
    pending: AtomicBool,
}

/// The MSI-X state of one function.
#[derive(Debug)]
pub struct Msix {
    enabled: AtomicBool,
    function_masked: AtomicBool,
    vectors: Vec<Vector>,
    table: Mutex<Vec<u8>>,
}

impl Msix {
    /// `count` vectors, all without an eventfd, MSI-X disabled.
    pub fn new(count: u16) -> Self {
        Self {
            enabled: AtomicBool::new(false),
            function_masked: AtomicBool::new(false),
            vectors: (0..count).map(|_| Vector::default()).collect(),
            table: Mutex::new(vec![0; usize::from(count) * ENTRY]),
        }
    }

    /// Number of vectors.
    pub fn count(&self) -> u32 {
        self.vectors.len() as u32
    }

    fn fire(&self, vector: &Vector) {
        let guard = vector.eventfd.read().unwrap_or_else(|p| p.into_inner());
        if let Some(eventfd) = guard.as_ref() {
            // A signal is dropped only when the counter is full: the client has not consumed
            // the earlier ones and the eventfd is readable anyway.
            eventfd.signal();
        }
    }

    fn deliver_pending(&self) {
        if !self.enabled.load(Ordering::Acquire) || self.function_masked.load(Ordering::Acquire) {
            return;
        }
        for v in &self.vectors {
            if !v.masked.load(Ordering::Acquire) && v.pending.swap(false, Ordering::AcqRel) {
                self.fire(v);
            }
        }
    }

    /// Installs eventfds for vectors `start..` (`None` removes one).
    pub fn set_eventfds(&self, start: u32, fds: Vec<Option<Eventfd>>) {
        for (i, fd) in fds.into_iter().enumerate() {
            if let Some(v) = self.vectors.get(start as usize + i) {
                *v.eventfd.write().unwrap_or_else(|p| p.into_inner()) = fd;
            }
        }
    }

    /// Masks or unmasks vectors `start..start + count` (where `which` allows); unmasking
    /// delivers a pending interrupt.
    pub fn set_masked(&self, start: u32, count: u32, which: Option<&[bool]>, masked: bool) {
        for i in 0..count {
            if which.is_some_and(|w| !w.get(i as usize).copied().unwrap_or(false)) {
                continue;
            }
            if let Some(v) = self.vectors.get((start + i) as usize) {
                v.masked.store(masked, Ordering::Release);
            }
        }
        self.deliver_pending();
    }

    /// Fires vectors `start..start + count` now (`DEVICE_SET_IRQS` TRIGGER without eventfds).
    pub fn trigger(&self, start: u32, count: u32) {
        for i in start..start.saturating_add(count) {
            self.signal(i as u16);
        }
    }

    /// Takes the MSI-X Message Control word after a configuration write.
    pub fn set_control(&self, control: u16) {
        self.enabled
            .store(control & MSIX_ENABLE != 0, Ordering::Release);
        self.function_masked
            .store(control & MSIX_FUNCTION_MASK != 0, Ordering::Release);
        self.deliver_pending();
    }

    /// Reads the MSI-X table at `offset` (relative to the table).
    pub fn table_read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        match span(offset, buf.len(), table.len()) {
            Some(r) => {
                buf.copy_from_slice(&table[r]);
                true
            }
            None => false,
        }
    }

    /// Writes the MSI-X table at `offset`; a change of a Vector Control mask bit masks or
    /// unmasks that vector.
    pub fn table_write(&self, offset: u64, data: &[u8]) -> bool {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = span(offset, data.len(), table.len()) else {
            return false;
        };
        let first = r.start / ENTRY;
        let last = (r.end - 1) / ENTRY;
        table[r].copy_from_slice(data);
        for entry in first..=last {
            let masked = table[entry * ENTRY + 12] & 1 != 0;
            if let Some(v) = self.vectors.get(entry) {
                v.masked.store(masked, Ordering::Release);
            }
        }
        drop(table);
        self.deliver_pending();
        true
    }

    /// Reads the pending bit array at `offset` (relative to the PBA).
    pub fn pba_read(&self, offset: u64, buf: &mut [u8]) -> bool {
        let words = self.vectors.len().div_ceil(64);
        let mut pba = vec![0u8; words * 8];
        for (i, v) in self.vectors.iter().enumerate() {
            if v.pending.load(Ordering::Acquire) {
                pba[i / 8] |= 1 << (i % 8);
            }
        }
        match span(offset, buf.len(), pba.len()) {
            Some(r) => {
                buf.copy_from_slice(&pba[r]);
                true
            }
            None => false,
        }
    }

    /// Drops every eventfd (the client went away); masks and pending bits stay.
    pub fn drop_eventfds(&self) {
        for v in &self.vectors {
            *v.eventfd.write().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The table, the mask bits and the pending bits as they are now (what migrates).
    pub fn saved(&self) -> (Vec<u8>, Vec<bool>, Vec<bool>) {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bits = |f: fn(&Vector) -> &AtomicBool| {
            self.vectors
                .iter()
                .map(|v| f(v).load(Ordering::Acquire))
                .collect()
        };
        (table, bits(|v| &v.masked), bits(|v| &v.pending))
    }

    /// Takes another function's MSI-X state: Message Control `control`, the table, the mask
    /// and pending bits (as many as this function has vectors; the caller checked). Nothing is
    /// delivered now, as the function is stopped: a pending vector fires when it is unmasked.
    pub fn restore(&self, control: u16, table: &[u8], masked: &[bool], pending: &[bool]) {
        self.enabled
            .store(control & MSIX_ENABLE != 0, Ordering::Release);
        self.function_masked
            .store(control & MSIX_FUNCTION_MASK != 0, Ordering::Release);
        let mut ours = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let n = ours.len().min(table.len());
        ours[..n].copy_from_slice(&table[..n]);
        drop(ours);
        for ((v, &m), &p) in self.vectors.iter().zip(masked).zip(pending) {
            v.masked.store(m, Ordering::Release);
            v.pending.store(p, Ordering::Release);
        }
    }

    /// Back to the reset state: disabled, nothing masked or pending, table zeroed. Eventfds are
    /// kept: they belong to the client's configuration, not the function's.
    pub fn reset(&self) {
        self.enabled.store(false, Ordering::Release);
        self.function_masked.store(false, Ordering::Release);
        for v in &self.vectors {
            v.masked.store(false, Ordering::Release);
            v.pending.store(false, Ordering::Release);
        }
        self.table.lock().unwrap_or_else(|p| p.into_inner()).fill(0);
    }
}

impl Interrupt for Msix {
    fn signal(&self, vector: u16) {
        let Some(v) = self.vectors.get(usize::from(vector)) else {
            return;
        };
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if self.function_masked.load(Ordering::Acquire) || v.masked.load(Ordering::Acquire) {
            v.pending.store(true, Ordering::Release);
            return;
        }
        self.fire(v);
    }
}

fn span(offset: u64, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::EventfdFlags;
    use std::os::fd::AsFd;
    use std::os::fd::OwnedFd;

    /// An eventfd for a vector and a second handle to read its counter.
    fn eventfd() -> (Eventfd, OwnedFd) {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        let reader = fd.try_clone().unwrap();
        (Eventfd::new(fd).unwrap(), reader)
    }

    /// The interrupts signalled since the last call.
    fn interrupts(fd: &OwnedFd) -> u64 {
        let mut buf = [0u8; 8];
        match rustix::io::read(fd.as_fd(), &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    #[test]
    fn delivery_follows_enable_and_masks() {
        let msix = Msix::new(4);
        let (w, r) = eventfd();
        msix.set_eventfds(1, vec![Some(w)]);
        // Disabled: dropped.
        msix.signal(1);
        msix.set_control(MSIX_ENABLE);
        msix.signal(1);
        assert_eq!(interrupts(&r), 1);
        // Masked by SET_IRQS: pending, delivered on unmask.
        msix.set_masked(1, 1, None, true);
        msix.signal(1);
        let mut pba = [0u8; 8];
        assert!(msix.pba_read(0, &mut pba));
        assert_eq!(pba[0], 0b10);
        msix.set_masked(0, 4, Some(&[false, true, false, false]), false);
        assert_eq!(interrupts(&r), 1);
        // Masked through the table's Vector Control word.
        assert!(msix.table_write(16 + 12, &1u32.to_le_bytes()));
        msix.signal(1);
        assert!(msix.table_write(16 + 12, &0u32.to_le_bytes()));
        assert_eq!(interrupts(&r), 1);
        // Function mask.
        msix.set_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
        msix.signal(1);
        msix.set_control(MSIX_ENABLE);
        assert_eq!(interrupts(&r), 1);
        // Out-of-range accesses are refused.
        assert!(!msix.table_read(4 * 16, &mut [0u8; 4]));
        assert!(!msix.pba_read(8, &mut [0u8; 1]));
    }
}
