//! The `nftables` backend (the default): each grant is an element with a timeout in the allow
//! set of its family (`allow_v4`, `allow_v6`) of table `inet nfknock`; the kernel enforces the
//! gate and expires the grant. The backend owns the whole table: it builds the ruleset a config
//! asks for ([`ruleset_spec`]), installs it, re-creates it after a flush, and follows a reload.
//! Its I/O goes through [`crate::netfilter::nft`] ([`Nft`] for commands, [`NftEvents`] to notice
//! a flush); [`NftError`]s become [`GrantError`]s with the nft error kept as their source.

use std::time::Duration;

use tracing::{info, warn};

use super::{Grant, GrantError, GrantSink, GrantStore, LiveGrant};
use crate::access::format_list;
use crate::config::{self, Config};
use crate::netfilter::nft::{
    Element, Nft, NftError, NftEvents, Object, QueueBackend, RulesetSpec, FAMILY, SET_ALLOW_V4,
    TABLE,
};
use crate::wire::native;

/// What to do when the table is missing or changed and nfknock may not create it.
const LOAD_IT: &str =
    "load nft/nfknock.nft (`nft -f nft/nfknock.nft`) or set manage_ruleset = true";

/// The ruleset a config asks for.
pub fn ruleset_spec(config: &Config, backend: QueueBackend) -> RulesetSpec {
    RulesetSpec {
        knock_port: config.server.port,
        queue: config.server.queue,
        backend,
        protect: config.server.protect.clone(),
        native_len: native::PACKET_LEN as u16,
        fwknop: config
            .clients
            .iter()
            .any(|c| matches!(c.credential, config::Credential::Fwknop(_))),
        rate_limit: config.server.rate_limit,
        rate_limit_v4_prefix: config.server.rate_limit_v4_prefix,
        rate_limit_v6_prefix: config.server.rate_limit_v6_prefix,
        gate_input: true,
        gate_forward: config.server.gate_forward,
    }
}

/// `spec` without its gate rules unless `gate`: a dry run without `--with-gate` still queues
/// and judges knocks, but closes nothing that was open.
fn gated(spec: RulesetSpec, gate: bool) -> RulesetSpec {
    if gate {
        spec
    } else {
        RulesetSpec {
            gate_input: false,
            gate_forward: false,
            ..spec
        }
    }
}

/// The ruleset a reloaded `config` asks for, given the running one: the queue number stays
/// (a new one takes effect at the next restart, when the daemon binds it), and so do the
/// kernel's queue backend and the gate choice of the command line.
fn respec(current: &RulesetSpec, gate: bool, config: &Config) -> RulesetSpec {
    RulesetSpec {
        queue: current.queue,
        ..gated(ruleset_spec(config, current.backend), gate)
    }
}

/// The table, for messages: ``table `inet nfknock` ``.
fn table() -> String {
    Object::Table.to_string()
}

/// `timeout` in the kernel's milliseconds, rounded up: a grant never ends before its time, and
/// a timeout under a millisecond does not become 0 (which the kernel takes for "never").
fn millis(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

fn element(g: &Grant) -> Element {
    Element {
        addr: g.addr,
        access: g.access,
        timeout_ms: millis(g.timeout),
    }
}

/// Fill `buf` (cleared first; reused, so a burst allocates nothing once it has grown) with the
/// elements of `grants`.
fn elements<'b>(buf: &'b mut Vec<Element>, grants: &[Grant]) -> &'b [Element] {
    buf.clear();
    buf.extend(grants.iter().map(element));
    buf
}

/// The daemon's nftables backend: the command socket, the event subscription, and the ruleset
/// it keeps installed.
pub struct NftSet {
    nft: Nft,
    events: NftEvents,
    /// The ruleset installed (or, with `manage_ruleset = false`, expected).
    spec: RulesetSpec,
    /// Install the gate rules (false for a dry run without `--with-gate`).
    gate: bool,
    /// `manage_ruleset`: create the table and re-create it after a flush.
    manage: bool,
    object: String,
    buf: Vec<Element>,
}

impl NftSet {
    /// Open the nftables sockets, find how this kernel queues packets, and install the table
    /// `config` asks for (gated unless `gate` is false), or with `manage_ruleset = false` check
    /// that it is loaded.
    pub fn open(config: &Config, gate: bool) -> Result<NftSet, GrantError> {
        let open = |source: NftError| GrantError::Open {
            backend: "nftables",
            source: source.into(),
        };
        let mut nft = Nft::open().map_err(open)?;
        let backend = nft.detect_queue_backend().map_err(open)?;
        match backend {
            QueueBackend::Native => {
                info!("kernel has nft_queue: knocks are diverted with the native `queue` expression")
            }
            QueueBackend::Compat => info!(
                "kernel has no nft_queue: knocks are diverted with the xt NFQUEUE target (nft_compat)"
            ),
        }
        let spec = gated(ruleset_spec(config, backend), gate);
        let object = table();
        if config.server.manage_ruleset {
            nft.install(&spec, &[])
                .map_err(|source| GrantError::Install {
                    object: object.clone(),
                    source: source.into(),
                })?;
            if gate {
                info!(port = spec.knock_port, queue = spec.queue, protect = %format_list(&spec.protect), "gate installed");
            } else {
                warn!(port = spec.knock_port, queue = spec.queue, "dry run: knocks are queued but no gate is installed, so nothing closes (add --with-gate to test the gate)");
            }
        } else {
            let loaded = nft.table_exists().map_err(|source| GrantError::Find {
                object: object.clone(),
                source: source.into(),
            })?;
            if !loaded {
                return Err(GrantError::NotLoaded {
                    object,
                    fix: LOAD_IT,
                });
            }
        }
        let events = NftEvents::open(&[nft.portid()]).map_err(|source| GrantError::Watch {
            object: object.clone(),
            source: source.into(),
        })?;
        Ok(NftSet {
            nft,
            events,
            spec,
            gate,
            manage: config.server.manage_ruleset,
            object,
            buf: Vec::new(),
        })
    }
}

