//! `VERSION` (command 1): protocol version and capability negotiation.
//!
//! The body is `major u16, minor u16`, then optionally a NUL-terminated UTF-8 JSON object
//! `{"capabilities": {...}}`. Both request and reply use it. Unknown JSON members are accepted and
//! ignored, so QEMU's proposal (version 0.0 with the legacy migration-v1 `"migration"` object) and
//! any future capability decode cleanly.

use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::error::DecodeError;
use crate::limits::DEFAULT_MAX_DATA_XFER_SIZE;
use crate::limits::Limits;
use crate::payload::Payload;
use crate::wire;

/// The protocol major version this crate speaks.
pub const PROTOCOL_MAJOR: u16 = 0;
/// The highest protocol minor version this crate speaks (libvfio-user's; QEMU proposes 0).
pub const PROTOCOL_MINOR: u16 = 2;

/// Spec default of `max_msg_fds` when absent.
pub const DEFAULT_MAX_MSG_FDS: u32 = 1;
/// Spec default of `max_dma_maps` when absent.
pub const DEFAULT_MAX_DMA_MAPS: u32 = 65535;
/// Spec default of `pgsizes` when absent: 4 KiB pages only.
pub const DEFAULT_PGSIZES: u64 = 4096;

/// The `twin_socket` capability: server→client commands on a separate socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TwinSocket {
    /// The sender supports (request) or enabled (reply) twin-socket mode.
    pub supported: bool,
    /// Reply only: index of the client's socket end in the reply's file-descriptor array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_index: Option<u32>,
}

/// The legacy migration-v1 `migration` capability. No longer in the spec, but QEMU (10.1+)
/// proposes it and older clients insist on a `pgsize` of 4096 in the reply, so it is modelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LegacyMigration {
    /// Dirty-bitmap page size.
    pub pgsize: u64,
    /// Largest dirty bitmap in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bitmap_size: Option<u64>,
}

impl Default for LegacyMigration {
    fn default() -> Self {
        Self {
            pgsize: DEFAULT_PGSIZES,
            max_bitmap_size: None,
        }
    }
}

/// The capabilities object. Absent members take the spec defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Most file descriptors the sender can receive in one message.
    pub max_msg_fds: u32,
    /// Largest `count` of a data-transfer message the sender accepts.
    pub max_data_xfer_size: u32,
    /// Most DMA mappings valid at once.
    pub max_dma_maps: u32,
    /// DMA page sizes supported, OR'ed together.
    pub pgsizes: u64,
    /// Twin-socket mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin_socket: Option<TwinSocket>,
    /// `REGION_WRITE_MULTI` is supported.
    pub write_multiple: bool,
    /// Legacy migration-v1 capability (see [`LegacyMigration`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration: Option<LegacyMigration>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_msg_fds: DEFAULT_MAX_MSG_FDS,
            max_data_xfer_size: DEFAULT_MAX_DATA_XFER_SIZE,
            max_dma_maps: DEFAULT_MAX_DMA_MAPS,
            pgsizes: DEFAULT_PGSIZES,
            twin_socket: None,
            write_multiple: false,
            migration: None,
        }
    }
}

impl Capabilities {
    /// The capabilities both sides can live with: numeric limits are the minimum of both, page
    /// sizes the intersection, booleans the conjunction. `self` is the proposal, `ours` the
    /// answering side's own capabilities. Twin-socket mode is kept only if both support it and
    /// `ours` names the fd index it will pass (otherwise the reply would be inconsistent and the
    /// spec tells the client to abort). The legacy `migration` object is kept only if both have
    /// it.
    pub fn intersect(&self, ours: &Capabilities) -> Capabilities {
        let twin_socket = match (self.twin_socket, ours.twin_socket) {
            (Some(theirs), Some(mine))
                if theirs.supported && mine.supported && mine.fd_index.is_some() =>
            {
                Some(mine)
            }
            _ => None,
        };
        let migration = match (self.migration, ours.migration) {
            (Some(theirs), Some(mine)) => Some(LegacyMigration {
                pgsize: theirs.pgsize.min(mine.pgsize),
                max_bitmap_size: match (theirs.max_bitmap_size, mine.max_bitmap_size) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            }),
            _ => None,
        };
        Capabilities {
            max_msg_fds: self.max_msg_fds.min(ours.max_msg_fds),
            max_data_xfer_size: self.max_data_xfer_size.min(ours.max_data_xfer_size),
            max_dma_maps: self.max_dma_maps.min(ours.max_dma_maps),
            pgsizes: self.pgsizes & ours.pgsizes,
            twin_socket,
            write_multiple: self.write_multiple && ours.write_multiple,
            migration,
        }
    }
}

