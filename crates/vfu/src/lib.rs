//! `vfu`: the vfio-user protocol (spec v0.9.2, QEMU `docs/interop/vfio-user.rst`) — a message
//! codec, a server that hosts any device and a client that drives one. It knows no NVMe. (Named
//! after libvfio-user's `vfu_` prefix, so it can be used beside rust-vmm's `vfio_user` crate.)
//!
//! The VFIO values it shares with the kernel are defined once: the migration states, flags and
//! errnos are `vfio-migration`'s ([`vfio_migration::DeviceState`],
//! [`vfio_migration::MigrationFlags`], [`vfio_migration::Errno`], used by every layer above the
//! wire structures), the PCI region and IRQ indices are [`pci`]'s; tests check all of them
//! against `vfio-bindings`.
//!
//! * [`header`] — the 16-byte message header; [`command`] — command numbers 1–18;
//! * one module per message family, each body a [`payload::Payload`] with `encode`/`decode`:
//!   [`version`] (negotiation and the capabilities JSON), [`dma`] (map, unmap, DMA read/write),
//!   [`device`] (info, reset), [`region`] (region info with its capability chain, IO fds),
//!   [`irq`] (IRQ info, set IRQs), [`access`] (region read/write/write-multi), [`feature`]
//!   (`DEVICE_FEATURE`: migration and DMA-logging payloads), [`migration`] (migration data);
//! * [`pci`] — the VFIO PCI region and IRQ indices (BAR0 0, config 7, MSI-X 2, …);
//! * [`message`] — every request and reply as one enum each, with file-descriptor rules;
//! * [`framing`] — the stream [`framing::Framer`] and whole-message encoders;
//! * [`error`] — [`error::DecodeError`] with the errno to answer; [`limits`] — decoding limits;
//! * [`server`] — a server hosting any [`server::Device`], with the generic migration adapter
//!   [`server::DeviceMigration`] that turns any [`vfio_migration::MigrationDriver`] into the
//!   device's one migration handle ([`server::Migratable`]); [`client`] — a generic client;
//! * [`control`] — the control protocol beside vfio-user (a hello no vfio-user header can be,
//!   one JSON request, one JSON reply), answered on the same socket for tools that are not
//!   vfio-user clients, with its client and the JSON view of a device's migration;
//! * `fake` (feature `test-utils`) — a configurable fake device for other crates' tests.
//!
//! Data is host-endian on the wire; the structures use native integers. Decoders never panic
//! and check every attacker-controlled count against the input and the [`limits::Limits`]
//! before allocating.
#![forbid(unsafe_code)]

pub mod access;
pub mod client;
pub mod command;
pub mod control;
pub mod device;
pub mod dma;
pub mod error;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod feature;
pub mod framing;
pub mod header;
pub mod irq;
pub mod limits;
pub mod message;
pub mod migration;
pub mod payload;
pub mod pci;
pub mod region;
pub mod server;
mod socket;
#[cfg(test)]
mod uapi_tests;
pub mod version;
mod wire;
