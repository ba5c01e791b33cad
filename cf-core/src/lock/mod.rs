//! The lock structure's mechanism: the lock word ([`word`]), the record entries
//! that name every held resource ([`records`]), waiting on a word
//! (`sync/futex.rs`), and the latched entry protocol that settles everything one compare-and-swap
//! cannot ([`entry`]). Policy (who waits, who cleans up a dead holder) lives in
//! `member/holder.rs` and `recovery.rs`.

pub mod entry;
pub(crate) use crate::sync::futex;
pub mod records;
pub mod service;
pub mod word;
