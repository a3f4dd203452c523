//! The verifying workload against `vfio-nvme serve` in another process: a verified run on four
//! queues, a second client that reads back everything the first wrote, and the CLI migrating a
//! random-write workload there and back.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::ServeProcess;
use common::TempDir;
use nvme_host::driver::Driver;
use nvme_host::memory::HostMemory;
use nvme_host::orchestrator::Orchestrator;
use nvme_host::workload;
use nvme_host::workload::Limit;
use nvme_host::workload::Pattern;
use nvme_host::workload::VerifyOptions;
use nvme_host::workload::WorkloadConfig;

#[test]
fn a_second_client_reads_back_what_the_first_wrote() {
    let dir = TempDir::new("readback");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", "ram:256M,lba=4096"]);
    let config = WorkloadConfig {
        rw: Pattern::RandRw { read_percent: 30 },
        queues: 4,
        queue_depth: 32,
        limit: Limit::Duration(Duration::from_secs(2)),
        verify: true,
        lba_range: Some(0..16384),
        ..WorkloadConfig::default()
    };
    let ledger = {
        let memory = HostMemory::new(32 << 20, 0x1_0000_0000).unwrap();
        let orch = Orchestrator::connect(&serve.socket, memory.clone()).unwrap();
        let driver = Driver::new(orch.bar(), memory).unwrap();
        let report = workload::run(&driver, &config, &AtomicBool::new(false), |_| {}).unwrap();
        assert!(report.verified, "{report}");
        assert_eq!(report.errors, 0);
        assert!(report.writes > 1000, "{report}");
        report.ledger.clone()
        // The client disconnects here; the server keeps the device for the next one.
    };
    let memory = HostMemory::new(32 << 20, 0x2_0000_0000).unwrap();
    let orch = Orchestrator::connect(&serve.socket, memory.clone()).unwrap();
    let driver = Driver::new(orch.bar(), memory).unwrap();
    let readback = workload::verify_all(
        &driver,
        1,
        &ledger,
        &VerifyOptions {
            queues: 4,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert!(readback.verified, "{readback}");
    assert_eq!(readback.ios, ledger.written_units());
}

#[test]
fn the_cli_migrates_a_random_write_workload_there_and_back() {
    let dir = TempDir::new("cli-migrate");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(["--json", "workload", "--socket"])
        .arg(&a.socket)
        .args([
            "--rw",
            "randwrite",
            "--queues",
            "4",
            "--qd",
            "32",
            "--verify",
            "--migrate-after",
            "1s",
            "--migrate-back",
            "--migrate-to",
        ])
        .arg(&b.socket)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["migrations"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(report["workload"]["verified"], true);
    assert_eq!(report["workload"]["failure_count"], 0);
    assert_eq!(report["readback"]["verified"], true);
}
