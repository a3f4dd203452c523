//! Parsers for the `fsm` subcommand's values: device states (names or uAPI numbers) and
//! migration flag lists, with error messages that name the bad value and list the good ones.
//!
//! They are plain functions from `&str`, plugged into clap with `value_parser`, so a bad value
//! is a usage error (exit code 2) that clap prints together with the argument it was given for.

use core::fmt;

use vfio_migration::{DeviceState, MigrationFlags};

/// Why a state or flag-list argument was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A state name that is none of the eight uAPI states.
    UnknownState(String),
    /// A state number outside the uAPI range 0–7.
    StateOutOfRange(String),
    /// A flag name that is not `stop-copy`, `p2p` or `pre-copy`.
    UnknownFlag(String),
    /// An empty entry in the flag list (e.g. `stop-copy,,p2p` or an empty `--flags`).
    EmptyFlag,
    /// The flag list lacks `stop-copy`, which every migratable device must advertise.
    MissingStopCopy(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownState(value) => write!(
                f,
                "unknown device state `{value}`; use a name ({}, case-insensitive, `-` or `_`) \
                 or a uAPI number 0-7",
                state_names()
            ),
            Self::StateOutOfRange(value) => write!(
                f,
                "device state number {value} is out of range; the uAPI states are 0-7 ({})",
                state_numbers()
            ),
            Self::UnknownFlag(value) => write!(
                f,
                "unknown migration flag `{value}`; use a comma list of stop-copy, p2p, pre-copy"
            ),
            Self::EmptyFlag => f.write_str(
                "empty entry in the migration flag list; use a comma list of stop-copy, p2p, \
                 pre-copy",
            ),
            Self::MissingStopCopy(value) => write!(
                f,
                "flag list `{value}` lacks stop-copy, which every migratable device must \
                 advertise (VFIO_MIGRATION_STOP_COPY); add stop-copy to the list"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Normalises a user-typed name for comparison: upper case, `-` read as `_`, surrounding
/// whitespace dropped.
fn normalise(name: &str) -> String {
    name.trim().to_ascii_uppercase().replace('-', "_")
}

/// Parses a device state: a uAPI name in any case with `-` or `_` (`stop-copy`, `STOP_COPY`,
/// `running_p2p`), or its uAPI number (`0`–`7`).
///
/// # Errors
/// [`ParseError::StateOutOfRange`] for a number above 7, [`ParseError::UnknownState`] for
/// anything else that is not a state.
pub fn parse_state(value: &str) -> Result<DeviceState, ParseError> {
    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse::<u32>()
            .ok()
            .and_then(|number| DeviceState::try_from(number).ok())
            .ok_or_else(|| ParseError::StateOutOfRange(trimmed.to_owned()));
    }
    let wanted = normalise(trimmed);
    DeviceState::ALL
        .into_iter()
        .find(|state| state.name() == wanted)
        .ok_or_else(|| ParseError::UnknownState(value.to_owned()))
}

/// Parses a comma list of migration flags (`stop-copy`, `p2p`, `pre-copy`; any case, `-` or
/// `_`; repeats allowed). The set must contain `stop-copy`, as the uAPI requires.
///
/// # Errors
/// [`ParseError::EmptyFlag`], [`ParseError::UnknownFlag`] or [`ParseError::MissingStopCopy`].
pub fn parse_flags(value: &str) -> Result<MigrationFlags, ParseError> {
    let mut flags = MigrationFlags::empty();
    for item in value.split(',') {
        let wanted = normalise(item);
        if wanted.is_empty() {
            return Err(ParseError::EmptyFlag);
        }
        let flag = MigrationFlags::from_name(&wanted)
            .ok_or_else(|| ParseError::UnknownFlag(item.trim().to_owned()))?;
        flags |= flag;
    }
    if !flags.contains(MigrationFlags::STOP_COPY) {
        return Err(ParseError::MissingStopCopy(value.to_owned()));
    }
    Ok(flags)
}

/// The uAPI names of the flags in `flags`, in bit order (`["STOP_COPY", "P2P"]`).
pub fn flag_names(flags: MigrationFlags) -> Vec<&'static str> {
    flags.iter_names().map(|(name, _)| name).collect()
}

/// `STOP, RUNNING, …`: every state name, for error messages.
fn state_names() -> String {
    DeviceState::ALL.map(DeviceState::name).join(", ")
}

