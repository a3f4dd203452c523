//! The same behaviour checks run against every storage backend.

use std::path::PathBuf;

use nvme_device::backend::Backend;
use nvme_device::backend::FileBackend;
use nvme_device::backend::NullBackend;
use nvme_device::backend::RamBackend;
use shmem::AddressSpace;
use shmem::Mapping;

const SIZE: u64 = 8 << 20;

fn tmp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{name}-{}", std::process::id()))
}

fn guest() -> AddressSpace {
    let space = AddressSpace::new();
    space
        .map(0x100000, Mapping::memfd("guest", 1 << 20).unwrap())
        .unwrap();
    space
}

/// Writes through guest memory, reads back through guest memory and the host API, zeroes and
/// deallocates, and checks what reads as zero afterwards.
fn exercise(backend: &dyn Backend) {
    assert_eq!(backend.size(), SIZE);
    let mem = guest();
    let pattern: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    mem.write(0x100000, &pattern).unwrap();
    backend
        .write_from_guest(1 << 20, &mem, 0x100000, pattern.len() as u64)
        .unwrap();
    mem.fill(0x100000, pattern.len() as u64, 0xEE).unwrap();
    backend
        .read_to_guest(1 << 20, &mem, 0x100000, pattern.len() as u64)
        .unwrap();
    let mut back = vec![0u8; pattern.len()];
    mem.read(0x100000, &mut back).unwrap();
    assert_eq!(
        back,
        pattern,
        "{} round trip through guest memory",
        backend.kind()
    );

    let mut host = vec![0u8; 4096];
    backend.read((1 << 20) + 4096, &mut host).unwrap();
    assert_eq!(host, pattern[4096..8192]);
    backend.write(SIZE - 4096, &[0x5A; 4096]).unwrap();
    backend.read(SIZE - 4096, &mut host).unwrap();
    assert_eq!(host, [0x5A; 4096]);

    backend.write_zeroes(1 << 20, 8192).unwrap();
    backend.deallocate((1 << 20) + 16384, 16384).unwrap();
    backend.read(1 << 20, &mut back).unwrap();
    assert!(back[..8192].iter().all(|&b| b == 0));
    assert_eq!(back[8192..16384], pattern[8192..16384]);
    assert!(back[16384..32768].iter().all(|&b| b == 0));
    assert_eq!(back[32768..], pattern[32768..]);
    backend.flush().unwrap();

    let allocated = backend.allocated().unwrap();
    let covers = |at: u64| allocated.iter().any(|r| r.contains(&at));
    assert!(covers(SIZE - 1), "{allocated:?}");
    assert!(covers((1 << 20) + 40000), "{allocated:?}");
    assert!(allocated.iter().all(|r| r.end <= SIZE));

    // Guest memory that is not mapped is reported, not touched.
    assert!(backend.read_to_guest(0, &mem, 0x900000, 4096).is_err());
    assert!(backend.write_from_guest(0, &mem, 0x0, 4096).is_err());
}

#[test]
fn ram_backend() {
    let ram = RamBackend::new(SIZE).unwrap();
    assert!(ram.allocated().unwrap().is_empty());
    exercise(&ram);
    // Sparse: far less than the whole namespace is resident.
    let resident: u64 = ram
        .allocated()
        .unwrap()
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    assert!(resident < SIZE / 4, "{resident}");
}

#[test]
fn file_backend() {
    let path = tmp_path("file-backend");
    let file = FileBackend::open(&path, Some(SIZE), false).unwrap();
    exercise(&file);
    drop(file);
    let reopened = FileBackend::open(&path, None, false).unwrap();
    assert_eq!(reopened.size(), SIZE);
    let mut buf = [0u8; 16];
    reopened.read(SIZE - 16, &mut buf).unwrap();
    assert_eq!(buf, [0x5A; 16]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn file_backend_direct() {
    let path = tmp_path("file-backend-direct");
    match FileBackend::open(&path, Some(SIZE), true) {
        Ok(file) => exercise(&file),
        // tmpfs and some overlay file systems refuse O_DIRECT; then there is nothing to test
        // here, but the refusal must be a clean error naming the file.
        Err(e) => assert!(e.to_string().contains("file-backend-direct"), "{e}"),
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn file_backend_errors_name_the_file() {
    let err = FileBackend::open(&tmp_path("missing/dir/ns"), None, false).unwrap_err();
    assert!(err.to_string().contains("missing/dir/ns"), "{err}");
    let empty = tmp_path("empty");
    std::fs::write(&empty, b"").unwrap();
    let err = FileBackend::open(&empty, None, false).unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
    assert!(
        err.to_string().contains(&empty.display().to_string()),
        "names the file: {err}"
    );
    // A size no file system takes: the error names the file, and the file it created is gone.
    let huge = tmp_path("huge");
    let err = FileBackend::open(&huge, Some(u64::MAX / 2), false).unwrap_err();
    assert!(
        err.to_string().contains(&huge.display().to_string()),
        "{err}"
    );
    assert!(!huge.exists(), "nothing left behind");
    // An existing file keeps its contents and is not removed when sizing it fails.
    std::fs::write(&empty, b"data").unwrap();
    assert!(FileBackend::open(&empty, Some(u64::MAX / 2), false).is_err());
    assert_eq!(std::fs::read(&empty).unwrap(), b"data");
    std::fs::remove_file(&empty).unwrap();
}

#[test]
fn null_backend() {
    let null = NullBackend::new(SIZE);
    let mem = guest();
    mem.fill(0x100000, 4096, 0xFF).unwrap();
    null.read_to_guest(0, &mem, 0x100000, 4096).unwrap();
    let mut buf = [1u8; 4096];
    mem.read(0x100000, &mut buf).unwrap();
    assert_eq!(buf, [0; 4096]);
    null.write_from_guest(0, &mem, 0x100000, 4096).unwrap();
    null.read(0, &mut buf).unwrap();
    assert_eq!(buf, [0; 4096]);
    assert!(null.allocated().unwrap().is_empty());
}
