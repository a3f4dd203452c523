//! The verifying workload against an in-process VF: verified runs on several queues, the
//! read-back, the verifier catching each kind of corruption planted in the namespace backend,
//! a device paused and its BAR switched mid-run, and a timeout that names queue and LBA.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use nvme_device::namespace::BlockSize;
use nvme_host::driver::Bar;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::workload::Baseline;
use nvme_host::workload::Expected;
use nvme_host::workload::FailureKind;
use nvme_host::workload::Found;
use nvme_host::workload::Limit;
use nvme_host::workload::Op;
use nvme_host::workload::Pattern;
use nvme_host::workload::Report;
use nvme_host::workload::VerifyOptions;
use nvme_host::workload::WorkloadConfig;
use nvme_host::workload::WorkloadError;
use nvme_host::workload::run;
use nvme_host::workload::run_with_ledger;
use nvme_host::workload::verify_all;
use shmem::Mapping;
use shmem::Protection;
use vfio_migration::DeviceState;
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfio_nvme::vf::VfDevice;
use vfu::server::Device;

const IOVA: u64 = 0x4000_0000;

/// BAR0 of whichever VF the host currently uses: what the orchestrator swaps.
struct SwitchableBar(Mutex<Arc<VfDevice>>);

impl SwitchableBar {
    fn device(&self) -> Arc<VfDevice> {
        self.0.lock().unwrap().clone()
    }
}

fn errno(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("{e:?}"))
}

impl Bar for SwitchableBar {
    fn read32(&self, offset: u64) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.device()
            .region_read(0, offset, &mut b)
            .map_err(errno)?;
        Ok(u32::from_le_bytes(b))
    }

    fn read64(&self, offset: u64) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.device()
            .region_read(0, offset, &mut b)
            .map_err(errno)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write32(&self, offset: u64, value: u32) -> io::Result<()> {
        self.device()
            .region_write(0, offset, &value.to_le_bytes())
            .map_err(errno)
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.write32(offset, value).expect("doorbell write");
    }
}

struct Host {
    served: Served,
    vf: Arc<VfDevice>,
    bar: Arc<SwitchableBar>,
    driver: Driver,
}

fn host(block_size: BlockSize) -> Host {
    let served = Served::new(&ServeConfig {
        name: "workload".to_owned(),
        vfs: 1,
        namespaces: vec![NamespaceConfig {
            backend: BackendConfig::Ram {
                size: 16 << 20,
                prealloc: false,
            },
            block_size,
            shared: false,
        }],
        ..ServeConfig::default()
    })
    .unwrap();
    let vf = served.function(1).unwrap().clone();
    let mem = HostMemory::new(8 << 20, IOVA).unwrap();
    let fd = mem.mapping().fd().unwrap().try_clone_to_owned().unwrap();
    let view = Mapping::from_fd(fd, 0, mem.len() as usize, Protection::ReadWrite).unwrap();
    vf.address_space().map(IOVA, view).unwrap();
    let bar = Arc::new(SwitchableBar(Mutex::new(vf.clone())));
    let driver = Driver::new(bar.clone(), mem).unwrap();
    Host {
        served,
        vf,
        bar,
        driver,
    }
}

impl Host {
    /// Reads logical block `lba` (4 KiB blocks) straight from the namespace backend.
    fn backend_block(&self, lba: u64) -> Vec<u8> {
        let mut block = vec![0u8; 4096];
        self.served.subsystem().namespaces()[0]
            .backend()
            .read(lba * 4096, &mut block)
            .unwrap();
        block
    }

    /// Overwrites logical block `lba` (4 KiB blocks) behind the controller's back.
    fn plant(&self, lba: u64, block: &[u8]) {
        self.served.subsystem().namespaces()[0]
            .backend()
            .write(lba * 4096, block)
            .unwrap();
    }
}

fn no_stop() -> AtomicBool {
    AtomicBool::new(false)
}

