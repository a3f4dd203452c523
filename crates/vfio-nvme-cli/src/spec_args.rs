//! Parsers for sizes (`1G`, `512M`, `4k`), namespace specifications
//! (`ram:SIZE|file:PATH|null:SIZE[,lba=512|4096][,shared][,direct][,size=SIZE][,aio=ENGINE]
//! [,prealloc]`),
//! and the
//! serve options (subsystem name, socket mode, socket group). Each is plugged into clap with
//! `value_parser`, so a bad value is a usage error (exit 2) naming the option.

use std::path::PathBuf;

use nvme_device::backend::FileAio;
use nvme_device::namespace::BlockSize;
use vfio_nvme::served::BackendConfig;
use vfio_nvme::served::NamespaceConfig;

/// Parses a byte count with an optional binary suffix: `k`/`K`/`KiB` (1024), `m`, `g`, `t`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits_end);
    let value: u64 = number.parse().map_err(|_| {
        format!("`{text}` is not a size: expected a number with an optional k/M/G/T suffix")
    })?;
    let shift = match suffix
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown size suffix `{other}` (use k, M, G or T)"
            ));
        }
    };
    value
        .checked_mul(1u64 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{text}` is not a usable size (zero or too large)"))
}

/// Parses a rate: a size per second (`100M`, `1G/s`, `512k`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    parse_size(t.strip_suffix("/s").unwrap_or(t))
        .map_err(|e| format!("{e} per second, e.g. 100M or 1G/s"))
}

/// Parses a command's block size: a size that is a multiple of the smallest logical block
/// (512 bytes, NVMe's smallest LBA data size). The namespace's own LBA size and the
/// controller's MDTS are checked once the workload connects.
pub fn parse_block_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    let smallest = BlockSize::B512.bytes();
    if !size.is_multiple_of(smallest) {
        return Err(format!(
            "`{text}` ({size} bytes) is not a multiple of the {smallest}-byte logical block"
        ));
    }
    Ok(size)
}

/// Parses a subsystem name: printable ASCII (it goes into the NQN and the serial number),
/// short enough that the serial number fits Identify Controller's SN field.
pub fn parse_subsystem_name(text: &str) -> Result<String, String> {
    use nvme_spec::identify::IdentifyController;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "`{text}` is not a subsystem name: use printable ASCII without spaces"
        ));
    }
    let serial = nvme_device::subsystem::SubsystemConfig::new(text, 1)
        .identity
        .serial;
    let room =
        std::mem::offset_of!(IdentifyController, mn) - std::mem::offset_of!(IdentifyController, sn);
    if serial.len() > room {
        return Err(format!(
            "`{text}` is too long: the serial number `{serial}` would have {} characters, \
             Identify Controller holds {room}",
            serial.len()
        ));
    }
    Ok(text.to_owned())
}

/// Parses a socket mode in octal (`0660`, `660`, `0o660`): permission bits only.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("`{text}` is not an octal mode (e.g. 0600, 0660)"))?;
    if mode > 0o777 {
        return Err(format!(
            "`{text}` has bits beyond the permission bits 0777 (no setuid, setgid or sticky)"
        ));
    }
    Ok(mode)
}

/// Parses a group: a number, or a name looked up in the group database (`getgrnam`).
pub fn parse_group(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("there is no group named `{text}`")),
        Err(e) => Err(format!("cannot look up group `{text}`: {e}")),
    }
}

/// Parses a duration: a number with `ms`, `s` (the default), `m` or `h`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let digits_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 7.0 * 86400.0 {
        return Err(format!("`{text}` is not a usable duration"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// Parses a polling interval: 0, or a number with `us`, `ms` or `s`, at most one second.
pub fn parse_poll_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected e.g. 0, 20us, 1ms"))?;
    let micros = match unit {
        "" if value == 0 => 0,
        "us" => value,
        "ms" => value.saturating_mul(1000),
        "s" => value.saturating_mul(1_000_000),
        _ => {
            return Err(format!(
                "`{text}`: give a unit (us, ms or s), e.g. 20us or 1ms"
            ));
        }
    };
    if micros > 1_000_000 {
        return Err(format!(
            "`{text}` is longer than 1s: a worker would answer too late"
        ));
    }
    Ok(std::time::Duration::from_micros(micros))
}

/// Parses `on` or `off`.
pub fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("`{other}` is neither on nor off")),
    }
}

/// Parses one `--namespace` specification.
pub fn parse_namespace(text: &str) -> Result<NamespaceConfig, String> {
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default();
    let (kind, value) = head.split_once(':').ok_or_else(|| {
        format!("`{text}`: expected ram:SIZE, file:PATH or null:SIZE, then options")
    })?;
    let mut block_size = BlockSize::B512;
    let mut shared = false;
    let mut direct = false;
    let mut prealloc = false;
    let mut size = None;
    let mut aio = None;
    let mut inline_writes = None;
    for option in parts {
        match option.split_once('=') {
            Some(("lba", "512")) => block_size = BlockSize::B512,
            Some(("lba", "4096" | "4k")) => block_size = BlockSize::B4096,
            Some(("lba", other)) => {
                return Err(format!(
                    "`{text}`: lba={other} is not supported (use 512 or 4096)"
                ));
            }
            Some(("size", s)) => size = Some(parse_size(s)?),
            Some(("aio", name)) => {
                aio = Some(FileAio::from_name(name).ok_or_else(|| {
                    format!(
                        "`{text}`: aio={name} is not an I/O engine (use uring, the default; \
                         threads, where io_uring is not allowed; or sync, inline in the poller)"
                    )
                })?);
            }
            Some(("inline-writes", value)) => {
                inline_writes =
                    Some(parse_on_off(value).map_err(|e| format!("`{text}`: inline-writes={e}"))?);
            }
            None if option == "shared" => shared = true,
            None if option == "direct" => direct = true,
            None if option == "prealloc" => prealloc = true,
            _ => {
                return Err(format!(
                    "`{text}`: unknown option `{option}` (lba=512|4096, shared, direct, size=SIZE, \
                     aio=uring|threads|sync, inline-writes=on|off, prealloc)"
                ));
            }
        }
    }
    let backend = match kind {
        "ram" => BackendConfig::Ram {
            size: parse_size(value)?,
            prealloc,
        },
        "null" => BackendConfig::Null(parse_size(value)?),
        "file" if !value.is_empty() => BackendConfig::File {
            path: PathBuf::from(value),
            size,
            direct,
            aio: aio.unwrap_or_default(),
            inline_writes: inline_writes.unwrap_or(true),
        },
        "file" => return Err(format!("`{text}`: file: needs a path")),
        other => {
            return Err(format!(
                "`{text}`: unknown backend `{other}` (use ram, file or null)"
            ));
        }
    };
    if prealloc && !matches!(backend, BackendConfig::Ram { .. }) {
        return Err(format!("`{text}`: prealloc applies to ram namespaces only"));
    }
    if direct && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!("`{text}`: direct applies to file namespaces only"));
    }
    if size.is_some() && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!("`{text}`: size= applies to file namespaces only"));
    }
    if inline_writes.is_some() && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!(
            "`{text}`: inline-writes= applies to file namespaces only"
        ));
    }
    if aio.is_some() && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!("`{text}`: aio= applies to file namespaces only"));
    }
    Ok(NamespaceConfig {
        backend,
        block_size,
        shared,
    })
}

/// Parses `serve --state-formats`: `v0` or `v0,vendor` (in any order and case); returns
/// whether the vendor state is offered. NVMe state v0 is always needed: it holds the I/O
/// queues.
pub fn parse_state_formats(text: &str) -> Result<bool, String> {
    let mut v0 = false;
    let mut vendor = false;
    for part in text.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        match part.as_str() {
            "v0" => v0 = true,
            "vendor" => vendor = true,
            other => return Err(format!("unknown state format '{other}': use v0 or vendor")),
        }
    }
    if !v0 {
        return Err(
            "NVMe state v0 is required (it holds the I/O queues): use v0 or v0,vendor".to_owned(),
        );
    }
    Ok(vendor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_formats_need_v0() {
        assert_eq!(parse_state_formats("v0"), Ok(false));
        assert_eq!(parse_state_formats("Vendor,v0"), Ok(true));
        assert!(
            parse_state_formats("vendor")
                .unwrap_err()
                .contains("v0 is required")
        );
        assert!(parse_state_formats("v1").unwrap_err().contains("unknown"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1X").unwrap_err().contains("suffix"));
        assert!(parse_size("big").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn rates_are_sizes_per_second() {
        assert_eq!(parse_rate("100M"), Ok(100 << 20));
        assert_eq!(parse_rate("1G/s"), Ok(1 << 30));
        assert_eq!(parse_rate("512MB/s"), Ok(512 << 20));
        assert!(parse_rate("0").unwrap_err().contains("per second"));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn block_sizes_are_whole_logical_blocks() {
        assert_eq!(parse_block_size("4k"), Ok(4096));
        assert_eq!(parse_block_size("512"), Ok(512));
        assert!(parse_block_size("1000").unwrap_err().contains("512-byte"));
        assert!(parse_block_size("0").is_err());
    }

    #[test]
    fn subsystem_names_fit_the_serial_number() {
        assert_eq!(parse_subsystem_name("demo-a"), Ok("demo-a".to_owned()));
        assert_eq!(
            parse_subsystem_name("vfio-nvme"),
            Ok("vfio-nvme".to_owned())
        );
        assert!(
            parse_subsystem_name("a-name-that-is-too-long")
                .unwrap_err()
                .contains("serial")
        );
        assert!(parse_subsystem_name("two words").is_err());
        assert!(parse_subsystem_name("").is_err());
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("4755").unwrap_err().contains("setuid"));
        assert!(parse_mode("rw").is_err());
    }

    #[test]
    fn groups_by_number_or_name() {
        assert_eq!(parse_group("0"), Ok(0));
        assert_eq!(parse_group("root"), Ok(0));
        assert!(
            parse_group("no-such-group-vfio-nvme")
                .unwrap_err()
                .contains("no group")
        );
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_poll_duration("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(
            parse_poll_duration("20us"),
            Ok(std::time::Duration::from_micros(20))
        );
        assert_eq!(
            parse_poll_duration("2ms"),
            Ok(std::time::Duration::from_millis(2))
        );
        assert!(parse_poll_duration("20").unwrap_err().contains("unit"));
        assert!(parse_poll_duration("2s").unwrap_err().contains("1s"));
        assert!(parse_poll_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1y").unwrap_err().contains("unit"));
    }

    #[test]
    fn namespaces() {
        let ns = parse_namespace("ram:1G,lba=4096,shared").unwrap();
        assert_eq!(
            ns.backend,
            BackendConfig::Ram {
                size: 1 << 30,
                prealloc: false
            }
        );
        assert_eq!(ns.block_size, BlockSize::B4096);
        assert!(ns.shared);
        assert_eq!(
            parse_namespace("ram:64M,prealloc").unwrap().backend,
            BackendConfig::Ram {
                size: 64 << 20,
                prealloc: true
            }
        );
        assert!(
            parse_namespace("null:1G,prealloc")
                .unwrap_err()
                .contains("ram namespaces only")
        );
        let ns = parse_namespace("file:/tmp/x.img,direct,size=64M").unwrap();
        assert_eq!(
            ns.backend,
            BackendConfig::File {
                path: "/tmp/x.img".into(),
                size: Some(64 << 20),
                direct: true,
                aio: FileAio::Uring,
                inline_writes: true,
            }
        );
        match parse_namespace("file:/x,inline-writes=off")
            .unwrap()
            .backend
        {
            BackendConfig::File { inline_writes, .. } => assert!(!inline_writes),
            other => panic!("{other:?}"),
        }
        for bad in ["file:/x,inline-writes=maybe", "ram:1G,inline-writes=off"] {
            let err = parse_namespace(bad).unwrap_err();
            assert!(err.contains("inline-writes"), "{bad}: {err}");
        }
        for (spec, aio) in [
            ("file:/x,aio=uring", FileAio::Uring),
            ("file:/x,aio=threads,direct", FileAio::Threads),
            ("file:/x,aio=sync", FileAio::Sync),
        ] {
            match parse_namespace(spec).unwrap().backend {
                BackendConfig::File { aio: parsed, .. } => assert_eq!(parsed, aio, "{spec}"),
                other => panic!("{spec}: {other:?}"),
            }
        }
        let bad = parse_namespace("file:/x,aio=posix").unwrap_err();
        assert!(
            bad.contains("aio=posix") && bad.contains("threads"),
            "{bad}"
        );
        let bad = parse_namespace("ram:1G,aio=threads").unwrap_err();
        assert!(bad.contains("file namespaces only"), "{bad}");
        assert_eq!(ns.block_size, BlockSize::B512);
        assert_eq!(
            parse_namespace("null:8G").unwrap().backend,
            BackendConfig::Null(8 << 30)
        );
        for bad in [
            "ram",
            "disk:1G",
            "ram:1G,lba=1024",
            "ram:1G,fast",
            "ram:1G,direct",
            "file:",
        ] {
            assert!(parse_namespace(bad).is_err(), "{bad}");
        }
    }
}
