//! What a destination answers when it cannot take a stream, over a real vfio-user socket: a
//! namespace whose storage fails writes makes MIG_DATA_WRITE fail with EIO (the device failed,
//! not the stream), and the destination keeps the typed reason where a tool that is not the
//! migrating client can read it.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use nvme_device::backend::Backend;
use nvme_device::backend::BackendError;
use nvme_device::backend::RamBackend;
use nvme_device::memory::DmaMemory;
use nvme_device::namespace::BlockSize;
use nvme_device::subsystem::Attachment;
use nvme_device::subsystem::NamespaceSpec;
use nvme_device::subsystem::PRIMARY_CNTLID;
use nvme_device::subsystem::Subsystem;
use nvme_device::subsystem::SubsystemConfig;
use shmem::AddressSpace;
use vfio_migration::DeviceState;
use vfio_migration::Errno;
use vfio_nvme::migration::admin::InProcessPrimary;
use vfio_nvme::migration::admin::LmAdmin;
use vfio_nvme::migration::error::Refusal;
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfio_nvme::served::migratable_function;
use vfio_nvme::vf::VfDevice;
use vfu::client::Client;
use vfu::client::ClientError;
use vfu::server::Device;
use vfu::server::FailedRequest;
use vfu::server::Server;

const NAMESPACE_BYTES: u64 = 16 << 20;

/// RAM storage whose host-buffer writes (the ones a migration makes) fail.
#[derive(Debug)]
struct FailingWrites(RamBackend);

impl Backend for FailingWrites {
    fn kind(&self) -> &'static str {
        "failing"
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_to_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        self.0.read_to_guest(offset, mem, gpa, len)
    }
    fn write_from_guest(
        &self,
        offset: u64,
        mem: &dyn DmaMemory,
        gpa: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        self.0.write_from_guest(offset, mem, gpa, len)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::other("the disk refuses every write"))
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.write_zeroes(offset, len)
    }
    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.deallocate(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }
    fn allocated(&self) -> io::Result<Vec<Range<u64>>> {
        self.0.allocated()
    }
}

/// A migratable VF like `vfio-nvme serve`'s, whose one private namespace sits on `backend`.
fn function_on(backend: Arc<dyn Backend>) -> VfDevice {
    let spaces: Vec<Arc<AddressSpace>> = (0..2).map(|_| Arc::new(AddressSpace::new())).collect();
    let config = SubsystemConfig::new("failing", 1);
    let limits = config.limits.clone();
    let specs = vec![NamespaceSpec {
        backend,
        block_size: BlockSize::B4096,
        attachment: Attachment::Private { vfn: 1 },
    }];
    let subsystem = Arc::new(
        Subsystem::new(config, specs, |cntlid| {
            spaces[usize::from(cntlid - PRIMARY_CNTLID)].clone() as Arc<dyn DmaMemory>
        })
        .unwrap(),
    );
    let primary: Arc<dyn LmAdmin> = Arc::new(InProcessPrimary::new(&subsystem).unwrap());
    let namespaces = subsystem.namespaces().to_vec();
    migratable_function(
        &subsystem,
        &limits,
        &primary,
        1,
        spaces[1].clone(),
        namespaces,
    )
    .unwrap()
}

/// The whole stream of a source VF whose namespace holds one written block.
fn source_stream() -> Vec<u8> {
    let source = Served::new(&ServeConfig {
        name: "source".to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: NAMESPACE_BYTES,
                prealloc: false,
            },
            block_size: BlockSize::B4096,
            shared: false,
        }],
        ..ServeConfig::default()
    })
    .unwrap();
    source.subsystem().namespaces()[0]
        .backend()
        .write(8192, &[0xa5; 4096])
        .unwrap();
    let vf = source.function(1).unwrap();
    let migration = vf.migration().unwrap();
    migration.set_state(DeviceState::Stop).unwrap();
    migration.set_state(DeviceState::StopCopy).unwrap();
    let mut stream = Vec::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = migration.read(&mut buf).unwrap();
        stream.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            return stream;
        }
    }
}

#[test]
fn a_namespace_write_failure_on_the_destination_is_eio_with_its_reason() {
    let stream = source_stream();
    let ram = RamBackend::new(NAMESPACE_BYTES).unwrap();
    let destination = Arc::new(function_on(Arc::new(FailingWrites(ram))));

    let path = std::env::temp_dir().join(format!("vfio-nvme-refusal-{}.sock", std::process::id()));
    let server = Server::bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let device: Arc<dyn Device> = destination.clone();
        let stop = stop.clone();
        std::thread::spawn(move || server.serve(device, &stop))
    };
    let mut client = Client::connect(&path).unwrap();
    client.set_migration_state(DeviceState::Resuming).unwrap();
    let err = client.mig_data_write(&stream).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Errno {
                errno: Errno::EIO,
                ..
            }
        ),
        "{err}"
    );

    // The reason, typed, for whoever asks the destination (not only its log).
    let failure = destination
        .migration()
        .unwrap()
        .status()
        .last_failure
        .unwrap();
    assert_eq!(failure.request, FailedRequest::Write);
    assert_eq!(failure.errno, Errno::EIO);
    assert!(
        matches!(
            failure.cause::<Refusal>(),
            Some(Refusal::Write { nsid: 1, .. })
        ),
        "{failure}"
    );
    assert!(
        failure.to_string().contains("the disk refuses every write"),
        "{failure}"
    );

    drop(client);
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap().unwrap();
}
