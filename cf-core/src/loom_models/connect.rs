//! Connecting and disconnecting (`member/mod.rs`, `connector/slot.rs`) racing cleanups.
