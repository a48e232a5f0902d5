//! The grant seam: what the daemon asks of whatever holds its grants, in terms that name no
//! backend. A [`Grant`] is `addr . proto/port` for a while; a [`GrantSink`] writes, refreshes,
//! revokes and restores grants and tells when someone else changed its objects; a
//! [`GrantStore`] lists or removes what a backend left in the kernel (`nfknock status`,
//! `nfknock uninstall`); [`DryRun`] wraps any sink and writes nothing.
//!
//! This file does no I/O (but [`DryRun`]'s log lines): types, traits, the dry-run wrapper, and
//! [`open`]/[`existing`], which only pick the backend named by `[server] backend`. Each backend
//! is one file beside it and does its I/O there:
//!
//! | file | backend | I/O |
//! | --- | --- | --- |
//! | `nft_set.rs` | `nftables` (default): set elements with timeouts in table `inet nfknock`, which it owns (the gate, the knock rules) | through [`crate::netfilter::nft`] |
//! | `ipset.rs` | `ipset`: elements with timeouts in two `hash:ip,port` ipsets, which it owns; the host's iptables rules match them | through [`crate::netfilter::ipset`] |
//!
//! Adding a backend: a file here implementing [`GrantSink`] (and [`GrantStore`]), a variant of
//! [`config::Backend`], and its arm in [`open`] and [`existing`].
//!
//! The sink is a trait object: the daemon calls it once per burst of knocks (one [`write`] for
//! up to 256 of them), where one indirect call costs nanoseconds against microseconds of
//! netlink per grant; dynamic dispatch lets [`DryRun`] wrap whichever backend was chosen.
//!
//! [`write`]: GrantSink::write

pub mod ipset;
pub mod nft_set;

use std::net::IpAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use tracing::info;

use crate::access::{Access, GatewayTo, NatTarget};
use crate::config::{self, Config};

/// `addr` may open `access` for `timeout` (then the backend removes it by itself); with `nat`,
/// its new flows to `access` are forwarded to the target instead (DNAT, and SNAT or
/// masquerade as the target says), and expire with the grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub addr: IpAddr,
    pub access: Access,
    /// Each backend rounds it up to its own resolution (nftables: milliseconds).
    pub timeout: Duration,
    /// Where the flows this grant opens are forwarded (config `nat`); `None`: to this host.
    pub nat: Option<NatTarget>,
    /// A gateway grant (config `gateway`, fwknop `FORWARD_ALL`): `addr` may open new flows
    /// into this network, any port, through this host; it opens no port of this host (`access`
    /// is the one whose knock opened it, for logs) and has no `nat`. A backend without a
    /// forward gate never gets one (config refuses `gateway` for it).
    pub gateway: Option<GatewayTo>,
}

/// A key hint for the kernel's prefilter (issue 11): the 8 bytes a native knock carries after
/// its version byte, and the milliseconds until its epoch leaves the acceptance window.
pub type KeyHint = ([u8; 8], u64);

/// The kernel's prefilter as a backend reads it back, for `nfknock status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefilterStats {
    /// Key hints held.
    pub hints: usize,
    /// (packets, bytes) of native-length junk dropped before the queue.
    pub junk_native: (u64, u64),
    /// (packets, bytes) of fwknop-length packets from outside the fwknop sources dropped.
    pub junk_fwknop: (u64, u64),
}

/// A grant read back from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveGrant {
    /// As written (`timeout` is the whole length it was given).
    pub grant: Grant,
    /// Time until the backend removes it.
    pub left: Duration,
}

