//! What a command hands back to `main` to print: its text (or JSON) and, when the run did not
//! pass, the error that sets the exit status — so a failed run still prints its report.
//!
//! JSON conventions (shared by every subcommand): one JSON object per line on stdout; a result
//! that can fail carries a top-level `passed`; durations are numbers with their unit in the
//! key (`total_ms`, `elapsed_s`), sizes likewise (`stream_bytes`). A command that streams
//! events (live progress, a server's events) prints one object per line with an `event` key
//! before its result.

use serde::Serialize;

/// A command's output.
#[derive(Debug)]
pub struct Output {
    /// What to print on stdout (without the trailing newline JSON gets).
    pub text: String,
    /// Why the run did not pass, if it did not (printed after the text; sets the status).
    pub failure: Option<anyhow::Error>,
}

impl Output {
    /// Output of a run that passed (or cannot fail once it printed).
    pub fn passed(text: String) -> Self {
        Self {
            text,
            failure: None,
        }
    }
}

/// A result with a top-level `passed` beside its own fields.
#[derive(Serialize)]
pub struct Verdict<'a, T: Serialize> {
    /// Whether every check passed.
    pub passed: bool,
    /// The result's own fields.
    #[serde(flatten)]
    pub result: &'a T,
}

impl<T: Serialize> Verdict<'_, T> {
    /// `{"passed": passed, ...result}` on one line.
    pub fn json(passed: bool, result: &T) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&Verdict { passed, result })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_sits_beside_the_fields() {
        #[derive(Serialize)]
        struct R {
            total_ms: f64,
        }
        let text = Verdict::json(false, &R { total_ms: 1.5 }).unwrap();
        assert_eq!(text, r#"{"passed":false,"total_ms":1.5}"#);
    }
}
