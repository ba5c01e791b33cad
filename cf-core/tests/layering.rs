//! The crate's parts import one way only: each module names (`crate::...` in
//! code, not in comments) only the parts below it. This test reads the
//! sources and fails on an import that goes up or sideways, so a new one is a
//! decision (change `LAYERS` and `docs/DESIGN.md` §1), never an accident.

use std::path::{Path, PathBuf};

/// The parts, lowest first.
const LAYERS: &[&str] = &[
    "ids",       // the index types
    "error",     // every error type, one_line, escape
    "sync",      // atomics, clock, futexes (loom or std)
    "crash",     // named crash points (tests)
    "shm",       // layout, typed slots, mapping, region file, plex files
    "events",    // the event ring
    "connector", // member slots, identity, connect latch, claims, liveness
    "lock",      // lock word, records, the latched entry protocol
    "deadlock",  // wait records, the wait-for graph, the detector
    "requests",  // the restart-request list
    "recovery",  // cleanup of a dead member (retention)
    "member",    // connect, holders (lock requests), disconnect
    "inspect",   // read-only views
];

/// Names the crate root re-exports, by the part they come from.
const ROOT_ALIASES: &[(&str, &str)] = &[("layout", "shm"), ("region", "shm"), ("plexfs", "shm")];

fn layer(name: &str) -> Option<usize> {
    let name = ROOT_ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, to)| *to);
    LAYERS.iter().position(|l| *l == name)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src readable") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "loom_models") {
                continue; // the models drive every part
            }
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part a source file belongs to (`None`: the crate root).
fn part_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let first = first.trim_end_matches(".rs").to_string();
    (first != "lib").then_some(first)
}

/// Every `crate::NAME` in the code of `text` (comments and strings aside).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let before = rest[..i].chars().last();
            // `$crate::` in macros and `cf_crate::`-like names are not ours.
            if !matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$') {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

/// The text before the file's unit tests (a `#[cfg(test)]` or
/// `#[cfg(all(test, ...))]` module, at the end of a file by convention):
/// tests may use any part.
fn without_unit_tests(text: &str) -> &str {
    let cut = ["\n#[cfg(test)]", "\n#[cfg(all(test"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    &text[..cut]
}

#[test]
fn every_part_imports_only_the_parts_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "found the sources: {files:?}");
    let mut bad = Vec::new();
    for f in &files {
        let Some(part) = part_of(&src, f) else {
            continue; // lib.rs wires the parts together
        };
        let me = layer(&part).unwrap_or_else(|| {
            panic!(
                "{}: part {part} is not in LAYERS (add it where it belongs)",
                f.display()
            )
        });
        let text = std::fs::read_to_string(f).expect("readable source");
        for (line, name) in crate_refs(without_unit_tests(&text)) {
            if name == part {
                continue;
            }
            match layer(&name) {
                Some(l) if l < me => {}
                Some(_) => bad.push(format!(
                    "{}:{line}: {part} imports {name}, which is not below it",
                    f.display()
                )),
                None => bad.push(format!(
                    "{}:{line}: {part} names crate::{name} (a root re-export: import it \
                     from its part)",
                    f.display()
                )),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_and_skips_comments() {
    let refs = crate_refs(
        "use crate::lock::word;\n// crate::member in a comment\nlet x = crate::shm::layout::MAGIC; // crate::inspect\n$crate::sync",
    );
    assert_eq!(refs, vec![(1, "lock".to_string()), (3, "shm".to_string())]);
}
