//! Hostile plex files and misuse, at the library level: the plex directory
//! and the region file are checked before anything is trusted (SPEC
//! invariants 10 and 11), `verify` is at least as strict as every reader,
//! counters read from the region never overflow, and FAILED restart
//! requests are not claimed again until re-posted.

use cf_core::events::{self, EventData};
use cf_core::requests::{self, ClaimOutcome, RequestState};
use cf_core::testing::forge;
use cf_core::ConnectorId;
use cf_core::{inspect, testing, CreateOptions, Member, Plex, ProcessId, Region, RegionError};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

fn plex_in(dir: &Path) -> Plex {
    Plex { dir: dir.join("p") }
}

fn create(plex: &Plex) -> Region {
    Region::create(plex, &CreateOptions::small_for_tests()).unwrap()
}

/// Write raw bytes into the region file at `offset` (damage by another
/// process: the mapping is shared, so a live `Region` sees it too).
fn poke(plex: &Plex, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(plex.region_path())
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_plex_directory_others_can_write_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    drop(create(&plex));
    for mode in [0o1777, 0o777, 0o770, 0o730] {
        std::fs::set_permissions(&plex.dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = Region::open(&plex).unwrap_err();
        assert!(
            matches!(e, RegionError::PlexDirUntrusted(_)),
            "mode {mode:o}: {e}"
        );
        assert!(e.to_string().contains("is writable by"), "{e}");
    }
    // Create refuses one too, whatever it was asked.
    let other = plex_in(&t.path().join("o"));
    std::fs::create_dir_all(&other.dir).unwrap();
    std::fs::set_permissions(&other.dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let e = Region::create(&other, &CreateOptions::small_for_tests()).unwrap_err();
    assert!(e.to_string().contains("writable by every user"), "{e}");
    assert!(!other.region_path().exists());
}

#[test]
fn a_symlinked_plex_directory_is_refused_by_open() {
    let t = tempfile::tempdir().unwrap();
    let real = plex_in(t.path());
    drop(create(&real));
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real.dir, &link).unwrap();
    let e = Region::open(&Plex { dir: link.clone() }).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = Region::open_read_only(&Plex { dir: link }).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

#[test]
fn a_region_with_a_second_link_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    drop(create(&plex));
    std::fs::hard_link(plex.region_path(), t.path().join("elsewhere")).unwrap();
    let e = Region::open(&plex).unwrap_err();
    assert!(e.to_string().contains("2 hard links"), "{e}");
}

#[test]
fn group_mode_sets_its_modes_whatever_the_umask_and_trusts_the_group() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let r = Region::create(
        &plex,
        &CreateOptions {
            group_access: true,
            ..CreateOptions::small_for_tests()
        },
    );
    nix::sys::stat::umask(old);
    drop(r.unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&plex.dir), 0o2770);
    assert_eq!(mode(&plex.region_path()), 0o660);
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    // A region of another user of the plex's group is accepted in group mode ...
    let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&plex.dir).unwrap());
    nix::unistd::chown(
        &plex.region_path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    Region::open(&plex).unwrap();
    // ... and refused without it.
    std::fs::set_permissions(&plex.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(plex.region_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = Region::open(&plex).unwrap_err();
    assert!(
        matches!(e, RegionError::ForeignOwner { owner: 65534, .. }),
        "{e}"
    );
}

#[test]
fn a_read_only_region_serves_every_view_and_refuses_writers() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = Arc::new(create(&plex));
    let a = Member::connect(r.clone(), "A").unwrap();
    let ro = Region::open_read_only(&plex).unwrap();
    assert!(ro.is_read_only());
    assert_eq!(inspect::members(&ro).unwrap().len(), 1);
    assert!(
        inspect::verify(&ro).is_empty(),
        "{:?}",
        inspect::verify(&ro)
    );
    let ro = Arc::new(ro);
    let e = Member::connect(ro.clone(), "B").unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(matches!(
        cf_core::cleanup_member(&ro, ConnectorId::new(0)),
        Err(cf_core::CleanupError::ReadOnly)
    ));
    // Every writer of the restart-request list refuses a read-only region
    // (a store through a PROT_READ mapping would fault).
    let me = cf_core::ProcessId::current().unwrap();
    let c0 = ConnectorId::new(0);
    let ro_err = |r: Result<_, cf_core::RestartRequestError>| {
        matches!(r, Err(cf_core::RestartRequestError::ReadOnly(_)))
    };
    assert!(ro_err(requests::claim(&ro, c0, c0, &me).map(|_| ())));
    assert!(ro_err(requests::set_worker(&ro, c0, 1, &me).map(|_| ())));
    assert!(ro_err(requests::unclaim(&ro, c0, 1, &me)));
    assert!(ro_err(requests::complete(&ro, c0, 1, "A", "B").map(|_| ())));
    assert!(ro_err(
        requests::complete_for_name(&ro, "A", "B").map(|_| ())
    ));
    assert!(ro_err(requests::post(&ro, c0, None, |_| {}).map(|_| ())));
    assert!(!cf_core::connector::liveness::mark_missing(&ro, c0, 0));
    assert!(cf_core::connector::liveness::register_this_thread(&ro, c0, 1).is_err());
    events::record(&ro, "X", None, EventData::Connected { pid: 0 }); // skipped, no fault
    a.disconnect().unwrap();
}

#[test]
fn an_event_counter_at_the_end_of_u64_is_damage_and_never_wraps() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = create(&plex);
    events::record(&r, "A", None, EventData::Connected { pid: 1 });
    let head_at = r.layout().events;
    poke(&plex, head_at, &u64::MAX.to_le_bytes());
    // Recording on it changes nothing (no `seq + 1` overflow) ...
    events::record(&r, "B", None, EventData::Connected { pid: 2 });
    assert_eq!(events::next_seq(&r), u64::MAX);
    // ... and readers and verify say it is damaged instead of "no events".
    assert!(events::check(&r).is_err());
    assert!(
        inspect::verify(&r)
            .iter()
            .any(|p| p.contains("event counter")),
        "{:?}",
        inspect::verify(&r)
    );
}

