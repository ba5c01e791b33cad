//! A member's log: parse it, read it from the plex, open it for appending
//! (a torn tail cut), sort its transactions, and back its losers out into an
//! accounts file.
#![no_main]
use cf_node::backout::backout;
use cf_node::history::transactions;
use cf_node::store::Store;
use cf_node::wal::{self, LogScan, LogWriter};
use libfuzzer_sys::fuzz_target;

const ACCOUNTS: u64 = 16;

fuzz_target!(|data: &[u8]| {
    let scan = LogScan::parse(data);
    let _ = transactions(&scan.records);
    let dir = cf_fuzz::plex_dir();
    let _ = std::fs::remove_file(Store::path_in(dir));
    let Ok(store) = Store::create(dir, ACCOUNTS, 1000, false) else {
        return;
    };
    let path = cf_fuzz::put("log.F", data);
    let read = wal::read_log(&path).expect("a log the fuzzer wrote is readable");
    assert_eq!(read.records, scan.records, "the file reader and the parser agree");
    let Ok(log) = LogWriter::open(dir, "F", false) else {
        return;
    };
    let _ = backout(&log, &store, || {});
    // A second back-out finds nothing left to undo.
    if let Ok(r) = backout(&log, &store, || {}) {
        assert_eq!(r.updates_undone, 0, "a back-out is idempotent");
    }
    let _ = store.total();
});