#[test]
fn verified_randrw_on_four_queues_then_read_back() {
    let h = host(BlockSize::B4096);
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 50 },
        queues: 4,
        queue_depth: 8,
        limit: Limit::Duration(Duration::from_millis(500)),
        lba_range: Some(0..512),
        interval: Duration::from_millis(50),
        ..WorkloadConfig::default()
    };
    let snapshots = Cell::new(0u32);
    let report = run(&h.driver, &config, &no_stop(), |s| {
        assert!(s.elapsed_s > 0.0);
        snapshots.set(snapshots.get() + 1);
    })
    .unwrap();
    assert!(report.verified, "{report}");
    assert!(report.reads > 100 && report.writes > 100, "{report}");
    assert_eq!(report.ios, report.reads + report.writes);
    assert_eq!(report.errors, 0);
    assert_eq!(report.bytes, report.ios * 4096);
    assert_eq!((report.queues, report.queue_depth), (4, 8));
    assert!(report.iops > 0.0 && report.mb_per_s > 0.0);
    assert!(report.latency.p50_us > 0.0);
    assert!(report.latency.p50_us <= report.latency.p99_us);
    assert!(report.latency.p99_us <= report.latency.max_us);
    assert!(
        snapshots.get() >= 5,
        "progress called {} times",
        snapshots.get()
    );
    assert!(report.timeline.len() >= 5);
    let timeline_ios: u64 = report.timeline.iter().map(|b| b.reads + b.writes).sum();
    assert_eq!(timeline_ios, report.ios);
    assert!(report.to_string().contains("verify: passed"), "{report}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verified"], true);
    assert!(json["timeline"].as_array().unwrap().len() >= 5);

    // Read back everything written, then the whole range (unwritten units must be zeros).
    let written = report.ledger.written_units();
    assert!(written > 100, "{written} units written");
    let back = verify_all(&h.driver, 1, &report.ledger, &VerifyOptions::default()).unwrap();
    assert!(back.verified, "{back}");
    assert_eq!((back.reads, back.writes), (written, 0));
    let whole = verify_all(
        &h.driver,
        1,
        &report.ledger,
        &VerifyOptions {
            lbas: Some(0..512),
            queues: 2,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(whole.verified, "{whole}");
    assert_eq!(whole.reads, 512);

    // A later run continues the same ledger: its reads see the first run's writes.
    let again = run_with_ledger(
        &h.driver,
        &WorkloadConfig {
            rw: Pattern::RandRead,
            limit: Limit::Ios(300),
            ..config
        },
        &report.ledger,
        &no_stop(),
        |_| {},
    )
    .unwrap();
    assert!(again.verified, "{again}");
    assert_eq!((again.reads, again.writes), (300, 0));
}

#[test]
fn multi_block_transfers_with_prp_lists_verify() {
    let h = host(BlockSize::B512);
    // 16 KiB commands over 512-byte blocks: 32 blocks per command, PRP lists.
    let report = run(
        &h.driver,
        &WorkloadConfig {
            rw: Pattern::SeqRw { read_percent: 30 },
            block_size: 16384,
            queues: 2,
            queue_depth: 4,
            limit: Limit::Ios(400),
            lba_range: Some(0..32 * 64),
            ..WorkloadConfig::default()
        },
        &no_stop(),
        |_| {},
    )
    .unwrap();
    assert!(report.verified, "{report}");
    assert_eq!(report.ios, 400);
    let back = verify_all(
        &h.driver,
        1,
        &report.ledger,
        &VerifyOptions {
            lbas: Some(0..32 * 64),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(back.verified, "{back}");
    assert_eq!(back.reads, 64);
}

#[test]
fn verifier_catches_planted_corruption() {
    let h = host(BlockSize::B4096);
    let config = WorkloadConfig {
        rw: Pattern::Write,
        queue_depth: 4,
        limit: Limit::Ios(48),
        lba_range: Some(0..64),
        // A fresh namespace: data where nothing was written is a failure too.
        baseline: Baseline::Zeros,
        ..WorkloadConfig::default()
    };
    // Two sequential passes over units 0..48: every one written twice.
    let first = run(&h.driver, &config, &no_stop(), |_| {}).unwrap();
    assert!(first.verified, "{first}");
    let old_5 = h.backend_block(5);
    let second = run_with_ledger(&h.driver, &config, &first.ledger, &no_stop(), |_| {}).unwrap();
    assert!(second.verified, "{second}");
    let ledger = &second.ledger;
    let Expected::Generation(newest_5) = ledger.expected(5) else {
        panic!("LBA 5 not written");
    };
    assert!(
        verify_all(&h.driver, 1, ledger, &VerifyOptions::default())
            .unwrap()
            .verified
    );

    // An old generation written back (a lost update), a flipped byte, another LBA's block,
    // a vanished write, and data where nothing was ever written.
    h.plant(5, &old_5);
    let mut flipped = h.backend_block(9);
    flipped[1000] ^= 0x10;
    h.plant(9, &flipped);
    h.plant(12, &h.backend_block(20));
    h.plant(30, &[0u8; 4096]);
    h.plant(50, &h.backend_block(40));
    h.plant(55, &[0xa5u8; 4096]);

    let back = verify_all(
        &h.driver,
        1,
        ledger,
        &VerifyOptions {
            lbas: Some(0..64),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(!back.verified);
    assert_eq!(back.reads, 64);
    assert_eq!(back.failure_count, 6, "{:#?}", back.failures);
    let mut found: Vec<(u64, FailureKind)> =
        back.failures.iter().map(|f| (f.lba, f.kind)).collect();
    found.sort_by_key(|&(lba, _)| lba);
    assert_eq!(
        found,
        vec![
            (5, FailureKind::Stale),
            (9, FailureKind::Torn),
            (12, FailureKind::Misplaced),
            (30, FailureKind::Lost),
            (50, FailureKind::Misplaced),
            (55, FailureKind::NeverWritten),
        ]
    );
    let stale = back.failures.iter().find(|f| f.lba == 5).unwrap();
    assert_eq!(stale.expected, Expected::Generation(newest_5));
    let Found::Block {
        lba, generation, ..
    } = stale.found
    else {
        panic!("{stale}");
    };
    assert_eq!(lba, 5);
    assert!(generation < newest_5);
    let misplaced = back.failures.iter().find(|f| f.lba == 12).unwrap();
    assert!(matches!(misplaced.found, Found::Block { lba: 20, .. }));
    let text = back.to_string();
    assert!(text.contains("verify: FAILED, 6 failure(s)"), "{text}");

    // The workload's own reads catch it too, and stop at the first failure when asked.
    let reads = run_with_ledger(
        &h.driver,
        &WorkloadConfig {
            rw: Pattern::Read,
            limit: Limit::Ios(64),
            stop_on_failure: true,
            ..config
        },
        ledger,
        &no_stop(),
        |_| {},
    )
    .unwrap();
    assert!(!reads.verified);
    assert_eq!(reads.failures[0].lba, 5);
    assert_eq!(reads.failures[0].kind, FailureKind::Stale);
    assert!(reads.ios < 20, "kept going after the failure: {reads}");
}

#[test]
fn a_second_run_judges_only_what_it_wrote() {
    let h = host(BlockSize::B4096);
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 50 },
        queue_depth: 8,
        limit: Limit::Ios(600),
        lba_range: Some(0..256),
        ..WorkloadConfig::default()
    };
    let first = run(&h.driver, &config, &no_stop(), |_| {}).unwrap();
    assert!(first.verified, "{first}");
    // The second run (a new ledger, a new run identifier) reads blocks the first one left:
    // earlier content, not corruption.
    let second = run(&h.driver, &config, &no_stop(), |_| {}).unwrap();
    assert!(second.verified, "{second}");
    assert!(second.reads > 100, "{second}");
    let whole = verify_all(
        &h.driver,
        1,
        &second.ledger,
        &VerifyOptions {
            lbas: Some(0..256),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(whole.verified, "{whole}");
    // What the second run wrote is still judged: one of its blocks put back to the first
    // run's version is stale, and zeros are a lost write.
    let ledger = &second.ledger;
    let mine: Vec<u64> = ledger.written().take(2).map(|u| ledger.lba(u)).collect();
    h.plant(mine[0], &block_of_run(first.ledger.run(), mine[0]));
    h.plant(mine[1], &[0u8; 4096]);
    let back = verify_all(&h.driver, 1, &second.ledger, &VerifyOptions::default()).unwrap();
    let mut kinds: Vec<(u64, FailureKind)> =
        back.failures.iter().map(|f| (f.lba, f.kind)).collect();
    kinds.sort_by_key(|&(lba, _)| lba);
    let mut wanted = vec![(mine[0], FailureKind::Stale), (mine[1], FailureKind::Lost)];
    wanted.sort_by_key(|&(lba, _)| lba);
    assert_eq!(kinds, wanted, "{back}");
    // Had the caller said the namespace started empty, the first run's data would count.
    let strict = run(
        &h.driver,
        &WorkloadConfig {
            rw: Pattern::RandRead,
            baseline: Baseline::Zeros,
            ..config
        },
        &no_stop(),
        |_| {},
    )
    .unwrap();
    assert!(!strict.verified, "{strict}");
    assert_eq!(strict.failures[0].kind, FailureKind::NeverWritten);
}

/// An intact 4 KiB block for `lba` stamped by run `run`.
fn block_of_run(run: u64, lba: u64) -> Vec<u8> {
    let mut block = vec![0u8; 4096];
    nvme_host::workload::stamp_block(
        &mut block,
        nvme_host::workload::BlockHeader {
            magic: 0,
            run,
            lba,
            generation: 1,
            seq: 1,
            queue: 1,
            reserved: 0,
            crc: 0,
        },
    );
    block
}

#[test]
fn device_paused_and_bar_switched_mid_run() {
    let h = host(BlockSize::B4096);
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 40 },
        queues: 2,
        queue_depth: 8,
        limit: Limit::Duration(Duration::from_millis(1000)),
        lba_range: Some(0..256),
        ..WorkloadConfig::default()
    };
    let report: Report = std::thread::scope(|s| {
        let runner = s.spawn(|| run(&h.driver, &config, &no_stop(), |_| {}));
        std::thread::sleep(Duration::from_millis(250));
        // The controller stops fetching (what a migration's blackout looks like to the guest),
        // the BAR is switched (to the same VF here), and the controller resumes.
        h.vf.migration()
            .unwrap()
            .set_state(DeviceState::RunningP2p)
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        *h.bar.0.lock().unwrap() = h.vf.clone();
        h.vf.migration()
            .unwrap()
            .set_state(DeviceState::Running)
            .unwrap();
        runner.join().unwrap()
    })
    .unwrap();
    assert!(report.verified, "{report}");
    assert_eq!(report.errors, 0);
    assert!(
        report.longest_stall_ms >= 200.0,
        "stall of {} ms not seen",
        report.longest_stall_ms
    );
    assert!(report.longest_stall_end_ms >= 450.0, "{report}");
    // The timeline shows the gap: buckets with no completion between busy ones.
    assert!(report.timeline.iter().any(|b| b.reads + b.writes == 0));
    assert!(report.writes > 50, "{report}");
    let back = verify_all(&h.driver, 1, &report.ledger, &VerifyOptions::default()).unwrap();
    assert!(back.verified, "{back}");
}

#[test]
fn a_device_paused_past_the_timeout_fails_naming_queue_and_lba() {
    let h = host(BlockSize::B4096);
    let config = WorkloadConfig {
        rw: Pattern::RandWrite,
        queues: 1,
        first_qid: 3,
        queue_depth: 4,
        limit: Limit::Duration(Duration::from_secs(5)),
        timeout: Duration::from_millis(200),
        lba_range: Some(0..64),
        ..WorkloadConfig::default()
    };
    let result = std::thread::scope(|s| {
        // Pause the controller once the run is going, and resume it only well after the
        // timeout (so that deleting the queues, admin commands, can finish).
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            h.vf.migration()
                .unwrap()
                .set_state(DeviceState::RunningP2p)
                .unwrap();
            std::thread::sleep(Duration::from_millis(700));
            h.vf.migration()
                .unwrap()
                .set_state(DeviceState::Running)
                .unwrap();
        });
        run(&h.driver, &config, &no_stop(), |_| {})
    });
    let err = result.unwrap_err();
    let WorkloadError::Timeout { qid, lba, op, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!((*qid, *op), (3, Op::Write));
    assert!(*lba < 64);
    let text = err.to_string();
    assert!(
        text.contains("queue 3") && text.contains(&format!("LBA {lba}")),
        "{text}"
    );
}

#[test]
fn stop_flag_ends_an_unverified_run() {
    let h = host(BlockSize::B4096);
    let stop = AtomicBool::new(false);
    let config = WorkloadConfig {
        rw: Pattern::RandWrite,
        verify: false,
        limit: Limit::Duration(Duration::from_secs(60)),
        lba_range: Some(0..128),
        ..WorkloadConfig::default()
    };
    let started = std::time::Instant::now();
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        run(&h.driver, &config, &stop, |_| {})
    })
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(report.writes > 0 && report.errors == 0);
    assert!(!report.verify && !report.verified);
    assert!(report.to_string().ends_with("verify: off"), "{report}");
    // Unstamped writes leave their units unknown, which a read-back accepts.
    assert!(
        report
            .ledger
            .written()
            .all(|u| report.ledger.expected(u) == Expected::Unknown)
    );
    let back = verify_all(&h.driver, 1, &report.ledger, &VerifyOptions::default()).unwrap();
    assert!(back.verified, "{back}");
}

