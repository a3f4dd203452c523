//! `vfio-nvme ctl SOCKET COMMAND`: one control request ([`crate::control::request::Request`])
//! to a running server, its result printed as text (nvme-cli's layout where nvme-cli has the
//! command) or, with `--json`, as the result object on one line.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::cli::CtlCommand;
use crate::control::identify;
use crate::control::request::Request;

/// Asks the server at `socket` and renders the answer.
pub fn run(socket: &Path, command: &CtlCommand, json: bool) -> anyhow::Result<String> {
    let request = match command {
        CtlCommand::Status => Request::Status,
        CtlCommand::IdCtrl { cntlid } => Request::IdCtrl { cntlid: *cntlid },
        CtlCommand::IdNs { nsid, cntlid } => Request::IdNs {
            nsid: *nsid,
            cntlid: *cntlid,
        },
        CtlCommand::ListSecondary => Request::ListSecondary,
        CtlCommand::Queues { cntlid } => Request::Queues { cntlid: *cntlid },
        CtlCommand::Migration { cntlid } => Request::Migration { cntlid: *cntlid },
    };
    let value = serde_json::to_value(&request).context("cannot encode the request")?;
    let result = vfu::control::request(socket, &value)?;
    if json {
        return Ok(result.to_string());
    }
    Ok(match request {
        Request::Status => status_text(&result),
        Request::IdCtrl { .. } => identify::text_of(
            "NVME Identify Controller:",
            &result,
            identify::CONTROLLER_HEX,
        ),
        Request::IdNs { nsid, .. } => identify::text_of(
            &format!("NVME Identify Namespace {nsid}:"),
            &result,
            identify::NAMESPACE_HEX,
        ),
        Request::ListSecondary => secondary_text(&result),
        Request::Queues { .. } => queues_text(&result),
        Request::Migration { .. } => migration_text(&result),
    })
}

/// A value as a table cell: strings without quotes, `-` for null (padding applies to the
/// string, which it does not to a JSON value's own display).
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// `yes`/`no`, `-` for null.
fn yes_no(value: &Value) -> &'static str {
    match value.as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// A byte count in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

fn status_text(status: &Value) -> String {
    let subsystem = &status["subsystem"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "subsystem {}\n  serial {}, model {}, firmware {}\n",
        subsystem["nqn"].as_str().unwrap_or("?"),
        subsystem["serial"].as_str().unwrap_or("?"),
        subsystem["model"].as_str().unwrap_or("?"),
        subsystem["firmware"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "{:<6} {:<8} {:<6} {:<10} {:<10} {:<6} {:<10} {:<9} {:<8} {:<10} SOCKET",
        "CNTLID",
        "FUNCTION",
        "ONLINE",
        "CC",
        "CSTS",
        "QUEUES",
        "MIGRATION",
        "SUSPENDED",
        "CLIENT",
        "NAMESPACES"
    );
    for c in status["controllers"].as_array().into_iter().flatten() {
        let namespaces: Vec<String> = c["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        let client = match c["client_attached"].as_bool() {
            Some(true) => "attached",
            Some(false) => "none",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<6} {:<10} {:<10} {:<6} {:<10} {:<9} {:<8} {:<10} {}",
            cell(&c["cntlid"]),
            c["function"].as_str().unwrap_or("?"),
            yes_no(&c["online"]),
            format!("{:#010x}", c["cc"].as_u64().unwrap_or(0)),
            format!("{:#010x}", c["csts"].as_u64().unwrap_or(0)),
            cell(&c["queues"]),
            c["migration"]["state"].as_str().unwrap_or("-"),
            yes_no(&c["suspended"]),
            client,
            if namespaces.is_empty() {
                "-".to_owned()
            } else {
                namespaces.join(",")
            },
            c["socket"].as_str().unwrap_or("-"),
        );
    }
    let _ = writeln!(
        out,
        "\n{:<5} {:<12} {:<12} {:<6} {:<7} CONTROLLERS",
        "NSID", "BLOCKS", "SIZE", "BLOCK", "SHARED"
    );
    for ns in status["namespaces"].as_array().into_iter().flatten() {
        let controllers: Vec<String> = ns["controllers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            out,
            "{:<5} {:<12} {:<12} {:<6} {:<7} {}",
            cell(&ns["nsid"]),
            cell(&ns["blocks"]),
            bytes(ns["bytes"].as_u64().unwrap_or(0)),
            cell(&ns["block_size"]),
            yes_no(&ns["shared"]),
            controllers.join(","),
        );
    }
    out
}

