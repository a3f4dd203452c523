//! `vfio-nvme pf --device /dev/nvmeX …`: TP4159 on a PF that the kernel's nvme driver owns,
//! through the admin pass-through (`vfio_nvme::migration::passthrough`) — the seed's
//! architecture by hand. Every subcommand is built on `LmAdmin`, so the same code drives an
//! in-process PF in the tests.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use clap::Subcommand;
use nvme_spec::identify::SecondaryControllerEntry;
use nvme_spec::status::Status;
use serde::Serialize;
use vfio_nvme::migration::admin::LmAdmin;
use vfio_nvme::migration::admin::LmError;
use vfio_nvme::migration::passthrough::PassthroughPrimary;
use vfio_nvme::migration::tp4159;
use vfio_nvme::migration::tp4159::StateFormats;

use crate::exit::UsageError;
use crate::output::Output;

/// `vfio-nvme pf`.
#[derive(Debug, Args)]
pub struct PfArgs {
    /// The PF's controller node, e.g. /dev/nvme0 (needs CAP_SYS_ADMIN: run as root).
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: PfCommand,
}

/// The `pf` subcommands. A CONTROLLER is a CNTLID (`3`) or a virtual function (`vf2`, found
/// in the Secondary Controller List).
#[derive(Debug, Subcommand)]
pub enum PfCommand {
    /// List the secondary controllers (Identify CNS 15h): CNTLID, state, VF number, resources.
    ListSecondary,
    /// Suspend a secondary controller (Migration Send, Suspend): it stops fetching commands
    /// and finishes those it fetched.
    Suspend {
        /// The controller.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        cntlid: Controller,
    },
    /// Resume a suspended secondary controller (Migration Send, Resume).
    Resume {
        /// The controller.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        cntlid: Controller,
    },
    /// Save a controller's state to FILE (Migration Receive, Get Controller State).
    ///
    /// The state is the PF's own bytes in the formats it offers (Identify CNS 20h): NVMe state
    /// v0, plus the vfio-nvme vendor state where the PF lists it. Suspend the controller first
    /// for a state that stays true.
    SaveState {
        /// The controller.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        cntlid: Controller,
        /// Where to write the state.
        file: PathBuf,
    },
    /// Load a controller's state from FILE (Migration Send, Set Controller State).
    ///
    /// The controller must be suspended; resume it afterwards to run the state.
    LoadState {
        /// The controller.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        cntlid: Controller,
        /// A state written by save-state.
        file: PathBuf,
    },
    /// Move a controller's state to another: suspend FROM, save its state, suspend TO, load
    /// the state into TO, resume TO — and print how long each step took.
    ///
    /// The commands FROM had queued but not fetched are fetched by TO, once: FROM stays
    /// suspended (resuming it would run them again). The I/O queues live in host memory both
    /// controllers reach, so the host only rings TO's doorbells from then on.
    Migrate {
        /// The controller to move from.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        from: Controller,
        /// The controller to move to.
        #[arg(long, value_name = "CONTROLLER", value_parser = parse_controller)]
        to: Controller,
        /// Carry NVMe state v0 only (the I/O queues), even where the PF offers the vfio-nvme
        /// vendor state: for controllers whose namespaces or identities differ. The host must
        /// then have enabled TO (its own admin queue) before.
        #[arg(long)]
        nvme_state_only: bool,
    },
}

/// A secondary controller as the user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// By CNTLID.
    Cntlid(u16),
    /// By virtual function number (1-based).
    Vf(u16),
}

/// Parses `3` (a CNTLID) or `vf2` (a VF number).
fn parse_controller(text: &str) -> Result<Controller, String> {
    let lower = text.to_ascii_lowercase();
    let (vf, digits) = match lower.strip_prefix("vf") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let number: u16 = digits
        .parse()
        .map_err(|_| "expected a CNTLID (e.g. 3) or a VF (e.g. vf2)".to_owned())?;
    match (vf, number) {
        (true, 0) => Err("VF numbers start at 1".to_owned()),
        (true, n) => Ok(Controller::Vf(n)),
        (false, n) => Ok(Controller::Cntlid(n)),
    }
}

/// A usage error for a controller the PF does not know.
fn unknown_controller(option: &str, controller: Controller, reason: String) -> anyhow::Error {
    let value = match controller {
        Controller::Cntlid(n) => n.to_string(),
        Controller::Vf(n) => format!("vf{n}"),
    };
    anyhow::Error::new(UsageError {
        option: option.to_owned(),
        value,
        reason,
    })
}

