//! `vfio-nvme state decode FILE`: a saved migration stream, for humans or machines.

use std::path::Path;

use anyhow::Context as _;
use vfio_nvme::stream::describe_reader;

use crate::output::Output;
use crate::output::Verdict;

/// Describes the stream in `path`. A stream that is invalid or incomplete is still described as
/// far as it is valid, and then reported as an error (exit code 1; `passed` false in JSON).
/// The file is read in chunks and only up to its first invalid byte, so anything that is not a
/// stream (even an endless `/dev/zero`) is refused after its first bytes, with the reason.
pub fn decode(path: &Path, json: bool) -> anyhow::Result<Output> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the stream file {}", path.display()))?;
    let report = describe_reader(file)
        .with_context(|| format!("cannot read the stream file {}", path.display()))?
        .with_context(|| format!("{} is not a vfio-nvme migration stream", path.display()))?;
    let text = if json {
        Verdict::json(report.error.is_none(), &report)
            .context("cannot render the report as JSON")?
    } else {
        report.to_string()
    };
    let failure = report.error.as_ref().map(|error| {
        anyhow::anyhow!(
            "{} is not a complete, valid stream (valid up to byte {}): {error}",
            path.display(),
            report.valid_bytes
        )
    });
    Ok(Output { text, failure })
}
