//! `vfio-nvme fsm`: runs `vfio_migration`'s next-state walk and renders it as text for a
//! terminal or as JSON for scripts. No state-machine logic lives here; it all comes from
//! [`vfio_migration::path`] and [`vfio_migration::next_state`].

use core::fmt;

use anyhow::Context as _;
use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use vfio_migration::{DeviceState, FsmError, MigrationFlags, next_state, path};

use crate::cli::FsmCommand;
use crate::fsm_args::flag_names;

/// What a text table cell shows when the current state is already the target.
const SAME: &str = "-";
/// What a text table cell shows when the kernel refuses the SET (EINVAL).
const REFUSED: &str = "ERR";

/// Runs one `fsm` view and returns what to print on stdout (text, or JSON when `json`).
///
/// # Errors
/// When the state machine has no path for `fsm path` (the message says why).
pub fn run(command: &FsmCommand, json: bool) -> anyhow::Result<String> {
    match command {
        FsmCommand::Path { from, to, flags } => {
            render(&PathReport::new(*from, *to, flags.flags)?, json)
        }
        FsmCommand::Table { flags } => render(&TableReport::new(flags.flags), json),
    }
}

/// Renders a report as its text form or as JSON.
fn render<T: Serialize + fmt::Display>(report: &T, json: bool) -> anyhow::Result<String> {
    if json {
        serde_json::to_string(report).context("could not encode the report as JSON")
    } else {
        Ok(report.to_string())
    }
}

/// Serialises a state as its uAPI name (`"STOP_COPY"`).
fn state_name<S: Serializer>(state: &DeviceState, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(state.name())
}

/// Serialises states as a list of their uAPI names.
fn state_names<S: Serializer>(states: &[DeviceState], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(states.iter().map(|state| state.name()))
}

/// Serialises flags as a list of their uAPI names (`["STOP_COPY", "P2P"]`).
fn flag_list<S: Serializer>(flags: &MigrationFlags, serializer: S) -> Result<S::Ok, S::Error> {
    flag_names(*flags).serialize(serializer)
}

/// The walk from one state to another: `from` followed by the destination of every arc.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct PathReport {
    /// The state the device is in.
    #[serde(serialize_with = "state_name")]
    pub from: DeviceState,
    /// The state requested.
    #[serde(serialize_with = "state_name")]
    pub to: DeviceState,
    /// The device's migration flags.
    #[serde(serialize_with = "flag_list")]
    pub flags: MigrationFlags,
    /// `from`, then each state an arc reaches, ending with `to` (just `[from]` when
    /// `from == to`: no arc is taken).
    #[serde(serialize_with = "state_names")]
    pub path: Vec<DeviceState>,
}

impl PathReport {
    /// Walks from `from` to `to` for a device with `flags`.
    ///
    /// # Errors
    /// The [`FsmError`] of the walk, in the context of the request.
    pub fn new(from: DeviceState, to: DeviceState, flags: MigrationFlags) -> anyhow::Result<Self> {
        let arcs = path(from, to, flags).with_context(|| {
            format!(
                "cannot walk from {from} to {to} with migration flags {}",
                flag_names(flags).join(",")
            )
        })?;
        Ok(Self {
            from,
            to,
            flags,
            path: core::iter::once(from).chain(arcs).collect(),
        })
    }
}

impl fmt::Display for PathReport {
    /// `RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY`, or `RUNNING (already there; no arc)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.len() == 1 {
            return writeln!(f, "{} (already there; no arc)", self.from);
        }
        let names: Vec<_> = self.path.iter().map(|state| state.name()).collect();
        writeln!(f, "{}", names.join(" -> "))
    }
}

/// The next-state matrix for one flag set, over the states the flags support.
#[derive(Debug, PartialEq, Eq)]
pub struct TableReport {
    /// The device's migration flags.
    pub flags: MigrationFlags,
    /// The supported states, in uAPI order: the rows and the columns.
    pub states: Vec<DeviceState>,
    /// `cells[row][column]`: the first step from `states[row]` towards `states[column]`, or
    /// the reason the kernel refuses that SET.
    pub cells: Vec<Vec<Result<DeviceState, FsmError>>>,
}

