//! NVMe wire formats: every structure that crosses the boundary between an NVMe host and an NVMe
//! controller, and nothing else. No I/O, no logic beyond encoding and decoding.
//!
//! * [`registers`] — the controller register file (CAP, VS, CC, CSTS, AQA, …) and doorbell offsets;
//! * [`command`] — the 64-byte submission queue entry, the 16-byte completion queue entry and the
//!   status field, opcodes, and typed views of each command's dwords;
//! * [`prp`] — Physical Region Page entries and lists;
//! * [`identify`] — Identify data structures (controller, namespace, lists, secondary controllers);
//! * [`log`] — log pages;
//! * [`features`] — Get/Set Features identifiers and payloads;
//! * [`status`] — completion status codes;
//! * [`lm`] — TP4159 host-managed live migration: Migration Send/Receive, Track Send, Controller
//!   Data Queues, the controller state data structures and the LBA migration queue entry.
//!
//! Every structure is a [`zerocopy`] type with a compile-time size assertion, and every field
//! offset named in the references is checked by a unit test. Registers and command dwords are
//! [`bitfield_struct`] types; opcodes, status codes and identifiers are [`open_enum`] enums, so any
//! value a guest writes can be represented without a panic.
//!
//! All multi-byte fields are little-endian on the wire. The structures use native integers, so the
//! crate refuses to build for a big-endian target rather than silently produce wrong bytes.
#![forbid(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!("nvme-spec maps NVMe's little-endian wire formats onto native integers");

/// Gives an `open_enum` newtype the `const fn from_bits` / `into_bits` pair that `bitfield-struct`
/// needs to store it in a bitfield field. Decoding never fails (any raw value is representable);
/// encoding a value wider than the field panics in the bitfield's `with_*` setter, exactly as for
/// a plain integer.
macro_rules! bitfield_enum {
    ($ty:ty, $raw:ty) => {
        impl $ty {
            /// The raw value, for `bitfield-struct`.
            pub const fn into_bits(self) -> $raw {
                self.0
            }

            /// Wraps a raw value, for `bitfield-struct`.
            pub const fn from_bits(bits: $raw) -> Self {
                Self(bits)
            }
        }
    };
}

pub mod command;
pub mod features;
pub mod identify;
pub mod lm;
pub mod log;
pub mod prp;
pub mod registers;
pub mod status;