#[test]
fn an_event_payload_out_of_range_is_skipped_and_reported() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = create(&plex);
    events::record(&r, "A", None, EventData::Connected { pid: 1 });
    events::record(
        &r,
        "A",
        Some("B"),
        EventData::Fenced {
            heartbeat_age_ms: 10,
            pid: 1,
            by_operator: false,
        },
    );
    assert_eq!(events::read_all(&r).len(), 2);
    // Event 1's PID word (its payload's second, 24 + 8 bytes into the slot
    // after the ring's header page) beyond u32::MAX.
    let pid_at = r.layout().events + 4096 + cf_core::layout::EVENT_SIZE + 32;
    poke(&plex, pid_at, &(u64::from(u32::MAX) + 1).to_le_bytes());
    // Readers skip it (no panic, no PID cut to 32 bits) ...
    let left = events::read_all(&r);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].data, EventData::Connected { pid: 1 });
    // ... and `display events` and verify report it.
    let err = events::check(&r).unwrap_err().to_string();
    assert!(err.contains("no fenced data"), "{err}");
    assert!(
        inspect::verify(&r)
            .iter()
            .any(|p| p.contains("slot 1 (event 1)")),
        "{:?}",
        inspect::verify(&r)
    );
}

#[test]
fn verify_reports_what_other_readers_refuse() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = Arc::new(create(&plex));
    let a = Member::connect(r.clone(), "A").unwrap();
    let id = a.id();
    assert!(inspect::verify(&r).is_empty());

    // A request state of 255: `display requests` fails, so must verify.
    let req = r.layout().restart_list + cf_core::layout::REQUEST_SIZE * (1 + id.get() as u64);
    poke(&plex, req, &255u64.to_le_bytes());
    assert!(requests::list(&r).is_err());
    let p = inspect::verify(&r);
    assert!(
        p.iter().any(|p| p.contains("restart request state 255")),
        "{p:?}"
    );
    poke(&plex, req, &0u64.to_le_bytes());

    // A member name with a newline and an escape code: nothing can connect
    // or recover under it, and it must not print raw.
    let name_at = r.layout().connectors + 256 * id.get() as u64 + 32;
    poke(&plex, name_at, b"B\nproblem: \x1b[2J");
    let p = inspect::verify(&r);
    assert!(p.iter().any(|p| p.contains("invalid member name")), "{p:?}");
    assert!(
        p.iter().all(|p| !p.contains('\n') && !p.contains('\x1b')),
        "{p:?}"
    );
    assert_eq!(
        inspect::escape("B\nproblem: \x1b[2J"),
        "B\\nproblem: \\x1b[2J"
    );

    // The connect latch held by an unrelated live process (PID 1): every
    // connect would wait for it and fail.
    let init = ProcessId::of(1).unwrap().unwrap();
    testing::set_connect_latch(&r, init.token());
    let p = inspect::verify(&r);
    assert!(
        p.iter()
            .any(|p| p.contains("connect latch is held by pid 1")),
        "{p:?}"
    );
    testing::set_connect_latch(&r, 0);
    std::mem::forget(a);
}

