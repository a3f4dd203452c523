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
