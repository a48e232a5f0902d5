//! The owned table as a whole: is it there, which queue backend the kernel has, install it in
//! one atomic batch, remove it. Talks to the kernel through [`Nft::commit`] and
//! [`Nft::request`].

use super::batch::batch_error;
use super::expr::Exprs;
use super::gateway::GATEWAY_SETS;
use super::nat::{FORWARD_SETS, NAT_SETS};
use super::sets::SETS;
use super::*;

impl Nft {
    /// Is the owned table present?
    pub fn table_exists(&mut self) -> Result<bool, NftError> {
        let r = self.request(
            NFT_MSG_GETTABLE,
            false,
            |m| m.attr_str(NFTA_TABLE_NAME, TABLE),
            |_| {},
        );
        exists(r, Object::Table)
    }

    fn chain_exists(&mut self, chain: &'static str) -> Result<bool, NftError> {
        let r = self.request(
            NFT_MSG_GETCHAIN,
            false,
            |m| {
                m.attr_str(NFTA_CHAIN_TABLE, TABLE);
                m.attr_str(NFTA_CHAIN_NAME, chain);
            },
            |_| {},
        );
        exists(r, Object::Chain(chain))
    }

    /// Does this kernel have `nft_queue`? Probes in one self-cleaning batch (create a
    /// throw-away table with a `queue` rule, then delete the table): the kernel answers
    /// `ENOENT` for an expression type it cannot load, and aborts the whole batch, so nothing
    /// is left behind either way. If `queue` is missing, the xt `NFQUEUE` target is probed the
    /// same way; if both are missing, [`NftError::NoQueueSupport`].
    pub fn detect_queue_backend(&mut self) -> Result<QueueBackend, NftError> {
        for backend in [QueueBackend::Native, QueueBackend::Compat] {
            self.batch_start();
            self.add_table(NFPROTO_INET, PROBE_TABLE, Object::ProbeTable);
            let object = Object::ProbeTable;
            let flags = NLM_F_CREATE;
            let (s, m) = self.begin(
                NFT_MSG_NEWCHAIN,
                flags,
                NFPROTO_INET,
                "create a chain in",
                object,
            );
            m.attr_str(NFTA_CHAIN_TABLE, PROBE_TABLE);
            m.attr_str(NFTA_CHAIN_NAME, "probe");
            let n = m.nest(NFTA_CHAIN_HOOK);
            m.attr_u32(NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_IN);
            m.attr(NFTA_HOOK_PRIORITY, &0i32.to_be_bytes());
            m.nest_end(n);
            m.attr_str(NFTA_CHAIN_TYPE, "filter");
            m.end(s);
            let flags = NLM_F_CREATE | NLM_F_APPEND;
            let (s, m) = self.begin(
                NFT_MSG_NEWRULE,
                flags,
                NFPROTO_INET,
                "add a queue rule to",
                object,
            );
            m.attr_str(NFTA_RULE_TABLE, PROBE_TABLE);
            m.attr_str(NFTA_RULE_CHAIN, "probe");
            let n = m.nest(NFTA_RULE_EXPRESSIONS);
            match backend {
                QueueBackend::Native => Exprs(m).e_queue(0),
                QueueBackend::Compat => Exprs(m).e_compat_nfqueue(0),
            }
            m.nest_end(n);
            m.end(s);
            self.del_table(NFPROTO_INET, PROBE_TABLE, Object::ProbeTable);
            match self.commit() {
                Ok(()) => return Ok(backend),
                // ENOENT: no such expression/target; EOPNOTSUPP/EINVAL: compat refused here.
                Err(BatchError::Kernel { errno, .. })
                    if errno == libc::ENOENT
                        || errno == libc::EOPNOTSUPP
                        || errno == libc::EINVAL => {}
                Err(f) => return Err(batch_error(f)),
            }
        }
        Err(NftError::NoQueueSupport)
    }

