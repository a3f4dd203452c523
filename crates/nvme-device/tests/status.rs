//! The read-only operator views of a controller (`Controller::status`, `queues`, Identify,
//! the Secondary Controller List): they report what the host did, per-queue counters count
//! completions and errors, and reading them changes nothing the host sees.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use nvme_device::backend::RamBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::subsystem::secondary_cntlid;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_driver::driver::QueuePair;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;

const IOVA: u64 = 0x1000_0000;

fn complete(qp: &mut QueuePair, cmd: Command) -> Completion {
    qp.submit(cmd).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = None;
    while done.is_none() {
        qp.poll(|c| done = Some(c));
        assert!(Instant::now() < deadline, "no completion");
    }
    done.unwrap()
}

#[test]
fn queue_views_count_completions_and_errors_and_change_nothing() {
    let host = TestHost::new(
        SubsystemConfig::new("status", 1),
        vec![NamespaceSpec {
            backend: Arc::new(RamBackend::new(1 << 20).unwrap()),
            block_size: BlockSize::B4096,
            attachment: Attachment::Private { vfn: 1 },
        }],
    );
    let vf = host.controller(Function::Vf(1));
    let before = vf.status();
    assert!(before.online && !before.suspended);
    assert_eq!(before.cc & 1, 0, "not enabled yet");
    assert!(vf.queues().is_empty());

    let driver = host.driver(Function::Vf(1), 4 << 20, IOVA);
    driver.set_queue_count(1).unwrap();
    let mut qp = driver.create_queue_pair(1, 16, None).unwrap();
    let buf = driver.memory().alloc(4096).unwrap();
    for lba in 0..5 {
        let c = complete(&mut qp, Command::write(0, 1, lba, 0, buf.iova(), 0));
        assert!(c.status.status().is_success());
    }
    // Beyond the namespace: an error completion.
    let c = complete(&mut qp, Command::read(0, 1, 1 << 20, 0, buf.iova(), 0));
    assert!(!c.status.status().is_success());

    let status = vf.status();
    assert_eq!(status.cntlid, secondary_cntlid(1));
    assert_eq!(
        (status.cc & 1, status.csts & 1),
        (1, 1),
        "enabled and ready"
    );
    let queues = vf.queues();
    assert_eq!(queues.len(), 2, "{queues:?}");
    let io = queues.iter().find(|q| q.qid == 1).unwrap();
    assert_eq!(
        (io.counters.completed, io.counters.errors),
        (6, 1),
        "{io:?}"
    );
    assert_eq!((io.sq_size, io.sq_head, io.sq_tail), (16, 6, 6), "{io:?}");
    assert_eq!(io.cq_tail, 6, "{io:?}");
    assert!(
        queues[0].counters.completed > 0,
        "the admin queue's commands"
    );

    // The views are reads: the host goes on as before.
    assert_eq!(vf.identify_controller().cntlid, secondary_cntlid(1));
    assert_eq!(vf.identify_namespace(1).unwrap().nsze, 256);
    assert!(vf.identify_namespace(2).is_none());
    assert_eq!(vf.attached_nsids(), [1]);
    let c = complete(&mut qp, Command::read(0, 1, 0, 0, buf.iova(), 0));
    assert!(c.status.status().is_success());
    assert_eq!(vf.queues()[1].counters.completed, 7);

    let list = host.controller(Function::Primary).secondary_list();
    assert_eq!(list.valid_entries().len(), 1);
    assert!(vf.secondary_list().valid_entries().is_empty());

    // A queue created again starts counting afresh.
    driver.delete_queue_pair(qp).unwrap();
    let _qp = driver.create_queue_pair(1, 16, None).unwrap();
    assert_eq!(vf.queues()[1].counters, Default::default());
}
