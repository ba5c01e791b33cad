//! Shared memory: the region's layout ([`layout`]), its typed structures
//! (`slots.rs`), and the file and mapping that hold them ([`region`]).

/// The index types (kept here too: they index the region's areas).
pub use crate::ids;
pub mod layout;
pub mod region;
pub(crate) mod slots;

#[cfg(not(loom))]
mod file;
#[cfg(not(loom))]
pub mod mapping;
#[cfg(loom)]
pub(crate) mod model;
#[cfg(not(loom))]
pub mod plexfs;
#[cfg(not(loom))]
pub mod sigbus;
