//! [`Inspector`]: a served subsystem answering control requests from read-only snapshots
//! (registers and atomics, Identify data built on the spot, a copy of the queue state taken
//! between two poller passes, the migration adapter's status). Nothing it does waits on a
//! vfio-user client's request or changes what a client sees.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use nvme_device::controller::Controller;
use nvme_device::subsystem::PRIMARY_CNTLID;
use serde_json::Value;
use serde_json::json;
use vfio_nvme::served::Served;
use vfu::control::ControlHandler;
use vfu::control::MigrationView;
use vfu::server::Device as _;

use super::identify;
use super::request::Request;

/// Per function (index 0 the PF, `vfn` a VF): its socket, if served, and whether a vfio-user
/// client is attached there now.
#[derive(Debug)]
pub struct Functions {
    sockets: Vec<Option<PathBuf>>,
    attached: Vec<AtomicBool>,
}

impl Functions {
    /// `vfs` VF sockets in VF order and the PF's, if served.
    pub fn new(vf_sockets: &[PathBuf], pf_socket: Option<PathBuf>) -> Self {
        let sockets: Vec<Option<PathBuf>> = std::iter::once(pf_socket)
            .chain(vf_sockets.iter().cloned().map(Some))
            .collect();
        let attached = sockets.iter().map(|_| AtomicBool::new(false)).collect();
        Self { sockets, attached }
    }

    /// Records whether a client is attached to function `index` (0 the PF, else the VFN).
    pub fn set_attached(&self, index: u16, attached: bool) {
        if let Some(flag) = self.attached.get(usize::from(index)) {
            flag.store(attached, Ordering::Release);
        }
    }

    fn attached(&self, index: u16) -> Option<bool> {
        let served = self.sockets.get(usize::from(index))?.is_some();
        served.then(|| self.attached[usize::from(index)].load(Ordering::Acquire))
    }

    fn socket(&self, index: u16) -> Option<&PathBuf> {
        self.sockets.get(usize::from(index))?.as_ref()
    }
}

/// Answers control requests about a served subsystem; one per socket, knowing which function
/// that socket serves (`None` on a standalone control socket).
pub struct Inspector {
    served: Arc<Served>,
    functions: Arc<Functions>,
    /// The CNTLID of the socket's function.
    own: Option<u16>,
}

/// The function index (0 the PF, else the VFN) of controller `cntlid`.
fn function_of(cntlid: u16) -> u16 {
    cntlid.saturating_sub(PRIMARY_CNTLID)
}

impl Inspector {
    /// The inspector for the socket of the function with controller `own` (`None`: a
    /// standalone control socket).
    pub fn new(served: Arc<Served>, functions: Arc<Functions>, own: Option<u16>) -> Self {
        Self {
            served,
            functions,
            own,
        }
    }

    /// Every controller: the primary first, then the secondaries in VF order.
    fn controllers(&self) -> impl Iterator<Item = &Controller> {
        let subsystem = self.served.subsystem();
        std::iter::once(subsystem.primary().as_ref())
            .chain(subsystem.secondaries().iter().map(AsRef::as_ref))
    }

    fn controller(&self, cntlid: u16) -> Result<&Controller, String> {
        self.controllers()
            .find(|c| c.cntlid() == cntlid)
            .ok_or_else(|| {
                let known: Vec<String> =
                    self.controllers().map(|c| c.cntlid().to_string()).collect();
                format!("no controller {cntlid}; CNTLIDs: {}", known.join(", "))
            })
    }

    /// The controllers a request means: the one asked for, else the socket's own, else (on a
    /// standalone socket) `all`'s choice.
    fn selected(&self, cntlid: Option<u16>, all: bool) -> Result<Vec<&Controller>, String> {
        match cntlid.or(self.own) {
            Some(cntlid) => Ok(vec![self.controller(cntlid)?]),
            None if all => Ok(self.controllers().collect()),
            None => Ok(vec![self.served.subsystem().primary().as_ref()]),
        }
    }

    /// The migration of controller `cntlid`'s function, if it can migrate.
    fn migration(&self, cntlid: u16) -> Option<MigrationView> {
        let vfn = function_of(cntlid);
        let function = self.served.function(vfn).filter(|_| vfn > 0)?;
        let status = function.migration()?.status();
        Some(MigrationView::new(&status))
    }