#[test]
fn a_failed_request_is_not_claimed_again_until_it_is_reposted() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = Arc::new(create(&plex));
    let dead = Member::connect(r.clone(), "D").unwrap();
    let id = dead.id();
    testing::fake_reused_pid(&r, id);
    std::mem::forget(dead);
    // The cleanup posts the request.
    cf_core::cleanup_member(&r, id).unwrap();
    let me = ProcessId::current().unwrap();
    let epoch = match requests::claim(&r, id, ConnectorId::new(3), &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    requests::set_reason(&r, id, epoch, Some(1), Some("log.D is not a regular file")).unwrap();
    assert_eq!(
        requests::fail(
            &r,
            id,
            epoch,
            &me,
            cf_core::connector::slot_view(&r, id).unwrap().generation
        )
        .unwrap(),
        requests::FailOutcome::Marked
    );
    let v = requests::list(&r).unwrap();
    assert_eq!(v[0].state, RequestState::Failed);
    assert_eq!(v[0].reason, "log.D is not a regular file");
    assert_eq!(v[0].last_status, Some(1));
    assert!(v[0].retry_at_unix_ns().is_some());
    // Nobody claims it, and a cleanup's post does not re-arm it.
    assert!(!requests::needs_handler(&r, id).unwrap());
    assert_eq!(
        requests::claim(&r, id, ConnectorId::new(3), &me).unwrap(),
        ClaimOutcome::NotClaimed
    );
    assert_eq!(requests::post(&r, id, None, |_| {}).unwrap(), None);
    // An operator re-posts it: a new epoch, claimable at once.
    let again = requests::retry(&r, id, None, |_| {})
        .unwrap()
        .expect("re-posted");
    assert_ne!(again, epoch);
    assert!(requests::needs_handler(&r, id).unwrap());
    let v = requests::list(&r).unwrap();
    assert_eq!(
        (v[0].state, v[0].reason.as_str()),
        (RequestState::Pending, "")
    );
    // And a FAILED request can still be completed (a recovery by hand).
    let epoch = match requests::claim(&r, id, ConnectorId::new(3), &me).unwrap() {
        ClaimOutcome::Claimed { epoch, .. } => epoch,
        other => panic!("{other:?}"),
    };
    requests::fail(
        &r,
        id,
        epoch,
        &me,
        cf_core::connector::slot_view(&r, id).unwrap().generation,
    )
    .unwrap();
    assert!(requests::complete(&r, id, epoch, "D", "test").unwrap());
    assert!(requests::list(&r).unwrap().is_empty());
}

#[test]
fn one_line_never_repeats_a_cause() {
    let e = cf_core::ConnectError::Corrupt(cf_core::CorruptError::BadConnector {
        id: ConnectorId::new(0),
        what: "unknown state 119".into(),
    });
    let line = cf_core::error::one_line(std::iter::successors(
        Some(&e as &(dyn std::error::Error + 'static)),
        |e| e.source(),
    ));
    assert_eq!(line, "region is damaged: connector 0: unknown state 119");
}

/// A lock word latched in the name of the requester's own connector, with
/// no thread of the requester holding it (damage, or a latch left from
/// before it connected): nobody will ever drop it, so it is taken over at
/// once, not waited for as a sibling thread's latch (which used to end, 30 s
/// later, in an error). A latch a sibling thread really holds is still waited
/// for: the request is granted once the sibling's release is done.
#[test]
fn a_stale_latch_in_the_requesters_own_name_is_taken_over() {
    let t = tempfile::tempdir().unwrap();
    let plex = plex_in(t.path());
    let r = Arc::new(create(&plex));
    let a = Member::connect(r.clone(), "A").unwrap();
    // Mixed, latched by connector `a` (holder field id + 1), nobody's interest.
    let latched = forge::MIXED | forge::holder_field(a.id());
    for e in r.entry_indices() {
        testing::write_lock_word(&r, e, latched);
    }
    let mut h = a.holder().unwrap();
    let got = h.try_lock(b"r", cf_core::Mode::Modify).unwrap();
    let cf_core::TryOutcome::Granted(id) = got else {
        panic!("{got:?}");
    };
    h.unlock(id).unwrap();
    // Every entry the request did not touch is still latched at rest: damage
    // that verify reports.
    assert!(
        inspect::verify(&r)
            .iter()
            .any(|p| p.contains("latched by connector")),
        "{:?}",
        inspect::verify(&r)
    );
    for e in r.entry_indices() {
        testing::write_lock_word(&r, e, 0);
    }
    drop(h);
    a.disconnect().unwrap();
}
