//! A member's history file: read it, open it for appending (a torn tail
//! cut), and run the checker of every account against it (and a log).
#![no_main]
use cf_node::history;
use cf_node::store::Store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = cf_fuzz::plex_dir();
    let _ = std::fs::remove_file(Store::path_in(dir));
    if Store::create(dir, 16, 1000, false).is_err() {
        return;
    }
    let _ = std::fs::remove_file(cf_node::wal::log_path(dir, "F"));
    let _ = history::create_dir(dir, false);
    let path = cf_fuzz::put("history/F", data);
    let _ = history::read_history(&path);
    let _ = history::check(dir).map(|c| c.to_string());
    if let Ok(Some(mut w)) = history::HistoryWriter::open(dir, "F", false) {
        let _ = w.archive(&[]);
    }
    let _ = history::check(dir);
});
