//! The fields of Identify Controller, Identify Namespace and the Secondary Controller List as
//! the control protocol shows them: nvme-cli's names and order (`nvme id-ctrl`, `nvme id-ns`,
//! `nvme list-secondary`), numbers as numbers in JSON and in nvme-cli's notation in text.

use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::IdentifyNamespace;
use nvme_spec::identify::SecondaryControllerList;
use serde_json::Value;
use serde_json::json;

/// A field's value, and how nvme-cli prints it.
enum Field {
    /// Printed in hex (`0x1b36`).
    Hex(u64),
    /// Printed in decimal.
    Dec(u64),
    /// A string, trailing spaces and NULs removed.
    Text(String),
}

/// ASCII space- or NUL-padded bytes as a string.
fn text(bytes: &[u8]) -> Field {
    let s = String::from_utf8_lossy(bytes);
    Field::Text(s.trim_end_matches([' ', '\0']).to_owned())
}

/// Identify Controller as (name, value) in nvme-cli's order.
fn controller_fields(id: &IdentifyController) -> Vec<(&'static str, Field)> {
    let id = *id;
    let ieee = id.ieee;
    vec![
        ("vid", Field::Hex(id.vid.into())),
        ("ssvid", Field::Hex(id.ssvid.into())),
        ("sn", text(&id.sn)),
        ("mn", text(&id.mn)),
        ("fr", text(&id.fr)),
        ("rab", Field::Dec(id.rab.into())),
        (
            "ieee",
            Field::Text(format!("{:02x}{:02x}{:02x}", ieee[2], ieee[1], ieee[0])),
        ),
        ("cmic", Field::Hex(u8::from(id.cmic).into())),
        ("mdts", Field::Dec(id.mdts.into())),
        ("cntlid", Field::Hex(id.cntlid.into())),
        ("ver", Field::Hex(u32::from(id.ver).into())),
        ("oaes", Field::Hex(u32::from(id.oaes).into())),
        ("ctratt", Field::Hex(id.ctratt.into())),
        ("cntrltype", Field::Dec(id.cntrltype.into())),
        ("oacs", Field::Hex(u16::from(id.oacs).into())),
        ("acl", Field::Dec(id.acl.into())),
        ("aerl", Field::Dec(id.aerl.into())),
        ("frmw", Field::Hex(id.frmw.into())),
        ("lpa", Field::Hex(id.lpa.into())),
        ("elpe", Field::Dec(id.elpe.into())),
        ("npss", Field::Dec(id.npss.into())),
        ("wctemp", Field::Dec(id.wctemp.into())),
        ("cctemp", Field::Dec(id.cctemp.into())),
        ("sqes", Field::Hex(u8::from(id.sqes).into())),
        ("cqes", Field::Hex(u8::from(id.cqes).into())),
        ("maxcmd", Field::Dec(id.maxcmd.into())),
        ("nn", Field::Dec(id.nn.into())),
        ("oncs", Field::Hex(u16::from(id.oncs).into())),
        ("vwc", Field::Hex(u8::from(id.vwc).into())),
        ("sgls", Field::Hex(id.sgls.into())),
        ("subnqn", text(&id.subnqn)),
        ("trattr", Field::Hex(u8::from(id.trattr).into())),
        ("mcudmq", Field::Dec(id.mcudmq.into())),
        ("mnsudmq", Field::Dec(id.mnsudmq.into())),
    ]
}

/// Identify Namespace as (name, value) in nvme-cli's order, the LBA formats aside.
fn namespace_fields(id: &IdentifyNamespace) -> Vec<(&'static str, Field)> {
    let id = *id;
    let nguid: String = id.nguid.iter().map(|b| format!("{b:02x}")).collect();
    let eui64: String = id.eui64.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("nsze", Field::Hex(id.nsze)),
        ("ncap", Field::Hex(id.ncap)),
        ("nuse", Field::Hex(id.nuse)),
        ("nsfeat", Field::Hex(id.nsfeat.into())),
        ("nlbaf", Field::Dec(id.nlbaf.into())),
        ("flbas", Field::Hex(id.flbas.into())),
        ("mc", Field::Hex(id.mc.into())),
        ("dpc", Field::Hex(id.dpc.into())),
        ("dps", Field::Dec(id.dps.into())),
        ("nmic", Field::Dec(id.nmic.into())),
        ("dlfeat", Field::Dec(id.dlfeat.into())),
        ("nguid", Field::Text(nguid)),
        ("eui64", Field::Text(eui64)),
    ]
}