/// The error of a backend's cause, kept as the source of a [`GrantError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A grant operation that failed: which one, on which of the backend's objects, and what to do
/// where the daemon does not do it by itself. The backend's own error is the source (not
/// repeated in this message: `main` prints the chain, the daemon logs [`GrantError::report`]).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("cannot open the {backend} grant backend")]
    Open {
        backend: &'static str,
        #[source]
        source: Cause,
    },
    #[error("cannot install {object}")]
    Install {
        object: String,
        #[source]
        source: Cause,
    },
    #[error("cannot look for {object}")]
    Find {
        object: String,
        #[source]
        source: Cause,
    },
    #[error("{object} is not loaded; {fix}")]
    NotLoaded { object: String, fix: &'static str },
    #[error("cannot write {count} grant(s) to {object}")]
    Write {
        object: String,
        count: usize,
        #[source]
        source: Cause,
    },
    #[error("cannot revoke {count} grant(s) in {object} (they stay open until they expire, within {within_secs}s: delete them by hand, e.g. `{by_hand}`)")]
    Revoke {
        object: String,
        count: usize,
        within_secs: u64,
        by_hand: String,
        #[source]
        source: Cause,
    },
    #[error("cannot re-create {object} with {count} live grant(s)")]
    Restore {
        object: String,
        count: usize,
        #[source]
        source: Cause,
    },
    #[error("cannot update {object} for the new config")]
    Reconfigure {
        object: String,
        #[source]
        source: Cause,
    },
    #[error("cannot write {count} key hint(s) to {object} (native knocks whose hint is missing are dropped in the kernel until a later try succeeds; nfknock tries again within 30 s, or set `prefilter = false`)")]
    Hints {
        object: String,
        count: usize,
        #[source]
        source: Cause,
    },
    #[error("cannot read the changes made to {object}")]
    Watch {
        object: String,
        #[source]
        source: Cause,
    },
    #[error("{object} was changed by someone else and manage_ruleset = false, so nfknock does not re-create it; {fix}")]
    Unmanaged { object: String, fix: &'static str },
    #[error("cannot list the grants in {object}")]
    List {
        object: String,
        #[source]
        source: Cause,
    },
    #[error("cannot remove {object}")]
    Remove {
        object: String,
        #[source]
        source: Cause,
    },
}

impl GrantError {
    /// This error and its causes on one line, `what failed: why: ...`, for a log line.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// [`GrantError::report`]: the whole chain of causes, joined by `: `.
pub struct Report<'a>(&'a GrantError);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Where the daemon's grants go. Every method but [`GrantSink::objects`] and
/// [`GrantSink::event_fd`] may do I/O; none blocks longer than the backend's own reply
/// timeout.
pub trait GrantSink {
    /// The backend's objects, for messages: e.g. ``table `inet nfknock` ``.
    fn objects(&self) -> &str;
    /// Add `grants`, or refresh those present so each lasts its full timeout again (one atomic
    /// batch where the backend has batches).
    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError>;
    /// Remove `grants` before their time (a revocation); grants already gone are no error.
    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError>;
    /// Re-create the backend's objects as configured (what is missing of them) and put
    /// `grants` back in, with the time each has left: after someone else removed or changed
    /// them ([`GrantSink::drain`] said so), or a write failed.
    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError>;
    /// Take a reloaded config. If the objects must change (e.g. the ports the gate protects),
    /// re-create them holding `keep`, the live grants the new config still authorises. On an
    /// error nothing changed: the old config stays in force.
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError>;
    /// Readable (`poll(2)`) when [`GrantSink::drain`] has something to read; `None` if this
    /// backend cannot notice changes made by others.
    fn event_fd(&self) -> Option<RawFd>;
    /// Read pending change events without blocking: `Ok(true)` if our objects may have lost
    /// something and should be restored; [`GrantError::Unmanaged`] if they did but are not
    /// ours to restore.
    fn drain(&mut self) -> Result<bool, GrantError>;
    /// Do grants really reach the backend? (Not in a [`DryRun`]: nothing to restore after a
    /// flush.)
    fn writes_grants(&self) -> bool {
        true
    }
    /// Put `hints` into the kernel's prefilter, if this backend has one (the nftables one
    /// does: its knock chain drops native knocks whose hint it does not hold). With `replace`
    /// they take the place of every hint held, in one atomic step. Default: no prefilter.
    fn write_hints(&mut self, hints: &[KeyHint], replace: bool) -> Result<(), GrantError> {
        let _ = (hints, replace);
        Ok(())
    }
    /// The kernel's prefilter as it stands (hints held, junk dropped), for the metrics.
    /// Default: none.
    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        Ok(None)
    }
}