    fn status(&self) -> Value {
        let subsystem = self.served.subsystem();
        let identity = subsystem.identity();
        let controllers: Vec<Value> = self
            .controllers()
            .map(|c| {
                let status = c.status();
                let index = function_of(status.cntlid);
                json!({
                    "cntlid": status.cntlid,
                    "function": if index == 0 { "PF".to_owned() } else { format!("VF {index}") },
                    "socket": self.functions.socket(index),
                    "client_attached": self.functions.attached(index),
                    "online": status.online,
                    "suspended": status.suspended,
                    "cc": status.cc,
                    "csts": status.csts,
                    "enabled": status.cc & 1 != 0,
                    "ready": status.csts & 1 != 0,
                    "fatal": status.csts & 2 != 0,
                    "io_queue_pairs_offered": status.offered_queue_pairs,
                    "vectors_offered": status.offered_vectors,
                    "queues": c.queues().len(),
                    "namespaces": c.attached_nsids(),
                    "migration": self.migration(status.cntlid),
                })
            })
            .collect();
        let namespaces: Vec<Value> = subsystem
            .namespaces()
            .iter()
            .map(|ns| {
                let attached: Vec<u16> = self
                    .controllers()
                    .filter(|c| c.attached_nsids().contains(&ns.nsid()))
                    .map(Controller::cntlid)
                    .collect();
                json!({
                    "nsid": ns.nsid(),
                    "blocks": ns.blocks(),
                    "block_size": 1u32 << ns.block_size().shift(),
                    "bytes": ns.bytes(),
                    "shared": ns.shared(),
                    "controllers": attached,
                })
            })
            .collect();
        json!({
            "subsystem": {
                "nqn": identity.nqn,
                "serial": identity.serial,
                "model": identity.model,
                "firmware": identity.firmware,
            },
            "socket_cntlid": self.own,
            "controllers": controllers,
            "namespaces": namespaces,
        })
    }

    fn queues(&self, cntlid: Option<u16>) -> Result<Value, String> {
        let controllers: Vec<Value> = self
            .selected(cntlid, true)?
            .into_iter()
            .map(|c| {
                let queues: Vec<Value> = c
                    .queues()
                    .iter()
                    .map(|q| {
                        json!({
                            "qid": q.qid,
                            "cqid": q.cqid,
                            "sq_size": q.sq_size,
                            "sq_head": q.sq_head,
                            "sq_tail": q.sq_tail,
                            "cq_size": q.cq_size,
                            "cq_head": q.cq_head,
                            "cq_tail": q.cq_tail,
                            "vector": q.vector,
                            "completed": q.counters.completed,
                            "errors": q.counters.errors,
                            "worker": q.worker,
                        })
                    })
                    .collect();
                json!({"cntlid": c.cntlid(), "queues": queues})
            })
            .collect();
        Ok(json!({ "controllers": controllers }))
    }

    fn migrations(&self, cntlid: Option<u16>) -> Result<Value, String> {
        let selected = self.selected(cntlid, true)?;
        let functions: Vec<Value> = selected
            .iter()
            .filter_map(|c| {
                let view = self.migration(c.cntlid())?;
                Some(json!({
                    "cntlid": c.cntlid(),
                    "function": format!("VF {}", function_of(c.cntlid())),
                    "migration": view,
                }))
            })
            .collect();
        if functions.is_empty() && cntlid.or(self.own).is_some() {
            return Err("that controller's function does not migrate (the PF's does not)".into());
        }
        Ok(json!({ "functions": functions }))
    }

    /// The result of `request`.
    pub fn answer_request(&self, request: &Request) -> Result<Value, String> {
        Ok(match request {
            Request::Status => self.status(),
            Request::IdCtrl { cntlid } => {
                let controller = self.selected(*cntlid, false)?[0];
                identify::controller_json(&controller.identify_controller())
            }
            Request::IdNs { nsid, cntlid } => {
                let controller = self.selected(*cntlid, false)?[0];
                let id = controller.identify_namespace(*nsid).ok_or_else(|| {
                    format!(
                        "namespace {nsid} is not attached to controller {}; attached: {:?}",
                        controller.cntlid(),
                        controller.attached_nsids()
                    )
                })?;
                identify::namespace_json(&id)
            }
            Request::ListSecondary => {
                identify::secondary_json(&self.served.subsystem().primary().secondary_list())
            }
            Request::Queues { cntlid } => self.queues(*cntlid)?,
            Request::Migration { cntlid } => self.migrations(*cntlid)?,
        })
    }
}

