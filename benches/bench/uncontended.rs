//! Uncontended acquire + release of one lock in one process: the product's
//! three modes beside the floor (a bare CAS) and the peers.

use super::guard::ShmFile;
#[cfg(have_bdb)]
use super::peers::BdbLock;
use super::peers::{bdb_missing, Flock, OfdLock, RobustMutex, SysvSem};
use super::stats::{measure_all, Method, Path};
use super::{Row, Skipped};
use anyhow::{bail, Result};
use cf_core::{CreateOptions, Member, Mode, Plex, Region, Sizes, TryOutcome};
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const RESOURCE: &[u8] = b"bench-uncontended";

fn cf_path<'a>(name: &'static str, member: &Member, mode: Mode) -> Result<Path<'a>> {
    let mut h = member.holder()?;
    Ok(Path {
        name,
        run: Box::new(move |n| {
            for _ in 0..n {
                match h.try_lock(black_box(RESOURCE), mode)? {
                    TryOutcome::Granted(id) => h.unlock(id)?,
                    other => bail!("{name}: uncontended request not granted: {other:?}"),
                }
            }
            Ok(())
        }),
    })
}

/// The rows, and the peers this build or machine cannot run (with why).
pub fn run(dir: &std::path::Path, m: &Method) -> Result<(Vec<Row>, Vec<Skipped>)> {
    let word_file = ShmFile::create(&dir.join("cas-word"), 4096)?;
    let word = word_file.word(0)?;

    let region = Arc::new(Region::create(
        &Plex {
            dir: dir.join("plex-uncontended"),
        },
        &CreateOptions {
            sizes: Sizes {
                lock_entries: 1 << 20,
                members: 8,
                records_per_member: 16384,
            },
            group_access: false,
        },
    )?);
    let member = Member::connect(region.clone(), "B1")?;

    let mutex_file = ShmFile::create(&dir.join("robust-mutex"), 4096)?;
    let mutex = RobustMutex::init(&mutex_file, 0)?;
    let ofd = OfdLock::open(&dir.join("ofd-lock"), 0)?;
    let flock = Flock::open(&dir.join("flock"))?;
    let sem = SysvSem::new()?;

    let mut skipped = Vec::new();
    #[cfg(have_bdb)]
    let bdb = BdbLock::open(&dir.join("bdb-env"))?;
    if let Some(why) = bdb_missing() {
        skipped.push(Skipped {
            group: "uncontended",
            name: "bdb_lock",
            reason: why.to_string(),
        });
    }

    let mut paths = vec![
        Path {
            name: "cas_pair",
            run: Box::new(|n| {
                for _ in 0..n {
                    if word
                        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        bail!("cas_pair: the word was not free");
                    }
                    word.store(0, Ordering::Release);
                }
                Ok(())
            }),
        },
        Path {
            name: "cas_cas_pair",
            run: Box::new(|n| {
                for _ in 0..n {
                    if word
                        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                        || word
                            .compare_exchange(1, 0, Ordering::Release, Ordering::Relaxed)
                            .is_err()
                    {
                        bail!("cas_cas_pair: the word was not free");
                    }
                }
                Ok(())
            }),
        },
        cf_path("cf_share", &member, Mode::Share)?,
        cf_path("cf_exclusive", &member, Mode::Exclusive)?,
        cf_path("cf_exclusive_modify", &member, Mode::Modify)?,
        Path {
            name: "pthread_robust_mutex",
            run: Box::new(|n| {
                for _ in 0..n {
                    mutex.lock()?;
                    mutex.unlock()?;
                }
                Ok(())
            }),
        },
        Path {
            name: "fcntl_ofd",
            run: Box::new(|n| {
                for _ in 0..n {
                    ofd.lock(false)?;
                    ofd.unlock()?;
                }
                Ok(())
            }),
        },
        Path {
            name: "flock",
            run: Box::new(|n| {
                for _ in 0..n {
                    flock.lock()?;
                    flock.unlock()?;
                }
                Ok(())
            }),
        },
        Path {
            name: "sysv_sem_undo",
            run: Box::new(|n| {
                for _ in 0..n {
                    sem.p()?;
                    sem.v()?;
                }
                Ok(())
            }),
        },
    ];
    #[cfg(have_bdb)]
    paths.push(Path {
        name: "bdb_lock",
        run: Box::new(|n| bdb.get_put(n)),
    });
    let timed = measure_all(m, &mut paths)?;
    let names: Vec<&'static str> = paths.iter().map(|p| p.name).collect();
    // The cf holders are dropped with the paths, before the member goes.
    drop(paths);
    member.disconnect()?;

    let rows = names
        .into_iter()
        .zip(timed)
        .map(|(name, t)| Row {
            group: "uncontended",
            name: name.to_string(),
            what: match name {
                #[cfg(have_bdb)]
                "bdb_lock" => format!("{} ({})", what(name), BdbLock::version()),
                _ => what(name).to_string(),
            },
            ops_per_s: 1e9 / t.ns.median,
            ns: t.ns,
            iters_per_rep: t.iters,
        })
        .collect();
    Ok((rows, skipped))
}

fn what(name: &str) -> &'static str {
    match name {
        "cas_pair" => "CAS acquire + release store, AtomicU64 in a MAP_SHARED /dev/shm file",
        "cas_cas_pair" => "CAS acquire + CAS release on one AtomicU64 (the floor of a word released by a read-modify-write)",
        "bdb_lock" => "Berkeley DB lock_get(DB_LOCK_WRITE) + lock_put on a named object, shared environment on tmpfs",
        "cf_share" => "Holder::try_lock(Share) + unlock",
        "cf_exclusive" => "Holder::try_lock(Exclusive) + unlock",
        "cf_exclusive_modify" => "Holder::try_lock(Modify) + unlock",
        "pthread_robust_mutex" => {
            "pthread_mutex_lock + unlock, pshared + robust, in a shared mapping"
        }
        "fcntl_ofd" => "F_OFD_SETLK write lock on one byte + F_UNLCK",
        "flock" => "flock LOCK_EX (|LOCK_NB) + LOCK_UN",
        "sysv_sem_undo" => "semop P + V with SEM_UNDO (|IPC_NOWAIT)",
        _ => "",
    }
}
