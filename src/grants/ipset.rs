//! The `ipset` backend, for hosts that filter with iptables or firewalld: each grant is an
//! element `addr,proto:port` with a timeout in the `hash:ip,port` set of its family
//! (`[server] ipset_v4`, `ipset_v6`); the kernel expires it. The backend owns the two sets (it
//! creates them, and re-creates them with the live grants when someone destroys them), not the
//! rules that match them: those are the host's (`nfknock ruleset --iptables` prints them).
//! Its I/O goes through [`crate::netfilter::ipset`]; [`IpsetError`]s become [`GrantError`]s
//! with the ipset error kept as their source.
//!
//! ipset sends no change events: the daemon asks, once a tick, whether the sets are still
//! there ([`GrantSink::drain`], one HEADER request per set).

use std::time::Duration;

use tracing::{info, warn};

use super::{Grant, GrantError, GrantSink, GrantStore, LiveGrant};
use crate::config::{Config, IpsetNames};
use crate::netfilter::ipset::{timeout_secs, Element, Ipset, IpsetError, SET_TYPE};

/// What to do when the sets are missing and nfknock may not create them.
const CREATE_THEM: &str = "create them (`nfknock ruleset --iptables` prints the `ipset create` lines) or set manage_ruleset = true";

/// The two sets, for messages: ``ipsets `nfknock_allow_v4` and `nfknock_allow_v6` ``.
fn object(names: &IpsetNames) -> String {
    format!("ipsets `{}` and `{}`", names.v4, names.v6)
}

/// The two sets as one thing that is missing: ``the ipset pair `a`/`b` `` (is not loaded).
fn pair(names: &IpsetNames) -> String {
    format!("the ipset pair `{}`/`{}`", names.v4, names.v6)
}

fn element(g: &Grant) -> Element {
    Element {
        addr: g.addr,
        access: g.access,
        timeout_s: timeout_secs(g.timeout),
    }
}

/// Fill `bufs` (cleared; reused, so a burst allocates nothing once they have grown) with the
/// elements of `grants`, IPv4 in `bufs[0]`, IPv6 in `bufs[1]`.
fn split(bufs: &mut [Vec<Element>; 2], grants: &[Grant]) {
    bufs.iter_mut().for_each(Vec::clear);
    // A gateway grant opens no port of this host, and this backend has no forward gate
    // (config refuses `gateway` with it): it must never become a port grant here.
    for g in grants.iter().filter(|g| g.gateway.is_none()) {
        bufs[usize::from(g.addr.is_ipv6())].push(element(g));
    }
}

fn boxed(e: IpsetError) -> super::Cause {
    Box::new(e)
}

/// The daemon's ipset backend.
pub struct IpsetSink {
    ipset: Ipset,
    names: IpsetNames,
    /// `manage_ruleset`: create the sets, and re-create them when they are destroyed.
    manage: bool,
    object: String,
    bufs: [Vec<Element>; 2],
    /// What the last check of the sets reported, so a condition that lasts (a set of another
    /// type in the way, sets missing under `manage_ruleset = false`) is logged once, not once a
    /// tick; `None` while the sets are fine.
    reported: Option<String>,
}

impl IpsetSink {
    /// Open the ipset socket and create the sets `config` names (or, with
    /// `manage_ruleset = false`, check that they exist).
    pub fn open(config: &Config) -> Result<IpsetSink, GrantError> {
        let ipset = Ipset::open().map_err(|e| GrantError::Open {
            backend: "ipset",
            source: boxed(e),
        })?;
        let names = config.server.ipset.clone();
        let mut sink = IpsetSink {
            ipset,
            object: object(&names),
            names,
            manage: config.server.manage_ruleset,
            bufs: [Vec::new(), Vec::new()],
            reported: None,
        };
        if sink.manage {
            sink.create().map_err(|source| GrantError::Install {
                object: sink.object.clone(),
                source,
            })?;
            info!(v4 = %sink.names.v4, v6 = %sink.names.v6, "grants go to ipsets of type {SET_TYPE}; the gate is the host's iptables rules (`nfknock ruleset --iptables`)");
        } else if sink.missing().map_err(|source| GrantError::Find {
            object: sink.object.clone(),
            source,
        })? {
            return Err(GrantError::NotLoaded {
                object: pair(&sink.names),
                fix: CREATE_THEM,
            });
        }
        Ok(sink)
    }

    /// Create both sets (those that exist stay as they are).
    fn create(&mut self) -> Result<(), super::Cause> {
        for v6 in [false, true] {
            self.ipset.create(self.names.of(v6), v6).map_err(boxed)?;
        }
        Ok(())
    }

    /// Is either set missing, or not a set of our type and family?
    fn missing(&mut self) -> Result<bool, super::Cause> {
        for v6 in [false, true] {
            let family = if v6 {
                crate::netfilter::netlink::NFPROTO_IPV6
            } else {
                crate::netfilter::netlink::NFPROTO_IPV4
            };
            match self.ipset.header(self.names.of(v6)).map_err(boxed)? {
                None => return Ok(true),
                Some(h) if h.type_name != SET_TYPE || h.family != family => {
                    return Err(boxed(IpsetError::Incompatible {
                        set: self.names.of(v6).to_string(),
                        v6,
                    }))
                }
                Some(_) => {}
            }
        }
        Ok(false)
    }