impl<S: GrantSink + ?Sized> GrantSink for Box<S> {
    fn objects(&self) -> &str {
        (**self).objects()
    }
    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        (**self).write(grants)
    }
    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        (**self).revoke(grants)
    }
    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        (**self).restore(grants)
    }
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError> {
        (**self).reconfigure(config, keep)
    }
    fn event_fd(&self) -> Option<RawFd> {
        (**self).event_fd()
    }
    fn drain(&mut self) -> Result<bool, GrantError> {
        (**self).drain()
    }
    fn writes_grants(&self) -> bool {
        (**self).writes_grants()
    }
    fn write_hints(&mut self, hints: &[KeyHint], replace: bool) -> Result<(), GrantError> {
        (**self).write_hints(hints, replace)
    }
    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        (**self).prefilter()
    }
}

/// A backend's objects as found in the kernel, opened without a config and without changing
/// anything: what `nfknock status` and `nfknock uninstall` need.
pub trait GrantStore {
    /// The backend's objects, for messages.
    fn objects(&self) -> &str;
    /// Every live grant; [`GrantError::NotLoaded`] if the backend's objects are not there.
    fn list(&mut self) -> Result<Vec<LiveGrant>, GrantError>;
    /// Remove the backend's objects and every grant in them; already gone is no error.
    fn remove(&mut self) -> Result<(), GrantError>;
    /// The kernel's prefilter, if this backend has one. Default: none.
    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        Ok(None)
    }
}

/// `nfknock serve --dry-run`: the backend's objects are set up, repaired and reconfigured as
/// asked, but no grant is written, refreshed, restored or revoked; each is only logged as it
/// would have been.
#[derive(Debug)]
pub struct DryRun<S>(pub S);

impl<S: GrantSink> GrantSink for DryRun<S> {
    fn objects(&self) -> &str {
        self.0.objects()
    }

    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        for g in grants {
            let to = g.nat.map(|n| n.to.to_string());
            info!(addr = %g.addr, access = %g.access, timeout_ms = g.timeout.as_millis() as u64, forwarded_to = to.as_deref().unwrap_or("-"), "dry run: would add grant");
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        for g in grants {
            info!(addr = %g.addr, access = %g.access, "dry run: would revoke grant");
        }
        Ok(())
    }

    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        for g in grants {
            info!(addr = %g.addr, access = %g.access, "dry run: would restore grant");
        }
        self.0.restore(&[])
    }

    fn reconfigure(&mut self, config: &Config, _keep: &[Grant]) -> Result<(), GrantError> {
        self.0.reconfigure(config, &[])
    }

    fn event_fd(&self) -> Option<RawFd> {
        self.0.event_fd()
    }

    fn drain(&mut self) -> Result<bool, GrantError> {
        self.0.drain()
    }

    fn writes_grants(&self) -> bool {
        false
    }

    /// Key hints are not grants: without them the prefilter would drop every native knock, so
    /// a dry run writes them as the real daemon does.
    fn write_hints(&mut self, hints: &[KeyHint], replace: bool) -> Result<(), GrantError> {
        self.0.write_hints(hints, replace)
    }

    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        self.0.prefilter()
    }
}

/// How [`open`] sets the backend up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Write no grant, log each instead ([`DryRun`]).
    pub dry_run: bool,
    /// Close the protected ports. `false` only for a dry run without `--with-gate`: knocks are
    /// still received and judged, but nothing that was open closes.
    pub gate: bool,
}

/// Open the backend `config` names and set up its objects (or, with `manage_ruleset = false`,
/// check that they are loaded), for the daemon.
pub fn open(config: &Config, options: Options) -> Result<Box<dyn GrantSink>, GrantError> {
    let sink: Box<dyn GrantSink> = match config.server.backend {
        config::Backend::Nftables => Box::new(nft_set::NftSet::open(config, options.gate)?),
        config::Backend::Ipset => Box::new(ipset::IpsetSink::open(config)?),
    };
    Ok(if options.dry_run {
        Box::new(DryRun(sink))
    } else {
        sink
    })
}

