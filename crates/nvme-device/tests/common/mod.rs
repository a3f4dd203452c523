//! The test subsystem several of this crate's test files share, on `nvme_device::testing`.

use std::sync::Arc;

use nvme_device::backend::RamBackend;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::SubsystemConfig;
use nvme_device::testing::TestHost;

/// A VF-only test subsystem named `name`: PF plus VF 1, with namespace 1 (4 MiB, 4096-byte
/// blocks) and namespace 2 (1 MiB, 512-byte blocks) private to VF 1. Returns the host and the
/// two backends.
pub fn vf_host(name: &str) -> (TestHost, [Arc<RamBackend>; 2]) {
    let ns1 = Arc::new(RamBackend::new(4 << 20).unwrap());
    let ns2 = Arc::new(RamBackend::new(1 << 20).unwrap());
    let spec = |backend: &Arc<RamBackend>, block_size| NamespaceSpec {
        backend: backend.clone(),
        block_size,
        attachment: Attachment::Private { vfn: 1 },
    };
    let host = TestHost::new(
        SubsystemConfig::new(name, 1),
        vec![spec(&ns1, BlockSize::B4096), spec(&ns2, BlockSize::B512)],
    );
    (host, [ns1, ns2])
}
