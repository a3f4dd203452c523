//! Exit statuses, and the errors that choose them: 1 for a failure, 2 for a value the user
//! gave that is wrong (clap's own usage errors, and those found only once the tool looked,
//! e.g. at the controller's limits), 3 for a verification that found bad data.

use std::fmt;

use clap::ArgMatches;
use clap::CommandFactory as _;
use clap::parser::ValueSource;
use nvme_host::workload::WorkloadError;

use crate::cli::Cli;

/// Something failed: a server, a connection, a migration.
pub const FAILURE: u8 = 1;
/// A usage error: an option's value (clap uses 2 too).
pub const USAGE: u8 = 2;
/// Data read back was lost, stale, torn or misplaced.
pub const VERIFICATION: u8 = 3;

/// An option (or its value) found wrong after parsing; printed like clap's usage errors.
#[derive(Debug)]
pub struct UsageError {
    /// The option as typed (`--qd`).
    pub option: String,
    /// The value as typed (`2000`); empty for a flag that does not apply at all.
    pub value: String,
    /// What is wrong and what would work.
    pub reason: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            return write!(f, "'{}' {}", self.option, self.reason);
        }
        write!(
            f,
            "invalid value '{}' for '{}': {}",
            self.value, self.option, self.reason
        )
    }
}

impl std::error::Error for UsageError {}

/// A verification found data that does not match what was written.
#[derive(Debug)]
pub struct VerificationFailed(pub String);

impl fmt::Display for VerificationFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerificationFailed {}

/// The exit status for `err`: the first [`UsageError`] or [`VerificationFailed`] in its chain
/// decides, else [`FAILURE`].
pub fn status(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>() {
            return USAGE;
        }
        if cause.is::<VerificationFailed>() {
            return VERIFICATION;
        }
    }
    FAILURE
}

/// The option of the running subcommand that sets workload configuration field `field`.
fn option_for(field: &str) -> Option<&'static str> {
    Some(match field {
        "block_size" => "bs",
        "queue_depth" => "qd",
        "queues" => "queues",
        "nsid" => "nsid",
        "rw" => "rwmixread",
        _ => return None,
    })
}

/// A [`UsageError`] for a workload configuration error in `err`'s chain whose field the user
/// set through an option of the subcommand in `matches`: named as the option, with the value
/// as typed (or marked as the default).
pub fn usage_from_config(err: &anyhow::Error, matches: &ArgMatches) -> Option<UsageError> {
    let (field, value, reason) =
        err.chain()
            .find_map(|cause| match cause.downcast_ref::<WorkloadError>()? {
                WorkloadError::Config {
                    field,
                    value,
                    reason,
                } => Some((*field, value, reason)),
                _ => None,
            })?;
    let id = option_for(field)?;
    let (name, sub) = matches.subcommand()?;
    let command = Cli::command();
    let long = command
        .find_subcommand(name)?
        .get_arguments()
        .find(|arg| arg.get_id() == id)?
        .get_long()?;
    let typed = sub
        .try_get_raw(id)
        .ok()
        .flatten()
        .and_then(|mut values| values.next())
        .map(|v| v.to_string_lossy().into_owned());
    let reason = if sub.value_source(id) == Some(ValueSource::DefaultValue) {
        format!("{reason} (that is the default: give --{long} a value that fits)")
    } else {
        reason.clone()
    };
    Some(UsageError {
        option: format!("--{long}"),
        value: typed.unwrap_or_else(|| value.clone()),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches as _;

    use super::*;

    fn config_error(field: &'static str, value: &str) -> anyhow::Error {
        anyhow::Error::new(WorkloadError::Config {
            field,
            value: value.to_owned(),
            reason: "too big".to_owned(),
        })
        .context("the workload failed")
    }

    #[test]
    fn config_errors_name_the_option_and_the_value_typed() {
        let matches = Cli::command()
            .try_get_matches_from(["vfio-nvme", "workload", "--socket", "s", "--bs", "8k"])
            .unwrap();
        Cli::from_arg_matches(&matches).unwrap();
        let usage = usage_from_config(&config_error("block_size", "8192"), &matches).unwrap();
        assert_eq!(usage.to_string(), "invalid value '8k' for '--bs': too big");
        let usage = usage_from_config(&config_error("queue_depth", "32"), &matches).unwrap();
        assert_eq!(usage.option, "--qd");
        assert_eq!(usage.value, "32");
        assert!(usage.reason.contains("default"), "{usage}");
        assert!(usage_from_config(&config_error("lba_range", "0..1"), &matches).is_none());
        let wrapped = anyhow::Error::new(usage).context("outer");
        assert_eq!(status(&wrapped), USAGE);
    }

    #[test]
    fn statuses() {
        assert_eq!(status(&anyhow::anyhow!("no server")), FAILURE);
        let verify = anyhow::Error::new(VerificationFailed("LBA 5: stale".into())).context("x");
        assert_eq!(status(&verify), VERIFICATION);
    }
}
