//! Shared helpers for the criterion benchmarks (see lock_paths.rs).
