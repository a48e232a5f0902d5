//! The `nftables` backend (the default): each grant is an element with a timeout in the allow
//! set of its family (`allow_v4`, `allow_v6`) of table `inet nfknock`; the kernel enforces the
//! gate and expires the grant. The backend owns the whole table: it builds the ruleset a config
//! asks for ([`ruleset_spec`]), installs it, re-creates it after a flush, and follows a reload.
//! Its I/O goes through [`crate::netfilter::nft`] ([`Nft`] for commands, [`NftEvents`] to notice
//! a flush); [`NftError`]s become [`GrantError`]s with the nft error kept as their source.

use std::time::Duration;

use tracing::{info, warn};

use super::{Grant, GrantError, GrantSink, GrantStore, KeyHint, LiveGrant, PrefilterStats};
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
        queue_total: config.server.queue_count,
        backend,
        protect: config.server.protect.clone(),
        native_len: native::PACKET_LEN as u16,
        fwknop: config
            .clients
            .iter()
            .any(|c| matches!(c.credential, config::Credential::Fwknop(_))),
        prefilter: config.server.prefilter,
        fwknop_sources: fwknop_sources(config),
        rate_limit: config.server.rate_limit,
        rate_limit_v4_prefix: config.server.rate_limit_v4_prefix,
        rate_limit_v6_prefix: config.server.rate_limit_v6_prefix,
        gate_input: true,
        gate_forward: config.server.gate_forward,
        // A gateway's masquerade rules live in the NAT chains.
        nat: config
            .clients
            .iter()
            .any(|c| !c.nat.is_empty() || c.gateway.is_some()),
        forward_targets: config
            .clients
            .iter()
            .flat_map(|c| c.nat.iter())
            .filter_map(|r| match r.to {
                config::NatTo::Host(to) if !r.dnat => Some((to.ip(), r.access)),
                _ => None,
            })
            .collect(),
        gateway_nets: gateway_nets(config),
    }
}

/// The union of the clients' `gateway` networks (sorted, without repeats).
fn gateway_nets(config: &Config) -> Vec<ipnet::IpNet> {
    let mut nets: Vec<ipnet::IpNet> = config
        .clients
        .iter()
        .filter_map(|c| c.gateway.as_ref())
        .flat_map(|g| g.networks.iter().copied())
        .collect();
    nets.sort_unstable();
    nets.dedup();
    nets
}

/// The union of the fwknop clients' `sources` (sorted, without repeats: two configs with the
/// same union ask for the same ruleset): no other source can send an fwknop knock that some
/// client accepts.
fn fwknop_sources(config: &Config) -> Vec<ipnet::IpNet> {
    let mut nets: Vec<ipnet::IpNet> = config
        .clients
        .iter()
        .filter(|c| matches!(c.credential, config::Credential::Fwknop(_)))
        .flat_map(|c| c.sources.iter().copied())
        .collect();
    nets.sort_unstable();
    nets.dedup();
    nets
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
        queue_total: current.queue_total,
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
        nat: g.nat,
        gateway: g.gateway,
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

    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        prefilter_of(&mut self.nft, &self.object)
    }

    fn write_hints(&mut self, hints: &[KeyHint], replace: bool) -> Result<(), GrantError> {
        self.nft
            .write_hints(hints, replace)
            .map_err(|source| GrantError::Hints {
                object: self.object.clone(),
                count: hints.len(),
                source: source.into(),
            })
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

/// The prefilter's set and counters as the kernel holds them; `None` for a table without them
/// (loaded from an older nft/nfknock.nft, or a daemon not restarted since the upgrade).
fn prefilter_of(nft: &mut Nft, object: &str) -> Result<Option<PrefilterStats>, GrantError> {
    let s = match nft.prefilter_stats() {
        Ok(s) => s,
        Err(NftError::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(GrantError::List {
                object: object.to_string(),
                source: source.into(),
            })
        }
    };
    Ok(Some(PrefilterStats {
        hints: s.hints,
        junk_native: s.junk_native,
        junk_fwknop: s.junk_fwknop,
    }))
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
                    nat: e.nat,
                    gateway: e.gateway,
                },
                left: Duration::from_millis(e.expires_ms),
            })
            .collect())
    }

    fn prefilter(&mut self) -> Result<Option<PrefilterStats>, GrantError> {
        prefilter_of(&mut self.nft, &self.object)
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
mod tests;