/// The top-level JSON object.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct VersionJson {
    capabilities: Capabilities,
}

/// A `VERSION` request or reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Major version: must be equal on both sides.
    pub major: u16,
    /// Minor version: the reply's is at most the proposal's.
    pub minor: u16,
    /// Capabilities (spec defaults where the JSON is absent or silent).
    pub capabilities: Capabilities,
}

impl Version {
    /// Server side: answers the proposal `self` given the server's own version and capabilities
    /// `ours`. Major versions must be equal; the reply's minor is the smaller one; the
    /// capabilities are [`Capabilities::intersect`]. Fails if no DMA page size is common or the
    /// proposal's `max_data_xfer_size` is 0 (EINVAL).
    pub fn negotiate(&self, ours: &Version) -> Result<Version, DecodeError> {
        // "The count field must not exceed the value of max_data_xfer_size of the peer": with 0
        // no REGION_READ/WRITE, DMA or migration data message could ever be sent to the
        // proposer, and raising it would break that rule, so the proposal is refused.
        if self.capabilities.max_data_xfer_size == 0 {
            return Err(DecodeError::invalid(
                Command::VERSION,
                "capabilities.max_data_xfer_size",
                0,
                "no data transfer message could be sent",
            ));
        }
        if self.major != ours.major {
            return Err(DecodeError::Incompatible {
                field: "major",
                proposed: self.major.into(),
                offered: ours.major.into(),
            });
        }
        let capabilities = self.capabilities.intersect(&ours.capabilities);
        if capabilities.pgsizes == 0 {
            return Err(DecodeError::Incompatible {
                field: "pgsizes",
                proposed: self.capabilities.pgsizes,
                offered: ours.capabilities.pgsizes,
            });
        }
        Ok(Version {
            major: self.major,
            minor: self.minor.min(ours.minor),
            capabilities,
        })
    }

    /// Client side: checks that the server's `reply` to the proposal `self` follows the rules:
    /// same major, minor not above the proposal, page sizes a subset, no feature the client did
    /// not propose, and a twin-socket reply that names its fd.
    pub fn check_reply(&self, reply: &Version) -> Result<(), DecodeError> {
        let incompatible = |field, proposed: u64, offered: u64| {
            Err(DecodeError::Incompatible {
                field,
                proposed,
                offered,
            })
        };
        let mine = &self.capabilities;
        let theirs = &reply.capabilities;
        if reply.major != self.major {
            return incompatible("major", self.major.into(), reply.major.into());
        }
        if reply.minor > self.minor {
            return incompatible("minor", self.minor.into(), reply.minor.into());
        }
        if theirs.pgsizes & !mine.pgsizes != 0 || theirs.pgsizes == 0 {
            return incompatible("pgsizes", mine.pgsizes, theirs.pgsizes);
        }
        if theirs.write_multiple && !mine.write_multiple {
            return incompatible("write_multiple", 0, 1);
        }
        if let Some(twin) = theirs.twin_socket.filter(|t| t.supported) {
            let proposed = mine.twin_socket.is_some_and(|t| t.supported);
            if !proposed || twin.fd_index.is_none() {
                return incompatible("twin_socket.supported", proposed.into(), 1);
            }
        }
        Ok(())
    }
}

