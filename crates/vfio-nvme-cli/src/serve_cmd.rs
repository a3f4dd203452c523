//! `vfio-nvme serve`: one subsystem, one VF per socket, until SIGINT, SIGTERM or SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use anyhow::bail;
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

/// Serves until a signal arrives; returns a human summary of what was served. The sockets
/// get `socket`'s mode and group; under systemd, `READY=1` is sent once all listen.
pub fn run(
    sockets: &[PathBuf],
    namespaces: &[NamespaceConfig],
    name: &str,
    socket: &SocketOptions,
) -> anyhow::Result<String> {
    if sockets.is_empty() {
        bail!("give at least one --socket PATH");
    }
    for path in sockets {
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
    };
    let served = Served::new(&config).context("cannot build the NVM subsystem")?;
    let mut servers = Vec::new();
    for path in sockets {
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
    for (i, server) in servers.iter().enumerate() {
        eprintln!(
            "serving VF {} of {} on {}",
            i + 1,
            served.subsystem().identity().nqn,
            server.path().display()
        );
    }
    let nqn = &served.subsystem().identity().nqn;
    // A notify socket that cannot be reached is systemd's problem to time out on, not a
    // reason to stop serving (sd_notify's callers ignore its errors too).
    if let Err(err) = crate::notify::ready(&format!("serving {} VF(s) of {nqn}", servers.len())) {
        tracing::warn!("{err:#}");
    }
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .zip(served.functions())
            .map(|(server, device)| {
                let device: Arc<dyn Device> = device.clone();
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
    Ok(format!(
        "served {} VF(s) of {}; sockets removed\n",
        sockets.len(),
        served.subsystem().identity().nqn
    ))
}
