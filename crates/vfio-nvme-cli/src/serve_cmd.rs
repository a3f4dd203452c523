//! `vfio-nvme serve`: one subsystem, one VF per socket (and the PF on its own socket, if asked),
//! until SIGINT, SIGTERM or SIGHUP.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use anyhow::bail;
use nvme_device::controller::MigrationOffer;
use nvme_device::sriov::SecondaryStart;
use vfio_nvme::served::NamespaceConfig;
use vfio_nvme::served::ServeConfig;
use vfio_nvme::served::Served;
use vfu::server::Device;

use crate::control::inspect::Functions;
use crate::control::inspect::Inspector;
use crate::serve_events::Event;
use crate::serve_events::Events;
use crate::serve_events::Observed;
use vfu::server::Server;
use vfu::server::SocketOptions;

/// A subsystem name for a server started without `--name`: 12 hex digits that differ
/// between servers (the process-random keys of std's hasher over the time and process id),
/// short enough for the serial number.
pub fn default_name() -> String {
    use std::hash::BuildHasher as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mixed =
        std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{:012x}", mixed & 0xffff_ffff_ffff)
}

/// What `serve` serves, and how.
#[derive(Debug)]
pub struct ServeOptions<'a> {
    /// A VF on each of these sockets.
    pub sockets: &'a [PathBuf],
    /// The PF on this socket, if given.
    pub pf_socket: Option<&'a Path>,
    /// A control-only socket for the whole subsystem, if given.
    pub control: Option<&'a Path>,
    /// The state the VFs' controllers start in.
    pub secondary_start: SecondaryStart,
    /// What the PF offers for migration (`--state-formats`, `--no-user-data-logging`).
    pub migration: MigrationOffer,
    /// The namespaces.
    pub namespaces: &'a [NamespaceConfig],
    /// The subsystem name.
    pub name: &'a str,
    /// Mode and group of every socket.
    pub socket: &'a SocketOptions,
    /// I/O worker threads per controller.
    pub io_workers: u16,
    /// How the I/O workers wait between passes.
    pub poll: nvme_device::controller::PollPolicy,
    /// Whether clients map the doorbell page or every doorbell write is a message.
    pub doorbells: nvme_device::controller::DoorbellDelivery,
}

