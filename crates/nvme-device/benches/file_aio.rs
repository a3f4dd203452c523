//! The file backend's engines for guest I/O: synchronous `pread`/`pwrite` in the caller
//! (`aio=sync`) against the io_uring and thread-pool queues (`aio=uring`, `aio=threads`) at
//! queue depth 32, for 4 KiB and 1 MiB transfers (a 1 MiB guest I/O is four 256 KiB commands
//! at the controller's MDTS), reads and writes, buffered and `O_DIRECT`, on a 256 MiB file in
//! the target directory. Run with `cargo bench -p nvme-device --bench file_aio`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use criterion::BenchmarkId;
use criterion::Criterion;
use criterion::Throughput;
use criterion::criterion_group;
use criterion::criterion_main;
use nvme_device::backend::Backend;
use nvme_device::backend::FileAio;
use nvme_device::backend::FileBackend;
use nvme_device::backend::IoKind;
use nvme_device::backend::IoQueue;
use nvme_device::backend::IoRequest;
use nvme_device::memory::DmaMemory;
use nvme_device::prp;
use nvme_spec::prp::PageSize;
use shmem::AddressSpace;
use shmem::Mapping;

const FILE_SIZE: u64 = 256 << 20;
const QD: usize = 32;
/// The largest command (MDTS).
const COMMAND: u64 = 256 << 10;
const PAGE: u64 = 4096;

/// Guest memory with `QD` buffers of one command each, their PRP lists after them.
struct Guest {
    mem: Arc<AddressSpace>,
    buffers: Vec<prp::Segments>,
}

impl Guest {
    fn new(command: u64) -> Self {
        let space = AddressSpace::new();
        let data = QD as u64 * COMMAND;
        space
            .map(
                0,
                Mapping::memfd("bench", (data + QD as u64 * PAGE) as usize).unwrap(),
            )
            .unwrap();
        let buffers = (0..QD as u64)
            .map(|i| {
                let base = i * COMMAND;
                let list = data + i * PAGE;
                let pages: Vec<u8> = (1..COMMAND / PAGE)
                    .flat_map(|p| (base + p * PAGE).to_le_bytes())
                    .collect();
                space.write(list, &pages).unwrap();
                let prp2 = if command <= 2 * PAGE {
                    base + PAGE
                } else {
                    list
                };
                prp::walk(&space, PageSize::SIZE_4K, base, prp2, command).unwrap()
            })
            .collect();
        Self {
            mem: Arc::new(space),
            buffers,
        }
    }
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("file-aio-bench.img")
}

/// Writes the whole file once, so reads find data (and, buffered, the page cache).
fn prepare() {
    let backend = FileBackend::open(&path(), Some(FILE_SIZE), false).unwrap();
    let chunk = vec![0xA5u8; 1 << 20];
    for at in (0..FILE_SIZE).step_by(chunk.len()) {
        backend.write(at, &chunk).unwrap();
    }
}

fn backend(aio: FileAio, direct: bool) -> FileBackend {
    FileBackend::open(&path(), None, direct)
        .unwrap()
        .with_aio(aio)
}

/// `count` commands of `command` bytes through `queue`, `QD` at a time, sequential offsets.
fn run_queue(queue: &mut dyn IoQueue, guest: &Guest, kind: IoKind, command: u64, count: u64) {
    let mut done = Vec::with_capacity(QD);
    let (mut submitted, mut completed) = (0u64, 0u64);
    let mut free: Vec<usize> = (0..QD).collect();
    while completed < count {
        while submitted < count
            && let Some(buffer) = free.pop()
        {
            let request = IoRequest {
                tag: buffer as u64,
                kind,
                offset: (submitted * command) % FILE_SIZE,
                len: command,
                segments: guest.buffers[buffer].clone(),
                // As the worker says it: more follow while the queue is not yet full.
                batched: !free.is_empty() && submitted + 1 < count,
            };
            queue.submit(&request).unwrap();
            submitted += 1;
        }
        queue.reap(&mut done);
        if done.is_empty() {
            let fd = queue.notifier();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            rustix::event::poll(&mut fds, None).unwrap();
            continue;
        }
        for (tag, result) in done.drain(..) {
            result.unwrap();
            free.push(tag as usize);
            completed += 1;
        }
    }
}

/// The same commands, one at a time in the caller (what `aio=sync` does in the poller).
fn run_sync(backend: &FileBackend, guest: &Guest, kind: IoKind, command: u64, count: u64) {
    for n in 0..count {
        let segments = &guest.buffers[n as usize % QD];
        let mut offset = (n * command) % FILE_SIZE;
        for segment in segments.as_slice() {
            let mem: &dyn DmaMemory = guest.mem.as_ref();
            match kind {
                IoKind::Read => backend.read_to_guest(offset, mem, segment.gpa, segment.len),
                _ => backend.write_from_guest(offset, mem, segment.gpa, segment.len),
            }
            .unwrap();
            offset += segment.len;
        }
    }
}

fn engines(c: &mut Criterion) {
    prepare();
    for (label, transfer, command) in [("4KiB", 4096u64, 4096u64), ("1MiB", 1 << 20, COMMAND)] {
        let guest = Guest::new(command);
        let commands_per_transfer = transfer / command;
        let mut group = c.benchmark_group(format!("file_aio/{label}"));
        group
            .throughput(Throughput::Bytes(transfer))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let cases = [
            ("read", IoKind::Read, false),
            ("write", IoKind::Write { fua: false }, false),
            ("read-direct", IoKind::Read, true),
            ("write-direct", IoKind::Write { fua: false }, true),
        ];
        for (op, kind, direct) in cases {
            for aio in [FileAio::Sync, FileAio::Uring, FileAio::Threads] {
                let backend = backend(aio, direct);
                let mut queue = backend.io_queue(guest.mem.clone(), QD as u32).unwrap();
                group.bench_function(BenchmarkId::new(op, aio.name()), |b| {
                    b.iter_custom(|iters| {
                        let count = iters * commands_per_transfer;
                        let start = Instant::now();
                        match queue.as_mut() {
                            Some(queue) => run_queue(queue.as_mut(), &guest, kind, command, count),
                            None => run_sync(&backend, &guest, kind, command, count),
                        }
                        black_box(start.elapsed())
                    })
                });
            }
        }
        group.finish();
    }
    let _ = std::fs::remove_file(path());
}

criterion_group!(benches, engines);
criterion_main!(benches);