impl GrantSink for NftSet {
    fn objects(&self) -> &str {
        &self.object
    }

    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        let elems = elements(&mut self.buf, grants);
        self.nft.upsert(elems).map_err(|source| GrantError::Write {
            object: self.object.clone(),
            count: grants.len(),
            source: source.into(),
        })
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        let elems = elements(&mut self.buf, grants);
        self.nft.delete(elems).map_err(|source| GrantError::Revoke {
            object: self.object.clone(),
            count: grants.len(),
            within_secs: grants
                .iter()
                .map(|g| millis(g.timeout).div_ceil(1000))
                .max()
                .unwrap_or(0),
            by_hand: format!(
                "nft delete element {FAMILY} {TABLE} {SET_ALLOW_V4} {{ ADDR . tcp . PORT }}"
            ),
            source: source.into(),
        })
    }

    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        // With manage_ruleset = false the admin owns the table: a failed write must not make
        // nfknock create one (the same rule as for a flush noticed by `drain`).
        if !self.manage {
            return Err(GrantError::Unmanaged {
                object: self.object.clone(),
                fix: LOAD_IT,
            });
        }
        let elems = elements(&mut self.buf, grants);
        self.nft
            .install(&self.spec, elems)
            .map_err(|source| GrantError::Restore {
                object: self.object.clone(),
                count: grants.len(),
                source: source.into(),
            })
    }

    /// Re-installs the table (one atomic batch, with `keep`) only if the ruleset the new config
    /// asks for differs from the running one and `manage_ruleset` is on.
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError> {
        let spec = respec(&self.spec, self.gate, config);
        if spec != self.spec && config.server.manage_ruleset {
            let elems = elements(&mut self.buf, keep);
            self.nft
                .install(&spec, elems)
                .map_err(|source| GrantError::Reconfigure {
                    object: self.object.clone(),
                    source: source.into(),
                })?;
        }
        self.spec = spec;
        self.manage = config.server.manage_ruleset;
        Ok(())
    }

    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.events.as_raw_fd())
    }

    fn drain(&mut self) -> Result<bool, GrantError> {
        let changed = self.events.drain().map_err(|source| GrantError::Watch {
            object: self.object.clone(),
            source: source.into(),
        })?;
        if changed && !self.manage {
            return Err(GrantError::Unmanaged {
                object: self.object.clone(),
                fix: LOAD_IT,
            });
        }
        Ok(changed)
    }
}

/// The table as found in the kernel, for `nfknock status` and `nfknock uninstall`.
pub struct NftStore {
    nft: Nft,
    object: String,
}

impl NftStore {
    /// Open the command socket; nothing is changed.
    pub fn open() -> Result<NftStore, GrantError> {
        let nft = Nft::open().map_err(|source| GrantError::Open {
            backend: "nftables",
            source: source.into(),
        })?;
        Ok(NftStore {
            nft,
            object: table(),
        })
    }
}

impl GrantStore for NftStore {
    fn objects(&self) -> &str {
        &self.object
    }

    fn list(&mut self) -> Result<Vec<LiveGrant>, GrantError> {
        let failed = |object: &str, source: NftError| GrantError::List {
            object: object.to_string(),
            source: source.into(),
        };
        if !self
            .nft
            .table_exists()
            .map_err(|e| failed(&self.object, e))?
        {
            return Err(GrantError::NotLoaded {
                object: self.object.clone(),
                fix: "start `nfknock serve` or load nft/nfknock.nft",
            });
        }
        let live = self.nft.list().map_err(|e| failed(&self.object, e))?;
        Ok(live
            .into_iter()
            .map(|e| LiveGrant {
                grant: Grant {
                    addr: e.addr,
                    access: e.access,
                    timeout: Duration::from_millis(e.timeout_ms),
                },
                left: Duration::from_millis(e.expires_ms),
            })
            .collect())
    }

    fn remove(&mut self) -> Result<(), GrantError> {
        self.nft
            .remove_table()
            .map_err(|source| GrantError::Remove {
                object: self.object.clone(),
                source: source.into(),
            })
    }
}

#[cfg(test)]
mod tests {
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
}
