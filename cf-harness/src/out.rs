//! Output on stdout that a closed pipe ends quietly.
//!
//! Rust ignores `SIGPIPE`, so `println!` to a closed pipe panics ("failed
//! printing to stdout: Broken pipe", exit 101). [`outln!`](crate::outln)
//! writes instead and, once the reader is gone, drops the rest: the command
//! goes on to stop its members and clean up as usual (no half-done exit), and
//! loops that print (`--watch`, progress) end when [`closed`] says so.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Has the reader of stdout gone away (a write failed with a broken pipe)?
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Write to stdout; a broken pipe marks it closed and later writes are
/// dropped. Any other write error is reported once on stderr.
pub fn write_fmt(args: std::fmt::Arguments<'_>, newline: bool) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")?;
        }
        Ok(())
    });
    if let Err(e) = r {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("cfctl: writing to stdout: {e}");
        }
    }
}

/// Flush stdout (a broken pipe marks it closed, quietly).
pub fn flush() {
    if closed() {
        return;
    }
    if std::io::stdout().flush().is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// `println!` that a closed pipe ends quietly (see the module).
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_fmt(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!($($arg)*), true) };
}

/// `print!` that a closed pipe ends quietly (see the module).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_fmt(format_args!($($arg)*), false) };
}

/// Print a JSON value as one document on stdout (keys in the order they were
/// inserted: `serde_json`'s `preserve_order`).
pub fn print_json(v: &serde_json::Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    crate::outln!("{text}");
}
