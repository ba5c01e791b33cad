//! The peers the product is measured against: a process-shared robust
//! pthread mutex, an fcntl OFD lock, flock, and a SysV semaphore with
//! SEM_UNDO. Each is a thin wrapper that turns a failed call into an error.

use super::guard::ShmFile;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A robust, process-shared pthread mutex inside a [`ShmFile`].
pub struct RobustMutex<'a> {
    m: *mut libc::pthread_mutex_t,
    _file: std::marker::PhantomData<&'a ShmFile>,
}

impl<'a> RobustMutex<'a> {
    fn at(file: &'a ShmFile, off: usize) -> Result<RobustMutex<'a>> {
        let p = file.ptr(off, std::mem::size_of::<libc::pthread_mutex_t>())?;
        Ok(RobustMutex {
            m: p as *mut libc::pthread_mutex_t,
            _file: std::marker::PhantomData,
        })
    }

    /// Initialise a mutex at `off` (once, before any process uses it).
    pub fn init(file: &'a ShmFile, off: usize) -> Result<RobustMutex<'a>> {
        let me = Self::at(file, off)?;
        // SAFETY: pthread_mutexattr_t is plain data; all-zero is a valid
        // value to hand to pthread_mutexattr_init, which overwrites it.
        let mut attr: libc::pthread_mutexattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is ours; `me.m` points at enough 8-aligned bytes in
        // a live mapping (checked by `ptr`) that no one uses yet; the
        // attribute is destroyed after use.
        unsafe {
            check(
                libc::pthread_mutexattr_init(&mut attr),
                "pthread_mutexattr_init",
            )?;
            let r = check(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                "pthread_mutexattr_setpshared",
            )
            .and_then(|()| {
                check(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    "pthread_mutexattr_setrobust",
                )
            })
            .and_then(|()| check(libc::pthread_mutex_init(me.m, &attr), "pthread_mutex_init"));
            libc::pthread_mutexattr_destroy(&mut attr);
            r?;
        }
        Ok(me)
    }

    /// A mutex another process initialised at `off`.
    pub fn attach(file: &'a ShmFile, off: usize) -> Result<RobustMutex<'a>> {
        Self::at(file, off)
    }

    #[inline]
    pub fn lock(&self) -> Result<()> {
        // SAFETY: `m` points at a mutex initialised by `init` in a mapping
        // that outlives `self` ('a).
        let rc = unsafe { libc::pthread_mutex_lock(self.m) };
        if rc == libc::EOWNERDEAD {
            // SAFETY: we own the mutex now (EOWNERDEAD); make it usable
            // again and give it back before reporting.
            unsafe {
                libc::pthread_mutex_consistent(self.m);
                libc::pthread_mutex_unlock(self.m);
            }
            bail!("pthread mutex: its owner died");
        }
        check(rc, "pthread_mutex_lock")
    }

    #[inline]
    pub fn unlock(&self) -> Result<()> {
        // SAFETY: as in `lock`; we hold the mutex.
        check(
            unsafe { libc::pthread_mutex_unlock(self.m) },
            "pthread_mutex_unlock",
        )
    }
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc)).context(what.to_string());
    }
    Ok(())
}

fn open_rw(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// A write lock on one byte of a file through its own open file description.
pub struct OfdLock {
    file: File,
    byte: i64,
}

impl OfdLock {
    pub fn open(path: &Path, byte: i64) -> Result<OfdLock> {
        Ok(OfdLock {
            file: open_rw(path)?,
            byte,
        })
    }

    #[inline]
    fn fcntl(&self, cmd: libc::c_int, ty: libc::c_int) -> Result<()> {
        let fl = libc::flock {
            l_type: ty as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: self.byte,
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: the descriptor is open for as long as `self`; `fl` is a
        // valid struct flock the kernel only reads (l_pid 0 as OFD requires).
        if unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &fl) } != 0 {
            return Err(io::Error::last_os_error()).context("fcntl OFD lock");
        }
        Ok(())
    }

    /// Take the write lock; `wait`: block (F_OFD_SETLKW) rather than fail.
    #[inline]
    pub fn lock(&self, wait: bool) -> Result<()> {
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        self.fcntl(cmd, libc::F_WRLCK)
    }

    #[inline]
    pub fn unlock(&self) -> Result<()> {
        self.fcntl(libc::F_OFD_SETLK, libc::F_UNLCK)
    }
}

/// flock(2) on a file.
pub struct Flock {
    file: File,
}

impl Flock {
    pub fn open(path: &Path) -> Result<Flock> {
        Ok(Flock {
            file: open_rw(path)?,
        })
    }

    #[inline]
    pub fn lock(&self) -> Result<()> {
        self.op(libc::LOCK_EX | libc::LOCK_NB)
    }

    #[inline]
    pub fn unlock(&self) -> Result<()> {
        self.op(libc::LOCK_UN)
    }

    #[inline]
    fn op(&self, op: libc::c_int) -> Result<()> {
        // SAFETY: the descriptor is open for as long as `self`.
        if unsafe { libc::flock(self.file.as_raw_fd(), op) } != 0 {
            return Err(io::Error::last_os_error()).context("flock");
        }
        Ok(())
    }
}