fn to_json(fields: Vec<(&'static str, Field)>) -> serde_json::Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, field)| {
            let value = match field {
                Field::Hex(n) | Field::Dec(n) => json!(n),
                Field::Text(s) => json!(s),
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// Identify Controller as the control protocol's JSON (nvme-cli's keys).
pub fn controller_json(id: &IdentifyController) -> Value {
    Value::Object(to_json(controller_fields(id)))
}

/// Identify Namespace as the control protocol's JSON (nvme-cli's keys, `lbafs` with `ms`,
/// `ds` and `rp` per format).
pub fn namespace_json(id: &IdentifyNamespace) -> Value {
    let id = *id;
    let mut object = to_json(namespace_fields(&id));
    let lbafs: Vec<Value> = id.lbaf[..=usize::from(id.nlbaf).min(id.lbaf.len() - 1)]
        .iter()
        .map(|f| {
            let f = *f;
            json!({"ms": f.ms, "ds": f.lbads, "rp": f.rp})
        })
        .collect();
    object.insert("lbafs".to_owned(), Value::Array(lbafs));
    Value::Object(object)
}

/// The Secondary Controller List as the control protocol's JSON (nvme-cli's keys).
pub fn secondary_json(list: &SecondaryControllerList) -> Value {
    let entries: Vec<Value> = list
        .valid_entries()
        .iter()
        .map(|e| {
            let e = *e;
            json!({
                "secondary-controller-identifier": e.scid,
                "primary-controller-identifier": e.pcid,
                "secondary-controller-state": e.scs,
                "virtual-function-number": e.vfn,
                "num-virtual-queues": e.nvq,
                "num-virtual-interrupts": e.nvi,
            })
        })
        .collect();
    json!({"num": entries.len(), "secondary-controllers": entries})
}

/// Text of a JSON object from [`controller_json`] or [`namespace_json`], as nvme-cli prints
/// it: `name      : value`, numbers in hex where nvme-cli uses hex.
pub fn text_of(title: &str, value: &Value, hex: &[&str]) -> String {
    let mut out = format!("{title}\n");
    let Some(object) = value.as_object() else {
        return out;
    };
    for (name, field) in object {
        match field {
            Value::Number(n) if hex.contains(&name.as_str()) => {
                out.push_str(&format!("{name:<10}: {:#x}\n", n.as_u64().unwrap_or(0)));
            }
            Value::String(s) => out.push_str(&format!("{name:<10}: {s}\n")),
            Value::Array(formats) => {
                for (i, f) in formats.iter().enumerate() {
                    out.push_str(&format!(
                        "lbaf {i:>2} : ms:{:<3} lbads:{:<2} rp:{:#x}\n",
                        f["ms"],
                        f["ds"],
                        f["rp"].as_u64().unwrap_or(0)
                    ));
                }
            }
            other => out.push_str(&format!("{name:<10}: {other}\n")),
        }
    }
    out
}

/// The fields of Identify Controller nvme-cli prints in hex.
pub const CONTROLLER_HEX: &[&str] = &[
    "vid", "ssvid", "cmic", "cntlid", "ver", "oaes", "ctratt", "oacs", "frmw", "lpa", "sqes",
    "cqes", "oncs", "vwc", "sgls", "trattr",
];

/// The fields of Identify Namespace nvme-cli prints in hex.
pub const NAMESPACE_HEX: &[&str] = &["nsze", "ncap", "nuse", "nsfeat", "flbas", "mc", "dpc"];