    /// Add (or delete) `grants` in the sets of their families.
    fn put(&mut self, add: bool, grants: &[Grant]) -> Result<(), IpsetError> {
        split(&mut self.bufs, grants);
        for v6 in [false, true] {
            let elems = &self.bufs[usize::from(v6)];
            if !elems.is_empty() {
                self.ipset.write(add, self.names.of(v6), v6, elems)?;
            }
        }
        Ok(())
    }
}

impl GrantSink for IpsetSink {
    fn objects(&self) -> &str {
        &self.object
    }

    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        self.put(true, grants).map_err(|e| GrantError::Write {
            object: self.object.clone(),
            count: grants.len(),
            source: boxed(e),
        })
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        self.put(false, grants).map_err(|e| GrantError::Revoke {
            object: self.object.clone(),
            count: grants.len(),
            within_secs: grants
                .iter()
                .map(|g| u64::from(timeout_secs(g.timeout)))
                .max()
                .unwrap_or(0),
            by_hand: format!("ipset del {} ADDR,tcp:PORT", self.names.v4),
            source: boxed(e),
        })
    }

    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        if !self.manage {
            return Err(GrantError::Unmanaged {
                object: self.object.clone(),
                fix: CREATE_THEM,
            });
        }
        let failed = |object: &str, source| GrantError::Restore {
            object: object.to_string(),
            count: grants.len(),
            source,
        };
        self.create().map_err(|e| failed(&self.object, e))?;
        self.put(true, grants)
            .map_err(|e| failed(&self.object, boxed(e)))
    }

    /// New set names: the new sets are created holding `keep`; the old ones stay (the host's
    /// rules may still match them; destroy them once the rules name the new ones).
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError> {
        let names = config.server.ipset.clone();
        let manage = config.server.manage_ruleset;
        if names != self.names {
            let old = std::mem::replace(&mut self.names, names);
            let result = if manage {
                self.create()
                    .and_then(|()| self.put(true, keep).map_err(boxed))
            } else {
                match self.missing() {
                    Ok(false) => self.put(true, keep).map_err(boxed),
                    Ok(true) => Err(boxed(IpsetError::NoSet {
                        op: "use",
                        set: object(&self.names),
                        v6: false,
                    })),
                    Err(e) => Err(e),
                }
            };
            if let Err(source) = result {
                let object = object(&self.names);
                self.names = old;
                return Err(GrantError::Reconfigure { object, source });
            }
            warn!(old_v4 = %old.v4, old_v6 = %old.v6, "grants now go to {}; the old ipsets stay until you destroy them (after the iptables rules name the new ones)", object(&self.names));
            self.object = object(&self.names);
        }
        self.manage = manage;
        Ok(())
    }

    fn event_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Are both sets still there? (Asked once a tick: ipset sends no events.) A problem is
    /// reported when it appears or changes, not again each tick while it lasts.
    fn drain(&mut self) -> Result<bool, GrantError> {
        let checked = self.missing().map_err(|source| GrantError::Watch {
            object: self.object.clone(),
            source,
        });
        let result = match checked {
            Ok(true) if !self.manage => Err(GrantError::Unmanaged {
                object: self.object.clone(),
                fix: CREATE_THEM,
            }),
            other => other,
        };
        match result {
            Err(e) => {
                let text = e.report().to_string();
                if self.reported.as_deref() == Some(text.as_str()) {
                    return Ok(false);
                }
                self.reported = Some(text);
                Err(e)
            }
            Ok(missing) => {
                self.reported = None;
                Ok(missing)
            }
        }
    }
}

/// The two sets as found in the kernel, for `nfknock status` and `nfknock uninstall`.
pub struct IpsetStore {
    ipset: Ipset,
    names: IpsetNames,
    object: String,
}

impl IpsetStore {
    /// Open the ipset socket; nothing is changed.
    pub fn open(names: &IpsetNames) -> Result<IpsetStore, GrantError> {
        let ipset = Ipset::open().map_err(|e| GrantError::Open {
            backend: "ipset",
            source: boxed(e),
        })?;
        Ok(IpsetStore {
            ipset,
            object: object(names),
            names: names.clone(),
        })
    }
}

impl GrantStore for IpsetStore {
    fn objects(&self) -> &str {
        &self.object
    }

    /// The kernel keeps no element's original timeout: `timeout` is the time left too.
    fn list(&mut self) -> Result<Vec<LiveGrant>, GrantError> {
        let mut out = Vec::new();
        let mut found = false;
        for v6 in [false, true] {
            let set = self.names.of(v6).to_string();
            let listed = self.ipset.list(&set).map_err(|e| GrantError::List {
                object: self.object.clone(),
                source: boxed(e),
            })?;
            let Some(elems) = listed else { continue };
            found = true;
            out.extend(elems.into_iter().map(|e| {
                let left = Duration::from_secs(u64::from(e.left_s));
                LiveGrant {
                    grant: Grant {
                        addr: e.addr,
                        access: e.access,
                        timeout: left,
                        nat: None,
                        gateway: None,
                    },
                    left,
                }
            }));
        }
        if !found {
            return Err(GrantError::NotLoaded {
                object: pair(&self.names),
                fix: "start `nfknock serve` with backend = \"ipset\" (it creates them)",
            });
        }
        Ok(out)
    }

    /// Destroy both sets; one still matched by an iptables rule is refused, naming the fix.
    fn remove(&mut self) -> Result<(), GrantError> {
        for v6 in [false, true] {
            let set = self.names.of(v6).to_string();
            self.ipset.destroy(&set).map_err(|e| GrantError::Remove {
                object: format!("ipset `{set}`"),
                source: boxed(e),
            })?;
        }
        Ok(())
    }
}
