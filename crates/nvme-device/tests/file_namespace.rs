//! A file namespace behind a controller, with each of the file backend's engines (io_uring,
//! I/O threads, inline), buffered and `O_DIRECT`: many Writes of 1 to 64 blocks in flight on
//! four queues at once, a Flush, then every block read back through another queue and through
//! the backend's host view. Verified by content, not by counting calls.

use std::path::PathBuf;
use std::sync::Arc;

use nvme_device::backend::Backend;
use nvme_device::backend::FileAio;
use nvme_device::backend::FileBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_driver::driver::Driver;
use nvme_driver::driver::QueuePair;
use nvme_driver::memory::DmaBuffer;
use nvme_driver::memory::HostMemory;
use nvme_spec::command::Command;
use nvme_spec::status::Status;

#[path = "common/completions.rs"]
mod completions;

const NSID: u32 = 1;
const BLOCK: u64 = 4096;
const SIZE: u64 = 16 << 20;
const QUEUES: usize = 4;
const PER_QUEUE: u64 = 16;

fn pattern(slba: u64, blocks: u64) -> Vec<u8> {
    (0..blocks * BLOCK)
        .map(|i| ((slba * 31 + i * 7 + i / 4096) % 251) as u8)
        .collect()
}

/// A command with its data buffer of `blocks` blocks and PRP list (kept until it completes).
fn command(mem: &Arc<HostMemory>, mut cmd: Command, blocks: u64) -> (Command, [DmaBuffer; 2]) {
    let buf = mem.alloc(blocks * BLOCK).unwrap();
    let list = mem.alloc(4096).unwrap();
    nvme_driver::driver::build_prps(&mut cmd, buf.iova(), Some(&list), blocks * BLOCK);
    (cmd, [buf, list])
}

/// Waits for every command of `cids` on `qp`, in any order; each must succeed, once.
fn all_succeed(qp: &mut QueuePair, cids: &[u16]) {
    for (cid, status) in cids.iter().zip(completions::collect(qp, cids)) {
        assert_eq!(status, Status::SUCCESS, "command {cid}");
    }
}

fn verified_io(aio: FileAio, direct: bool) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "file-ns-{}-{direct}-{}",
        aio.name(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let backend = match FileBackend::open(&path, Some(SIZE), direct) {
        Ok(backend) => Arc::new(backend.with_aio(aio)),
        Err(e) if direct => {
            println!("skipped: O_DIRECT is not supported here: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let host = TestHost::new(
        SubsystemConfig::new(&format!("file-{}-{direct}", aio.name()), 1),
        vec![NamespaceSpec {
            backend: backend.clone(),
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
    );
    let mem = testing::host_memory(32 << 20, 0x1000_0000, &[&**host.space(Function::Vf(1))]);
    let driver = Driver::new(host.bar(Function::Vf(1)), mem.clone()).unwrap();
    assert_eq!(
        driver.set_queue_count(QUEUES as u16).unwrap(),
        QUEUES as u16
    );
    let mut qps: Vec<QueuePair> = (1..=QUEUES as u16)
        .map(|qid| driver.create_queue_pair(qid, 64, None).unwrap())
        .collect();

    // Writes of 1 to 64 blocks (up to the 256 KiB MDTS), all in flight at once on every queue.
    let extent = |q: usize, i: u64| (q as u64 * 1024 + i * 64, 1 + (i * 13 + q as u64) % 64);
    let mut buffers = Vec::new();
    let mut cids = vec![Vec::new(); QUEUES];
    for i in 0..PER_QUEUE {
        for (q, qp) in qps.iter_mut().enumerate() {
            let (slba, blocks) = extent(q, i);
            let write = Command::write(0, NSID, slba, (blocks - 1) as u16, 0, 0);
            let (cmd, b) = command(&mem, write, blocks);
            b[0].write(0, &pattern(slba, blocks));
            cids[q].push(qp.submit(cmd).unwrap());
            buffers.push(b);
        }
    }
    for (q, qp) in qps.iter_mut().enumerate() {
        all_succeed(qp, &cids[q]);
    }
    let flush = testing::io(&mut qps[0], Command::flush(0, NSID));
    assert_eq!(flush.status.status(), Status::SUCCESS, "flush");

    // Every extent read back through the next queue, and through the host view.
    for q in 0..QUEUES {
        for i in 0..PER_QUEUE {
            let (slba, blocks) = extent(q, i);
            let read = Command::read(0, NSID, slba, (blocks - 1) as u16, 0, 0);
            let (cmd, b) = command(&mem, read, blocks);
            let done = testing::io(&mut qps[(q + 1) % QUEUES], cmd);
            assert_eq!(done.status.status(), Status::SUCCESS, "read at {slba}");
            let mut back = vec![0; (blocks * BLOCK) as usize];
            b[0].read(0, &mut back);
            let expected = pattern(slba, blocks);
            assert!(
                back == expected,
                "{aio:?} direct={direct}: blocks at {slba} differ"
            );
            let mut host_view = vec![0; back.len()];
            backend.read(slba * BLOCK, &mut host_view).unwrap();
            assert!(
                host_view == expected,
                "{aio:?} direct={direct}: file at {slba} differs"
            );
        }
    }
    drop(qps);
    drop(driver);
    drop(host);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn verified_io_uring_buffered() {
    verified_io(FileAio::Uring, false);
}

#[test]
fn verified_io_uring_direct() {
    verified_io(FileAio::Uring, true);
}

#[test]
fn verified_io_threads_buffered() {
    verified_io(FileAio::Threads, false);
}

#[test]
fn verified_io_threads_direct() {
    verified_io(FileAio::Threads, true);
}

#[test]
fn verified_io_sync() {
    verified_io(FileAio::Sync, false);
}
