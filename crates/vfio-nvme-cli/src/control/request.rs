//! Control requests: one JSON object per connection, `{"command": NAME, …}`. Unknown keys are
//! ignored (a newer client's options), unknown commands are refused with the list of known
//! ones.

use serde::Deserialize;
use serde::Serialize;

/// The commands, as a client names them.
pub const COMMANDS: &str = "status, id-ctrl, id-ns, list-secondary, queues, migration";

/// One control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// The subsystem, every controller and namespace.
    Status,
    /// Identify Controller of `cntlid` (default: the socket's function, the primary
    /// controller on a standalone control socket).
    IdCtrl {
        /// Controller; see the variant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cntlid: Option<u16>,
    },
    /// Identify Namespace `nsid` as controller `cntlid` reports it (default as for `IdCtrl`).
    IdNs {
        /// Namespace.
        nsid: u32,
        /// Controller; see [`Request::IdCtrl`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cntlid: Option<u16>,
    },
    /// The primary controller's Secondary Controller List.
    ListSecondary,
    /// Queue pairs with their counters of `cntlid` (default: the socket's function, every
    /// controller on a standalone control socket).
    Queues {
        /// Controller; see the variant.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cntlid: Option<u16>,
    },
    /// The migration of `cntlid`'s function (default as for `Queues`).
    Migration {
        /// Controller; see [`Request::Queues`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cntlid: Option<u16>,
    },
}

impl Request {
    /// Parses a request line; the error says what is wrong in words.
    pub fn parse(line: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            format!("the request is not JSON ({e}); send e.g. {{\"command\":\"status\"}}")
        })?;
        let Some(command) = value.get("command").and_then(serde_json::Value::as_str) else {
            return Err(format!(
                "the request has no \"command\" string; commands: {COMMANDS}"
            ));
        };
        let command = command.to_owned();
        serde_json::from_value(value).map_err(|e| {
            if e.to_string().starts_with("unknown variant") {
                format!("unknown command {command:?}; commands: {COMMANDS}")
            } else {
                format!("bad arguments for {command:?}: {e}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_errors_say_why() {
        assert_eq!(
            Request::parse(r#"{"command":"status"}"#),
            Ok(Request::Status)
        );
        assert_eq!(
            Request::parse(r#"{"command":"id-ns","nsid":1,"later":true}"#),
            Ok(Request::IdNs {
                nsid: 1,
                cntlid: None
            })
        );
        let err = Request::parse(r#"{"command":"reboot"}"#).unwrap_err();
        assert!(
            err.contains("unknown command \"reboot\"") && err.contains("list-secondary"),
            "{err}"
        );
        let err = Request::parse(r#"{"command":"id-ns"}"#).unwrap_err();
        assert!(err.contains("nsid"), "{err}");
        let err = Request::parse(r#"{"command":"queues","cntlid":70000}"#).unwrap_err();
        assert!(err.contains("bad arguments"), "{err}");
        assert!(
            Request::parse("[1]")
                .unwrap_err()
                .contains("no \"command\"")
        );
        assert!(Request::parse("{").unwrap_err().contains("not JSON"));
        for request in [
            Request::Status,
            Request::Queues { cntlid: Some(2) },
            Request::Migration { cntlid: None },
        ] {
            let line = serde_json::to_string(&request).unwrap();
            assert_eq!(Request::parse(&line), Ok(request));
        }
    }

    #[test]
    fn fuzz_request_lines() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                if let Ok(line) = std::str::from_utf8(bytes) {
                    let _ = Request::parse(line);
                }
            });
    }
}