#[test]
fn a_rate_cap_never_issues_more_than_its_bucket_holds() {
    let h = host(BlockSize::B4096);
    // 10 IOPS: a bucket of one token, refilled every 100 ms. In a 250 ms run tokens exist at
    // 0, 100 and 200 ms only, however many slots the two queues have free.
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 50 },
        queues: 2,
        queue_depth: 16,
        rate: Some(10),
        limit: Limit::Duration(Duration::from_millis(250)),
        lba_range: Some(0..256),
        ..WorkloadConfig::default()
    };
    let report = run(&h.driver, &config, &no_stop(), |_| {}).unwrap();
    assert!((1..=3).contains(&report.ios), "{report}");
    assert!(report.verified, "{report}");
    assert_eq!(report.rate, Some(10));
    assert!(report.to_string().contains("capped at 10 IOPS"), "{report}");
    assert_eq!(serde_json::to_value(&report).unwrap()["rate"], 10);

    // A count limit is reached exactly under a cap, one queue at depth 1 (the trickle case).
    let config = WorkloadConfig {
        queues: 1,
        queue_depth: 1,
        rate: Some(2000),
        limit: Limit::Ios(50),
        ..config
    };
    let report = run(&h.driver, &config, &no_stop(), |_| {}).unwrap();
    assert_eq!(report.ios, 50, "{report}");
    assert!(report.verified, "{report}");
}