impl ControlHandler for Inspector {
    fn answer(&self, request: &str) -> Result<Value, String> {
        self.answer_request(&Request::parse(request)?)
    }
}

#[cfg(test)]
mod tests {
    use vfio_nvme::served::BackendConfig;
    use vfio_nvme::served::NamespaceConfig;
    use vfio_nvme::served::ServeConfig;

    use super::*;

    fn inspector(own: Option<u16>) -> Inspector {
        let config = ServeConfig {
            name: "inspect".into(),
            vfs: 2,
            namespaces: vec![NamespaceConfig {
                backend: BackendConfig::Ram {
                    size: 1 << 20,
                    prealloc: false,
                },
                block_size: nvme_device::namespace::BlockSize::B512,
                shared: false,
            }],
            ..ServeConfig::default()
        };
        let served = Arc::new(Served::new(&config).unwrap());
        let functions = Arc::new(Functions::new(&["a.sock".into(), "b.sock".into()], None));
        functions.set_attached(2, true);
        Inspector::new(served, functions, own)
    }

    #[test]
    fn status_names_every_controller_and_namespace() {
        let status = inspector(None).answer(r#"{"command":"status"}"#).unwrap();
        let controllers = status["controllers"].as_array().unwrap();
        assert_eq!(controllers.len(), 3);
        assert_eq!(controllers[0]["function"], "PF");
        assert_eq!(controllers[0]["client_attached"], Value::Null);
        assert_eq!(controllers[1]["socket"], "a.sock");
        assert_eq!(controllers[1]["client_attached"], false);
        assert_eq!(controllers[2]["client_attached"], true);
        assert_eq!(controllers[2]["migration"]["state"], "RUNNING");
        assert!(
            status["subsystem"]["nqn"]
                .as_str()
                .unwrap()
                .contains("inspect")
        );
        assert_eq!(status["namespaces"].as_array().unwrap().len(), 2);
        assert_eq!(status["namespaces"][1]["controllers"], json!([3]));
    }

    #[test]
    fn requests_default_to_the_sockets_function() {
        let vf2 = inspector(Some(3));
        let id = vf2.answer(r#"{"command":"id-ctrl"}"#).unwrap();
        assert_eq!(id["cntlid"], 3);
        let pf = vf2.answer(r#"{"command":"id-ctrl","cntlid":1}"#).unwrap();
        assert_eq!(pf["cntlid"], 1);
        let ns = vf2.answer(r#"{"command":"id-ns","nsid":2}"#).unwrap();
        assert_eq!(ns["nsze"], 2048);
        let err = vf2.answer(r#"{"command":"id-ns","nsid":9}"#).unwrap_err();
        assert!(err.contains("not attached"), "{err}");
        let migration = vf2.answer(r#"{"command":"migration"}"#).unwrap();
        assert_eq!(migration["functions"].as_array().unwrap().len(), 1);
        let list = vf2.answer(r#"{"command":"list-secondary"}"#).unwrap();
        assert_eq!(list["num"], 2);
        let err = vf2
            .answer(r#"{"command":"queues","cntlid":42}"#)
            .unwrap_err();
        assert!(err.contains("no controller 42"), "{err}");
        let all = inspector(None).answer(r#"{"command":"queues"}"#).unwrap();
        assert_eq!(all["controllers"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn fuzz_control_requests_against_a_served_subsystem() {
        // A panic fails the test; nothing observes the subsystem after one.
        let inspector = std::panic::AssertUnwindSafe(inspector(Some(2)));
        bolero::check!()
            .with_iterations(500)
            .for_each(move |bytes: &[u8]| {
                let inspector = &*inspector;
                if let Ok(line) = std::str::from_utf8(bytes) {
                    let _ = inspector.answer(line);
                }
            });
    }
}