/// A private SysV semaphore (value 1), removed when dropped.
pub struct SysvSem {
    id: libc::c_int,
}

impl SysvSem {
    pub fn new() -> Result<SysvSem> {
        // SAFETY: semget takes plain integers and returns an id or -1.
        let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return Err(io::Error::last_os_error()).context("semget");
        }
        let sem = SysvSem { id };
        // Value 1, without SEM_UNDO (the set-up is not undone at exit).
        sem.op(1, 0)?;
        Ok(sem)
    }

    #[inline]
    fn op(&self, delta: libc::c_short, flags: libc::c_int) -> Result<()> {
        let mut b = libc::sembuf {
            sem_num: 0,
            sem_op: delta,
            sem_flg: (flags | libc::IPC_NOWAIT) as libc::c_short,
        };
        // SAFETY: one valid sembuf, nsops 1; the semaphore set is ours.
        if unsafe { libc::semop(self.id, &mut b, 1) } != 0 {
            return Err(io::Error::last_os_error()).context("semop");
        }
        Ok(())
    }

    /// P with SEM_UNDO.
    #[inline]
    pub fn p(&self) -> Result<()> {
        self.op(-1, libc::SEM_UNDO)
    }

    /// V with SEM_UNDO.
    #[inline]
    pub fn v(&self) -> Result<()> {
        self.op(1, libc::SEM_UNDO)
    }
}

impl Drop for SysvSem {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID on our own semaphore set; no further argument.
        if unsafe { libc::semctl(self.id, 0, libc::IPC_RMID) } != 0 {
            eprintln!(
                "cfctl: removing SysV semaphore {}: {}",
                self.id,
                io::Error::last_os_error()
            );
        }
    }
}

/// Berkeley DB's lock subsystem (`lock_get` + `lock_put` of a write lock on
/// a named object, in a shared environment whose region files live in a
/// directory of the same tmpfs), through the C shim `bdb/shim.c`. Built only
/// where Berkeley DB's header was found (`cfg(have_bdb)`, see `build.rs`).
#[cfg(have_bdb)]
pub struct BdbLock {
    b: std::ptr::NonNull<std::ffi::c_void>,
}

#[cfg(have_bdb)]
mod bdb_ffi {
    use std::ffi::{c_char, c_int, c_ulong, c_void};
    extern "C" {
        pub fn bdb_bench_open(home: *const c_char, out: *mut *mut c_void) -> c_int;
        pub fn bdb_bench_get_put(b: *mut c_void, n: c_ulong) -> c_int;
        pub fn bdb_bench_close(b: *mut c_void);
        pub fn bdb_bench_strerror(r: c_int) -> *const c_char;
        pub fn bdb_bench_version() -> *const c_char;
    }
}

#[cfg(have_bdb)]
impl BdbLock {
    /// Create (or join) the environment in directory `home` and take a locker id.
    pub fn open(home: &Path) -> Result<BdbLock> {
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
        let c = std::ffi::CString::new(home.as_os_str().as_bytes())
            .context("a Berkeley DB home with a NUL byte")?;
        let mut out = std::ptr::null_mut();
        // SAFETY: `c` is a NUL-terminated string that outlives the call;
        // `out` is a valid place for the shim to store its handle.
        let r = unsafe { bdb_ffi::bdb_bench_open(c.as_ptr(), &mut out) };
        bdb_check(r, "opening the Berkeley DB environment")?;
        let b = std::ptr::NonNull::new(out).context("Berkeley DB returned no handle")?;
        Ok(BdbLock { b })
    }

    /// `n` times lock_get (write) + lock_put.
    pub fn get_put(&self, n: u64) -> Result<()> {
        // SAFETY: `self.b` is the live handle `open` returned; it is closed
        // only in `drop`, and the shim uses it from this thread only.
        let r = unsafe { bdb_ffi::bdb_bench_get_put(self.b.as_ptr(), n as std::ffi::c_ulong) };
        bdb_check(r, "lock_get/lock_put")
    }

    /// Berkeley DB's version line.
    pub fn version() -> String {
        // SAFETY: db_version returns a pointer to a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(bdb_ffi::bdb_bench_version()) }
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(have_bdb)]
fn bdb_check(r: std::ffi::c_int, what: &str) -> Result<()> {
    if r == 0 {
        return Ok(());
    }
    // SAFETY: db_strerror returns a pointer to a static NUL-terminated string.
    let msg = unsafe { std::ffi::CStr::from_ptr(bdb_ffi::bdb_bench_strerror(r)) };
    bail!("Berkeley DB {what}: {}", msg.to_string_lossy())
}

#[cfg(have_bdb)]
impl Drop for BdbLock {
    fn drop(&mut self) {
        // SAFETY: the handle is live and not used after this.
        unsafe { bdb_ffi::bdb_bench_close(self.b.as_ptr()) }
    }
}

/// Why this build has no `bdb_lock` row, if it has none.
pub fn bdb_missing() -> Option<&'static str> {
    #[cfg(have_bdb)]
    return None;
    #[cfg(not(have_bdb))]
    return Some(env!("BDB_MISSING"));
}