/// `0=ERROR, 1=STOP, …`: every state with its number, for error messages.
fn state_numbers() -> String {
    DeviceState::ALL
        .map(|state| format!("{}={state}", state.value()))
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceState::*;

    #[test]
    fn state_names_in_any_case_with_dash_or_underscore() {
        for (input, state) in [
            ("stop-copy", StopCopy),
            ("STOP_COPY", StopCopy),
            ("Stop_Copy", StopCopy),
            ("running_p2p", RunningP2p),
            ("running-p2p", RunningP2p),
            ("pre-copy-p2p", PreCopyP2p),
            ("PRE_COPY", PreCopy),
            ("resuming", Resuming),
            ("error", Error),
            (" stop ", Stop),
            ("RUNNING", Running),
        ] {
            assert_eq!(parse_state(input), Ok(state), "{input}");
        }
    }

    #[test]
    fn state_numbers_are_the_uapi_values() {
        for state in DeviceState::ALL {
            assert_eq!(parse_state(&state.value().to_string()), Ok(state));
        }
        assert_eq!(parse_state("03"), Ok(StopCopy));
    }

    #[test]
    fn every_state_name_round_trips() {
        for state in DeviceState::ALL {
            assert_eq!(parse_state(state.name()), Ok(state));
            assert_eq!(
                parse_state(&state.name().to_lowercase().replace('_', "-")),
                Ok(state)
            );
        }
    }

    #[test]
    fn bad_states_name_the_value() {
        let err = parse_state("stopcopy").unwrap_err();
        assert_eq!(err, ParseError::UnknownState("stopcopy".into()));
        let message = err.to_string();
        assert!(message.contains("`stopcopy`"), "{message}");
        assert!(message.contains("STOP_COPY"), "{message}");

        let err = parse_state("8").unwrap_err();
        assert_eq!(err, ParseError::StateOutOfRange("8".into()));
        let message = err.to_string();
        assert!(message.contains("number 8"), "{message}");
        assert!(message.contains("7=PRE_COPY_P2P"), "{message}");

        // Too big for u32, negative and empty values are rejected, not wrapped or panicked on.
        assert_eq!(
            parse_state("99999999999"),
            Err(ParseError::StateOutOfRange("99999999999".into()))
        );
        assert_eq!(
            parse_state("-1"),
            Err(ParseError::UnknownState("-1".into()))
        );
        assert_eq!(
            parse_state(""),
            Err(ParseError::UnknownState(String::new()))
        );
        assert_eq!(
            parse_state("stop copy"),
            Err(ParseError::UnknownState("stop copy".into()))
        );
    }

    #[test]
    fn flag_lists() {
        let sc = MigrationFlags::STOP_COPY;
        for (input, flags) in [
            ("stop-copy", sc),
            ("STOP_COPY", sc),
            ("stop-copy,p2p", sc | MigrationFlags::P2P),
            ("pre-copy,stop-copy", sc | MigrationFlags::PRE_COPY),
            ("stop-copy, P2P ,pre_copy", MigrationFlags::all()),
            ("stop-copy,stop-copy", sc),
        ] {
            assert_eq!(parse_flags(input), Ok(flags), "{input}");
        }
    }

    #[test]
    fn every_documented_flag_set_round_trips_through_its_names() {
        for flags in MigrationFlags::VALID_SETS {
            let list = flag_names(flags).join(",");
            assert_eq!(parse_flags(&list), Ok(flags), "{list}");
        }
        assert_eq!(
            flag_names(MigrationFlags::all()),
            ["STOP_COPY", "P2P", "PRE_COPY"]
        );
    }

    #[test]
    fn bad_flag_lists_name_the_problem() {
        let err = parse_flags("p2p").unwrap_err();
        assert_eq!(err, ParseError::MissingStopCopy("p2p".into()));
        assert!(err.to_string().contains("lacks stop-copy"), "{err}");

        let err = parse_flags("stop-copy,dirty").unwrap_err();
        assert_eq!(err, ParseError::UnknownFlag("dirty".into()));
        assert!(err.to_string().contains("`dirty`"), "{err}");

        assert_eq!(parse_flags("stop-copy,,p2p"), Err(ParseError::EmptyFlag));
        assert_eq!(parse_flags(""), Err(ParseError::EmptyFlag));
        // The uAPI's own names are accepted, but not the bitflags' "all" spelling.
        assert_eq!(
            parse_flags("all"),
            Err(ParseError::UnknownFlag("all".into()))
        );
    }
}
