//! Host memory for in-process controllers: one memfd, mapped at its IOVA into the guest address
//! spaces of the controllers that reach it.

use std::sync::Arc;

use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use shmem::AddressSpace;
use shmem::Mapping;
use shmem::Protection;

/// The byte guards are filled with.
pub const GUARD_BYTE: u8 = 0xA5;

/// Maps `len` bytes of `mem` from byte `offset` into every address space of `spaces`, at the
/// IOVA they have in `mem`.
fn map_into(mem: &HostMemory, offset: u64, len: u64, spaces: &[&AddressSpace]) {
    for space in spaces {
        let fd = mem
            .mapping()
            .fd()
            .expect("host memory is a memfd")
            .try_clone_to_owned()
            .expect("a duplicate of the host memory's fd");
        let view = Mapping::from_fd(fd, offset, len as usize, Protection::ReadWrite)
            .expect("a view of the host memory");
        space
            .map(mem.iova() + offset, view)
            .expect("room for the host memory in the address space");
    }
}

/// Host memory of `len` bytes at `iova`, mapped into every address space in `spaces` (one guest
/// memory that several controllers reach, like a migrating guest's).
///
/// # Panics
///
/// If the memory cannot be made or mapped.
pub fn host_memory(len: u64, iova: u64, spaces: &[&AddressSpace]) -> Arc<HostMemory> {
    let mem = HostMemory::new(len, iova).expect("host memory");
    map_into(&mem, 0, mem.len(), spaces);
    mem
}

/// Host memory with guards the controller can never reach: its first `before` and last `after`
/// bytes are filled with [`GUARD_BYTE`], held so the page allocator never hands them out, and
/// left out of what is mapped, so a test can check that the controller wrote nothing outside
/// the mapping.
#[derive(Debug)]
pub struct GuardedMemory {
    mem: Arc<HostMemory>,
    /// The guard pages (each guard one buffer), held for the memory's lifetime.
    guards: Vec<DmaBuffer>,
    /// The IOVA just past the mapped part.
    mapped_end: u64,
}

impl GuardedMemory {
    /// `len` bytes of host memory at `iova` (page aligned, like `before` and `after`), of which
    /// all but the first `before` and the last `after` bytes are mapped into every address space
    /// in `spaces`.
    ///
    /// # Panics
    ///
    /// If the sizes are not whole pages or leave nothing to map, or the memory cannot be made or
    /// mapped.
    pub fn new(len: u64, iova: u64, before: u64, after: u64, spaces: &[&AddressSpace]) -> Self {
        let page = nvme_driver::memory::PAGE;
        assert!(
            [len, before, after].iter().all(|n| n.is_multiple_of(page)),
            "guarded memory sizes must be whole pages"
        );
        let window = len
            .checked_sub(before + after)
            .filter(|&n| n > 0)
            .expect("guards leave something to map");
        let mem = HostMemory::new(len, iova).expect("host memory");
        // The allocator takes the first free pages, so on fresh memory three allocations in
        // order are the head guard, the window and the tail guard.
        let alloc = |n: u64| mem.alloc(n).expect("room for the guards");
        let head = (before > 0).then(|| alloc(before));
        let middle = alloc(window);
        let tail = (after > 0).then(|| alloc(after));
        assert_eq!(
            middle.iova(),
            iova + before,
            "the window follows the head guard"
        );
        drop(middle);
        let guards: Vec<DmaBuffer> = head.into_iter().chain(tail).collect();
        for guard in &guards {
            guard.fill(GUARD_BYTE);
        }
        map_into(&mem, before, window, spaces);
        Self {
            mapped_end: iova + before + window,
            mem,
            guards,
        }
    }

    /// The whole memory, guards included; its allocator hands out pages of the mapped part only.
    pub fn memory(&self) -> &Arc<HostMemory> {
        &self.mem
    }

    /// The IOVA just past the mapped part: the first byte of the tail guard, if there is one.
    pub fn end_of_mapping(&self) -> u64 {
        self.mapped_end
    }

    /// Checks that every guard byte is still [`GUARD_BYTE`].
    ///
    /// # Panics
    ///
    /// If the controller wrote into a guard.
    pub fn assert_untouched(&self) {
        for guard in &self.guards {
            let mut bytes = vec![0u8; guard.len() as usize];
            guard.read(0, &mut bytes);
            assert!(
                bytes.iter().all(|&b| b == GUARD_BYTE),
                "the controller wrote outside the guest mapping (guard at {:#x})",
                guard.iova()
            );
        }
    }
}

/// Guest memory the device reaches only by explicit calls ([`shmem::WindowMemory::Io`]), like
/// a client's that it gave without a file descriptor (or one that could shrink): here backed
/// by a memfd of `len` bytes the test can also read and write.
#[derive(Debug)]
pub struct CopiedMemory(pub Mapping);

impl CopiedMemory {
    /// A zeroed window of `len` bytes, mapped at `gpa` into `space`.
    ///
    /// # Panics
    ///
    /// If the memory cannot be made or mapped.
    pub fn map(space: &AddressSpace, gpa: u64, len: usize) -> Arc<Self> {
        let window = Arc::new(Self(Mapping::memfd("copied", len).expect("a memfd")));
        space
            .map_memory(gpa, shmem::WindowMemory::Io(window.clone()))
            .expect("room for the window in the address space");
        window
    }
}

impl shmem::IoMemory for CopiedMemory {
    fn len(&self) -> u64 {
        self.0.len()
    }
    fn writable(&self) -> bool {
        true
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), shmem::MemoryFault> {
        self.0
            .read(offset, buf)
            .map_err(|e| shmem::MemoryFault::new(e.to_string()))
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), shmem::MemoryFault> {
        self.0
            .write(offset, data)
            .map_err(|e| shmem::MemoryFault::new(e.to_string()))
    }
}
