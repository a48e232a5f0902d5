//! Unit tests of `grants::nft_set`.

use super::*;

fn config(server: &str, allow: &str) -> Config {
    let text = format!(
        "[server]\n{server}\n[[client]]\nname = \"a\"\nkey = \"{}\"\nallow = [{allow}]\n",
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
    );
    config::parse_str(&text, std::path::Path::new("/etc/nfknock/nfknock.toml")).unwrap()
}

/// A reload that leaves the ruleset as it was asks for no re-install (the daemon's
/// `a_reload_that_removes_a_client_...` test relies on it); one that narrows `allow`
/// changes the protected ports; the queue number, the kernel's queue backend and the
/// gate choice stay as they were.
#[test]
fn a_reload_changes_the_ruleset_only_where_the_config_did() {
    let old = config("", "\"tcp/22\"");
    for gate in [true, false] {
        let running = gated(ruleset_spec(&old, QueueBackend::Compat), gate);
        assert_eq!((running.gate_input, running.gate_forward), (gate, gate));
        let same = config("revoke_on_reload = false", "\"tcp/22\"");
        assert_eq!(respec(&running, gate, &same), running, "no re-install");
        let moved = config("queue = 4", "\"tcp/22\"");
        assert_eq!(respec(&running, gate, &moved), running, "queue at restart");
        let narrowed = respec(&running, gate, &config("", "\"tcp/443\""));
        assert_eq!(narrowed.protect, vec!["tcp/443".parse().unwrap()]);
        assert_eq!(
            (narrowed.backend, narrowed.gate_input),
            (QueueBackend::Compat, gate)
        );
    }
}

/// Grants become elements of the kernel's millisecond timeouts, rounded up, so no grant
/// ends early and none below a millisecond becomes "no timeout".
#[test]
fn grant_timeouts_round_up_to_the_kernels_milliseconds() {
    let g = |timeout| Grant {
        addr: "2001:db8::7".parse().unwrap(),
        access: "udp/53".parse().unwrap(),
        timeout,
        nat: None,
        gateway: None,
    };
    let mut buf = Vec::new();
    let elems = elements(
        &mut buf,
        &[
            g(Duration::from_secs(30)),
            g(Duration::from_micros(1)),
            g(Duration::from_micros(29_999_001)),
        ],
    );
    let ms: Vec<u64> = elems.iter().map(|e| e.timeout_ms).collect();
    assert_eq!(ms, [30_000, 1, 30_000]);
    assert_eq!(elems[0].addr, g(Duration::ZERO).addr);
    assert_eq!(millis(Duration::MAX), u64::MAX);
}

/// The whole backend against the real kernel, in a network namespace of its own (root
/// only): not loaded → told what to load; installed → grants written, listed with their
/// time, revoked (twice is no error); a table removed by someone else → noticed and
/// re-created with the grants it is given, or, with `manage_ruleset = false`, reported
/// with the fix; removed → `status` says it is not loaded.
#[test]
fn the_backend_writes_lists_revokes_restores_and_removes_in_a_fresh_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread to a new network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let managed = config("", "\"tcp/22\"");
        let unmanaged = config("manage_ruleset = false", "\"tcp/22\"");
        let e = NftSet::open(&unmanaged, true).err().unwrap();
        assert!(
            matches!(e, GrantError::NotLoaded { .. })
                && e.to_string().contains("nft -f nft/nfknock.nft"),
            "{e}"
        );
        let mut store = NftStore::open().unwrap();
        let e = store.list().unwrap_err();
        assert!(e.to_string().contains("start `nfknock serve`"), "{e}");

        let mut sink = NftSet::open(&managed, true).unwrap();
        assert_eq!(sink.objects(), "table `inet nfknock`");
        assert_eq!(store.list().unwrap(), []);
        let g = Grant {
            addr: "198.51.100.7".parse().unwrap(),
            access: "tcp/22".parse().unwrap(),
            timeout: Duration::from_secs(30),
            nat: None,
            gateway: None,
        };
        sink.write(&[g]).unwrap();
        let live = store.list().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].grant, g);
        assert!(live[0].left <= g.timeout && live[0].left > Duration::from_secs(25));
        assert!(
            !sink.drain().unwrap(),
            "our own writes are no one else's change"
        );
        sink.revoke(&[g]).unwrap();
        sink.revoke(&[g]).unwrap();
        assert_eq!(store.list().unwrap(), []);

        store.remove().unwrap();
        assert!(sink.drain().unwrap(), "a removed table must be noticed");
        sink.restore(&[g]).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);

        sink.reconfigure(&unmanaged, &[]).unwrap();
        store.remove().unwrap();
        let e = sink.drain().unwrap_err();
        assert!(
            matches!(e, GrantError::Unmanaged { .. })
                && e.to_string().contains("manage_ruleset = true"),
            "{e}"
        );
        // Nor does a failed write make it create the table behind the admin's back.
        assert!(matches!(
            sink.restore(&[g]).unwrap_err(),
            GrantError::Unmanaged { .. }
        ));
        assert!(matches!(
            store.list().unwrap_err(),
            GrantError::NotLoaded { .. }
        ));
        sink.reconfigure(&managed, &[]).unwrap();
        sink.restore(&[]).unwrap();
        store.remove().unwrap();
        assert!(matches!(
            store.list().unwrap_err(),
            GrantError::NotLoaded { .. }
        ));
    })
    .join()
    .unwrap();
}

