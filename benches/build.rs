//! Builds the Berkeley DB shim (`bdb/shim.c`) for the `bdb_lock` row when
//! Berkeley DB's header and library are present (Debian: libdb5.3-dev), and
//! sets `cfg(have_bdb)`; without them the row is reported as skipped, with
//! the reason this script leaves in `BDB_MISSING`.

use std::path::Path;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(have_bdb)");
    println!("cargo::rerun-if-changed=bdb/shim.c");
    println!("cargo::rerun-if-env-changed=CF_BENCH_NO_BDB");
    let header = ["/usr/include/db.h", "/usr/local/include/db.h"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let missing = if std::env::var_os("CF_BENCH_NO_BDB").is_some() {
        Some("CF_BENCH_NO_BDB was set at build time".to_string())
    } else if header.is_none() {
        Some(
            "Berkeley DB's db.h was not found at build time (Debian: apt install libdb5.3-dev)"
                .into(),
        )
    } else {
        None
    };
    match missing {
        None => {
            let ok = cc::Build::new()
                .file("bdb/shim.c")
                .warnings(true)
                .try_compile("cfbdbshim");
            match ok {
                Ok(()) => {
                    println!("cargo::rustc-link-lib=db");
                    println!("cargo::rustc-cfg=have_bdb");
                }
                Err(e) => println!(
                    "cargo::rustc-env=BDB_MISSING=the Berkeley DB shim did not compile: {}",
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        }
        Some(why) => println!("cargo::rustc-env=BDB_MISSING={why}"),
    }
}