/// Serves until a signal arrives; returns what was served (text, or a JSON result line with
/// `json`): a VF on each socket and, with a PF socket, the PF there, each also answering the
/// control protocol, plus the standalone control socket if asked. Events go to stdout as JSON
/// lines (`json`) or to stderr as sentences ([`crate::serve_events`]). Under systemd,
/// `READY=1` is sent once every socket listens.
pub fn run(options: &ServeOptions<'_>, json: bool) -> anyhow::Result<String> {
    let sockets = options.sockets;
    if sockets.is_empty() {
        bail!("give at least one --socket PATH");
    }
    for path in sockets
        .iter()
        .map(PathBuf::as_path)
        .chain(options.pf_socket)
        .chain(options.control)
    {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            bail!(
                "cannot create socket {}: directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
    }
    let config = ServeConfig {
        name: options.name.to_owned(),
        vfs: sockets.len() as u16,
        namespaces: options.namespaces.to_vec(),
        serve_pf: options.pf_socket.is_some(),
        secondary_start: options.secondary_start,
        migration: options.migration,
        io_workers: options.io_workers,
        poll: options.poll,
        doorbells: options.doorbells,
    };
    let served = Arc::new(Served::new(&config).context("cannot build the NVM subsystem")?);
    let events = Arc::new(Events::new(json));
    let functions = Arc::new(Functions::new(
        sockets,
        options.pf_socket.map(Path::to_path_buf),
    ));
    // Each socket with the device it serves, what to call it and its controller.
    let mut devices: Vec<(&Path, Arc<dyn Device>, String, u16)> = sockets
        .iter()
        .zip(served.functions())
        .enumerate()
        .map(|(i, (path, vf))| {
            let device: Arc<dyn Device> = vf.clone();
            (
                path.as_path(),
                device,
                format!("VF {}", i + 1),
                vf.controller().cntlid(),
            )
        })
        .collect();
    if let (Some(path), Some(pf)) = (options.pf_socket, served.primary_function()) {
        let device: Arc<dyn Device> = pf.clone();
        devices.push((path, device, "PF".to_owned(), pf.controller().cntlid()));
    }
    let mut servers = Vec::new();
    for (path, _, _, cntlid) in &devices {
        let inspector = Inspector::new(served.clone(), functions.clone(), Some(*cntlid));
        servers.push(
            Server::bind_with(path, options.socket)
                .with_context(|| format!("cannot serve on {}", path.display()))?
                .with_control(Arc::new(inspector)),
        );
    }
    let control = options
        .control
        .map(|path| {
            Server::bind_with(path, options.socket)
                .with_context(|| format!("cannot serve the control socket on {}", path.display()))
        })
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too (a closed terminal, a session ending): without a handler it would kill the
    // process before the sockets are removed.
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(signal, stop.clone())
            .context("cannot install the signal handler")?;
    }
    let nqn = served.subsystem().identity().nqn.clone();
    let devices: Vec<(Arc<dyn Device>, &Server)> = devices
        .into_iter()
        .zip(&servers)
        .map(|((path, device, what, cntlid), server)| {
            events.emit(&Event::Listening {
                function: &what,
                socket: server.path(),
                nqn: &nqn,
            });
            let index = cntlid - nvme_device::subsystem::PRIMARY_CNTLID;
            let observed: Arc<dyn Device> = Arc::new(Observed::new(
                device,
                index,
                what,
                path.to_path_buf(),
                events.clone(),
                functions.clone(),
            ));
            (observed, server)
        })
        .collect();
    if let Some(control) = &control {
        events.emit(&Event::Listening {
            function: "control",
            socket: control.path(),
            nqn: &nqn,
        });
    }
    events.emit(&Event::Ready { nqn: &nqn });
    let what = describe(sockets.len(), options.pf_socket.is_some());
    // A notify socket that cannot be reached is systemd's problem to time out on, not a
    // reason to stop serving (sd_notify's callers ignore its errors too).
    if let Err(err) = crate::notify::ready(&format!("serving {what} of {nqn}")) {
        tracing::warn!("{err:#}");
    }
    let result = std::thread::scope(|scope| {
        let mut handles: Vec<_> = devices
            .iter()
            .map(|(device, server)| {
                let device = device.clone();
                let stop = &stop;
                scope.spawn(move || server.serve(device, stop))
            })
            .collect();
        if let Some(control) = &control {
            let inspector = Arc::new(Inspector::new(served.clone(), functions.clone(), None));
            let stop = &stop;
            handles.push(scope.spawn(move || control.serve_control(inspector, stop)));
        }
        let mut first_error = None;
        for handle in handles {
            let outcome = handle.join();
            // One server failing stops the others.
            stop.store(true, Ordering::Release);
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| anyhow::Error::new(e));
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("a server thread panicked"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    });
    drop(devices);
    drop(servers);
    drop(control);
    if let Err(err) = &result {
        events.emit(&Event::Error {
            message: format!("{err:#}"),
        });
    }
    result?;
    if json {
        return Ok(serde_json::json!({
            "passed": true,
            "served": what,
            "nqn": nqn,
            "sockets_removed": true,
        })
        .to_string());
    }
    Ok(format!("served {what} of {nqn}; sockets removed\n"))
}

/// "2 VF(s)", or "2 VF(s) and the PF".
fn describe(vfs: usize, pf: bool) -> String {
    if pf {
        format!("{vfs} VF(s) and the PF")
    } else {
        format!("{vfs} VF(s)")
    }
}
