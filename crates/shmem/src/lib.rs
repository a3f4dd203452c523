//! Memory mappings with bounds-checked access: guest RAM received as a file descriptor (vfio-user
//! `DMA_MAP`), doorbell pages shared with a guest, and sparse anonymous memory for RAM-backed
//! namespaces.
//!
//! This is the one place in the project that turns raw mappings into safe operations. Every other
//! crate reaches mapped memory only through [`Mapping`], whose methods check offsets against the
//! mapping's length and its protection, so a guest-controlled address can at worst produce an
//! [`AccessError`], never a stray access or a `SIGSEGV`.
//!
//! Memory shared with another process can change at any moment. Copies in and out of a mapping are
//! therefore plain byte copies that never create Rust references to the shared bytes, and the
//! only typed access offered is atomic ([`Mapping::atomic_u32`]), which is what doorbells need.
//! A guest that races its own buffers sees torn data, exactly as with real DMA.
//!
//! Shared memory can also change *size*, and an access to a page a truncation removed raises
//! SIGBUS, which kills the process. So the memfds this crate creates are sealed at their size
//! ([`Mapping::memfd`]), and a file another process hands over is mapped only once it can no
//! longer shrink; otherwise it is reached with file I/O ([`client_window`]), where a truncation
//! fails the access instead.

mod address_space;
mod client_file;
mod mapping;
mod seal;

pub use address_space::AddressSpace;
pub use address_space::DmaError;
pub use address_space::IoMemory;
pub use address_space::MapError;
pub use address_space::MemoryFault;
pub use address_space::Pinned;
pub use address_space::WindowMemory;
pub use address_space::WriteObserver;

pub use client_file::ClientFileError;
pub use client_file::FileMemory;
pub use client_file::client_window;

pub use mapping::AccessError;
pub use mapping::Mapping;
pub use mapping::Protection;
