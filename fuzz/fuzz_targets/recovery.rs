//! Cleanup and restart-light recovery on a mutated region: every dead member
//! cleaned up, every failed-persistent one recovered in-process from a
//! mutated log, then every view. Input: option byte (bit 0: valid header
//! checksum), log length (u32 LE), the log of every member, the region file.
#![no_main]
use cf_core::{Plex, Region};
use cf_node::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let opts = data[0];
    let n = u32::from_le_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let rest = &data[5..];
    let (log, region_bytes) = rest.split_at(n.min(rest.len()));
    let mut bytes = region_bytes.to_vec();
    if opts & 1 == 1 {
        cf_fuzz::fix_region_checksum(&mut bytes);
    }
    let dir = cf_fuzz::plex_dir();
    cf_fuzz::put("region", &bytes);
    let _ = std::fs::remove_file(Store::path_in(dir));
    if Store::create(dir, 16, 1000, false).is_err() {
        return;
    }
    let plex = Plex { dir: dir.into() };
    let Ok(region) = Region::open(&plex) else {
        return;
    };
    if cf_fuzz::names_a_live_process(&region) {
        return;
    }
    let _ = cf_core::recovery::cleanup_all_dead(&region);
    let failed: Vec<String> = cf_core::inspect::members(&region)
        .map(|m| {
            m.into_iter()
                .filter(|m| m.state == cf_core::MemberState::FailedPersistent)
                .map(|m| m.name)
                .collect()
        })
        .unwrap_or_default();
    for name in failed {
        if cf_core::connector::check_name(&name).is_err() {
            continue;
        }
        cf_fuzz::put(&format!("log.{name}"), log);
        let _ = cf_node::restart_light::run(dir, &name, Some("fuzz"));
        let _ = std::fs::remove_file(cf_node::wal::log_path(dir, &name));
    }
    cf_fuzz::every_view(&region);
    cf_fuzz::assert_verify_is_as_strict_as_the_readers(&region);
});
