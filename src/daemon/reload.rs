//! A reload (SIGHUP): the new config is loaded and checked, the grant backend follows it (the
//! nftables one re-installs the gate if it changed), and every live grant is judged against the
//! new config — kept under its client's new index, or revoked (unless
//! `revoke_on_reload = false`) with the reason.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use tracing::{error, info, warn};

use super::control::ReloadOutcome;
use super::live_grants::NO_OWNER;
use super::run::{Daemon, PacketSource};
use super::{release_freed_memory, unix_now};
use crate::access::{Access, GatewayTo, NatTarget};
use crate::config::{self, Config};
use crate::grants::{Grant, GrantSink};

/// Do the command settings the runner was started with differ in `new`?
fn commands_changed(old: &Config, new: &Config) -> bool {
    let of = |c: &Config| {
        let mut v: Vec<(String, crate::command::ClientCommands)> = c
            .clients
            .iter()
            .filter(|c| c.commands.any())
            .map(|c| (c.name.clone(), c.commands.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    old.server.max_commands != new.server.max_commands || of(old) != of(new)
}

impl<Q: PacketSource, S: GrantSink> Daemon<Q, S> {
    /// Reload the config file: `Ok` with the warnings an operator should read once the new
    /// config is in force, `Err` with the reason when it was refused (the running config
    /// stays). systemd hears `RELOADING=1` (with `MONOTONIC_USEC=`, which systemd 253+ requires
    /// of `Type=notify-reload` services) before and `READY=1` after, either way.
    pub(super) fn reload(&mut self) -> ReloadOutcome {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(false, &reloading);
        let outcome = self.apply_new_config();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        outcome
    }

    fn apply_new_config(&mut self) -> ReloadOutcome {
        match config::load(
            &self.config_path,
            &crate::sys::FsLoader,
            &crate::sys::SystemAccounts,
        ) {
            Err(e) => {
                error!("new config refused, the running one stays:\n{e}");
                Err(format!(
                    "{e}\n(fix it and check with `nfknock check --config {}`)",
                    self.config_path.display()
                ))
            }
            Ok(new) => {
                let old = self.engine.config().clone();
                let mut notes = Vec::new();
                if new.server.queue != old.server.queue
                    || new.server.queue_count != old.server.queue_count
                    || new.server.state_dir != old.server.state_dir
                    || new.server.user != old.server.user
                    || new.server.backend != old.server.backend
                {
                    let note = "`queue`, `state_dir`, `user` and `backend` changes take effect at the next restart (systemctl restart nfknock)";
                    warn!("{note}");
                    notes.push(note.to_string());
                }
                if commands_changed(&old, &new) {
                    warn!("command settings (`grant`, `on_grant`, `on_expire`, `commands`, `command_*`, `max_commands`) changed: the command runner keeps the ones it was started with (it was forked with root's rights, which the daemon no longer has); they take effect at the next restart (systemctl restart nfknock)");
                }
                for w in config::warnings(&new) {
                    warn!("{w}");
                    notes.push(w.to_string());
                }
                // Each live grant is judged against the new config: kept under its client's
                // new index, or revoked (unless `revoke_on_reload = false`) with the reason.
                let now = unix_now();
                let index: HashMap<&str, usize> = new
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name.as_str(), i))
                    .collect();
                // The NAT targets of the live grants (few), to judge them against the new `nat`.
                let nats = self.live.nat_targets();
                let judge = |addr: IpAddr, access: Access, owner: u32, gw: Option<GatewayTo>| {
                    let was = (owner != NO_OWNER)
                        .then(|| old.clients.get(owner as usize))
                        .flatten();
                    let now_at = was.and_then(|c| index.get(c.name.as_str()).copied());
                    if new.server.revoke_on_reload {
                        let is = now_at.and_then(|i| new.clients.get(i));
                        let nat = nats.get(&(addr, access)).copied();
                        let why = match gw {
                            Some(g) => gateway_revocation(was, is, addr, access, g, now),
                            None => revocation(was, is, addr, access, nat, now),
                        };
                        if let Some(why) = why {
                            return Err(why);
                        }
                    }
                    Ok(now_at
                        .and_then(|i| u32::try_from(i).ok())
                        .map_or(NO_OWNER, |i| i.min(NO_OWNER)))
                };
                // The grants the new config still authorises go in with the new gate if the
                // backend must re-create its objects, as after a flush (the table may be gone
                // right now).
                let keep = self
                    .live
                    .remaining_where(|a, acc, o, gw| judge(a, acc, o, gw).is_ok());
                if let Err(e) = self.grants.reconfigure(&new, &keep) {
                    let report = e.report();
                    error!("new config refused: {report}");
                    return Err(report.to_string());
                }
                let revoked = self.live.revise(judge);
                self.revoke(&old, &revoked);
                info!(
                    clients = new.clients.len(),
                    revoked = revoked.len(),
                    "config reloaded"
                );
                self.engine.reconfigure(Arc::new(new), unix_now());
                // The new client list's hints replace the old ones in one batch: a removed
                // client's hints leave the kernel as the new clients' arrive.
                self.sync_hints(true);
                release_freed_memory();
                Ok(notes)
            }
        }
    }

    /// Take grants the reloaded config no longer authorises out of the backend, and say so.
    /// [`LiveGrants`](super::live_grants::LiveGrants) has forgotten them already, so a flush
    /// repair never restores them.
    fn revoke(&mut self, old: &Config, revoked: &[(Grant, u32, &'static str)]) {
        if revoked.is_empty() {
            return;
        }
        for (e, owner, why) in revoked {
            let client = (*owner != NO_OWNER)
                .then(|| old.clients.get(*owner as usize))
                .flatten()
                .map_or("?", |c| c.name.as_str());
            warn!(client, addr = %e.addr, access = %e.access, reason = *why, "grant revoked by the new config");
        }
        let grants: Vec<Grant> = revoked.iter().map(|r| r.0).collect();
        if let Err(e) = self.grants.revoke(&grants) {
            error!("{}", e.report());
        }
    }
}

/// Why a live grant of `access` to `addr`, made for client `was` (`None`: a client no longer
/// known), is not authorised by `is` — the client of the same name in the reloaded config, if
/// any — at `now`; `None` if it still is. What a reload "narrows": the client is gone, its key
/// changed (a rotated key must not leave the old key's grants open), it expired, the access left
/// its `allow` or entered its `deny`, or — when the grant is for the knock's own source
/// (`require_source_match`) — the address left its `sources`. Not judged: `destinations` and,
/// without `require_source_match`, `sources` (the knock's addresses are not kept), and
/// `protect` (a grant for a port no longer gated opens nothing). A forwarded grant (`nat`, its
/// target) is revoked when the client's `nat` no longer sends that port to the same target,
/// and a plain one when the port is now forwarded: the kernel would otherwise keep the old
/// translation until the grant expires.
fn revocation(
    was: Option<&config::ClientEntry>,
    is: Option<&config::ClientEntry>,
    addr: IpAddr,
    access: Access,
    nat: Option<NatTarget>,
    now: u64,
) -> Option<&'static str> {
    judged(was, is, addr, access, Some(nat), now)
}

/// [`revocation`]; `nat` = `None` leaves the `nat` checks out (a gateway grant forwards no
/// port).
fn judged(
    was: Option<&config::ClientEntry>,
    is: Option<&config::ClientEntry>,
    addr: IpAddr,
    access: Access,
    nat: Option<Option<NatTarget>>,
    now: u64,
) -> Option<&'static str> {
    let (Some(was), Some(is)) = (was, is) else {
        return Some("client removed from the config");
    };
    if !same_credential(&was.credential, &is.credential) {
        return Some("client key changed");
    }
    if is.expires_at.is_some_and(|t| now >= t) {
        return Some("client expired");
    }
    // The local port a local NAT entry leads to is granted with it (policy.rs).
    let local_target = || {
        is.nat
            .iter()
            .any(|r| r.access.proto == access.proto && r.to == config::NatTo::Local(access.port))
    };
    if !is.allow.contains(&access) && !local_target() {
        return Some("access no longer in the client's allow");
    }
    match (nat, is.nat_for(access, addr)) {
        (None, _) | (Some(None), None) => {}
        (Some(Some(t)), Some(rule)) => {
            let same_to = match rule.to {
                config::NatTo::Host(to) => to == t.to,
                config::NatTo::Local(port) => port == t.to.port(),
            };
            if !same_to || rule.source != t.source || rule.dnat != t.dnat {
                return Some("the client's nat now forwards this access elsewhere");
            }
        }
        (Some(Some(_)), None) => return Some("access no longer forwarded by the client's nat"),
        (Some(None), Some(_)) => return Some("access now forwarded by the client's nat"),
    }
    if is.deny.contains(&access) {
        return Some("access now in the client's deny");
    }
    if is.require_source_match && !is.sources.iter().any(|n| n.contains(&addr)) {
        return Some("address no longer in the client's sources");
    }
    None
}

/// [`revocation`] for a gateway grant `g` opened by a knock for `access`: the client must
/// still authorise that knock (its key, expiry, `allow`, `deny`, `sources`) and its `gateway`
/// must still name `g`'s network with the same source translation.
fn gateway_revocation(
    was: Option<&config::ClientEntry>,
    is: Option<&config::ClientEntry>,
    addr: IpAddr,
    access: Access,
    g: GatewayTo,
    now: u64,
) -> Option<&'static str> {
    // The port-level checks first, without the `nat` ones (a gateway grant forwards no port).
    if let Some(why) = judged(was, is, addr, access, None, now) {
        return Some(why);
    }
    match is.and_then(|c| c.gateway.as_ref()) {
        None => Some("the client is no longer a gateway"),
        Some(gw) if !gw.networks.contains(&g.net) => {
            Some("the client's gateway no longer leads to this network")
        }
        Some(gw) if gw.source != g.source => {
            Some("the client's gateway now rewrites the source otherwise")
        }
        Some(_) => None,
    }
}