    /// Create or refresh the owned table in one atomic batch: the table and its sets are
    /// created if absent (existing allow-set elements, i.e. live grants, survive), each chain's
    /// rules are made exactly `spec` (flush + add in the same batch), the `protected` and fwknop
    /// source sets' elements are replaced (the key hints stay: [`Nft::write_hints`]), the junk
    /// counters are created if absent, and `restore` grants are added (after someone flushed
    /// the ruleset). Idempotent.
    pub fn install(&mut self, spec: &RulesetSpec, restore: &[Element]) -> Result<(), NftError> {
        if let Some(e) = restore.iter().find(|e| e.timeout_ms == 0) {
            return Err(NftError::ZeroTimeout {
                addr: e.addr,
                access: e.access,
            });
        }
        // The kernel accepts a NEWSET for an existing set of another shape silently on older
        // kernels (6.x compares; earlier ones just return 0), so compare ourselves first.
        let (nat_sets, fwd_sets) = if spec.nat {
            (NAT_SETS, FORWARD_SETS)
        } else {
            (&[][..], &[][..])
        };
        let gateway = !spec.gateway_nets.is_empty();
        let gw_sets = if gateway { GATEWAY_SETS } else { &[][..] };
        for def in SETS.iter().chain(nat_sets).chain(fwd_sets).chain(gw_sets) {
            if let Some((kt, kl, fl)) = self.set_shape(def.name)? {
                if kt != def.key_type || kl != def.key_len || fl != def.flags {
                    return Err(NftError::Incompatible {
                        object: Object::Set(def.name),
                    });
                }
            }
        }
        let drop_forward = !spec.gate_forward && self.chain_exists(CHAIN_FORWARD)?;
        // NAT went out of the config: its chains and maps go (with the translations in them).
        let drop_nat = !spec.nat && self.chain_exists(CHAIN_NAT_PREROUTING)?;
        // `gateway` went out of the config: its sets go (with the gateway grants in them).
        let drop_gateway = !gateway && self.set_shape(SET_GATEWAY_V4)?.is_some();
        // Without the NAT maps, a translated grant is restored without its translation (a
        // grant of its port), and a routed one not at all (it never opened a port here).
        let stripped: Vec<Element>;
        let no_gateway: Vec<Element>;
        let restore = if !gateway && restore.iter().any(|e| e.gateway.is_some()) {
            no_gateway = restore
                .iter()
                .filter(|e| e.gateway.is_none())
                .copied()
                .collect();
            &no_gateway[..]
        } else {
            restore
        };
        let restore = if !spec.nat && restore.iter().any(|e| e.nat.is_some()) {
            stripped = restore
                .iter()
                .filter(|e| e.nat.is_none_or(|n| n.dnat))
                .map(|e| Element { nat: None, ..*e })
                .collect();
            &stripped[..]
        } else {
            restore
        };

        self.batch_start();
        self.add_table(NFPROTO_INET, TABLE, Object::Table);
        self.add_counter(COUNTER_JUNK_NATIVE);
        self.add_counter(COUNTER_JUNK_FWKNOP);
        for def in SETS {
            self.add_set(def);
        }
        self.add_chain(
            TABLE,
            CHAIN_KNOCK,
            Some((NF_INET_PRE_ROUTING, PRIORITY_KNOCK)),
        );
        self.flush_chain(CHAIN_KNOCK);
        self.add_chain(TABLE, CHAIN_INPUT, Some((NF_INET_LOCAL_IN, PRIORITY_GATE)));
        self.flush_chain(CHAIN_INPUT);
        if spec.gate_forward {
            self.add_chain(TABLE, CHAIN_FORWARD, Some((NF_INET_FORWARD, PRIORITY_GATE)));
            self.flush_chain(CHAIN_FORWARD);
        } else if drop_forward {
            self.flush_chain(CHAIN_FORWARD);
            self.del_chain(CHAIN_FORWARD);
        }
        if spec.nat {
            for def in NAT_SETS.iter().chain(FORWARD_SETS) {
                self.add_set(def);
            }
            self.add_chain_of_type(
                TABLE,
                CHAIN_NAT_PREROUTING,
                Some((NF_INET_PRE_ROUTING, PRIORITY_DSTNAT)),
                "nat",
            );
            self.flush_chain(CHAIN_NAT_PREROUTING);
            self.add_chain_of_type(
                TABLE,
                CHAIN_NAT_POSTROUTING,
                Some((NF_INET_POST_ROUTING, PRIORITY_SRCNAT)),
                "nat",
            );
            self.flush_chain(CHAIN_NAT_POSTROUTING);
        } else if drop_nat {
            for chain in [CHAIN_NAT_PREROUTING, CHAIN_NAT_POSTROUTING] {
                self.flush_chain(chain);
                self.del_chain(chain);
            }
            for def in NAT_SETS.iter().chain(FORWARD_SETS) {
                self.del_set(def.name);
            }
        }
        if gateway {
            for def in GATEWAY_SETS {
                self.add_set(def);
            }
        }
        super::rules::add_all(self, spec);
        // After the rules: a rule that used them is gone by now in this batch.
        if drop_gateway {
            for def in GATEWAY_SETS {
                self.del_set(def.name);
            }
        }

        self.flush_set(SET_PROTECTED);
        if !spec.protect.is_empty() {
            let keys = spec.protect.iter().map(|a| (protected_key(*a), None));
            self.set_elements(true, SET_PROTECTED, keys);
        }
        self.fwknop_sources(&spec.fwknop_sources);
        if spec.nat {
            for (set, v6) in [
                (SET_FORWARD_PROTECTED_V4, false),
                (SET_FORWARD_PROTECTED_V6, true),
            ] {
                self.flush_set(set);
                let mut targets: Vec<_> = spec
                    .forward_targets
                    .iter()
                    .filter(|(ip, _)| ip.is_ipv6() == v6)
                    .collect();
                targets.sort();
                targets.dedup();
                if !targets.is_empty() {
                    let keys = targets
                        .into_iter()
                        .map(|(ip, a)| (super::sets::GrantKey(element_key(*ip, *a)), None));
                    self.set_elements(true, set, keys);
                }
            }
        }
        if gateway {
            self.gateway_nets(&spec.gateway_nets);
        }
        self.grants(true, restore, false);
        self.grants(true, restore, true);
        self.commit().map_err(batch_error)
    }

    /// Delete the owned table (and with it every grant). Absent already is fine.
    pub fn remove_table(&mut self) -> Result<(), NftError> {
        self.batch_start();
        self.del_table(NFPROTO_INET, TABLE, Object::Table);
        match self.commit() {
            Ok(()) => Ok(()),
            Err(BatchError::Kernel { errno, .. }) if errno == libc::ENOENT => Ok(()),
            Err(f) => Err(batch_error(f)),
        }
    }
}

/// The answer to a get request → does the object exist?
fn exists(r: io::Result<Result<(), i32>>, object: Object) -> Result<bool, NftError> {
    match r {
        Ok(Ok(())) => Ok(true),
        Ok(Err(e)) if e == libc::ENOENT => Ok(false),
        Ok(Err(e)) => Err(kernel_error("look up", object, e)),
        Err(source) => Err(NftError::Socket { op: "use", source }),
    }
}
