//! The in-process test host itself (`nvme_device::testing`): every controller of a subsystem
//! with several VFs reaches only the memory mapped for it and counts its own interrupts.

use std::sync::Arc;

use nvme_device::backend::RamBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::PRIMARY_CNTLID;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::subsystem::secondary_cntlid;
use nvme_device::testing;
use nvme_device::testing::Function;
use nvme_device::testing::TestHost;
use nvme_spec::command::Command;
use nvme_spec::identify::Cns;
use nvme_spec::registers::Csts;

const IOVA: u64 = 0x1000_0000;

fn host() -> TestHost {
    TestHost::new(
        SubsystemConfig::new("test-host", 2),
        vec![NamespaceSpec {
            backend: Arc::new(RamBackend::new(1 << 20).unwrap()),
            block_size: BlockSize::B4096,
            attachment: Attachment::Shared,
        }],
    )
}

#[test]
fn each_function_reaches_its_own_memory_and_counts_its_interrupts() {
    let host = host();
    for (function, cntlid) in [
        (Function::Primary, PRIMARY_CNTLID),
        (Function::Vf(2), secondary_cntlid(2)),
    ] {
        let driver = host.driver(function, 1 << 20, IOVA);
        assert_eq!(driver.identify_controller().unwrap().cntlid, cntlid);
        assert!(host.interrupts(function).count(0) > 0, "{function:?}");
    }
    // VF 1 was never given memory: nothing it did was counted.
    assert_eq!(host.interrupts(Function::Vf(1)).count(0), 0);

    // VF 1 brought up on rings that only VF 2 reaches cannot fetch them: a fatal status, and
    // no interrupt.
    let vf2_memory = host.memory(Function::Vf(2), 1 << 20, IOVA + (1 << 20));
    let mut admin = testing::raw_enable(&host.bar(Function::Vf(1)), &vf2_memory, 8);
    admin.submit(Command::identify(1, Cns::CONTROLLER, 0, 0, 0));
    let vf1 = host.controller(Function::Vf(1));
    testing::eventually("CSTS.CFS on VF 1", || {
        Csts::from(vf1.read_register(0x1C, 4) as u32)
            .cfs()
            .then_some(())
    });
    assert_eq!(host.interrupts(Function::Vf(1)).count(0), 0);
}