impl TableReport {
    /// Computes the matrix for `flags`.
    #[must_use]
    pub fn new(flags: MigrationFlags) -> Self {
        let states: Vec<_> = flags.supported_states().collect();
        let cells = states
            .iter()
            .map(|&current| {
                states
                    .iter()
                    .map(|&target| next_state(current, target, flags))
                    .collect()
            })
            .collect();
        Self {
            flags,
            states,
            cells,
        }
    }

    /// The text of one cell: `-` on the diagonal, `ERR` when refused, else the next state.
    fn cell_text(current: DeviceState, cell: &Result<DeviceState, FsmError>) -> &'static str {
        match cell {
            Ok(next) if *next == current => SAME,
            Ok(next) => next.name(),
            Err(_) => REFUSED,
        }
    }
}

impl fmt::Display for TableReport {
    /// A header row of targets, then one row per current state, columns padded to align.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CORNER: &str = "current\\target";
        let first_width = self
            .states
            .iter()
            .map(|state| state.name().len())
            .chain([CORNER.len()])
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .states
            .iter()
            .enumerate()
            .map(|(column, target)| {
                self.states
                    .iter()
                    .zip(&self.cells)
                    .map(|(&current, row)| Self::cell_text(current, &row[column]).len())
                    .chain([target.name().len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();

        write_row(
            f,
            CORNER,
            first_width,
            &widths,
            self.states.iter().map(|state| state.name()),
        )?;
        for (&current, row) in self.states.iter().zip(&self.cells) {
            write_row(
                f,
                current.name(),
                first_width,
                &widths,
                row.iter().map(|cell| Self::cell_text(current, cell)),
            )?;
        }
        writeln!(
            f,
            "\nflags {}; cell = first arc from the row's state towards the column's; \
             {SAME} = already there; {REFUSED} = no path (EINVAL)",
            flag_names(self.flags).join(",")
        )
    }
}

/// Writes one table line: `first` padded to `first_width`, then each cell padded to its
/// column's width, two spaces apart, without trailing blanks.
fn write_row<'a>(
    f: &mut fmt::Formatter<'_>,
    first: &str,
    first_width: usize,
    widths: &[usize],
    cells: impl Iterator<Item = &'a str>,
) -> fmt::Result {
    let mut line = format!("{first:<first_width$}");
    for (text, width) in cells.zip(widths) {
        line.push_str(&format!("  {text:<width$}"));
    }
    writeln!(f, "{}", line.trim_end())
}

impl Serialize for TableReport {
    /// `{"flags": [...], "table": {"CURRENT": {"TARGET": "NEXT" | null}}}`, rows and columns in
    /// uAPI order. The diagonal holds the state itself (the kernel's `next_state(s, s) = s`);
    /// `null` marks a refused SET.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// One row: target name → next state name or `null`.
        struct Row<'a>(&'a [DeviceState], &'a [Result<DeviceState, FsmError>]);
        impl Serialize for Row<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(
                    self.0.iter().zip(self.1).map(|(target, cell)| {
                        (target.name(), cell.as_ref().ok().map(|s| s.name()))
                    }),
                )
            }
        }
        /// The rows: current name → [`Row`].
        struct Rows<'a>(&'a TableReport);
        impl Serialize for Rows<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(
                    self.0
                        .states
                        .iter()
                        .zip(&self.0.cells)
                        .map(|(current, row)| (current.name(), Row(&self.0.states, row))),
                )
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("flags", &flag_names(self.flags))?;
        map.serialize_entry("table", &Rows(self))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeviceState::*;

    #[test]
    fn path_includes_the_start_and_follows_the_reference() {
        // Reference §1.4, all flags: RUNNING→STOP_COPY = R→R_P2P→STOP→STOP_COPY.
        let report = PathReport::new(Running, StopCopy, MigrationFlags::all()).unwrap();
        assert_eq!(report.path, [Running, RunningP2p, Stop, StopCopy]);
        assert_eq!(
            report.to_string(),
            "RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY\n"
        );
        // STOP_COPY only: R→STOP→STOP_COPY.
        let report = PathReport::new(Running, StopCopy, MigrationFlags::STOP_COPY).unwrap();
        assert_eq!(report.path, [Running, Stop, StopCopy]);
    }

    #[test]
    fn path_to_the_same_state_takes_no_arc() {
        let report = PathReport::new(Stop, Stop, MigrationFlags::all()).unwrap();
        assert_eq!(report.path, [Stop]);
        assert_eq!(report.to_string(), "STOP (already there; no arc)\n");
    }

    #[test]
    fn path_json_has_names() {
        let report = PathReport::new(Running, StopCopy, MigrationFlags::all()).unwrap();
        let json = render(&report, true).unwrap();
        assert_eq!(
            json,
            r#"{"from":"RUNNING","to":"STOP_COPY","flags":["STOP_COPY","P2P","PRE_COPY"],"path":["RUNNING","RUNNING_P2P","STOP","STOP_COPY"]}"#
        );
    }

    #[test]
    fn refused_paths_say_why() {
        let err = PathReport::new(StopCopy, PreCopy, MigrationFlags::all()).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("cannot walk from STOP_COPY to PRE_COPY with migration flags STOP_COPY,P2P,PRE_COPY: "),
            "{message}"
        );
        assert!(message.contains("go to STOP first"), "{message}");

        let err = PathReport::new(Running, PreCopy, MigrationFlags::STOP_COPY).unwrap_err();
        assert!(
            format!("{err:#}").contains("PRE_COPY is not supported"),
            "{err:#}"
        );
    }

    #[test]
    fn table_text_is_aligned_with_dashes_and_errs() {
        let text = TableReport::new(MigrationFlags::all()).to_string();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(
            lines[0],
            "current\\target  STOP         RUNNING      STOP_COPY     RESUMING     RUNNING_P2P  PRE_COPY     PRE_COPY_P2P"
        );
        assert_eq!(
            lines[3],
            "STOP_COPY       STOP         STOP         -             STOP         STOP         ERR          ERR"
        );
        // Every row starts its cells at the same columns as the header.
        // Every row starts its cells at the same columns as the header (no cell has a blank).
        let starts = |line: &str| -> Vec<usize> {
            let bytes = line.as_bytes();
            (0..bytes.len())
                .filter(|&i| bytes[i] != b' ' && (i == 0 || bytes[i - 1] == b' '))
                .collect()
        };
        for line in &lines[1..8] {
            assert_eq!(starts(line), starts(lines[0]), "{line}");
        }
    }

    #[test]
    fn table_cells_follow_the_kernel_table() {
        let table = TableReport::new(MigrationFlags::all());
        let at = |current: DeviceState, target: DeviceState| {
            let row = table.states.iter().position(|&s| s == current).unwrap();
            let column = table.states.iter().position(|&s| s == target).unwrap();
            table.cells[row][column]
        };
        assert_eq!(at(Running, StopCopy), Ok(RunningP2p));
        assert_eq!(at(PreCopy, StopCopy), Ok(PreCopyP2p));
        assert_eq!(at(Resuming, PreCopy), Ok(Stop));
        assert!(at(StopCopy, PreCopyP2p).is_err());
        assert_eq!(at(Stop, Stop), Ok(Stop));
    }

    #[test]
    fn table_json_is_an_object_of_objects_in_uapi_order() {
        let json = render(&TableReport::new(MigrationFlags::STOP_COPY), true).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"flags":["STOP_COPY"],"table":{"#,
                r#""STOP":{"STOP":"STOP","RUNNING":"RUNNING","STOP_COPY":"STOP_COPY","RESUMING":"RESUMING"},"#,
                r#""RUNNING":{"STOP":"STOP","RUNNING":"RUNNING","STOP_COPY":"STOP","RESUMING":"STOP"},"#,
                r#""STOP_COPY":{"STOP":"STOP","RUNNING":"STOP","STOP_COPY":"STOP_COPY","RESUMING":"STOP"},"#,
                r#""RESUMING":{"STOP":"STOP","RUNNING":"STOP","STOP_COPY":"STOP","RESUMING":"RESUMING"}}}"#
            )
        );
        let json = render(&TableReport::new(MigrationFlags::all()), true).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["table"]["STOP_COPY"]["PRE_COPY"],
            serde_json::Value::Null
        );
        assert_eq!(value["table"]["RUNNING"]["STOP_COPY"], "RUNNING_P2P");
    }
}
