//! The verifying workload against `vfio-nvme serve` in another process: a verified run on four
//! queues, a second client that reads back everything the first wrote, the CLI migrating a
//! random-write workload there and back, a second verified run on the same server, layouts
//! saved and re-verified (also after an aborted migration, which the run itself reads back on
//! the source), a migrated workload over trapped doorbells, and usage errors that only the
//! controller can find.

mod common;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use std::path::Path;
use std::process::Output;

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
    let (events, report) = events_and_result(&output.stdout);
    assert_eq!(
        report["migrations"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    // Each migration streamed progress events before the result, the last one the blackout's.
    assert!(
        events.iter().all(|e| e["event"] == "migration"),
        "{events:?}"
    );
    let to_b: Vec<_> = events
        .iter()
        .filter(|e| e["to"] == b.socket.to_str().unwrap())
        .collect();
    assert!(!to_b.is_empty(), "{events:?}");
    assert_eq!(to_b.last().unwrap()["phase"], "stop_copy", "{to_b:?}");
    for m in report["migrations"].as_array().unwrap() {
        assert!(m["switch_reason"].is_string(), "{m}");
        assert_eq!(m["downtime_limit_ms"], 300.0, "{m}");
        assert_eq!(
            m["rounds"].as_array().unwrap().len() as u64,
            m["precopy_rounds"].as_u64().unwrap(),
            "{m}"
        );
    }
    assert_eq!(report["workload"]["verified"], true);
    assert_eq!(report["workload"]["failure_count"], 0);
    assert_eq!(report["readback"]["verified"], true);
}

#[test]
fn trapped_doorbells_carry_a_verified_workload_through_a_migration_there_and_back() {
    // Every doorbell of this client is a posted REGION_WRITE that the servers' readers carry
    // out: the migration's requests on the same connection must still come after them.
    let dir = TempDir::new("trapped");
    let args = ["--namespace", "ram:64M,lba=4096", "--doorbells", "trapped"];
    let a = ServeProcess::start(&dir.path("a.sock"), &args);
    let b = ServeProcess::start(&dir.path("b.sock"), &args);
    let (code, report, stderr) = workload_json(
        &a.socket,
        &[
            "--rw",
            "randrw",
            "--queues",
            "2",
            "--qd",
            "16",
            "--verify",
            "--migrate-after",
            "1s",
            "--migrate-back",
            "--migrate-to",
            b.socket.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        report["migrations"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    assert_eq!(report["workload"]["verified"], true, "{report}");
    assert_eq!(report["workload"]["failure_count"], 0, "{report}");
    assert!(
        report["workload"]["writes"].as_u64().unwrap() > 1000,
        "{report}"
    );
}

/// Runs `vfio-nvme ARGS...` (quiet log) and returns its output.
fn cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The event lines and the result (the last line) of a `--json` run's stdout.
fn events_and_result(stdout: &[u8]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let result = lines.pop().expect("no result line");
    assert!(result.get("event").is_none(), "{result}");
    (lines, result)
}

/// `workload --json --socket SOCKET ARGS...`, its exit status and its JSON result.
fn workload_json(socket: &Path, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["--json", "workload", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = cli(&all);
    if output.stdout.is_empty() {
        panic!("no result: stderr {}", text(&output.stderr));
    }
    let (_, json) = events_and_result(&output.stdout);
    (output.status.code(), json, text(&output.stderr))
}

#[test]
fn a_second_verified_run_on_the_same_server_does_not_call_the_first_runs_data_corruption() {
    let dir = TempDir::new("second-run");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", "ram:16M,lba=4096"]);
    // A small namespace, so the second run's reads land on blocks the first one wrote.
    let args = [
        "--verify", "--rw", "randrw", "--queues", "2", "--qd", "16", "--ios", "20000",
    ];
    let (code, first, stderr) = workload_json(&serve.socket, &args);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(first["passed"], true);
    assert!(first["readback"]["ios"].as_u64().unwrap() > 1000, "{first}");
    let (code, second, stderr) = workload_json(&serve.socket, &args);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(second["passed"], true, "{second}");
    assert_eq!(second["workload"]["failure_count"], 0, "{second}");
    assert!(
        second["workload"]["reads"].as_u64().unwrap() > 5000,
        "{second}"
    );
    assert_eq!(second["readback"]["verified"], true);
}

#[test]
fn a_saved_layout_re_verifies_the_server_and_catches_what_changed_since() {
    let dir = TempDir::new("layout");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", "ram:32M,lba=4096"]);
    let layout = dir.path("run1.layout");
    let layout_arg = layout.to_str().unwrap();
    let (code, run, stderr) = workload_json(
        &serve.socket,
        &[
            "--verify",
            "--rw",
            "randwrite",
            "--ios",
            "3000",
            "--save-layout",
            layout_arg,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(run["layout"], layout_arg);
    let written = run["readback"]["ios"].as_u64().unwrap();
    assert!(written > 1000, "{run}");

    // Another process, a new connection: everything the first run wrote reads back.
    let (code, check, stderr) = workload_json(
        &serve.socket,
        &["--verify-layout", layout_arg, "--queues", "2"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["readback"]["ios"].as_u64().unwrap(), written);

    // A later run overwrites all of it: the layout's run finds the later run's blocks.
    let (code, _, stderr) = workload_json(
        &serve.socket,
        &[
            "--verify", "--rw", "write", "--ios", "8192", "--queues", "1",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (code, check, stderr) = workload_json(&serve.socket, &["--verify-layout", layout_arg]);
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(check["passed"], false);
    assert_eq!(check["readback"]["failures"][0]["kind"], "Stale", "{check}");
    assert!(stderr.contains("verification against"), "{stderr}");

    // So is a layout for another namespace shape (512-byte blocks here).
    let other = ServeProcess::start(&dir.path("512.sock"), &["--namespace", "ram:32M"]);
    let output = cli(&[
        "workload",
        "--socket",
        other.socket.to_str().unwrap(),
        "--verify-layout",
        layout_arg,
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("for '--verify-layout'") && stderr.contains("does not fit namespace 1"),
        "{stderr}"
    );

    // A file that is not a layout is the user's mistake.
    std::fs::write(dir.path("junk"), b"not a layout").unwrap();
    let output = cli(&[
        "workload",
        "--socket",
        serve.socket.to_str().unwrap(),
        "--verify-layout",
        dir.path("junk").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        text(&output.stderr).contains("--verify-layout"),
        "{output:?}"
    );
}

#[test]
fn after_an_aborted_migration_the_run_reads_back_on_the_source_and_its_layout_re_verifies() {
    let dir = TempDir::new("aborted");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    // B's namespace is smaller: it refuses the stream, and the VF goes back to running on A.
    let b = ServeProcess::start_logged(
        &dir.path("b.sock"),
        &["--namespace", "ram:32M,lba=4096"],
        &dir.path("b.log"),
    );
    let layout = dir.path("a.layout");
    let (code, run, stderr) = workload_json(
        &a.socket,
        &[
            "--verify",
            "--rw",
            "randwrite",
            "--queues",
            "2",
            "--migrate-after",
            "1s",
            "--migrate-to",
            b.socket.to_str().unwrap(),
            "--save-layout",
            layout.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("live migration failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("--verify-layout {}", layout.display())),
        "{stderr}"
    );
    // The run itself read back every acknowledged write on A, where the device stayed, and
    // says so.
    assert_eq!(run["passed"], false, "{run}");
    assert!(
        run["migration_error"]
            .as_str()
            .is_some_and(|e| e.contains("aborted")),
        "{run}"
    );
    assert_eq!(run["socket"], a.socket.to_str().unwrap(), "{run}");
    assert_eq!(run["readback"]["verified"], true, "{run}");
    let read_back = run["readback"]["ios"].as_u64().unwrap();
    assert!(read_back > 100, "{run}");
    assert!(
        stderr.contains(&format!(
            "all {read_back} acknowledged block(s) read back correct"
        )),
        "{stderr}"
    );
    let (code, check, stderr) =
        workload_json(&a.socket, &["--verify-layout", layout.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(check["passed"], true, "{check}");
    assert!(check["readback"]["ios"].as_u64().unwrap() > 100, "{check}");
}

#[test]
fn a_throttled_guest_keeps_completing_io_while_pre_copy_converges() {
    let dir = TempDir::new("throttled");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:64M,lba=4096"]);
    // A dirty limit any writing guest exceeds, and a capped stream so pre-copy lasts: the
    // guest is throttled for most of the migration. The guest's own rate is capped too (80 MB/s
    // of writes), so the throttle's deepest step (1 % of it) is below the stream on any
    // machine: an uncapped guest on a fast one writes 900 K IOPS, and 1 % of that outruns a
    // 16 MB/s stream.
    let (code, report, stderr) = workload_json(
        &a.socket,
        &[
            "--rate",
            "20000",
            "--rw",
            "randwrite",
            "--queues",
            "4",
            "--qd",
            "32",
            "--verify",
            "--migrate-after",
            "1s",
            "--migrate-to",
            b.socket.to_str().unwrap(),
            "--dirty-limit",
            "1M",
            "--max-bandwidth",
            "16M",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["passed"], true, "{report}");
    let m = &report["migrations"][0];
    assert!(m["throttle_percent"].as_u64().unwrap() >= 20, "{m}");
    assert!(m["throttled_rounds"].as_u64().unwrap() >= 1, "{m}");
    // More completed while throttled than was in flight when it began: the guest went on
    // submitting, slower, instead of being held.
    assert!(m["ios_while_throttled"].as_u64().unwrap() > 4 * 32, "{m}");
    assert_eq!(report["readback"]["verified"], true, "{report}");
}

#[test]
fn a_migration_that_cannot_converge_gives_up_and_the_source_keeps_every_write() {
    let dir = TempDir::new("gives-up");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let layout = dir.path("a.layout");
    // The device's state alone takes longer than 1 ms at 1 MiB/s: it never fits.
    let output = cli(&[
        "workload",
        "--socket",
        a.socket.to_str().unwrap(),
        "--verify",
        "--rw",
        "randwrite",
        "--queues",
        "2",
        "--migrate-after",
        "1s",
        "--migrate-to",
        b.socket.to_str().unwrap(),
        "--downtime-limit",
        "1ms",
        "--max-bandwidth",
        "1M",
        "--migrate-timeout",
        "2s",
        "--save-layout",
        layout.to_str().unwrap(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not converge within 2s"), "{stderr}");
    assert!(stderr.contains("keeps running on the source"), "{stderr}");
    let (code, check, stderr) =
        workload_json(&a.socket, &["--verify-layout", layout.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(check["passed"], true, "{check}");
    assert!(check["readback"]["ios"].as_u64().unwrap() > 100, "{check}");
}

#[test]
fn limits_only_the_controller_knows_are_usage_errors_naming_the_option() {
    let dir = TempDir::new("limits");
    let serve = ServeProcess::start(&dir.path("vf.sock"), &["--namespace", "ram:16M,lba=4096"]);
    let socket = serve.socket.to_str().unwrap();
    for (args, wanted) in [
        (&["--qd", "2000"][..], "invalid value '2000' for '--qd'"),
        (&["--queues", "100"], "invalid value '100' for '--queues'"),
        (&["--bs", "6k"], "invalid value '6k' for '--bs'"),
        (&["--nsid", "9"], "invalid value '9' for '--nsid'"),
    ] {
        let mut all = vec!["workload", "--socket", socket, "--ios", "10"];
        all.extend_from_slice(args);
        let output = cli(&all);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("queue_depth") && !stderr.contains("block_size"),
            "{stderr}"
        );
    }
    let stderr = text(&cli(&["workload", "--socket", socket, "--qd", "2000"]).stderr);
    assert!(stderr.contains("at most 1023 commands"), "{stderr}");
}

/// A verified 1 s workload (2 queues, depth 8) with `extra` arguments against a server with
/// trapped doorbells; returns the server's trace log.
fn verified_workload_on_trapped_doorbells(name: &str, extra: &[&str]) -> String {
    let dir = TempDir::new(name);
    let log = dir.path("a.log");
    let a = ServeProcess::start_traced(
        &dir.path("a.sock"),
        &["--namespace", "ram:64M,lba=4096", "--doorbells", "trapped"],
        &log,
    );
    let mut args = vec![
        "--rw", "randrw", "--queues", "2", "--qd", "8", "--time", "1s", "--verify",
    ];
    args.extend_from_slice(extra);
    let (code, report, stderr) = workload_json(&a.socket, &args);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["workload"]["verified"], true, "{report}");
    drop(a);
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn shadow_doorbells_on_trapped_doorbells_carry_a_verified_workload() {
    // By default the client rings as Linux does: shadow values in its memory, a register
    // write (a REGION_WRITE here) only when the server's EventIdx asks for one.
    let log = verified_workload_on_trapped_doorbells("shadow", &[]);
    assert!(
        log.contains("the host configured shadow doorbells"),
        "the server never saw Doorbell Buffer Config:\n{log}"
    );
}

#[test]
fn a_client_without_shadow_doorbells_rings_the_registers_only() {
    // --no-shadow-doorbells: every doorbell is a register write (a REGION_WRITE here), as
    // from a host that ignores Doorbell Buffer Config.
    let log = verified_workload_on_trapped_doorbells("registers", &["--no-shadow-doorbells"]);
    assert!(
        !log.contains("the host configured shadow doorbells"),
        "the client configured shadow doorbells despite --no-shadow-doorbells:\n{log}"
    );
}
