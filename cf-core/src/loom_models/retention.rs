//! Retention (`recovery.rs`, `lock/entry.rs::settle_dead`) racing requests.