/// The CNTLID of `controller`; an unknown one is a usage error of `option`.
fn resolve(admin: &dyn LmAdmin, option: &str, controller: Controller) -> anyhow::Result<u16> {
    match controller {
        Controller::Cntlid(n) => Ok(n),
        Controller::Vf(vfn) => match tp4159::secondary_cntlid(admin, vfn) {
            Err(err @ LmError::NoSuchSecondary { .. }) => {
                Err(unknown_controller(option, controller, err.to_string()))
            }
            other => Ok(other?),
        },
    }
}

/// `result`, with Invalid Controller Identifier turned into a usage error of `option`.
fn named<T>(option: &str, controller: Controller, result: Result<T, LmError>) -> anyhow::Result<T> {
    match result {
        Err(err) if err.status() == Some(Status::INVALID_CONTROLLER_IDENTIFIER) => Err(
            unknown_controller(option, controller, format!("{err}; see `list-secondary`")),
        ),
        other => Ok(other?),
    }
}

/// Runs a `pf` subcommand on the PF `args.device` names.
pub fn run(args: &PfArgs, json: bool) -> anyhow::Result<Output> {
    let admin = PassthroughPrimary::open(&args.device)
        .with_context(|| format!("cannot reach the PF {}", args.device.display()))?;
    run_on(&admin, &args.command, json)
}

/// Runs `command` on the PF `admin` reaches.
pub fn run_on(admin: &dyn LmAdmin, command: &PfCommand, json: bool) -> anyhow::Result<Output> {
    let text = match command {
        PfCommand::ListSecondary => {
            let list = tp4159::secondary_controllers(admin)?;
            render(json, &Secondaries::from(&list[..]))?
        }
        PfCommand::Suspend { cntlid } => {
            let id = resolve(admin, "--cntlid", *cntlid)?;
            named("--cntlid", *cntlid, tp4159::suspend(admin, id, false))?;
            render(json, &Done::new("suspended", id))?
        }
        PfCommand::Resume { cntlid } => {
            let id = resolve(admin, "--cntlid", *cntlid)?;
            named("--cntlid", *cntlid, tp4159::resume(admin, id))?;
            render(json, &Done::new("resumed", id))?
        }
        PfCommand::SaveState { cntlid, file } => {
            let id = resolve(admin, "--cntlid", *cntlid)?;
            let formats = formats(admin)?;
            let state = named("--cntlid", *cntlid, tp4159::get_state(admin, id, formats))?;
            std::fs::write(file, &state)
                .with_context(|| format!("cannot write the state to {}", file.display()))?;
            render(json, &Saved::new("saved", id, file, state.len(), formats))?
        }
        PfCommand::LoadState { cntlid, file } => {
            let id = resolve(admin, "--cntlid", *cntlid)?;
            let state = std::fs::read(file)
                .with_context(|| format!("cannot read the state from {}", file.display()))?;
            let formats = carried(formats(admin)?, &state, file)?;
            named(
                "--cntlid",
                *cntlid,
                tp4159::set_state(admin, id, formats, &state),
            )?;
            render(json, &Saved::new("loaded", id, file, state.len(), formats))?
        }
        PfCommand::Migrate {
            from,
            to,
            nvme_state_only,
        } => {
            let report = migrate(admin, *from, *to, *nvme_state_only)?;
            render(json, &report)?
        }
    };
    Ok(Output::passed(text))
}

/// The formats to use with this PF.
fn formats(admin: &dyn LmAdmin) -> anyhow::Result<StateFormats> {
    Ok(tp4159::state_formats(
        admin,
        nvme_device::lm::VENDOR_STATE_UUID,
    )?)
}

/// The formats a Set of `state` (read from `file`) names on a PF offering `offered`.
fn carried(offered: StateFormats, state: &[u8], file: &Path) -> anyhow::Result<StateFormats> {
    offered.carried_by(state).with_context(|| {
        format!(
            "{} is not a controller state this PF can load (it offers {offered:?}): a state \
             from save-state on a PF offering the same formats is needed",
            file.display()
        )
    })
}

/// Prints `value` as one line of JSON or as its text.
fn render<T: Serialize + std::fmt::Display>(json: bool, value: &T) -> anyhow::Result<String> {
    Ok(if json {
        serde_json::to_string(value).context("cannot render the result as JSON")?
    } else {
        format!("{value}\n")
    })
}

/// One entry of the Secondary Controller List.
#[derive(Debug, Serialize)]
struct Secondary {
    scid: u16,
    pcid: u16,
    online: bool,
    vfn: u16,
    nvq: u16,
    nvi: u16,
}

/// `list-secondary`'s result.
#[derive(Debug, Serialize)]
struct Secondaries {
    secondaries: Vec<Secondary>,
}

