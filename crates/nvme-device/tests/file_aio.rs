//! The asynchronous file queues (io_uring and I/O threads), driven directly through the
//! `IoQueue` seam with guest memory in a `shmem::AddressSpace`: data round trips buffered and
//! `O_DIRECT` with multi-segment buffers, tags, depth limits, guest-memory and file errors,
//! Flush and FUA, the notifier, and dropping a queue with requests in flight.

use std::path::PathBuf;
use std::sync::Arc;

use nvme_device::backend::Backend;
use nvme_device::backend::BackendError;
use nvme_device::backend::FileAio;
use nvme_device::backend::FileBackend;
use nvme_device::backend::IoKind;
use nvme_device::backend::IoQueue;
use nvme_device::backend::IoRequest;
use nvme_device::backend::QueueFull;
use nvme_device::memory::DmaMemory;
use nvme_device::prp;
use nvme_spec::prp::PageSize;
use shmem::AddressSpace;
use shmem::Mapping;

const SIZE: u64 = 16 << 20;
const PAGE: u64 = 4096;
/// Guest memory: 32 MiB at 0; everything above is unmapped.
const GUEST: u64 = 32 << 20;
const UNMAPPED: u64 = 1 << 40;
const ENGINES: [FileAio; 2] = [FileAio::Uring, FileAio::Threads];

type Done = Vec<(u64, Result<(), BackendError>)>;

fn tmp_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

fn guest() -> Arc<AddressSpace> {
    let space = AddressSpace::new();
    space
        .map(0, Mapping::memfd("guest", GUEST as usize).unwrap())
        .unwrap();
    Arc::new(space)
}

/// A backend of `SIZE` bytes at a fresh path, removed on drop; `None` (with the reason
/// printed) when the file system refuses `O_DIRECT`.
struct TestFile {
    path: PathBuf,
    backend: FileBackend,
}

impl TestFile {
    fn new(name: &str, aio: FileAio, direct: bool) -> Option<Self> {
        Self::with_inline_writes(name, aio, direct, true)
    }

