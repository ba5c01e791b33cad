//! The region's index types: which connector, which lock-table entry, which
//! record slot of a member's area. Each is a plain number in the region (the
//! region is untrusted: a number read from it may be out of range), so
//! constructing one checks nothing; every accessor of `Region` that takes one
//! checks it against the region's sizes before use.
//!
//! ```
//! use cf_core::{ConnectorId, EntryIndex, SlotIndex};
//! let c = ConnectorId::new(3);
//! assert_eq!(c.get(), 3);
//! assert_eq!(c.to_string(), "3");
//! assert_ne!(EntryIndex::new(3).get(), SlotIndex::new(4).get());
//! ```

use std::fmt;

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(transparent)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize), serde(transparent))]
        pub struct $name(u32);

        impl $name {
            /// The index `n` (unchecked: accessors check it against the region).
            #[inline]
            pub const fn new(n: u32) -> $name {
                $name(n)
            }

            /// The number.
            #[inline]
            pub const fn get(self) -> u32 {
                self.0
            }

            /// The number, for indexing a slice.
            #[inline]
            pub const fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$name> for u32 {
            #[inline]
            fn from(v: $name) -> u32 {
                v.0
            }
        }
    };
}

index_type!(
    /// A connector (member slot) of the region: `0..members`. It is also the
    /// member's bit in a lock word's interest mask.
    ConnectorId
);
index_type!(
    /// An entry of the lock table: `0..lock_entries`.
    EntryIndex
);
index_type!(
    /// A record slot in one member's area: `0..records_per_member`.
    SlotIndex
);

impl ConnectorId {
    /// Every connector id below `n`.
    pub fn all(n: u32) -> impl Iterator<Item = ConnectorId> {
        (0..n).map(ConnectorId)
    }
}
