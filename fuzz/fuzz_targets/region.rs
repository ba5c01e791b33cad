//! The region file: open (read-write and read-only) and every view of it;
//! a region `verify` finds clean must be read by every view without an error.
//! Input: one option byte (bit 0: store a valid header checksum), then the file.
#![no_main]
use cf_core::{Plex, Region};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    if opts & 1 == 1 {
        cf_fuzz::fix_region_checksum(&mut bytes);
    }
    cf_fuzz::put("region", &bytes);
    let plex = Plex {
        dir: cf_fuzz::plex_dir().into(),
    };
    if let Ok(r) = Region::open_read_only(&plex) {
        cf_fuzz::every_view(&r);
        cf_fuzz::assert_verify_is_as_strict_as_the_readers(&r);
    }
    if opts & 2 == 2 {
        if let Ok(r) = Region::open(&plex) {
            cf_fuzz::every_view(&r);
        }
    }
});