    /// [`Self::new`] with buffered writes done inline by io_uring queues or not.
    fn with_inline_writes(
        name: &str,
        aio: FileAio,
        direct: bool,
        inline_writes: bool,
    ) -> Option<Self> {
        let path = tmp_path(&format!("{name}-{}-{direct}", aio.name()));
        let _ = std::fs::remove_file(&path);
        match FileBackend::open(&path, Some(SIZE), direct) {
            Ok(backend) => Some(Self {
                path,
                backend: backend.with_aio(aio).with_inline_writes(inline_writes),
            }),
            Err(e) if direct => {
                println!("skipped: O_DIRECT is not supported here: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn queue(&self, mem: &Arc<AddressSpace>, depth: u32) -> Box<dyn IoQueue> {
        let mem: Arc<dyn DmaMemory> = mem.clone();
        self.backend
            .io_queue(mem, depth)
            .unwrap()
            .expect("file backends with uring or threads have a queue")
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A data buffer of `len` bytes in guest memory, described like a command's PRPs: the first
/// piece starts `first_offset` into a page, the other pages are every other page after
/// `base` (so no two merge), listed in a PRP list page at `list`.
struct GuestBuffer {
    segments: prp::Segments,
}

impl GuestBuffer {
    fn new(mem: &AddressSpace, base: u64, list: u64, first_offset: u64, len: u64) -> Self {
        Self::build(mem, base, list, first_offset, len, 2)
    }

    /// `len` bytes of contiguous guest memory at `base` (one segment), listed at `list`.
    fn contiguous(mem: &AddressSpace, base: u64, list: u64, len: u64) -> Self {
        let buffer = Self::build(mem, base, list, 0, len, 1);
        assert_eq!(buffer.segments.as_slice().len(), 1);
        buffer
    }

    fn build(
        mem: &AddressSpace,
        base: u64,
        list: u64,
        first_offset: u64,
        len: u64,
        stride: u64,
    ) -> Self {
        let first = base + first_offset;
        let first_len = (PAGE - first_offset).min(len);
        let rest = (len - first_len).div_ceil(PAGE);
        let pages: Vec<u64> = (1..=rest).map(|i| base + stride * i * PAGE).collect();
        let prp2 = match pages.len() {
            0 => 0,
            1 => pages[0],
            _ => {
                let bytes: Vec<u8> = pages.iter().flat_map(|p| p.to_le_bytes()).collect();
                mem.write(list, &bytes).unwrap();
                list
            }
        };
        let segments = prp::walk(mem, PageSize::SIZE_4K, first, prp2, len).unwrap();
        assert_eq!(segments.len(), len);
        Self { segments }
    }

    /// One page at `gpa`, which may be unmapped (the walk reads no data pages).
    fn at(mem: &AddressSpace, gpa: u64, len: u64) -> Self {
        Self {
            segments: prp::walk(mem, PageSize::SIZE_4K, gpa, 0, len).unwrap(),
        }
    }

    fn fill(&self, mem: &AddressSpace, data: &[u8]) {
        let mut at = 0;
        for s in self.segments.as_slice() {
            mem.write(s.gpa, &data[at..at + s.len as usize]).unwrap();
            at += s.len as usize;
        }
    }

    fn contents(&self, mem: &AddressSpace) -> Vec<u8> {
        let mut out = vec![0; self.segments.len() as usize];
        let mut at = 0;
        for s in self.segments.as_slice() {
            mem.read(s.gpa, &mut out[at..at + s.len as usize]).unwrap();
            at += s.len as usize;
        }
        out
    }

    fn request(&self, tag: u64, kind: IoKind, offset: u64) -> IoRequest {
        IoRequest {
            tag,
            kind,
            offset,
            len: self.segments.len(),
            segments: self.segments.clone(),
            batched: false,
        }
    }
}

fn flush(tag: u64) -> IoRequest {
    IoRequest {
        tag,
        kind: IoKind::Flush,
        offset: 0,
        len: 0,
        segments: prp::Segments::default(),
        batched: false,
    }
}

/// Deterministic pseudo-random bytes.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Whether the notifier is readable within `ms` milliseconds.
fn readable(queue: &dyn IoQueue, ms: i32) -> bool {
    let fd = queue.notifier();
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let timeout = rustix::event::Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    rustix::event::poll(&mut fds, Some(&timeout)).unwrap() == 1
}

/// Sleeps on the notifier and reaps until `count` requests have finished; a queue that stops
/// signalling fails the test instead of hanging it.
fn wait_for(queue: &mut dyn IoQueue, count: usize) -> Done {
    let mut done = Vec::new();
    while done.len() < count {
        assert!(
            readable(queue, 20_000),
            "no completion signalled: {} of {count} reaped, {} in flight",
            done.len(),
            queue.in_flight()
        );
        queue.reap(&mut done);
    }
    assert_eq!(
        done.len(),
        count,
        "more completions than requests: {done:?}"
    );
    done
}

fn all_ok(done: &Done) {
    for (tag, result) in done {
        assert!(result.is_ok(), "request {tag} failed: {result:?}");
    }
}

/// Writes 32 multi-segment buffers of different sizes and page offsets at once, reads them all
/// back at once into other guest memory, and compares (also through the host API).
fn round_trip(aio: FileAio, direct: bool) {
    if let Some(file) = TestFile::new("round-trip", aio, direct) {
        round_trip_on(&file, aio, direct);
    }
}

fn round_trip_on(file: &TestFile, aio: FileAio, direct: bool) {
    let mem = guest();
    let mut queue = file.queue(&mem, 32);
    // O_DIRECT needs block-aligned buffers: a page offset of 0 or 2048 (a 512-byte multiple).
    let sizes = [4096u64, 8192, 65536, 256 * 1024, 12288, 131072, 4096, 20480];
    let mut expected = Vec::new();
    let mut writes = Vec::new();
    for i in 0..32u64 {
        let len = sizes[i as usize % sizes.len()];
        let first_offset = if i % 3 == 0 { 2048 } else { 0 };
        let base = i * (640 << 10);
        let buf = GuestBuffer::new(&mem, base, base + PAGE, first_offset, len);
        let data = random_bytes(i + 1, len as usize);
        buf.fill(&mem, &data);
        let offset = i * (300 << 10);
        queue
            .submit(&buf.request(1000 + i, IoKind::Write { fua: false }, offset))
            .unwrap();
        expected.push((offset, data));
        writes.push(buf);
    }
    assert_eq!(queue.in_flight(), 32);
    let done = wait_for(queue.as_mut(), 32);
    all_ok(&done);
    let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
    tags.sort_unstable();
    assert_eq!(tags, (1000..1032).collect::<Vec<_>>(), "every tag once");
    assert_eq!(queue.in_flight(), 0);

    // Read back in two halves, each into its own guest buffers.
    for half in [0..16usize, 16..32] {
        let mut reads = Vec::new();
        for i in half.clone() {
            let (offset, data) = &expected[i];
            let base = (20 << 20) + (i as u64 - half.start as u64) * (640 << 10);
            let buf = GuestBuffer::new(&mem, base, base + PAGE, 0, data.len() as u64);
            buf.fill(&mem, &vec![0xEE; data.len()]);
            queue
                .submit(&buf.request(i as u64, IoKind::Read, *offset))
                .unwrap();
            reads.push((i, buf));
        }
        let done = wait_for(queue.as_mut(), reads.len());
        all_ok(&done);
        for (i, buf) in &reads {
            assert!(
                buf.contents(&mem) == expected[*i].1,
                "{aio:?} direct={direct}: read {i} differs from what was written"
            );
        }
    }
    for (offset, data) in &expected {
        let mut host = vec![0; data.len()];
        file.backend.read(*offset, &mut host).unwrap();
        assert!(&host == data, "host view at {offset} differs");
    }
}

#[test]
fn round_trip_uring_buffered() {
    round_trip(FileAio::Uring, false);
}

/// Buffered writes handed to io_uring (not written inline by the worker) take the ring's path.
#[test]
fn round_trip_uring_buffered_without_inline_writes() {
    let file =
        TestFile::with_inline_writes("round-trip-ring", FileAio::Uring, false, false).unwrap();
    assert!(!file.backend.inline_writes());
    round_trip_on(&file, FileAio::Uring, false);
}

#[test]
fn round_trip_uring_direct() {
    round_trip(FileAio::Uring, true);
}

#[test]
fn round_trip_threads_buffered() {
    round_trip(FileAio::Threads, false);
}

#[test]
fn round_trip_threads_direct() {
    round_trip(FileAio::Threads, true);
}

#[test]
fn sync_has_no_queue() {
    let file = TestFile::new("sync", FileAio::Sync, false).unwrap();
    let mem: Arc<dyn DmaMemory> = guest();
    assert!(file.backend.io_queue(mem, 32).unwrap().is_none());
}

#[test]
fn depth_limits_in_flight_and_tags_come_back() {
    for aio in ENGINES {
        let file = TestFile::new("depth", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 4);
        let buf = GuestBuffer::at(&mem, 0x10000, 4096);
        // Tags in no particular order; every one comes back once, whatever the finishing order.
        for (n, tag) in [77u64, 3, u64::MAX, 12].into_iter().enumerate() {
            queue
                .submit(&buf.request(tag, IoKind::Read, n as u64 * 4096))
                .unwrap();
            assert_eq!(queue.in_flight(), n + 1);
        }
        assert_eq!(
            queue.submit(&buf.request(5, IoKind::Read, 0)),
            Err(QueueFull),
            "{aio:?}: a fifth request at depth 4"
        );
        let done = wait_for(queue.as_mut(), 4);
        all_ok(&done);
        let mut tags: Vec<u64> = done.iter().map(|d| d.0).collect();
        tags.sort_unstable();
        assert_eq!(tags, [3, 12, 77, u64::MAX]);
        assert_eq!(queue.in_flight(), 0);
        // The slots are free again.
        queue.submit(&buf.request(5, IoKind::Read, 0)).unwrap();
        all_ok(&wait_for(queue.as_mut(), 1));
    }
}

#[test]
fn guest_memory_errors_are_reported() {
    for aio in ENGINES {
        let file = TestFile::new("dma", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 8);
        let outside = GuestBuffer::at(&mem, UNMAPPED, 4096);
        // Straddling the end of guest memory: the first part is there, the rest is not.
        let straddling = GuestBuffer {
            segments: prp::walk(
                mem.as_ref(),
                PageSize::SIZE_4K,
                GUEST - 2048,
                UNMAPPED,
                4096,
            )
            .unwrap(),
        };
        queue
            .submit(&outside.request(1, IoKind::Write { fua: false }, 0))
            .unwrap();
        queue.submit(&outside.request(2, IoKind::Read, 0)).unwrap();
        queue
            .submit(&straddling.request(3, IoKind::Read, 4096))
            .unwrap();
        let mut done = wait_for(queue.as_mut(), 3);
        done.sort_by_key(|d| d.0);
        for (tag, result) in &done {
            assert!(
                matches!(result, Err(BackendError::Dma(_))),
                "{aio:?}: request {tag} gave {result:?}, not a guest-memory error"
            );
        }
        // The failed write did not reach the file, and the queue goes on working.
        let ok = GuestBuffer::at(&mem, 0x20000, 4096);
        ok.fill(&mem, &[0xAB; 4096]);
        queue.submit(&ok.request(4, IoKind::Read, 0)).unwrap();
        all_ok(&wait_for(queue.as_mut(), 1));
        assert_eq!(ok.contents(&mem), vec![0; 4096]);
    }
}

#[test]
fn oversized_and_inconsistent_requests_fail_cleanly() {
    for aio in ENGINES {
        let file = TestFile::new("oversized", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 4);
        // 256 KiB + 2 KiB: 65 segments, beyond the 256 KiB maximum transfer.
        let big = GuestBuffer::new(&mem, 0, 0x200000, 2048, (256 << 10) + 2048);
        queue.submit(&big.request(1, IoKind::Read, 0)).unwrap();
        let small = GuestBuffer::at(&mem, 0x10000, 4096);
        let mut lying = small.request(2, IoKind::Write { fua: false }, 0);
        lying.len = 8192;
        queue.submit(&lying).unwrap();
        for (tag, result) in wait_for(queue.as_mut(), 2) {
            match result {
                Err(BackendError::Io(e)) => {
                    assert!(e.to_string().contains("262144-byte limit"), "{tag}: {e}")
                }
                other => panic!("{aio:?}: request {tag} gave {other:?}"),
            }
        }
    }
}

#[test]
fn flush_and_fua_complete_and_keep_data() {
    for aio in ENGINES {
        for direct in [false, true] {
            let Some(file) = TestFile::new("flush", aio, direct) else {
                continue;
            };
            let mem = guest();
            let mut queue = file.queue(&mem, 8);
            let buf = GuestBuffer::new(&mem, 0x40000, 0x41000, 0, 16384);
            let data = random_bytes(9, 16384);
            buf.fill(&mem, &data);
            queue
                .submit(&buf.request(1, IoKind::Write { fua: true }, 1 << 20))
                .unwrap();
            all_ok(&wait_for(queue.as_mut(), 1));
            queue.submit(&flush(2)).unwrap();
            let done = wait_for(queue.as_mut(), 1);
            all_ok(&done);
            assert_eq!(done[0].0, 2);
            let mut host = vec![0; 16384];
            file.backend.read(1 << 20, &mut host).unwrap();
            assert!(
                host == data,
                "{aio:?} direct={direct}: FUA write not in the file"
            );
        }
    }
}

#[test]
fn notifier_signals_completions_and_reap_clears_it() {
    for aio in ENGINES {
        let file = TestFile::new("notifier", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 4);
        assert!(
            !readable(queue.as_ref(), 0),
            "{aio:?}: readable before any request"
        );
        let buf = GuestBuffer::at(&mem, 0x10000, 4096);
        queue
            .submit(&buf.request(1, IoKind::Write { fua: false }, 0))
            .unwrap();
        assert!(
            readable(queue.as_ref(), 20_000),
            "{aio:?}: completion not signalled"
        );
        let mut done = Vec::new();
        queue.reap(&mut done);
        assert_eq!(done.len(), 1);
        assert!(
            !readable(queue.as_ref(), 0),
            "{aio:?}: still readable after reap"
        );
        // A request that fails at submit (guest memory) signals too.
        queue
            .submit(&GuestBuffer::at(&mem, UNMAPPED, 4096).request(
                2,
                IoKind::Write { fua: false },
                0,
            ))
            .unwrap();
        assert!(
            readable(queue.as_ref(), 0),
            "{aio:?}: failed submit not signalled"
        );
        assert_eq!(wait_for(queue.as_mut(), 1).len(), 1);
    }
}

#[test]
fn end_of_file_is_an_error() {
    for aio in ENGINES {
        let file = TestFile::new("eof", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 4);
        // Someone truncates the file behind the namespace.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.path)
            .unwrap()
            .set_len(8192)
            .unwrap();
        let buf = GuestBuffer::new(&mem, 0x10000, 0x11000, 0, 16384);
        queue.submit(&buf.request(1, IoKind::Read, 4096)).unwrap();
        queue
            .submit(&buf.request(2, IoKind::Read, 1 << 20))
            .unwrap();
        for (tag, result) in wait_for(queue.as_mut(), 2) {
            match result {
                Err(BackendError::Io(e)) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{tag}: {e}")
                }
                other => panic!("{aio:?}: read {tag} past the end gave {other:?}"),
            }
        }
    }
}

/// Drops queues with up to 64 large transfers in flight, many times: the queue must wait for
/// the kernel (or its threads) before unmapping the slots; Reads never reaped never write guest
/// memory; and what the file holds afterwards is, per write, the old or the new data.
#[test]
fn drop_with_requests_in_flight() {
    for aio in ENGINES {
        for direct in [false, true] {
            let Some(file) = TestFile::new("drop", aio, direct) else {
                continue;
            };
            let mem = guest();
            let data = random_bytes(5, 256 << 10);
            for round in 0..8u64 {
                let mut queue = file.queue(&mem, 64);
                for i in 0..32u64 {
                    let src = GuestBuffer::contiguous(
                        &mem,
                        i * (256 << 10),
                        (12 << 20) + i * PAGE,
                        256 << 10,
                    );
                    src.fill(&mem, &data);
                    let offset = ((i + round) % 48) * (256 << 10);
                    queue
                        .submit(&src.request(i, IoKind::Write { fua: false }, offset))
                        .unwrap();
                }
                for i in 0..32u64 {
                    let dst = GuestBuffer::contiguous(
                        &mem,
                        (16 << 20) + i * (256 << 10),
                        (28 << 20) + i * PAGE,
                        256 << 10,
                    );
                    mem.fill((16 << 20) + i * (256 << 10), 256 << 10, 0x77)
                        .unwrap();
                    queue
                        .submit(&dst.request(100 + i, IoKind::Read, i * (256 << 10)))
                        .unwrap();
                }
                assert_eq!(queue.in_flight(), 64);
                drop(queue);
                // A read the kernel carried out in place has written its buffer (as a real
                // device's DMA does before a reset completes), a bounced one has not: each page
                // holds the fill, or file data (new or old); and nothing holds the memory any
                // more, so it can be unmapped.
                let mut after = vec![0; 8 << 20];
                mem.read(16 << 20, &mut after).unwrap();
                for (page, bytes) in after.chunks(PAGE as usize).enumerate() {
                    let at = page * PAGE as usize % (256 << 10);
                    assert!(
                        bytes.iter().all(|&b| b == 0x77)
                            || bytes.iter().all(|&b| b == 0)
                            || bytes == &data[at..at + PAGE as usize],
                        "{aio:?} direct={direct}: page {page} of the unreaped reads is torn"
                    );
                }
            }
            assert_unmaps(&mem);
            let mut host = vec![0; 256 << 10];
            for block in 0..(SIZE / (256 << 10)) {
                file.backend.read(block * (256 << 10), &mut host).unwrap();
                assert!(
                    host == data || host.iter().all(|&b| b == 0),
                    "{aio:?} direct={direct}: block {block} is neither old nor new data"
                );
            }
        }
    }
}

/// Unmaps all of `mem`, failing (instead of hanging) if something still holds a window.
fn assert_unmaps(mem: &Arc<AddressSpace>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let space = mem.clone();
    std::thread::spawn(move || {
        space.unmap_all();
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("guest memory is still pinned after every queue was dropped");
}

/// Counts the bytes device writes report to dirty logging, and whether `range` was among them.
#[derive(Default)]
struct DirtyLog {
    bytes: std::sync::atomic::AtomicU64,
}

impl shmem::WriteObserver for DirtyLog {
    fn written(&self, _gpa: u64, len: u64) {
        self.bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn reads_in_place_are_dirty_logged_and_hold_the_memory_until_reaped() {
    for aio in ENGINES {
        for direct in [false, true] {
            let Some(file) = TestFile::new("pinned", aio, direct) else {
                continue;
            };
            // Guest memory with a second view of its memfd, to check the data after the unmap.
            let memfd = Mapping::memfd("guest", GUEST as usize).unwrap();
            let fd = memfd.fd().unwrap().try_clone_to_owned().unwrap();
            let view =
                Mapping::from_fd(fd, 0, GUEST as usize, shmem::Protection::ReadOnly).unwrap();
            let mem = Arc::new(AddressSpace::new());
            mem.map(0, memfd).unwrap();
            let log = Arc::new(DirtyLog::default());
            mem.set_write_observer(Some(log.clone()));
            let data = random_bytes(9, 64 << 10);
            file.backend.write(8192, &data).unwrap();
            let mut queue = file.queue(&mem, 4);
            // Whole pages, every other one: in place in both modes.
            let dst = GuestBuffer::new(&mem, 0x100000, 0x300000, 0, 64 << 10);
            let logged_before = log.bytes.load(std::sync::atomic::Ordering::Relaxed);
            queue.submit(&dst.request(7, IoKind::Read, 8192)).unwrap();
            assert!(readable(queue.as_ref(), 10_000), "{aio:?}: no completion");
            // The read is done in the kernel but not reaped: its memory is still held.
            let space = mem.clone();
            let unmap = std::thread::spawn(move || space.unmap(0, GUEST));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(
                !unmap.is_finished(),
                "{aio:?} direct={direct}: guest memory was unmapped under an unreaped read"
            );
            let mut done = Done::new();
            while done.is_empty() {
                queue.reap(&mut done);
            }
            all_ok(&done);
            assert_eq!(
                log.bytes.load(std::sync::atomic::Ordering::Relaxed) - logged_before,
                64 << 10,
                "{aio:?} direct={direct}: the read's buffers were not dirty-logged"
            );
            unmap.join().unwrap().unwrap();
            let mut got = Vec::new();
            for segment in dst.segments.as_slice() {
                let mut piece = vec![0; segment.len as usize];
                view.read(segment.gpa, &mut piece).unwrap();
                got.extend(piece);
            }
            assert_eq!(
                got, data,
                "{aio:?} direct={direct}: the read brought other data"
            );
        }
    }
}

#[test]
fn memory_that_cannot_be_pinned_is_bounced() {
    for aio in ENGINES {
        for direct in [false, true] {
            let Some(file) = TestFile::new("bounced", aio, direct) else {
                continue;
            };
            // Guest memory reached by I/O calls only (a client file that could shrink).
            let space = AddressSpace::new();
            nvme_device::testing::CopiedMemory::map(&space, 0, 8 << 20);
            let mem = Arc::new(space);
            let data = random_bytes(11, 128 << 10);
            let src = GuestBuffer::new(&mem, 0, 0x700000, 0, 128 << 10);
            src.fill(&mem, &data);
            let mut queue = file.queue(&mem, 4);
            queue
                .submit(&src.request(1, IoKind::Write { fua: false }, 0))
                .unwrap();
            all_ok(&wait_for(queue.as_mut(), 1));
            let dst = GuestBuffer::new(&mem, 0x400000, 0x710000, 0, 128 << 10);
            queue.submit(&dst.request(2, IoKind::Read, 0)).unwrap();
            all_ok(&wait_for(queue.as_mut(), 1));
            assert_eq!(dst.contents(&mem), data, "{aio:?} direct={direct}");
        }
    }
}

/// One step of a hostile (or merely careless) worker.
#[derive(Clone, Debug)]
enum Step {
    /// A request with guest-chosen PRPs (anything the walk accepts) at a block of the file.
    Submit {
        kind: u8,
        block: u16,
        prp1: u64,
        prp2: u64,
        len: u32,
    },
    Reap,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (
            0u8..4,
            any::<u16>(),
            prop_oneof![0u64..GUEST + (1 << 20), Just(UNMAPPED)],
            prop_oneof![
                8 => (0u64..GUEST / PAGE).prop_map(|page| page * PAGE),
                1 => Just(UNMAPPED),
                1 => any::<u64>(),
            ],
            prop_oneof![1u32..16384, 1u32..(300 << 10)]
        )
            .prop_map(|(kind, block, prp1, prp2, len)| Step::Submit {
                kind,
                block,
                prp1: prp1 & !3,
                prp2,
                len,
            }),
        Just(Step::Reap),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Whatever the PRPs, lengths and kinds, neither engine panics, `QueueFull` comes only at
    /// depth, every request submitted comes back exactly once, and dropping a queue with
    /// requests in flight is safe.
    #[test]
    fn any_requests_come_back_once(
        steps in proptest::collection::vec(step(), 1..40),
        threads in proptest::bool::ANY,
        finish in proptest::bool::ANY,
    ) {
        let aio = if threads { FileAio::Threads } else { FileAio::Uring };
        let file = TestFile::new("any", aio, false).unwrap();
        let mem = guest();
        let mut queue = file.queue(&mem, 8);
        let mut submitted = std::collections::BTreeSet::new();
        let mut returned = std::collections::BTreeSet::new();
        let mut done = Vec::new();
        for (tag, step) in steps.into_iter().enumerate() {
            match step {
                Step::Submit { kind, block, prp1, prp2, len } => {
                    let len = u64::from(len.div_ceil(512) * 512);
                    let Ok(segments) = prp::walk(mem.as_ref(), PageSize::SIZE_4K, prp1, prp2, len)
                    else {
                        continue;
                    };
                    let kind = match kind {
                        0 => IoKind::Read,
                        1 => IoKind::Write { fua: false },
                        2 => IoKind::Write { fua: true },
                        _ => IoKind::Flush,
                    };
                    let offset = (u64::from(block) * 512).min(SIZE - len);
                    let batched = tag % 3 == 0;
                    let request = IoRequest { tag: tag as u64, kind, offset, len, segments, batched };
                    let before = queue.in_flight();
                    match queue.submit(&request) {
                        Ok(()) => {
                            submitted.insert(tag as u64);
                            proptest::prop_assert_eq!(queue.in_flight(), before + 1);
                        }
                        Err(QueueFull) => proptest::prop_assert_eq!(before, 8),
                    }
                }
                Step::Reap => queue.reap(&mut done),
            }
            for (tag, _) in done.drain(..) {
                proptest::prop_assert!(returned.insert(tag), "tag {} returned twice", tag);
            }
        }
        if finish {
            let left = queue.in_flight();
            for (tag, _) in wait_for(queue.as_mut(), left) {
                proptest::prop_assert!(returned.insert(tag), "tag {} returned twice", tag);
            }
            proptest::prop_assert_eq!(&returned, &submitted);
        }
        // Otherwise the queue is dropped with whatever is still in flight.
    }
}

/// Runs `f` on a thread where `io_uring_setup` fails with `ENOSYS`, as under a seccomp filter
/// that does not know io_uring (container runtimes' default profiles refuse it).
fn without_io_uring<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(move || {
        let op = |code: u32| code as u16;
        let filter = [
            // Load the system call number (offset 0 of struct seccomp_data).
            libc::sock_filter {
                code: op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS),
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K),
                jt: 0,
                jf: 1,
                k: libc::SYS_io_uring_setup as u32,
            },
            libc::sock_filter {
                code: op(libc::BPF_RET | libc::BPF_K),
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            },
            libc::sock_filter {
                code: op(libc::BPF_RET | libc::BPF_K),
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes no memory; PR_SET_SECCOMP reads the
        // program, which lives on this stack for the call. Both apply to this thread (and the
        // threads it starts) only.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const program
                ),
                0,
                "cannot install the seccomp filter: {}",
                std::io::Error::last_os_error()
            );
        }
        f()
    })
    .join()
    .unwrap()
}

/// Where io_uring is refused, `aio=uring` (the default) falls back to the thread engine, which
/// then carries the I/O; the reason is kept.
#[test]
fn refused_io_uring_falls_back_to_threads() {
    without_io_uring(|| {
        let file = TestFile::new("refused", FileAio::Uring, false).unwrap();
        let why = file
            .backend
            .uring_refused()
            .expect("the probe found io_uring refused");
        assert!(why.contains("not implemented"), "{why}");
        let mem = guest();
        let mut queue = file.queue(&mem, 8);
        assert!(format!("{queue:?}").starts_with("ThreadQueue"), "{queue:?}");
        let buf = GuestBuffer::new(&mem, 0x10000, 0x11000, 0, 16384);
        let data = random_bytes(3, 16384);
        buf.fill(&mem, &data);
        queue
            .submit(&buf.request(1, IoKind::Write { fua: true }, 8192))
            .unwrap();
        all_ok(&wait_for(queue.as_mut(), 1));
        buf.fill(&mem, &[0; 16384]);
        queue.submit(&buf.request(2, IoKind::Read, 8192)).unwrap();
        all_ok(&wait_for(queue.as_mut(), 1));
        assert!(buf.contents(&mem) == data, "the fallback's read differs");
    });
}