impl From<&[SecondaryControllerEntry]> for Secondaries {
    fn from(list: &[SecondaryControllerEntry]) -> Self {
        let secondaries = list
            .iter()
            .map(|e| Secondary {
                scid: e.scid,
                pcid: e.pcid,
                online: e.online(),
                vfn: e.vfn,
                nvq: e.nvq,
                nvi: e.nvi,
            })
            .collect();
        Self { secondaries }
    }
}

impl std::fmt::Display for Secondaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6} {:>6} {:<8} {:>5} {:>5} {:>5}",
            "CNTLID", "PCID", "STATE", "VF", "NVQ", "NVI"
        )?;
        for s in &self.secondaries {
            let state = if s.online { "online" } else { "offline" };
            write!(
                f,
                "\n{:>6} {:>6} {:<8} {:>5} {:>5} {:>5}",
                s.scid, s.pcid, state, s.vfn, s.nvq, s.nvi
            )?;
        }
        Ok(())
    }
}

/// `suspend`'s and `resume`'s result.
#[derive(Debug, Serialize)]
struct Done {
    action: &'static str,
    cntlid: u16,
}

impl Done {
    fn new(action: &'static str, cntlid: u16) -> Self {
        Self { action, cntlid }
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "controller {} {}", self.cntlid, self.action)
    }
}

/// `save-state`'s and `load-state`'s result.
#[derive(Debug, Serialize)]
struct Saved {
    action: &'static str,
    cntlid: u16,
    file: PathBuf,
    state_bytes: usize,
    /// CSVI and CSUUIDI used (0: that part not carried).
    csvi: u8,
    csuuidi: u8,
}

impl Saved {
    fn new(
        action: &'static str,
        cntlid: u16,
        file: &Path,
        state_bytes: usize,
        formats: StateFormats,
    ) -> Self {
        Self {
            action,
            cntlid,
            file: file.to_owned(),
            state_bytes,
            csvi: formats.csvi,
            csuuidi: formats.csuuidi,
        }
    }
}

impl std::fmt::Display for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vendor = if self.csuuidi != 0 {
            " + vendor state"
        } else {
            ""
        };
        write!(
            f,
            "controller {} state {} {}: {} bytes (NVMe state v0{vendor})",
            self.cntlid,
            self.action,
            self.file.display(),
            self.state_bytes
        )
    }
}