fn secondary_text(list: &Value) -> String {
    let mut out = String::from("Identify Secondary Controller List:\n");
    let _ = writeln!(
        out,
        "   NUMID       : Number of Identifiers           : {}",
        list["num"]
    );
    for (i, e) in list["secondary-controllers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = |key: &str| e[key].as_u64().unwrap_or(0);
        let state = if n("secondary-controller-state") & 1 == 1 {
            "Online"
        } else {
            "Offline"
        };
        let _ = writeln!(out, "   SCEntry[{i:<3}]:\n................");
        let _ = writeln!(
            out,
            "     SCID      : Secondary Controller Identifier : {:#06x}",
            n("secondary-controller-identifier")
        );
        let _ = writeln!(
            out,
            "     PCID      : Primary Controller Identifier   : {:#06x}",
            n("primary-controller-identifier")
        );
        let _ = writeln!(
            out,
            "     SCS       : Secondary Controller State      : {:#06x} ({state})",
            n("secondary-controller-state")
        );
        let _ = writeln!(
            out,
            "     VFN       : Virtual Function Number         : {:#06x}",
            n("virtual-function-number")
        );
        let _ = writeln!(
            out,
            "     NVQ       : Num VQ Flex Resources Assigned  : {:#06x}",
            n("num-virtual-queues")
        );
        let _ = writeln!(
            out,
            "     NVI       : Num VI Flex Resources Assigned  : {:#06x}",
            n("num-virtual-interrupts")
        );
    }
    out
}

fn queues_text(result: &Value) -> String {
    let mut out = String::new();
    for c in result["controllers"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "controller {}:", c["cntlid"]);
        let queues = c["queues"].as_array().map_or(&[][..], Vec::as_slice);
        if queues.is_empty() {
            let _ = writeln!(out, "  no queues (the controller is not enabled)");
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<4} {:<4} {:<7} {:<7} {:<7} {:<7} {:<7} {:<7} {:<6} {:<6} {:<12} ERRORS",
            "QID",
            "CQID",
            "SQSIZE",
            "SQHEAD",
            "SQTAIL",
            "CQSIZE",
            "CQHEAD",
            "CQTAIL",
            "VECTOR",
            "WORKER",
            "COMPLETED"
        );
        for q in queues {
            let vector = q["vector"]
                .as_u64()
                .map_or_else(|| "-".to_owned(), |v| v.to_string());
            let _ = writeln!(
                out,
                "  {:<4} {:<4} {:<7} {:<7} {:<7} {:<7} {:<7} {:<7} {:<6} {:<6} {:<12} {}",
                cell(&q["qid"]),
                cell(&q["cqid"]),
                cell(&q["sq_size"]),
                cell(&q["sq_head"]),
                cell(&q["sq_tail"]),
                cell(&q["cq_size"]),
                cell(&q["cq_head"]),
                cell(&q["cq_tail"]),
                vector,
                cell(&q["worker"]),
                cell(&q["completed"]),
                cell(&q["errors"]),
            );
        }
    }
    out
}

fn migration_text(result: &Value) -> String {
    let mut out = String::new();
    let functions = result["functions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if functions.is_empty() {
        out.push_str("no function here migrates\n");
    }
    for f in functions {
        let m = &f["migration"];
        let _ = writeln!(
            out,
            "{} (cntlid {}): {}",
            f["function"].as_str().unwrap_or("?"),
            f["cntlid"],
            m["state"].as_str().unwrap_or("?")
        );
        let session = &m["session"];
        if session.is_null() {
            let _ = writeln!(out, "  session: none");
        } else if session["kind"] == "saving" {
            let _ = writeln!(
                out,
                "  session: saving ({}), {} read{}",
                session["phase"].as_str().unwrap_or("?"),
                bytes(session["bytes"].as_u64().unwrap_or(0)),
                if session["ended"] == true {
                    ", end of stream reached"
                } else {
                    ""
                }
            );
        } else {
            let _ = writeln!(
                out,
                "  session: resuming, {} written (at most {})",
                bytes(session["bytes"].as_u64().unwrap_or(0)),
                bytes(session["max_bytes"].as_u64().unwrap_or(0))
            );
        }
        let logging = &m["logging"];
        if logging.is_null() {
            let _ = writeln!(out, "  DMA logging: off");
        } else {
            let ranges = logging["ranges"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                out,
                "  DMA logging: on, {} pages, {ranges} range(s)",
                bytes(logging["page_size"].as_u64().unwrap_or(0))
            );
        }
        let failure = &m["last_failure"];
        if failure.is_null() {
            let _ = writeln!(out, "  last failure: none");
        } else {
            let request = match (failure["from"].as_str(), failure["target"].as_str()) {
                (Some(from), Some(target)) => format!("{from} -> {target}"),
                _ => failure["request"].as_str().unwrap_or("?").to_owned(),
            };
            let _ = writeln!(
                out,
                "  last failure: {request} ({}): {}",
                failure["errno_name"]
                    .as_str()
                    .map_or_else(|| failure["errno"].to_string(), str::to_owned),
                failure["reason"].as_str().unwrap_or("?")
            );
        }
    }
    out
}
