//! The server's side of the control protocol ([`vfu::control`], docs/CONTROL.md): what the
//! requests are ([`request`]), how a served subsystem answers them from read-only snapshots
//! ([`inspect`]), and the Identify fields shown ([`identify`]). The `ctl` subcommand that asks
//! and prints is [`crate::ctl_cmd`].

pub mod identify;
pub mod inspect;
pub mod request;