/// `migrate`'s result: the controllers, the state moved and each step's time.
#[derive(Debug, Serialize)]
pub struct MigrateReport {
    /// The source CNTLID (left suspended).
    pub from: u16,
    /// The destination CNTLID (running the state).
    pub to: u16,
    /// Bytes of controller state moved.
    pub state_bytes: usize,
    /// Whether the vfio-nvme vendor state travelled with NVMe state v0.
    pub vendor_state: bool,
    /// Suspend of the source.
    pub suspend_ms: f64,
    /// Get Controller State of the source.
    pub save_ms: f64,
    /// Suspend of the destination and Set Controller State.
    pub load_ms: f64,
    /// Resume of the destination.
    pub resume_ms: f64,
    /// All of it (the source's commands wait this long).
    pub total_ms: f64,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vendor = if self.vendor_state {
            " + vendor state"
        } else {
            ""
        };
        writeln!(
            f,
            "controller {} moved to controller {}: {} bytes of state (NVMe state v0{vendor})",
            self.from, self.to, self.state_bytes
        )?;
        writeln!(
            f,
            "  suspend {:.3} ms, save {:.3} ms, load {:.3} ms, resume {:.3} ms; total {:.3} ms",
            self.suspend_ms, self.save_ms, self.load_ms, self.resume_ms, self.total_ms
        )?;
        write!(
            f,
            "  controller {} stays suspended: its queued commands now run on {}",
            self.from, self.to
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Suspend `from`, save, suspend `to`, load, resume `to`, timing each step; without the vendor
/// state if `nvme_state_only`.
fn migrate(
    admin: &dyn LmAdmin,
    from: Controller,
    to: Controller,
    nvme_state_only: bool,
) -> anyhow::Result<MigrateReport> {
    let source = resolve(admin, "--from", from)?;
    let destination = resolve(admin, "--to", to)?;
    if source == destination {
        return Err(anyhow::Error::new(UsageError {
            option: "--to".to_owned(),
            value: destination.to_string(),
            reason: "is the controller to move from; name another".to_owned(),
        }));
    }
    let mut formats = formats(admin)?;
    if nvme_state_only {
        formats.csuuidi = 0;
    }
    let start = Instant::now();
    named("--from", from, tp4159::suspend(admin, source, false))?;
    let suspended = Instant::now();
    let state = tp4159::get_state(admin, source, formats)
        .with_context(|| format!("cannot save the state of controller {source}"))?;
    let saved = Instant::now();
    named("--to", to, tp4159::suspend(admin, destination, false))?;
    let set = carried(formats, &state, Path::new("the saved state"))?;
    tp4159::set_state(admin, destination, set, &state)
        .with_context(|| format!("cannot load the state into controller {destination}"))?;
    let loaded = Instant::now();
    tp4159::resume(admin, destination)
        .with_context(|| format!("cannot resume controller {destination}"))?;
    let resumed = Instant::now();
    Ok(MigrateReport {
        from: source,
        to: destination,
        state_bytes: state.len(),
        vendor_state: set.csuuidi != 0,
        suspend_ms: ms(suspended - start),
        save_ms: ms(saved - suspended),
        load_ms: ms(loaded - saved),
        resume_ms: ms(resumed - loaded),
        total_ms: ms(resumed - start),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use nvme_device::controller::MigrationOffer;
    use nvme_device::namespace::BlockSize;
    use nvme_spec::command::AdminOpcode;
    use nvme_spec::command::Command;
    use vfio_nvme::migration::admin::InProcessPrimary;
    use vfio_nvme::migration::admin::Transfer;
    use vfio_nvme::served::BackendConfig;
    use vfio_nvme::served::NamespaceConfig;
    use vfio_nvme::served::ServeConfig;
    use vfio_nvme::served::Served;

    use super::*;

    /// (opcode, SEL or CNS, CNTLID or CNTID) of an admin command.
    type Sent = (u8, u8, u16);
    const IDENTIFY: u8 = AdminOpcode::IDENTIFY.0;
    const SEND: u8 = AdminOpcode::MIGRATION_SEND.0;
    const RECEIVE: u8 = AdminOpcode::MIGRATION_RECEIVE.0;

    /// The in-process PF of a served subsystem, recording every command it is sent.
    struct Recording {
        pf: InProcessPrimary,
        sent: Mutex<Vec<Sent>>,
    }

    impl LmAdmin for Recording {
        fn execute(&self, what: &str, cmd: Command, data: Transfer<'_>) -> Result<u32, LmError> {
            let opcode = cmd.cdw0.opcode();
            let target = if opcode == IDENTIFY {
                (cmd.cdw10 >> 16) as u16
            } else {
                cmd.cdw11 as u16
            };
            self.sent
                .lock()
                .unwrap()
                .push((opcode, cmd.cdw10 as u8, target));
            self.pf.execute(what, cmd, data)
        }

        fn memory(&self) -> Option<&Arc<nvme_driver::memory::HostMemory>> {
            self.pf.memory()
        }

        fn max_transfer(&self) -> u64 {
            self.pf.max_transfer()
        }
    }

    /// Two VFs on a shared namespace, behind a PF offering `migration`.
    fn served(name: &str, migration: MigrationOffer) -> (Served, Recording) {
        let served = Served::new(&ServeConfig {
            name: name.to_owned(),
            vfs: 2,
            namespaces: vec![NamespaceConfig {
                backend: BackendConfig::Ram {
                    size: 1 << 20,
                    prealloc: false,
                },
                block_size: BlockSize::B4096,
                shared: true,
            }],
            migration,
            ..ServeConfig::default()
        })
        .unwrap();
        let pf = InProcessPrimary::new(served.subsystem()).unwrap();
        let recording = Recording {
            pf,
            sent: Mutex::new(Vec::new()),
        };
        (served, recording)
    }

    fn json(admin: &dyn LmAdmin, command: PfCommand) -> serde_json::Value {
        let out = run_on(admin, &command, true).unwrap();
        serde_json::from_str(&out.text).unwrap()
    }

    #[test]
    fn controllers_are_cntlids_or_vfs() {
        assert_eq!(parse_controller("3"), Ok(Controller::Cntlid(3)));
        assert_eq!(parse_controller("VF2"), Ok(Controller::Vf(2)));
        assert!(parse_controller("vf0").is_err());
        assert!(parse_controller("two").is_err());
    }

    #[test]
    fn list_secondary_reads_cns_15h() {
        let (_served, pf) = served("pf-list", MigrationOffer::default());
        let out = json(&pf, PfCommand::ListSecondary);
        let vfs: Vec<(u64, u64, bool)> = out["secondaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let n = |k: &str| s[k].as_u64().unwrap();
                (n("scid"), n("vfn"), s["online"].as_bool().unwrap())
            })
            .collect();
        assert_eq!(vfs, [(2, 1, true), (3, 2, true)]);
        assert_eq!(*pf.sent.lock().unwrap(), [(IDENTIFY, 0x15, 0)]);
        let text = run_on(&pf, &PfCommand::ListSecondary, false).unwrap().text;
        assert!(
            text.starts_with("CNTLID") && text.contains("online"),
            "{text}"
        );
    }

    /// `migrate` sends exactly the seed's sequence, and leaves the source suspended and the
    /// destination running.
    #[test]
    fn migrate_suspends_saves_loads_and_resumes() {
        let (served, pf) = served("pf-migrate", MigrationOffer::default());
        let migrate = PfCommand::Migrate {
            from: Controller::Vf(1),
            to: Controller::Cntlid(3),
            nvme_state_only: false,
        };
        let report = json(&pf, migrate);
        assert_eq!(
            (report["from"].as_u64(), report["to"].as_u64()),
            (Some(2), Some(3))
        );
        assert_eq!(report["vendor_state"].as_bool(), Some(true));
        assert!(report["state_bytes"].as_u64().unwrap() > 48);
        assert!(report["total_ms"].as_f64().unwrap() >= report["save_ms"].as_f64().unwrap());
        let sent = pf.sent.lock().unwrap().clone();
        let steps: Vec<Sent> = sent.iter().copied().filter(|s| s.0 != IDENTIFY).collect();
        let mut want = vec![(SEND, 0, 2)];
        // The header, then the rest of the state in one chunk (it is below MDTS).
        want.extend([(RECEIVE, 0, 2), (RECEIVE, 0, 2)]);
        want.extend([(SEND, 0, 3), (SEND, 2, 3), (SEND, 1, 3)]);
        assert_eq!(steps, want, "{sent:?}");
        assert!(served.function(1).unwrap().controller().suspended());
        assert!(!served.function(2).unwrap().controller().suspended());
    }

    #[test]
    fn a_state_saved_to_a_file_loads_into_another_controller() {
        let (served, pf) = served(
            "pf-file",
            MigrationOffer {
                vendor_state: false,
                user_data_logging: true,
            },
        );
        let file = std::env::temp_dir().join(format!("pf-state-{}.bin", std::process::id()));
        let vf1 = Controller::Cntlid(2);
        let vf2 = Controller::Vf(2);
        json(&pf, PfCommand::Suspend { cntlid: vf1 });
        let saved = json(
            &pf,
            PfCommand::SaveState {
                cntlid: vf1,
                file: file.clone(),
            },
        );
        // A v0-only PF: no vendor state in the file.
        assert_eq!(
            (saved["csvi"].as_u64(), saved["csuuidi"].as_u64()),
            (Some(1), Some(0))
        );
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes.len() as u64, saved["state_bytes"].as_u64().unwrap());
        json(&pf, PfCommand::Suspend { cntlid: vf2 });
        let loaded = json(
            &pf,
            PfCommand::LoadState {
                cntlid: vf2,
                file: file.clone(),
            },
        );
        assert_eq!(loaded["cntlid"].as_u64(), Some(3));
        json(&pf, PfCommand::Resume { cntlid: vf2 });
        assert!(!served.function(2).unwrap().controller().suspended());
        // Loading into a running controller: the PF's status, named.
        let err = run_on(
            &pf,
            &PfCommand::LoadState {
                cntlid: vf2,
                file: file.clone(),
            },
            false,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("controller 3"), "{err:#}");
        assert_eq!(crate::exit::status(&err), crate::exit::FAILURE);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn unknown_controllers_are_usage_errors() {
        let (_served, pf) = served("pf-unknown", MigrationOffer::default());
        let err = run_on(
            &pf,
            &PfCommand::Suspend {
                cntlid: Controller::Vf(9),
            },
            false,
        )
        .unwrap_err();
        assert_eq!(crate::exit::status(&err), crate::exit::USAGE, "{err:#}");
        assert!(err.to_string().contains("'vf9' for '--cntlid'"), "{err}");
        let err = run_on(
            &pf,
            &PfCommand::Resume {
                cntlid: Controller::Cntlid(99),
            },
            false,
        )
        .unwrap_err();
        assert_eq!(crate::exit::status(&err), crate::exit::USAGE, "{err:#}");
        let same = PfCommand::Migrate {
            from: Controller::Cntlid(2),
            to: Controller::Vf(1),
            nvme_state_only: false,
        };
        let err = run_on(&pf, &same, false).unwrap_err();
        assert_eq!(crate::exit::status(&err), crate::exit::USAGE, "{err:#}");
    }
}