/// Do two credentials accept the same knocks (same secret, same algorithms)?
fn same_credential(a: &config::Credential, b: &config::Credential) -> bool {
    use config::Credential::{Fwknop, Native};
    match (a, b) {
        (Native(a), Native(b)) => *a.enc == *b.enc && *a.hint == *b.hint,
        (Fwknop(a), Fwknop(b)) => {
            *a.key == *b.key
                && a.hmac_key.as_deref() == b.hmac_key.as_deref()
                && a.hmac_type == b.hmac_type
                && a.mode == b.mode
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::NativeKey;

    /// Issue 10 §1: a forwarded grant stays while the client's `nat` still sends its port to the
    /// same target; a changed or removed target, or a port newly forwarded, revokes it.
    #[test]
    fn revocation_follows_the_nat_target() {
        use crate::access::SourceNat;
        use crate::config::{NatRule, NatTo};
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let ssh: Access = "tcp/22".parse().unwrap();
        let rule = |to: &str| NatRule {
            access: ssh,
            to: NatTo::Host(to.parse().unwrap()),
            source: SourceNat::Keep,
            dnat: true,
        };
        let mut c = crate::policy::tests::client();
        c.nat = vec![rule("192.168.10.2:22")];
        let was = c.clone();
        let t = |to: &str| {
            Some(NatTarget {
                to: to.parse().unwrap(),
                source: SourceNat::Keep,
                dnat: true,
            })
        };
        let judge =
            |is: &config::ClientEntry, nat| revocation(Some(&was), Some(is), addr, ssh, nat, 1_000);
        assert_eq!(judge(&c, t("192.168.10.2:22")), None);
        let mut moved = c.clone();
        moved.nat = vec![rule("192.168.10.3:22")];
        assert_eq!(
            judge(&moved, t("192.168.10.2:22")),
            Some("the client's nat now forwards this access elsewhere")
        );
        let mut masq = c.clone();
        masq.nat[0].source = SourceNat::Masquerade;
        assert!(judge(&masq, t("192.168.10.2:22")).is_some());
        let mut plain = c.clone();
        plain.nat.clear();
        assert_eq!(
            judge(&plain, t("192.168.10.2:22")),
            Some("access no longer forwarded by the client's nat")
        );
        assert_eq!(
            judge(&c, None),
            Some("access now forwarded by the client's nat")
        );
        // The local port of a local NAT entry is kept although it is not in `allow`.
        let mut local = crate::policy::tests::client();
        let fwd: Access = "tcp/2200".parse().unwrap();
        local.allow = vec![fwd];
        local.nat = vec![NatRule {
            access: fwd,
            to: NatTo::Local(22),
            source: SourceNat::Keep,
            dnat: true,
        }];
        assert_eq!(
            revocation(Some(&local), Some(&local), addr, ssh, None, 1_000),
            None
        );
    }

    /// What a reload "narrows", one case at a time.
    #[test]
    fn revocation_covers_removal_key_expiry_allow_deny_and_sources() {
        let base = crate::policy::tests::client();
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let ssh: Access = "tcp/22".parse().unwrap();
        let judge = |is: Option<&config::ClientEntry>, addr: IpAddr| {
            revocation(Some(&base), is, addr, ssh, None, 1_000)
        };
        let mut c = base.clone();
        assert_eq!(judge(Some(&c), addr), None, "unchanged: kept");
        c.allow.push("tcp/443".parse().unwrap());
        assert_eq!(judge(Some(&c), addr), None, "widened: kept");
        assert_eq!(judge(None, addr), Some("client removed from the config"));
        assert_eq!(
            revocation(None, Some(&c), addr, ssh, None, 1_000),
            Some("client removed from the config")
        );
        let mut k = base.clone();
        k.credential = config::Credential::Native(NativeKey::derive(&[0x77; 32]));
        assert_eq!(judge(Some(&k), addr), Some("client key changed"));
        let mut f = base.clone();
        if let config::Credential::Fwknop(fk) = &mut f.credential {
            fk.key = zeroize::Zeroizing::new(b"rotated".to_vec());
        }
        assert_eq!(judge(Some(&f), addr), Some("client key changed"));
        let mut x = base.clone();
        x.expires_at = Some(1_000);
        assert_eq!(judge(Some(&x), addr), Some("client expired"));
        let mut a = base.clone();
        a.allow = vec!["tcp/443".parse().unwrap()];
        assert_eq!(
            judge(Some(&a), addr),
            Some("access no longer in the client's allow")
        );
        let mut d = base.clone();
        d.deny = vec![ssh];
        assert_eq!(
            judge(Some(&d), addr),
            Some("access now in the client's deny")
        );
        let mut s = base.clone();
        s.sources = vec!["198.51.100.0/24".parse().unwrap()];
        s.require_source_match = true;
        assert_eq!(
            judge(Some(&s), addr),
            Some("address no longer in the client's sources")
        );
        s.require_source_match = false;
        assert_eq!(
            judge(Some(&s), addr),
            None,
            "the knock's source is not known"
        );
    }

    /// Issue 10 §1, `FORWARD_ALL`: a gateway grant stays while its client still has that
    /// network with the same source translation and still authorises the knock that opened it;
    /// a `nat` entry for the knocked port is no reason to revoke it.
    #[test]
    fn gateway_grants_follow_the_client_s_gateway() {
        use crate::access::{GatewayTo, SourceNat};
        use crate::config::{Gateway, NatRule, NatTo};
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let ssh: Access = "tcp/22".parse().unwrap();
        let g = GatewayTo {
            net: "10.80.0.0/24".parse().unwrap(),
            source: SourceNat::Masquerade,
        };
        let mut c = crate::policy::tests::client();
        c.gateway = Some(Gateway {
            networks: vec![g.net, "10.90.0.0/24".parse().unwrap()],
            source: SourceNat::Masquerade,
        });
        let judge =
            |is: Option<&config::ClientEntry>| gateway_revocation(Some(&c), is, addr, ssh, g, 100);
        assert_eq!(judge(Some(&c)), None);
        let mut nat = c.clone();
        nat.nat = vec![NatRule {
            access: ssh,
            to: NatTo::Host("10.80.0.2:22".parse().unwrap()),
            source: SourceNat::Keep,
            dnat: true,
        }];
        assert_eq!(judge(Some(&nat)), None, "a nat entry does not revoke it");
        let gone = "the client's gateway no longer leads to this network";
        let mut narrowed = c.clone();
        narrowed.gateway.as_mut().unwrap().networks = vec!["10.90.0.0/24".parse().unwrap()];
        assert_eq!(judge(Some(&narrowed)), Some(gone));
        let mut kept_source = c.clone();
        kept_source.gateway.as_mut().unwrap().source = SourceNat::Keep;
        assert_eq!(
            judge(Some(&kept_source)),
            Some("the client's gateway now rewrites the source otherwise")
        );
        let mut none = c.clone();
        none.gateway = None;
        assert_eq!(
            judge(Some(&none)),
            Some("the client is no longer a gateway")
        );
        let mut a = c.clone();
        a.allow = vec!["udp/53".parse().unwrap()];
        assert_eq!(
            judge(Some(&a)),
            Some("access no longer in the client's allow")
        );
        assert_eq!(judge(None), Some("client removed from the config"));
    }

    /// The runner keeps the command settings it was forked with: a reload that changes them
    /// (and only such a reload) is told to restart.
    #[test]
    fn a_reload_that_changes_command_settings_is_noticed() {
        use crate::command::{CommandUser, Template};
        let mut c = crate::policy::tests::client();
        c.commands.grant = crate::command::GrantMode::Command;
        c.commands.cycle.on_grant = Some(Template::parse(&["/bin/true".to_string()]).unwrap());
        c.commands.user = Some(CommandUser {
            account: config::Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
            },
            timeout_secs: 10,
            net_admin: false,
        });
        let text = "[[client]]\nname = \"x\"\nkey = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nallow = [\"tcp/22\"]\n";
        let mut old = config::parse_str(text, std::path::Path::new("/test.toml")).unwrap();
        old.clients = vec![c];
        let mut same = old.clone();
        same.clients[0].timeout = 99;
        assert!(!commands_changed(&old, &same));
        let mut other = old.clone();
        other.clients[0]
            .commands
            .user
            .as_mut()
            .unwrap()
            .timeout_secs = 11;
        assert!(commands_changed(&old, &other));
        let mut more = old.clone();
        more.server.max_commands += 1;
        assert!(commands_changed(&old, &more));
    }
}
