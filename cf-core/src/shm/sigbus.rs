//! SIGBUS: a mapped plex file (the region, the accounts) shrunk under a
//! running process. `open` refuses a file whose size does not match its
//! header, but nothing can stop another process from truncating the file
//! after it was mapped; the next access to a page past the new end faults
//! with SIGBUS, which would kill the process with no word (exit 135).
//!
//! [`install_sigbus_handler`] replaces that with one line on stderr and a
//! non-zero exit status. The handler is async-signal-safe: it only calls
//! `write(2)` on a message fixed at installation and `_exit(2)`; nothing is
//! unwound, no lock is taken, no destructor runs (the region is left as a
//! killed process leaves it, which every protocol already survives).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Exit status after a SIGBUS caught by the handler.
pub const SIGBUS_EXIT: i32 = 1;

static MESSAGE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MESSAGE_LEN: AtomicUsize = AtomicUsize::new(0);

/// Set by the first thread that takes the signal.
static FIRED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigbus(_sig: libc::c_int) {
    // Several threads may fault on the shrunk mapping at once (a worker and
    // the liveness thread's heartbeat): the first one prints and exits; the
    // others wait for that exit (an `_exit` of theirs could end the process
    // before the line is written; returning would fault again).
    if FIRED.swap(true, Ordering::AcqRel) {
        loop {
            // SAFETY: pause(2) is async-signal-safe; the process is exiting.
            unsafe { libc::pause() };
        }
    }
    let ptr = MESSAGE.load(Ordering::Acquire);
    let len = MESSAGE_LEN.load(Ordering::Acquire);
    if !ptr.is_null() {
        // SAFETY: `ptr` and `len` describe a leaked, never freed byte buffer
        // (set once in `install_sigbus_handler`, before the handler); write(2)
        // and _exit(2) are async-signal-safe.
        unsafe {
            libc::write(2, ptr as *const libc::c_void, len);
        }
    }
    // SAFETY: _exit(2) is async-signal-safe and never returns.
    unsafe { libc::_exit(SIGBUS_EXIT) }
}

/// Install the SIGBUS handler for this process: on SIGBUS, print
/// `{program}: the region (or another mapped plex file) was truncated under
/// this process (SIGBUS); exiting` on stderr and exit with [`SIGBUS_EXIT`].
/// Call it once at the start of `main`, before any file is mapped.
pub fn install_sigbus_handler(program: &str) -> std::io::Result<()> {
    let text = format!(
        "{program}: the region file (or another mapped plex file) was truncated under this \
         process (SIGBUS); exiting\n"
    );
    let bytes: &'static mut [u8] = Box::leak(text.into_bytes().into_boxed_slice());
    MESSAGE_LEN.store(bytes.len(), Ordering::Release);
    MESSAGE.store(bytes.as_mut_ptr(), Ordering::Release);
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler is
    // an `extern "C" fn(c_int)` that only does async-signal-safe calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        // Not SA_RESETHAND: a second thread faulting meanwhile must meet the
        // handler too, not the default action (death by SIGBUS, no word).
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