/// Open what `backend` left in the kernel, changing nothing (`nfknock status`, `uninstall`);
/// `ipset` names the sets of the `ipset` backend.
pub fn existing(
    backend: config::Backend,
    ipset: &config::IpsetNames,
) -> Result<Box<dyn GrantStore>, GrantError> {
    Ok(match backend {
        config::Backend::Nftables => Box::new(nft_set::NftStore::open()?),
        config::Backend::Ipset => Box::new(ipset::IpsetStore::open(ipset)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        written: Vec<Grant>,
        revoked: Vec<Grant>,
        restored: Vec<Vec<Grant>>,
        reconfigured: Vec<Vec<Grant>>,
    }

    impl GrantSink for Recorder {
        fn objects(&self) -> &str {
            "the recorder"
        }
        fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
            self.written.extend_from_slice(grants);
            Ok(())
        }
        fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
            self.revoked.extend_from_slice(grants);
            Ok(())
        }
        fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
            self.restored.push(grants.to_vec());
            Ok(())
        }
        fn reconfigure(&mut self, _: &Config, keep: &[Grant]) -> Result<(), GrantError> {
            self.reconfigured.push(keep.to_vec());
            Ok(())
        }
        fn event_fd(&self) -> Option<RawFd> {
            Some(7)
        }
        fn drain(&mut self) -> Result<bool, GrantError> {
            Ok(true)
        }
    }

    /// A dry run over any sink passes the set-up of its objects through (repairs and reloads
    /// re-create them, holding no grant) and its change events, but writes, restores and
    /// revokes no grant.
    #[test]
    fn a_dry_run_sets_up_the_objects_of_any_sink_but_writes_no_grant() {
        let g = Grant {
            addr: "192.0.2.7".parse().unwrap(),
            access: "tcp/22".parse().unwrap(),
            timeout: Duration::from_secs(30),
            nat: None,
            gateway: None,
        };
        let config = crate::config::parse_str(
            "[server]\n[[client]]\nname = \"a\"\nkey = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\nallow = [\"tcp/22\"]\n",
            std::path::Path::new("/etc/nfknock/nfknock.toml"),
        )
        .unwrap();
        let mut dry = DryRun(Recorder::default());
        assert!(!dry.writes_grants());
        assert!(Recorder::default().writes_grants());
        dry.write(&[g]).unwrap();
        dry.revoke(&[g]).unwrap();
        dry.restore(&[g]).unwrap();
        dry.reconfigure(&config, &[g]).unwrap();
        assert_eq!((dry.event_fd(), dry.drain().unwrap()), (Some(7), true));
        assert_eq!(dry.objects(), "the recorder");
        let r = &dry.0;
        assert!(r.written.is_empty() && r.revoked.is_empty());
        assert_eq!(r.restored, [vec![]]);
        assert_eq!(r.reconfigured, [vec![]]);
    }

    /// A backend's error stays the source, and the message names the operation, the object
    /// and what to do.
    #[test]
    fn grant_errors_name_the_operation_and_object_and_keep_the_cause() {
        let cause = std::io::Error::from_raw_os_error(libc::EPERM);
        let e = GrantError::Revoke {
            object: "table `inet nfknock`".into(),
            count: 2,
            within_secs: 30,
            by_hand: "nft delete element ...".into(),
            source: Box::new(cause),
        };
        let text = e.report().to_string();
        assert!(
            text.starts_with("cannot revoke 2 grant(s) in table `inet nfknock` (")
                && text.contains("within 30s")
                && text.contains("`nft delete element ...`)")
                && text.ends_with(&std::io::Error::from_raw_os_error(libc::EPERM).to_string()),
            "{text}"
        );
        assert!(
            !e.to_string().contains("not permitted"),
            "the cause is not repeated"
        );
        let source = std::error::Error::source(&e).unwrap();
        assert_eq!(
            source
                .downcast_ref::<std::io::Error>()
                .unwrap()
                .raw_os_error(),
            Some(libc::EPERM)
        );
    }
}
