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
