//! The restart-request list (`requests.rs`).
