//! The accounts file: open (read-write and read-only), every balance, totals.
//! Input: one option byte (bit 0: store a valid header checksum), then the file.
#![no_main]
use cf_node::store::Store;
use libfuzzer_sys::fuzz_target;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    if opts & 1 == 1 && bytes.len() >= 40 {
        let sum = fnv(&bytes[..32]);
        bytes[32..40].copy_from_slice(&sum.to_le_bytes());
    }
    cf_fuzz::put("accounts", &bytes);
    let dir = cf_fuzz::plex_dir();
    for store in [Store::open_read_only(dir), Store::open(dir)].into_iter().flatten() {
        let _ = store.total();
        let _ = store.expected_total();
        for i in 0..store.count().min(4096) + 2 {
            let _ = store.balance(i);
        }
        let _ = store.balance(u64::MAX);
    }
});
