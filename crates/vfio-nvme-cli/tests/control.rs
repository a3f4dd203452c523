//! The control protocol across processes: `vfio-nvme ctl` against a `vfio-nvme serve` whose VF
//! has a client doing verified I/O (which keeps completing and verifies), a migration to a
//! destination that refuses the stream printing the destination's reason, "busy", "same
//! socket" and "no server there" each with their own message, and `serve --json` events.

mod common;

use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::ServeProcess;
use common::TempDir;
use serde_json::Value;

fn vfio_nvme(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctl SOCKET ARGS...`: its text, which must have exited 0.
fn ctl(socket: &Path, args: &[&str]) -> String {
    let mut all = vec!["ctl", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = vfio_nvme(&all);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
    text(&output.stdout)
}

/// `--json ctl SOCKET ARGS...`: its JSON result.
fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json", "ctl", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = vfio_nvme(&all);
    assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A `workload --json` child running in the background.
fn workload(socket: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(["--json", "workload", "--socket", socket.to_str().unwrap()])
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `what` every 50 ms until it holds, for at most 20 s.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Commands completed on the I/O queues of the socket's VF.
fn io_completed(socket: &Path) -> u64 {
    let queues = ctl_json(socket, &["queues"]);
    queues["controllers"][0]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["qid"].as_u64() != Some(0))
        .map(|q| q["completed"].as_u64().unwrap())
        .sum()
}

#[test]
fn ctl_looks_inside_while_a_client_does_verified_io_undisturbed() {
    let dir = TempDir::new("ctl-io");
    let control = dir.path("ctl.sock");
    let serve = ServeProcess::start(
        &dir.path("vf.sock"),
        &[
            "--namespace",
            "ram:64M,lba=4096",
            "--name",
            "ctl-test",
            "--control",
            control.to_str().unwrap(),
        ],
    );
    let vf = serve.socket.clone();
    let idle = ctl(&vf, &["status"]);
    assert!(idle.contains("nqn.2026-11.io.vfio-nvme:ctl-test"), "{idle}");
    assert!(idle.contains("none"), "no client yet: {idle}");

    let run = workload(
        &vf,
        &[
            "--verify", "--rw", "randrw", "--queues", "2", "--qd", "8", "--time", "10s",
        ],
    );
    wait_until("the client attached and its I/O runs", || {
        ctl_json(&vf, &["status"])["controllers"][1]["client_attached"] == true
            && io_completed(&vf) > 0
    });
    let first = io_completed(&vf);
    wait_until("the I/O queues keep completing", || {
        io_completed(&vf) > first
    });
    // While the client does I/O: every command, text and JSON, on the VF socket (beside the
    // attached client) and on the control socket.
    let status = ctl_json(&vf, &["status"]);
    let vf_status = &status["controllers"][1];
    assert_eq!(vf_status["cntlid"], 2, "{status}");
    assert_eq!(vf_status["enabled"], true, "{status}");
    assert_eq!(vf_status["ready"], true, "{status}");
    assert_eq!(vf_status["queues"], 3, "admin + 2 I/O: {status}");
    assert_eq!(vf_status["migration"]["state"], "RUNNING", "{status}");
    assert_eq!(vf_status["suspended"], false, "{status}");
    assert_eq!(status["namespaces"][0]["blocks"], 16384, "{status}");
    let text_status = ctl(&control, &["status"]);
    assert!(
        text_status.contains("attached") && text_status.contains("RUNNING"),
        "{text_status}"
    );
    assert!(text_status.contains(vf.to_str().unwrap()), "{text_status}");

    let id = ctl(&vf, &["id-ctrl"]);
    assert!(id.starts_with("NVME Identify Controller:"), "{id}");
    assert!(id.contains("cntlid    : 0x2"), "{id}");
    assert!(
        id.contains("subnqn    : nqn.2026-11.io.vfio-nvme:ctl-test"),
        "{id}"
    );
    assert_eq!(ctl_json(&control, &["id-ctrl"])["cntlid"], 1);
    let ns = ctl_json(&vf, &["id-ns", "--nsid", "1"]);
    assert_eq!(ns["nsze"], 16384, "{ns}");
    assert!(ctl(&vf, &["id-ns"]).contains("lbaf  0"));

    let secondary = ctl(&vf, &["list-secondary"]);
    assert!(
        secondary.contains("SCID      : Secondary Controller Identifier : 0x0002")
            && secondary.contains("(Online)"),
        "{secondary}"
    );
    assert_eq!(ctl_json(&control, &["list-secondary"])["num"], 1);

    assert!(
        io_completed(&vf) > first,
        "I/O goes on beside the control requests"
    );
    let queues = ctl(&vf, &["queues", "--cntlid", "2"]);
    assert!(
        queues.contains("COMPLETED") && queues.lines().count() >= 5,
        "{queues}"
    );
    assert_eq!(
        ctl_json(&control, &["queues"])["controllers"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the PF and the VF"
    );

    let migration = ctl(&vf, &["migration"]);
    assert!(
        migration.contains("VF 1 (cntlid 2): RUNNING") && migration.contains("last failure: none"),
        "{migration}"
    );
    let migration = ctl_json(&control, &["migration"]);
    assert_eq!(
        migration["functions"][0]["migration"]["session"],
        Value::Null
    );

    // The client was not disturbed: its run verifies.
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    wait_until("the client detached", || {
        ctl_json(&vf, &["status"])["controllers"][1]["client_attached"] == false
    });

    // Bad requests say why and exit 1.
    let output = vfio_nvme(&["ctl", vf.to_str().unwrap(), "queues", "--cntlid", "9"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no controller 9"),
        "{output:?}"
    );
    drop(serve);
}

/// `workload` on `source` migrating to `destination` after a second; its exit code, stderr and
/// how long it took.
fn migrate(source: &Path, destination: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let output = vfio_nvme(&[
        "workload",
        "--socket",
        source.to_str().unwrap(),
        "--verify",
        "--rw",
        "randwrite",
        "--migrate-after",
        "1s",
        "--migrate-to",
        destination.to_str().unwrap(),
    ]);
    (
        output.status.code(),
        text(&output.stderr),
        started.elapsed(),
    )
}

#[test]
fn a_refused_migration_prints_the_destinations_reason() {
    let dir = TempDir::new("ctl-refused");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:32M,lba=4096"]);
    let (code, stderr, _) = migrate(&a.socket, &b.socket);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("errno 22 (EINVAL)"), "{stderr}");
    assert!(
        stderr.contains("the destination says:")
            && stderr.contains("source has 16384 blocks of 4096 bytes, destination has 8192"),
        "{stderr}"
    );
    // The destination keeps the reason for `ctl` too.
    let migration = ctl(&b.socket, &["migration"]);
    assert!(
        migration.contains("last failure: MIG_DATA_WRITE (EINVAL)")
            && migration.contains("destination has 8192"),
        "{migration}"
    );
}

#[test]
fn busy_same_socket_and_no_server_each_say_so() {
    let dir = TempDir::new("ctl-unreachable");
    let a = ServeProcess::start(&dir.path("a.sock"), &["--namespace", "ram:64M,lba=4096"]);
    let b = ServeProcess::start(&dir.path("b.sock"), &["--namespace", "ram:64M,lba=4096"]);

    let (code, stderr, took) = migrate(&a.socket, &a.socket);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is the source's own socket"), "{stderr}");
    eprintln!("same socket told after {took:?} (1 s of it the workload before migrating)");

    let missing = dir.path("missing.sock");
    let (code, stderr, took) = migrate(&a.socket, &missing);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no server on the destination socket")
            && stderr.contains("the socket does not exist"),
        "{stderr}"
    );
    eprintln!("no server told after {took:?}");

    // A client holds B for the whole migration attempt.
    let holder = workload(&b.socket, &["--rw", "randread", "--time", "8s"]);
    wait_until("B's client attached", || {
        ctl_json(&b.socket, &["status"])["controllers"][1]["client_attached"] == true
    });
    let (code, stderr, took) = migrate(&a.socket, &b.socket);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the destination server")
            && stderr.contains("is busy: another client is attached"),
        "{stderr}"
    );
    eprintln!("busy told after {took:?}");
    let held = holder.wait_with_output().unwrap();
    assert_eq!(held.status.code(), Some(0), "{}", text(&held.stderr));

    // A server that exited without removing its socket: nobody listens there.
    let stale = dir.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, stderr, _) = migrate(&a.socket, &stale);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("nobody listens on the socket"), "{stderr}");
    let output = vfio_nvme(&["ctl", stale.to_str().unwrap(), "status"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("nobody listens"),
        "{output:?}"
    );
}

/// The JSON events in a server's output file.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn serve_json_prints_one_event_per_line() {
    let dir = TempDir::new("ctl-events");
    let (a_out, b_out) = (dir.path("a.jsonl"), dir.path("b.jsonl"));
    let a = ServeProcess::start_output(
        &dir.path("a.sock"),
        &["--json", "--namespace", "ram:64M,lba=4096"],
        &a_out,
    );
    let b = ServeProcess::start_output(
        &dir.path("b.sock"),
        &["--json", "--namespace", "ram:64M,lba=4096"],
        &b_out,
    );
    let (code, stderr, _) = migrate(&a.socket, &b.socket);
    assert_eq!(code, Some(0), "{stderr}");
    let a_socket = a.socket.clone();
    assert!(a.stop() && b.stop());
    let a_events = events(&a_out);
    let b_events = events(&b_out);
    let kinds = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| e["event"].as_str().map(str::to_owned))
            .collect()
    };
    let a_kinds = kinds(&a_events);
    assert_eq!(
        &a_kinds[..3],
        ["listening", "ready", "client_attached"],
        "{a_kinds:?}"
    );
    assert!(
        a_kinds.contains(&"client_detached".to_owned()),
        "{a_kinds:?}"
    );
    let states = |events: &[Value]| -> Vec<(String, String)> {
        events
            .iter()
            .filter(|e| e["event"] == "migration_state")
            .map(|e| {
                (
                    e["from"].as_str().unwrap().to_owned(),
                    e["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let a_states = states(&a_events);
    assert!(
        a_states.contains(&("RUNNING".into(), "PRE_COPY".into()))
            && a_states.contains(&("PRE_COPY".into(), "STOP_COPY".into())),
        "{a_states:?}"
    );
    let b_states = states(&b_events);
    assert!(
        b_states.contains(&("RUNNING".into(), "RESUMING".into()))
            && b_states.contains(&("STOP".into(), "RUNNING".into())),
        "{b_states:?}"
    );
    assert_eq!(a_events[0]["function"], "VF 1");
    assert_eq!(a_events[0]["socket"], a_socket.to_str().unwrap());
    // The result comes last, after the events.
    let last = a_events.last().unwrap();
    assert_eq!(last["passed"], true, "{last}");
    assert!(last.get("event").is_none(), "{last}");
}