/// What the backend says when the kernel refuses it (root, in a namespace of its own): a
/// table of the same name that is not ours refuses the install with the `nft delete table`
/// to run and is left as it was; grants written into a table someone removed fail with
/// the object and the fix (the daemon then re-creates it); a revocation that fails says
/// how to delete the grant by hand and within how long it expires anyway.
#[test]
fn a_table_that_is_wrong_or_gone_is_reported_with_the_fix() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let nft = |args: &str| {
        let out = std::process::Command::new("nft")
            .args(args.split(' '))
            .output()
            .expect("run nft");
        assert!(out.status.success(), "nft {args}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only this thread (and the `nft` it starts)
        // to a new network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let managed = config("", "\"tcp/22\"");
        nft("add table inet nfknock");
        nft("add set inet nfknock allow_v4 { type ipv4_addr ; }");
        let e = NftSet::open(&managed, true).err().unwrap();
        let text = e.report().to_string();
        assert!(
            matches!(e, GrantError::Install { .. })
                && text.starts_with("cannot install table `inet nfknock`: set `inet nfknock allow_v4` exists but not with the type and flags nfknock needs; remove the old table with `nft delete table inet nfknock`"),
            "{text}"
        );
        assert!(
            nft("list table inet nfknock").contains("type ipv4_addr\n"),
            "the admin's table was changed"
        );
        nft("delete table inet nfknock");

        let mut sink = NftSet::open(&managed, true).unwrap();
        let g = Grant {
            addr: "198.51.100.7".parse().unwrap(),
            access: "tcp/22".parse().unwrap(),
            timeout: Duration::from_secs(30),
            nat: None,
            gateway: None,
        };
        nft("delete table inet nfknock");
        let text = sink.write(&[g]).unwrap_err().report().to_string();
        assert!(
            text.starts_with("cannot write 1 grant(s) to table `inet nfknock`: cannot add elements to set `inet nfknock allow_v4`: not found; load nft/nfknock.nft"),
            "{text}"
        );
        // Gone with the table: nothing is open, so revoking it is no error.
        sink.revoke(&[g]).unwrap();
        // A set someone re-created with another type cannot take the deletion.
        nft("add table inet nfknock");
        nft("add set inet nfknock allow_v4 { type ipv4_addr ; }");
        let e = sink.revoke(&[g]).unwrap_err();
        let text = e.report().to_string();
        assert!(
            matches!(e, GrantError::Revoke { within_secs: 30, .. })
                && text.starts_with("cannot revoke 1 grant(s) in table `inet nfknock` (they stay open until they expire, within 30s: delete them by hand, e.g. `nft delete element inet nfknock allow_v4 { ADDR . tcp . PORT }`)"),
            "{text}"
        );
        nft("delete table inet nfknock");
        // The change is noticed, and the repair brings the table back with the grant.
        assert!(sink.drain().unwrap());
        sink.restore(&[g]).unwrap();
        assert!(nft("list set inet nfknock allow_v4").contains("198.51.100.7 . tcp . 22"));
    })
    .join()
    .unwrap();
}

/// The nft error stays the source of the grant error: its text (which set, and the fix)
/// reaches the log line, and a caller can still tell what the kernel said.
#[test]
fn nft_errors_stay_the_source_of_grant_errors() {
    let e = GrantError::Write {
        object: table(),
        count: 1,
        source: NftError::NotFound {
            op: "add elements to",
            object: Object::Set(SET_ALLOW_V4),
        }
        .into(),
    };
    let text = e.report().to_string();
    assert!(
        text.starts_with("cannot write 1 grant(s) to table `inet nfknock`: cannot add elements to set `inet nfknock allow_v4`: not found; load nft/nfknock.nft"),
        "{text}"
    );
    let source = std::error::Error::source(&e).unwrap();
    assert!(matches!(
        source.downcast_ref::<NftError>(),
        Some(NftError::NotFound { .. })
    ));
    let unmanaged = GrantError::Unmanaged {
        object: table(),
        fix: LOAD_IT,
    };
    assert!(
        unmanaged.to_string().contains("manage_ruleset = false")
            && unmanaged.to_string().contains("nft -f nft/nfknock.nft"),
        "{unmanaged}"
    );
}