#[test]
fn bad_configurations_are_refused_naming_the_field() {
    let h = host(BlockSize::B4096);
    let bad = |config: WorkloadConfig, field: &str| {
        let err = run(&h.driver, &config, &no_stop(), |_| {}).unwrap_err();
        assert!(
            matches!(&err, WorkloadError::Config { field: f, .. } if *f == field),
            "{err}"
        );
    };
    bad(
        WorkloadConfig {
            block_size: 1000,
            ..WorkloadConfig::default()
        },
        "block_size",
    );
    bad(
        WorkloadConfig {
            block_size: 4 << 20,
            ..WorkloadConfig::default()
        },
        "block_size",
    );
    bad(
        WorkloadConfig {
            lba_range: Some(0..(1 << 40)),
            ..WorkloadConfig::default()
        },
        "lba_range",
    );
    bad(
        WorkloadConfig {
            queues: 0,
            ..WorkloadConfig::default()
        },
        "queues",
    );
    bad(
        WorkloadConfig {
            rw: Pattern::Write,
            queues: 4,
            lba_range: Some(0..2),
            ..WorkloadConfig::default()
        },
        "queues",
    );
    bad(
        WorkloadConfig {
            limit: Limit::Ios(0),
            ..WorkloadConfig::default()
        },
        "limit",
    );
    bad(
        WorkloadConfig {
            nsid: 9,
            ..WorkloadConfig::default()
        },
        "nsid",
    );
    bad(
        WorkloadConfig {
            rate: Some(0),
            ..WorkloadConfig::default()
        },
        "rate",
    );
}
