//! Runs the built `vfio-nvme` binary as a user would and checks its output and exit codes.

use std::process::{Command, Output};

/// Runs `vfio-nvme` with `args` (and a quiet log filter, so stderr holds only our messages).
fn vfio_nvme(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vfio-nvme"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the vfio-nvme binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

#[test]
fn help_explains_the_tool_and_lists_fsm() {
    let output = vfio_nvme(&["--help"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("fsm"), "{text}");
    assert!(text.contains("TP4159"), "{text}");
    assert!(text.contains("--json"), "{text}");
}

#[test]
fn path_prints_the_reference_walk() {
    // Reference §1.4, all flags: RUNNING→STOP_COPY = R→R_P2P→STOP→STOP_COPY.
    let output = vfio_nvme(&["fsm", "path", "running", "stop-copy"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        "RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY\n"
    );
    assert_eq!(stderr(&output), "");

    // Numbers and other spellings name the same states.
    let output = vfio_nvme(&["fsm", "path", "2", "STOP_COPY", "--flags", "stop-copy"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "RUNNING -> STOP -> STOP_COPY\n");
}

#[test]
fn path_json_parses_and_has_the_path() {
    let output = vfio_nvme(&["--json", "fsm", "path", "running", "stop-copy"]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    assert_eq!(
        value,
        serde_json::json!({
            "from": "RUNNING",
            "to": "STOP_COPY",
            "flags": ["STOP_COPY", "P2P", "PRE_COPY"],
            "path": ["RUNNING", "RUNNING_P2P", "STOP", "STOP_COPY"],
        })
    );
    // `--json` is global: it may also follow the subcommand.
    let after = vfio_nvme(&["fsm", "path", "running", "stop-copy", "--json"]);
    assert_eq!(after.stdout, output.stdout);
}

#[test]
fn stop_copy_to_pre_copy_fails_with_the_reason() {
    let output = vfio_nvme(&["fsm", "path", "stop-copy", "pre-copy"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert!(message.starts_with("error: "), "{message}");
    assert!(message.contains("STOP_COPY to PRE_COPY"), "{message}");
    assert!(message.contains("go to STOP first"), "{message}");
}

#[test]
fn flags_without_stop_copy_are_refused() {
    let output = vfio_nvme(&["fsm", "path", "running", "stop", "--flags", "p2p"]);
    assert!(!output.status.success(), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("stop-copy"), "{message}");
    assert_eq!(stdout(&output), "");
}

#[test]
fn unknown_states_name_the_bad_value() {
    for bad in ["runing", "8"] {
        let output = vfio_nvme(&["fsm", "path", bad, "stop"]);
        let code = output.status.code();
        assert!(matches!(code, Some(1 | 2)), "{bad}: {output:?}");
        let message = stderr(&output);
        assert!(message.contains(&format!("'{bad}'")), "{message}");
    }
}

#[test]
fn subcommands_that_do_not_exist_are_usage_errors() {
    let output = vfio_nvme(&["migrate"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("unrecognized subcommand 'migrate'"));
}

#[test]
fn demo_migrates_there_and_back_and_verifies() {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-demo-test-{}", std::process::id()));
    let output = vfio_nvme(&[
        "--json",
        "demo",
        "--time",
        "3s",
        "--queues",
        "2",
        "--qd",
        "8",
        "--output",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Migration events, one JSON object per line, then the result on one line, with the
    // verdict on top and durations in milliseconds.
    let text = stdout(&output);
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report = lines.pop().unwrap();
    assert!(lines.iter().all(|e| e["event"] == "migration"), "{text}");
    assert!(lines.iter().any(|e| e["phase"] == "stop_copy"), "{text}");
    assert_eq!(report["passed"], true, "{report}");
    let migrations = report["migrations"].as_array().unwrap();
    assert_eq!(migrations.len(), 2, "{report}");
    for m in migrations {
        let blackout = m["blackout_ms"].as_f64().unwrap();
        let total = m["total_ms"].as_f64().unwrap();
        assert!(blackout > 0.0 && blackout <= total, "{m}");
        assert!(m["stream_bytes"].as_u64().unwrap() > 0, "{m}");
        assert!(m.get("blackout").is_none(), "{m}");
        assert!(m["expected_downtime_ms"].as_f64().is_some(), "{m}");
        assert!(m["rounds"].as_array().is_some_and(|r| !r.is_empty()), "{m}");
    }
    assert_eq!(migrations[0]["to"], migrations[1]["from"]);
    assert_eq!(report["workload"]["verified"], true);
    assert_eq!(report["readback"]["verified"], true);
    assert!(dir.join("timeline.svg").exists());
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("blackout"), "{svg}");
    assert!(svg.contains("A → B") && svg.contains("B → A"), "{svg}");
    assert!(svg.contains("throttle") && svg.contains("rounds"), "{svg}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved["passed"], true);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn table_for_stop_copy_only_has_four_state_rows() {
    let states = ["STOP", "RUNNING", "STOP_COPY", "RESUMING"];
    let output = vfio_nvme(&["fsm", "table", "--flags", "stop-copy"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.first().is_some_and(|first| states.contains(first)))
        .collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert_eq!(rows[1], ["RUNNING", "STOP", "-", "STOP", "STOP"], "{text}");
    assert_eq!(rows[0][0], "STOP");
}

#[test]
fn table_json_is_an_object_of_objects() {
    let output = vfio_nvme(&["--json", "fsm", "table"]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    let table = value["table"].as_object().expect("table is an object");
    assert_eq!(table.len(), 7);
    assert!(
        table
            .values()
            .all(|row| row.as_object().unwrap().len() == 7)
    );
    assert_eq!(value["table"]["RUNNING"]["STOP_COPY"], "RUNNING_P2P");
    assert_eq!(
        value["table"]["STOP_COPY"]["PRE_COPY"],
        serde_json::Value::Null
    );
}

#[test]
fn every_subcommand_shows_its_long_help() {
    for (args, phrase) in [
        (&["demo", "--help"][..], "nothing to prepare"),
        (&["serve", "--help"], "--socket-mode"),
        (&["serve", "--help"], "READY=1"),
        (&["serve", "--help"], "one JSON event per line"),
        (&["ctl", "--help"], "beside an attached client"),
        (&["ctl", "--help"], "docs/CONTROL.md"),
        (&["fsm", "--help"], "PRE_COPY_P2P"),
        (&["workload", "--help"], "--verify-layout FILE"),
        (&["bench", "--help"], "queue depth 32"),
        (&["bench", "--help"], "--serve-arg"),
        (&["workload", "--help"], "--rate <IOPS>"),
        (&["state", "--help"], "--save-stream"),
        (&["state", "decode", "--help"], "first problem"),
        (&["completions", "--help"], "bash_completion"),
        (&["man", "--help"], "man -l"),
        (&["--help"], "Exit status: 0 success"),
        (&["workload", "--help"], "3 verification failed"),
    ] {
        let output = vfio_nvme(args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        let text = stdout(&output);
        assert!(text.contains(phrase), "{args:?} lacks {phrase:?}:\n{text}");
    }
    // `-h` stays short: the summary line, not the long text.
    let short = stdout(&vfio_nvme(&["demo", "-h"]));
    assert!(!short.contains("nothing to prepare"), "{short}");
}

#[test]
fn bad_option_values_are_usage_errors_naming_the_option() {
    for (args, named) in [
        (&["workload", "--socket", "x", "--qd", "0"][..], "--qd"),
        (&["workload", "--socket", "x", "--qd", "70000"], "--qd"),
        (&["workload", "--socket", "x", "--queues", "0"], "--queues"),
        (&["workload", "--socket", "x", "--bs", "1000"], "--bs"),
        (&["workload", "--socket", "x", "--rw", "sideways"], "--rw"),
        (&["workload", "--socket", "x", "--ios", "0"], "--ios"),
        (&["workload", "--socket", "x", "--rate", "0"], "--rate"),
        (&["bench", "--only", "null,sideways"], "--only"),
        (&["demo", "--qd", "2000"], "--qd"),
        (&["demo", "--queues", "65"], "--queues"),
        (
            &["serve", "--socket", "x", "--socket-mode", "0800"],
            "--socket-mode",
        ),
        (
            &["serve", "--socket", "x", "--socket-mode", "4755"],
            "--socket-mode",
        ),
        (
            &[
                "serve",
                "--socket",
                "x",
                "--socket-group",
                "no-such-group-here",
            ],
            "--socket-group",
        ),
        (
            &["serve", "--socket", "x", "--name", "far-too-long-a-name"],
            "--name",
        ),
        // VFs can start offline only where a PF's host can bring them online.
        (&["serve", "--socket", "x", "--offline-vfs"], "--pf-socket"),
    ] {
        let output = vfio_nvme(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let message = stderr(&output);
        assert!(message.contains(named), "{args:?}: {message}");
        assert_eq!(stdout(&output), "");
    }
    // The range comes from the served controllers' own limit, and names what was typed.
    let message = stderr(&vfio_nvme(&["demo", "--qd", "2000"]));
    assert!(
        message.contains("'2000'") && message.contains("1..=1023"),
        "{message}"
    );
}

#[test]
fn json_is_refused_where_a_command_prints_none() {
    for args in [&["completions", "bash", "--json"][..], &["--json", "man"]] {
        let output = vfio_nvme(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(
            stderr(&output).contains("'--json' does not apply"),
            "{output:?}"
        );
    }
}

#[test]
fn completions_and_manual_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let output = vfio_nvme(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = stdout(&output);
        assert!(
            script.contains("vfio-nvme") && script.contains("verify-layout"),
            "{shell}"
        );
    }
    let page = stdout(&vfio_nvme(&["man"]));
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("workload"), "{page}");

    let dir = std::env::temp_dir().join(format!("vfio-nvme-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = vfio_nvme(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    for page in [
        "vfio-nvme.1",
        "vfio-nvme-serve.1",
        "vfio-nvme-workload.1",
        "vfio-nvme-fsm-path.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
        assert!(stdout(&output).contains(page), "{output:?}");
    }
    let serve = std::fs::read_to_string(dir.join("vfio-nvme-serve.1")).unwrap();
    assert!(serve.contains("socket\\-mode"), "{serve}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scratch directory of this test process, created fresh.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vfio-nvme-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_file_namespace_that_cannot_be_created_names_the_path_and_leaves_nothing() {
    let dir = scratch("huge");
    let image = dir.join("huge.img");
    let socket = dir.join("vf.sock");
    let output = vfio_nvme(&[
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--namespace",
        &format!("file:{},size=1024T", image.display()),
    ]);
    assert!(!output.status.success(), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains(&image.display().to_string()),
        "the error names the file: {message}"
    );
    assert!(!image.exists(), "no empty file is left behind");
    assert!(!socket.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn state_decode_refuses_what_is_not_a_stream_without_reading_it_all() {
    // /dev/zero never ends: the decoder must stop at the first bytes that cannot be a stream.
    let output = vfio_nvme(&["state", "decode", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains("/dev/zero"), "{message}");
    assert!(message.contains("magic"), "the reason is given: {message}");
}

#[test]
fn bench_rows_report_serve_and_client_cpu_in_json() {
    // A short run of the new rows: the buffered file row (its file in a scratch directory, so
    // the output must name that directory), the trickle and the idle client; --serve-arg
    // reaches every server (a name the servers accept).
    let dir = scratch("bench");
    let dir_text = dir.to_str().unwrap();
    let output = vfio_nvme(&[
        "--json",
        "bench",
        "--time",
        "300ms",
        "--only",
        "file-1q,trickle,idle",
        "--dir",
        dir_text,
        "--serve-arg=--name",
        "--serve-arg=bench-test",
    ]);
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("valid JSON");
    assert_eq!(value["file_dir"], dir_text);
    assert!(value["file_fs"].is_string(), "{value}");
    assert_eq!(
        value["serve_args"],
        serde_json::json!(["--name", "bench-test"])
    );
    let rows = value["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r["row"].as_str().unwrap()).collect();
    assert_eq!(names, ["file-1q", "trickle", "idle"]);
    for row in rows {
        for field in [
            "serve_cpu_pct",
            "client_cpu_pct",
            "wall_s",
            "iops",
            "p50_us",
            "p99_us",
            "serve_us_per_io",
        ] {
            assert!(
                row[field].as_f64().is_some_and(|v| v >= 0.0),
                "{field}: {row}"
            );
        }
        assert!(row["wall_s"].as_f64().unwrap() > 0.0, "{row}");
    }
    let (file, trickle, idle) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(
        (file["backend"].as_str(), file["queues"].as_u64()),
        (Some("file"), Some(1))
    );
    assert!(file["iops"].as_f64().unwrap() > 0.0, "{file}");
    assert_eq!(trickle["queue_depth"], 1);
    assert_eq!(trickle["rate"], 1000);
    assert_eq!(trickle["pattern"], "randread");
    assert!(trickle["ios"].as_u64().unwrap() > 0, "{trickle}");
    assert!(trickle["iops"].as_f64().unwrap() > 0.0, "{trickle}");
    assert_eq!(
        (idle["pattern"].as_str(), idle["queues"].as_u64()),
        (Some("idle"), Some(4))
    );
    assert_eq!(
        (idle["iops"].as_f64(), idle["ios"].as_u64()),
        (Some(0.0), Some(0))
    );
    assert!(value["skipped"].as_array().unwrap().is_empty(), "{value}");
    // The namespace file is removed afterwards.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);

    // On a terminal: the table with the CPU columns, and no file line without a file row.
    let output = vfio_nvme(&["bench", "--time", "100ms", "--only", "idle"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("load average "), "{text}");
    assert!(
        lines[1].contains("serve%") && lines[1].contains("client%"),
        "{text}"
    );
    assert!(lines[2].starts_with("idle "), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
}