/// Checks that the objects of the spec's JSON are objects: the top level, `capabilities`, and
/// its `twin_socket` and (legacy) `migration` members. serde would otherwise read a struct from
/// an array too (`"capabilities": [1]` as `max_msg_fds` 1).
fn check_shape(value: &serde_json::Value) -> Result<(), DecodeError> {
    let not_an_object = |what: &str, found: &serde_json::Value| DecodeError::Json {
        reason: format!("{what} must be a JSON object, not {found}"),
    };
    let top = value
        .as_object()
        .ok_or_else(|| not_an_object("the version data", value))?;
    let Some(capabilities) = top.get("capabilities") else {
        return Ok(());
    };
    let members = capabilities
        .as_object()
        .ok_or_else(|| not_an_object("\"capabilities\"", capabilities))?;
    for name in ["twin_socket", "migration"] {
        if let Some(member) = members.get(name)
            && !member.is_object()
        {
            return Err(not_an_object(&format!("\"capabilities.{name}\""), member));
        }
    }
    Ok(())
}

impl Payload for Version {
    const COMMAND: Command = Command::VERSION;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.major.to_ne_bytes());
        out.extend_from_slice(&self.minor.to_ne_bytes());
        let json = VersionJson {
            capabilities: self.capabilities,
        };
        // Serialising plain integers, booleans and options cannot fail.
        if let Ok(text) = serde_json::to_vec(&json) {
            out.extend_from_slice(&text);
        }
        out.push(0);
    }

    /// Decodes a VERSION body. The JSON is optional; it is read up to its terminating NUL (a
    /// missing NUL is tolerated, bytes after the NUL are ignored). An empty string means "no
    /// capabilities".
    fn decode(bytes: &[u8], _limits: &Limits) -> Result<Self, DecodeError> {
        let (major, rest) = wire::read::<u16>(Command::VERSION, "version major", bytes)?;
        let (minor, rest) = wire::read::<u16>(Command::VERSION, "version minor", rest)?;
        let json = match rest.iter().position(|&b| b == 0) {
            Some(nul) => &rest[..nul],
            None => rest,
        };
        let capabilities = if json.iter().all(u8::is_ascii_whitespace) {
            Capabilities::default()
        } else {
            let value: serde_json::Value =
                serde_json::from_slice(json).map_err(|e| DecodeError::Json {
                    reason: e.to_string(),
                })?;
            check_shape(&value)?;
            serde_json::from_value::<VersionJson>(value)
                .map_err(|e| DecodeError::Json {
                    reason: e.to_string(),
                })?
                .capabilities
        };
        Ok(Version {
            major,
            minor,
            capabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// QEMU 10.1's proposal as the reference (§2.4) records it, written out by hand.
    const QEMU_PROPOSAL_JSON: &str = r#"{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456}, "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": true}}"#;

    fn qemu_proposal_bytes() -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(QEMU_PROPOSAL_JSON.as_bytes());
        bytes.push(0);
        bytes
    }

    fn server() -> Version {
        Version {
            major: PROTOCOL_MAJOR,
            minor: PROTOCOL_MINOR,
            capabilities: Capabilities {
                max_msg_fds: 8,
                write_multiple: true,
                migration: Some(LegacyMigration {
                    pgsize: 4096,
                    max_bitmap_size: None,
                }),
                ..Capabilities::default()
            },
        }
    }

    #[test]
    fn qemu_proposal_decodes_with_its_legacy_migration_object() {
        let v = Version::decode(&qemu_proposal_bytes(), &Limits::default()).unwrap();
        assert_eq!((v.major, v.minor), (0, 0));
        assert_eq!(
            v.capabilities,
            Capabilities {
                max_msg_fds: 16,
                max_data_xfer_size: 1 << 20,
                max_dma_maps: 65535,
                pgsizes: 4096,
                twin_socket: None,
                write_multiple: true,
                migration: Some(LegacyMigration {
                    pgsize: 4096,
                    max_bitmap_size: Some(268_435_456)
                }),
            }
        );
    }

    #[test]
    fn negotiating_with_qemu_gives_version_0_0_and_the_minimum_capabilities() {
        let proposal = Version::decode(&qemu_proposal_bytes(), &Limits::default()).unwrap();
        let reply = proposal.negotiate(&server()).unwrap();
        assert_eq!((reply.major, reply.minor), (0, 0));
        assert_eq!(reply.capabilities.max_msg_fds, 8);
        assert!(reply.capabilities.write_multiple);
        assert_eq!(
            reply.capabilities.migration,
            Some(LegacyMigration {
                pgsize: 4096,
                max_bitmap_size: Some(268_435_456)
            })
        );
        proposal.check_reply(&reply).unwrap();
        // The reply QEMU receives is NUL-terminated JSON that parses back to the same value.
        let bytes = reply.to_bytes();
        assert_eq!(bytes.last(), Some(&0));
        assert_eq!(Version::decode(&bytes, &Limits::default()).unwrap(), reply);
    }

    #[test]
    fn unknown_keys_are_ignored_and_defaults_apply() {
        let mut bytes = vec![0, 0, 1, 0];
        bytes.extend_from_slice(
            br#"{"future": [1, {"x": null}], "capabilities": {"pgsizes": 12288, "new": true}}"#,
        );
        bytes.push(0);
        let v = Version::decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(v.minor, 1);
        assert_eq!(
            v.capabilities,
            Capabilities {
                pgsizes: 12288,
                ..Capabilities::default()
            }
        );
        // No JSON at all, or an empty string, means spec defaults.
        let bare = Version::decode(&[0, 0, 2, 0], &Limits::default()).unwrap();
        assert_eq!(bare.capabilities, Capabilities::default());
        let empty = Version::decode(&[0, 0, 2, 0, 0], &Limits::default()).unwrap();
        assert_eq!(empty.capabilities, Capabilities::default());
    }

    #[test]
    fn bad_json_and_bad_types_are_einval() {
        for json in [
            &b"{"[..],
            b"[1]",
            br#"{"capabilities": {"max_msg_fds": -1}}"#,
            b"\xff",
        ] {
            let mut bytes = vec![0, 0, 0, 0];
            bytes.extend_from_slice(json);
            let err = Version::decode(&bytes, &Limits::default()).unwrap_err();
            assert_eq!(err.errno(), vfio_migration::Errno::EINVAL, "{err}");
        }
        assert!(Version::decode(&[0, 0, 0], &Limits::default()).is_err());
    }

    #[test]
    fn negotiation_rules() {
        let mut proposal = server();
        proposal.major = 1;
        assert!(
            proposal.negotiate(&server()).is_err(),
            "major must be equal"
        );
        let mut proposal = server();
        proposal.minor = 7;
        assert_eq!(proposal.negotiate(&server()).unwrap().minor, PROTOCOL_MINOR);
        proposal.capabilities.pgsizes = 1 << 21;
        assert!(
            proposal.negotiate(&server()).is_err(),
            "no common page size"
        );
        // Twin-socket survives only when the server names the fd it passes.
        let mut proposal = server();
        proposal.capabilities.twin_socket = Some(TwinSocket {
            supported: true,
            fd_index: None,
        });
        let mut ours = server();
        ours.capabilities.twin_socket = Some(TwinSocket {
            supported: true,
            fd_index: None,
        });
        assert_eq!(
            proposal.negotiate(&ours).unwrap().capabilities.twin_socket,
            None
        );
        ours.capabilities.twin_socket = Some(TwinSocket {
            supported: true,
            fd_index: Some(0),
        });
        let reply = proposal.negotiate(&ours).unwrap();
        assert_eq!(
            reply.capabilities.twin_socket.and_then(|t| t.fd_index),
            Some(0)
        );
        proposal.check_reply(&reply).unwrap();
    }

    #[test]
    fn check_reply_rejects_what_was_not_proposed() {
        let proposal = Version {
            major: 0,
            minor: 1,
            capabilities: Capabilities::default(),
        };
        let ok = proposal.clone();
        proposal.check_reply(&ok).unwrap();
        let bad_minor = Version {
            minor: 2,
            ..proposal.clone()
        };
        assert!(proposal.check_reply(&bad_minor).is_err());
        let mut bad = proposal.clone();
        bad.capabilities.write_multiple = true;
        assert!(proposal.check_reply(&bad).is_err());
        let mut bad = proposal.clone();
        bad.capabilities.pgsizes = 4096 | 8192;
        assert!(proposal.check_reply(&bad).is_err());
        let mut bad = proposal.clone();
        bad.capabilities.twin_socket = Some(TwinSocket {
            supported: true,
            fd_index: Some(0),
        });
        assert!(proposal.check_reply(&bad).is_err());
    }

    fn capabilities() -> impl Strategy<Value = Capabilities> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            proptest::option::of((any::<bool>(), proptest::option::of(any::<u32>()))),
            any::<bool>(),
            proptest::option::of((any::<u64>(), proptest::option::of(any::<u64>()))),
        )
            .prop_map(
                |(fds, xfer, maps, pgsizes, twin, multi, mig)| Capabilities {
                    max_msg_fds: fds,
                    max_data_xfer_size: xfer,
                    max_dma_maps: maps,
                    pgsizes,
                    twin_socket: twin.map(|(supported, fd_index)| TwinSocket {
                        supported,
                        fd_index,
                    }),
                    write_multiple: multi,
                    migration: mig.map(|(pgsize, max_bitmap_size)| LegacyMigration {
                        pgsize,
                        max_bitmap_size,
                    }),
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip(major: u16, minor: u16, capabilities in capabilities()) {
            let v = Version { major, minor, capabilities };
            prop_assert_eq!(Version::decode(&v.to_bytes(), &Limits::default()).unwrap(), v);
        }

        #[test]
        fn negotiated_replies_pass_the_client_check(a in capabilities(), b in capabilities()) {
            let proposal = Version { major: 0, minor: 0, capabilities: a };
            let ours = Version { major: 0, minor: 2, capabilities: b };
            if let Ok(reply) = proposal.negotiate(&ours) {
                prop_assert!(proposal.check_reply(&reply).is_ok());
            }
        }
    }

    fn with_json(json: &str) -> Vec<u8> {
        let mut bytes = vec![0, 0, 2, 0];
        bytes.extend_from_slice(json.as_bytes());
        bytes.push(0);
        bytes
    }

    #[test]
    fn objects_of_the_wrong_json_type_are_refused() {
        let l = Limits::default();
        for json in [
            r#"{"capabilities": [1]}"#,
            r#"{"capabilities": 5}"#,
            r#"{"capabilities": "x"}"#,
            r#"{"capabilities": {"twin_socket": [true, 0]}}"#,
            r#"{"capabilities": {"migration": [4096]}}"#,
            r#"[{"capabilities": {}}]"#,
            "7",
        ] {
            let err = Version::decode(&with_json(json), &l).unwrap_err();
            assert!(matches!(err, DecodeError::Json { .. }), "{json}: {err}");
            assert_eq!(err.errno(), vfio_migration::Errno::EINVAL);
        }
        let ok = Version::decode(&with_json(r#"{"capabilities": {"max_msg_fds": 3}}"#), &l);
        assert_eq!(ok.unwrap().capabilities.max_msg_fds, 3);
        assert!(Version::decode(&with_json("{}"), &l).is_ok());
    }

    #[test]
    fn a_proposal_without_room_for_any_data_is_refused() {
        let mut proposal = Version::decode(
            &with_json(r#"{"capabilities": {"max_data_xfer_size": 0}}"#),
            &Limits::default(),
        )
        .unwrap();
        let err = proposal.negotiate(&server()).unwrap_err();
        assert_eq!(err.errno(), vfio_migration::Errno::EINVAL);
        assert!(err.to_string().contains("max_data_xfer_size"), "{err}");
        proposal.capabilities.max_data_xfer_size = 1;
        assert_eq!(
            proposal
                .negotiate(&server())
                .unwrap()
                .capabilities
                .max_data_xfer_size,
            1
        );
    }

    #[test]
    fn fuzz_decode() {
        bolero::check!()
            .with_iterations(2000)
            .for_each(|bytes: &[u8]| {
                let _ = Version::decode(bytes, &Limits::default());
            });
        let valid = qemu_proposal_bytes();
        for len in 0..valid.len() {
            let _ = Version::decode(&valid[..len], &Limits::default());
        }
    }
}
