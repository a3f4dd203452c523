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

/// Serves until a signal arrives; returns a human summary of what was served: a VF on each of
/// `sockets` and, with `pf_socket`, the PF there, the VFs' controllers starting as
/// `secondary_start` says, the PF offering `migration`. The sockets get `socket`'s mode and group; under systemd, `READY=1`
/// is sent once all listen.
pub fn run(
    sockets: &[PathBuf],
    pf_socket: Option<&Path>,
    secondary_start: SecondaryStart,
    migration: MigrationOffer,
    namespaces: &[NamespaceConfig],
    name: &str,
    socket: &SocketOptions,
) -> anyhow::Result<String> {
    if sockets.is_empty() {
        bail!("give at least one --socket PATH");
    }
    for path in sockets.iter().map(PathBuf::as_path).chain(pf_socket) {
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
        name: name.to_owned(),
        vfs: sockets.len() as u16,
        namespaces: namespaces.to_vec(),
        serve_pf: pf_socket.is_some(),
        secondary_start,
        migration,
    };
    let served = Served::new(&config).context("cannot build the NVM subsystem")?;
    // Each socket with the device it serves and what to call it.
    let mut devices: Vec<(&Path, Arc<dyn Device>, String)> = sockets
        .iter()
        .zip(served.functions())
        .enumerate()
        .map(|(i, (path, vf))| {
            let device: Arc<dyn Device> = vf.clone();
            (path.as_path(), device, format!("VF {}", i + 1))
        })
        .collect();
    if let (Some(path), Some(pf)) = (pf_socket, served.primary_function()) {
        let device: Arc<dyn Device> = pf.clone();
        devices.push((path, device, "the PF".to_owned()));
    }
    let mut servers = Vec::new();
    for (path, _, _) in &devices {
        servers.push(
            Server::bind_with(path, socket)
                .with_context(|| format!("cannot serve on {}", path.display()))?,
        );
    }
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
    let nqn = &served.subsystem().identity().nqn;
    for (server, (_, _, what)) in servers.iter().zip(&devices) {
        eprintln!("serving {what} of {nqn} on {}", server.path().display());
    }
    let what = describe(sockets.len(), pf_socket.is_some());
    // A notify socket that cannot be reached is systemd's problem to time out on, not a
    // reason to stop serving (sd_notify's callers ignore its errors too).
    if let Err(err) = crate::notify::ready(&format!("serving {what} of {nqn}")) {
        tracing::warn!("{err:#}");
    }
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .zip(&devices)
            .map(|(server, (_, device, _))| {
                let device = device.clone();
                let stop = &stop;
                scope.spawn(move || server.serve(device, stop))
            })
            .collect();
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
    drop(servers);
    result?;
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
