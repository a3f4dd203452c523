//! Parsers for sizes (`1G`, `512M`, `4k`) and namespace specifications
//! (`ram:SIZE|file:PATH|null:SIZE[,lba=512|4096][,shared][,direct][,size=SIZE]`).

use std::path::PathBuf;

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
    let mut size = None;
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
            None if option == "shared" => shared = true,
            None if option == "direct" => direct = true,
            _ => {
                return Err(format!(
                    "`{text}`: unknown option `{option}` (lba=512|4096, shared, direct, size=SIZE)"
                ));
            }
        }
    }
    let backend = match kind {
        "ram" => BackendConfig::Ram(parse_size(value)?),
        "null" => BackendConfig::Null(parse_size(value)?),
        "file" if !value.is_empty() => BackendConfig::File {
            path: PathBuf::from(value),
            size,
            direct,
        },
        "file" => return Err(format!("`{text}`: file: needs a path")),
        other => {
            return Err(format!(
                "`{text}`: unknown backend `{other}` (use ram, file or null)"
            ));
        }
    };
    if direct && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!("`{text}`: direct applies to file namespaces only"));
    }
    if size.is_some() && !matches!(backend, BackendConfig::File { .. }) {
        return Err(format!("`{text}`: size= applies to file namespaces only"));
    }
    Ok(NamespaceConfig {
        backend,
        block_size,
        shared,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1y").unwrap_err().contains("unit"));
    }

    #[test]
    fn namespaces() {
        let ns = parse_namespace("ram:1G,lba=4096,shared").unwrap();
        assert_eq!(ns.backend, BackendConfig::Ram(1 << 30));
        assert_eq!(ns.block_size, BlockSize::B4096);
        assert!(ns.shared);
        let ns = parse_namespace("file:/tmp/x.img,direct,size=64M").unwrap();
        assert_eq!(
            ns.backend,
            BackendConfig::File {
                path: "/tmp/x.img".into(),
                size: Some(64 << 20),
                direct: true
            }
        );
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
