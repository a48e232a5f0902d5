//! The relay loop (I/O): this host's allow sets ⇄ etcd.
//!
//! - A thread reads nf_tables events ([`NftEvents::wait_elements`]) and hands the grants
//!   written by anyone but the relay (the daemon, in practice) to the loop.
//! - The loop publishes each one as `key → {origin, remaining_ms}` with a lease of its
//!   remaining time, watches the fleet's prefix, and writes other hosts' grants into the local
//!   allow sets with their remaining time and the origin mark `fleet:<origin>`.
//! - On every (re)connection, and whenever the table is re-created or events were lost, it
//!   resynchronises by a full read (not by replaying the watch from an old revision: a value's
//!   `remaining_ms` is as old as its write, so the time left is taken from the lease), then
//!   publishes this host's own live grants with their remaining time (those made while etcd
//!   was away), and removes the remote grants whose keys are gone (revoked meanwhile).
//! - etcd down: local knocks are untouched (the daemon never waits for the relay); the relay
//!   retries with backoff (0.5 s doubling to 15 s).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::record::{
    check_remote, is_mark, lease_ttl_secs, mark, remaining_from_lease, Caps, GrantKey, GrantValue,
};
use super::settings::FleetConfig;
use crate::netfilter::nft::{
    element_comment, element_comment_text, ElemEvent, Element, Nft, NftEvents,
};

/// Backoff between connection attempts: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long one etcd request may take before the connection is called lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Local events queued between the event thread and the loop; past this, the loop resyncs.
const EVENT_QUEUE: usize = 16_384;
/// How often the `protected` set (the caps on remote grants) is read again.
const CAPS_EVERY: Duration = Duration::from_secs(10);
/// Puts per etcd transaction (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 128;
/// Local events handled (and published) together.
const EVENT_BATCH: usize = 1024;
/// A remote grant that would not extend what this host has by more than this is not written.
const EXTEND_SLACK: Duration = Duration::from_millis(250);

/// PEM material read by the shell before the loop starts (the key zeroized on drop).
pub struct TlsPem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Zeroizing<Vec<u8>>,
}

/// Read the certificate files `config` names; the client key must not be readable by group or
/// others.
pub fn read_tls(config: &FleetConfig) -> anyhow::Result<Option<TlsPem>> {
    use std::os::unix::fs::MetadataExt;
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| {
            format!(
                "cannot read the {what} {} named in {}",
                p.display(),
                config.path.display()
            )
        })
    };
    let meta = std::fs::metadata(&tls.key_file)
        .with_context(|| format!("cannot read the client key {}", tls.key_file.display()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(anyhow!(
            "the client key {} is readable by group or others; `chmod 600` it",
            tls.key_file.display()
        ));
    }
    Ok(Some(TlsPem {
        ca: read(&tls.ca_file, "CA certificate")?,
        cert: read(&tls.cert_file, "client certificate")?,
        key: Zeroizing::new(read(&tls.key_file, "client key")?),
    }))
}

/// Run the relay until the process is stopped.
pub fn run(config: FleetConfig, tls: Option<TlsPem>) -> anyhow::Result<()> {
    if tls.is_none() {
        warn!("insecure_lab = true: etcd is reached without TLS or client certificates; anyone who can reach it can open ports on every host of the fleet");
    }
    let mut nft = Nft::open().context("cannot open the nftables socket")?;
    let own_pid = nft.portid();
    let caps = read_caps(&mut nft, config.max_timeout).context(
        "cannot read this host's `protected` set; start `nfknock serve` (it installs table inet nfknock) before the relay",
    )?;
    let events = NftEvents::open(&[own_pid]).context("cannot subscribe to nftables events")?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let lost = Arc::new(AtomicBool::new(false));
    let lost_thread = lost.clone();
    std::thread::Builder::new()
        .name("nft-events".into())
        .spawn(move || event_thread(events, tx, lost_thread))
        .context("cannot start the event thread")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut relay = Relay {
        config,
        nft,
        caps,
        caps_at: Instant::now(),
        rx,
        lost,
        own: HashMap::new(),
        remote: HashMap::new(),
        etcd_origin: HashMap::new(),
        leases: Vec::new(),
    };
    rt.block_on(relay.run(tls))
}

fn read_caps(nft: &mut Nft, max_timeout: u32) -> anyhow::Result<Caps> {
    Ok(Caps {
        protected: nft.list_protected()?,
        max_timeout,
    })
}

/// Blocking reader of the allow sets' events; never stops while the loop listens.
fn event_thread(mut events: NftEvents, tx: mpsc::Sender<ElemEvent>, lost: Arc<AtomicBool>) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if let Err(e) = events.wait_elements(Duration::from_secs(1), &mut buf) {
            warn!(error = %e, "reading nftables events failed; resynchronising");
            lost.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
        }
        for ev in buf.drain(..) {
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => lost.store(true, Ordering::Relaxed),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

struct Relay {
    config: FleetConfig,
    nft: Nft,
    caps: Caps,
    caps_at: Instant,
    rx: mpsc::Receiver<ElemEvent>,
    /// Set by the event thread when events were dropped: resync.
    lost: Arc<AtomicBool>,
    /// Deadlines of this host's own grants (as far as events told).
    own: HashMap<GrantKey, Instant>,
    /// Remote grants this relay wrote: deadline and origin.
    remote: HashMap<GrantKey, (Instant, String)>,
    /// Origin of the last value seen under each key (a DELETE names no origin).
    etcd_origin: HashMap<GrantKey, String>,
    /// Leases granted for publications, with when each ends: grants ending in the same
    /// second share one.
    leases: Vec<(Instant, i64)>,
}

enum Step {
    Resync,
}

impl Relay {
    async fn run(&mut self, tls: Option<TlsPem>) -> anyhow::Result<()> {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect(tls.as_ref()).await {
                Ok(mut client) => {
                    backoff = BACKOFF_MIN;
                    loop {
                        match self.session(&mut client).await {
                            Ok(Step::Resync) => continue,
                            Err(e) => {
                                warn!(error = %format!("{e:#}"), "fleet session ended (etcd or this host's table unavailable); local knocks are unaffected; reconnecting");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot reach etcd; local knocks are unaffected; retrying");
                }
            }
            self.idle(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Wait `d` while etcd is away, keeping the own-grant bookkeeping (the resync that follows
    /// publishes from the kernel's listing, so nothing is lost).
    async fn idle(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                ev = self.rx.recv() => if ev.is_none() { return },
            }
        }
    }

    async fn connect(&self, tls: Option<&TlsPem>) -> anyhow::Result<Client> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(t) = tls {
            let identity = Identity::from_pem(&t.cert, &*t.key);
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&t.ca))
                    .identity(identity),
            );
        }
        let mut client = Client::connect(&self.config.endpoints, Some(opts))
            .await
            .with_context(|| format!("connect to {}", self.config.endpoints.join(", ")))?;
        // A first request proves the TLS handshake and the role (connect is lazy).
        client
            .get(
                self.config.layout.grants_prefix(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .with_context(|| {
                format!(
                    "read {} (is the client certificate's user granted readwrite on {}?)",
                    self.config.layout.grants_prefix(),
                    self.config.layout.fleet_prefix()
                )
            })?;
        info!(endpoints = %self.config.endpoints.join(","), prefix = %self.config.layout.grants_prefix(), "connected to etcd");
        Ok(client)
    }

    /// One synchronised session: full read, then events both ways until an error or a reason
    /// to resync.
    async fn session(&mut self, client: &mut Client) -> anyhow::Result<Step> {
        self.lost.store(false, Ordering::Relaxed);
        // Drop queued events: the listing below supersedes them.
        while self.rx.try_recv().is_ok() {}
        let revision = self.full_sync(client).await?;
        let mut watch = client
            .watch(
                self.config.layout.grants_prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
            .context("watch the fleet's grants")?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = self.rx.recv() => {
                    let Some(ev) = ev else { return Err(anyhow!("the event thread stopped")) };
                    let mut batch = vec![ev];
                    while batch.len() < EVENT_BATCH {
                        match self.rx.try_recv() {
                            Ok(ev) => batch.push(ev),
                            Err(_) => break,
                        }
                    }
                    if batch.iter().any(|ev| matches!(ev, ElemEvent::Reset)) {
                        // Our table was re-created (daemon start, a flush repair): the remote
                        // grants in it are gone; read everything again.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Ok(Step::Resync);
                    }
                    let mut to_publish = Vec::new();
                    for ev in batch {
                        self.local(client, ev, &mut to_publish).await?;
                    }
                    self.publish_many(client, &to_publish).await?;
                }
                msg = watch.message() => {
                    let resp = msg.context("watch")?.ok_or_else(|| anyhow!("etcd ended the watch"))?;
                    if resp.canceled() {
                        return Err(anyhow!("etcd cancelled the watch ({}); resynchronising", resp.cancel_reason()));
                    }
                    let mut writes = Vec::new();
                    for ev in resp.events() {
                        self.remote_event(ev.event_type(), ev.kv().map(|kv| (kv.key(), kv.value())), &mut writes);
                    }
                    if let Err(e) = self.write_remote_many(writes) {
                        warn!(error = %format!("{e:#}"), "cannot write remote grants; they will be written at the next resync");
                        self.lost.store(true, Ordering::Relaxed);
                    }
                }
                _ = tick.tick() => {
                    if self.lost.load(Ordering::Relaxed) {
                        return Ok(Step::Resync);
                    }
                    if self.caps_at.elapsed() >= CAPS_EVERY {
                        self.refresh_caps();
                    }
                    let now = Instant::now();
                    self.own.retain(|_, d| *d > now);
                    self.remote.retain(|_, (d, _)| *d > now);
                }
            }
        }
    }

    fn refresh_caps(&mut self) {
        match read_caps(&mut self.nft, self.config.max_timeout) {
            Ok(c) => self.caps = c,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot read this host's `protected` set; keeping the last one")
            }
        }
        self.caps_at = Instant::now();
    }

    /// Full read of the fleet's grants; returns the revision it saw.
    async fn full_sync(&mut self, client: &mut Client) -> anyhow::Result<i64> {
        self.refresh_caps();
        let resp = client
            .get(
                self.config.layout.grants_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .context("read the fleet's grants")?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let now = Instant::now();
        let mut in_etcd: HashMap<GrantKey, String> = HashMap::new();
        // Time left of each remote key's grant (lower bound), applied or not.
        let mut etcd_left: HashMap<GrantKey, u64> = HashMap::new();
        let mut apply: Vec<(GrantKey, u64, String)> = Vec::new();
        for kv in resp.kvs() {
            let Some((g, v)) = self.parse(kv.key(), kv.value()) else {
                continue;
            };
            in_etcd.insert(g, v.origin.clone());
            if v.origin == self.config.host_id {
                continue;
            }
            let ttl = client
                .lease_time_to_live(kv.lease(), None)
                .await
                .context("read a grant's lease")?;
            let Some(left) = remaining_from_lease(v.remaining_ms, ttl.granted_ttl(), ttl.ttl())
            else {
                continue;
            };
            etcd_left.insert(g, left);
            if let Err(e) = check_remote(&g, left, &self.caps) {
                warn!(grant = %g, origin = %v.origin, reason = %e, "remote grant refused");
                continue;
            }
            apply.push((g, left, v.origin));
        }
        self.etcd_origin = in_etcd.clone();

        // This host's view: own grants to publish, remote ones that were revoked meanwhile.
        let local = self.nft.list_marked().context("list this host's grants")?;
        let mut publish = Vec::new();
        let mut revoke = Vec::new();
        let mut have: HashMap<GrantKey, u64> = HashMap::new();
        self.own.clear();
        for (e, udata) in &local {
            let g = GrantKey {
                addr: e.addr,
                access: e.access,
            };
            have.insert(g, e.expires_ms);
            // A marked element with clearly more time than its key's grant was refreshed here
            // (a knock on this host keeps the element's mark): it is this host's own now.
            let refreshed_here = etcd_left.get(&g).is_some_and(|&l| e.expires_ms > l + 1_000);
            if is_mark(element_comment_text(udata)) && !refreshed_here {
                if !in_etcd.contains_key(&g) && e.expires_ms > 1_000 {
                    revoke.push(element(g, e.timeout_ms.max(1)));
                }
            } else if e.expires_ms > 0 {
                self.own
                    .insert(g, now + Duration::from_millis(e.expires_ms));
                publish.push((g, e.expires_ms));
            }
        }
        if !revoke.is_empty() {
            info!(
                count = revoke.len(),
                "removing remote grants revoked while this relay was away"
            );
            self.nft
                .delete(&revoke)
                .context("remove revoked remote grants")?;
        }
        let writes: Vec<_> = apply
            .into_iter()
            .filter(|(g, left, _)| {
                have.get(g)
                    .is_none_or(|&h| h + (EXTEND_SLACK.as_millis() as u64) < *left)
            })
            .collect();
        let written = writes.len();
        self.write_remote_many(writes)?;
        self.publish_many(client, &publish).await?;
        info!(
            revision,
            remote_written = written,
            own_published = publish.len(),
            "synchronised with the fleet"
        );
        Ok(revision)
    }

    fn parse(&self, key: &[u8], value: &[u8]) -> Option<(GrantKey, GrantValue)> {
        let g = match self.config.layout.parse_key(key) {
            Ok(g) => g,
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(key).chars().take(200).collect::<String>(), reason = %e, "skipping a malformed fleet key");
                return None;
            }
        };
        match GrantValue::parse(value) {
            Ok(v) => Some((g, v)),
            Err(e) => {
                warn!(grant = %g, reason = %e, "skipping a malformed fleet value");
                None
            }
        }
    }

    /// Write remote grants into the local allow sets, marked with their origin: one batch
    /// per origin.
    fn write_remote_many(
        &mut self,
        mut writes: Vec<(GrantKey, u64, String)>,
    ) -> anyhow::Result<()> {
        writes.sort_by(|a, b| a.2.cmp(&b.2));
        for group in writes.chunk_by(|a, b| a.2 == b.2) {
            let origin = &group[0].2;
            let udata = element_comment(&mark(origin)).unwrap_or_default();
            let elems: Vec<Element> = group.iter().map(|(g, l, _)| element(*g, *l)).collect();
            self.nft.upsert_marked(&elems, &udata).with_context(|| {
                format!(
                    "write {} remote grant(s) from {origin} into this host's allow sets",
                    elems.len()
                )
            })?;
            let now = Instant::now();
            for (g, left_ms, _) in group {
                info!(source = %g.addr, access = %g.access, ttl_ms = left_ms, origin = %origin, "fleet grant written");
                self.remote
                    .insert(*g, (now + Duration::from_millis(*left_ms), origin.clone()));
            }
        }
        Ok(())
    }

    /// Publish grants of this host: puts in transactions of [`TXN_OPS`], each key on a lease
    /// that ends with its grant (rounded up to the second). Grants ending in the same second
    /// share a lease, so a burst of knocks costs one lease and one transaction per
    /// [`TXN_OPS`] grants, not two round trips each.
    async fn publish_many(
        &mut self,
        client: &mut Client,
        grants: &[(GrantKey, u64)],
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        self.leases.retain(|(end, _)| *end > now);
        for chunk in grants.chunks(TXN_OPS) {
            let mut ops = Vec::with_capacity(chunk.len());
            for &(g, left_ms) in chunk {
                let end = now + Duration::from_millis(left_ms);
                let found = self
                    .leases
                    .iter()
                    .find(|(e, _)| *e >= end && *e <= end + Duration::from_secs(1))
                    .map(|&(_, id)| id);
                let lease = match found {
                    Some(id) => id,
                    None => {
                        let r = client
                            .lease_grant(lease_ttl_secs(left_ms), None)
                            .await
                            .context("grant a lease")?;
                        // etcd may have raised the TTL to its minimum: the lease ends then.
                        let ttl = u64::try_from(r.ttl()).unwrap_or(0);
                        self.leases.push((now + Duration::from_secs(ttl), r.id()));
                        r.id()
                    }
                };
                let value = GrantValue::new(&self.config.host_id, left_ms).encode();
                ops.push(TxnOp::put(
                    self.config.layout.key(&g),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
            client
                .txn(Txn::new().and_then(ops))
                .await
                .with_context(|| format!("publish {} grant(s)", chunk.len()))?;
        }
        if !grants.is_empty() {
            debug!(count = grants.len(), "published");
        }
        Ok(())
    }

    /// A change of the local allow sets by someone else than this relay.
    /// Added grants go to `to_publish` (published together by the caller); removals are
    /// withdrawn at once.
    async fn local(
        &mut self,
        client: &mut Client,
        ev: ElemEvent,
        to_publish: &mut Vec<(GrantKey, u64)>,
    ) -> anyhow::Result<()> {
        let ElemEvent::Grant {
            added, elem, udata, ..
        } = ev
        else {
            return Ok(());
        };
        let g = GrantKey {
            addr: elem.addr,
            access: elem.access,
        };
        if added {
            let left = if elem.expires_ms > 0 {
                elem.expires_ms
            } else {
                elem.timeout_ms
            };
            if left == 0 {
                return Ok(()); // a grant without a timeout is nobody's to spread
            }
            self.own
                .insert(g, Instant::now() + Duration::from_millis(left));
            self.remote.remove(&g);
            to_publish.push((g, left));
            return Ok(());
        }
        // Removed here before its time by someone else than the relay (a revocation): remove
        // the key too, only if it is still this host's publication.
        let was_own = self
            .own
            .remove(&g)
            .is_some_and(|d| d > Instant::now() + Duration::from_secs(1));
        if was_own && !is_mark(element_comment_text(&udata)) {
            let key = self.config.layout.key(&g);
            let resp = client
                .get(key.clone(), None)
                .await
                .context("read a grant")?;
            if let Some(kv) = resp.kvs().first() {
                if GrantValue::parse(kv.value()).is_ok_and(|v| v.origin == self.config.host_id) {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::delete(key, None)]);
                    client.txn(txn).await.context("withdraw a revoked grant")?;
                    info!(grant = %g, "revoked here: withdrawn from the fleet");
                }
            }
        }
        Ok(())
    }

    /// One watch event from etcd.
    /// Grants to write go to `writes` (written together by the caller).
    fn remote_event(
        &mut self,
        ty: EventType,
        kv: Option<(&[u8], &[u8])>,
        writes: &mut Vec<(GrantKey, u64, String)>,
    ) {
        let Some((key, value)) = kv else {
            return;
        };
        match ty {
            EventType::Put => {
                let Some((g, v)) = self.parse(key, value) else {
                    return;
                };
                self.etcd_origin.insert(g, v.origin.clone());
                if v.origin == self.config.host_id {
                    return; // our own publication coming back
                }
                if let Err(e) = check_remote(&g, v.remaining_ms, &self.caps) {
                    warn!(grant = %g, origin = %v.origin, reason = %e, "remote grant refused");
                    return;
                }
                let deadline = Instant::now() + Duration::from_millis(v.remaining_ms);
                // A newer publication by the origin of the copy held here replaces it, shorter
                // or longer (the origin republishes after an etcd restart, whose leases restart
                // their time); anyone else's only counts if it extends what is held.
                let same_origin = self.remote.get(&g).is_some_and(|(_, o)| *o == v.origin)
                    && !self.own.contains_key(&g);
                let known = self
                    .own
                    .get(&g)
                    .copied()
                    .into_iter()
                    .chain(self.remote.get(&g).map(|(d, _)| *d))
                    .max();
                if !same_origin && known.is_some_and(|k| k + EXTEND_SLACK >= deadline) {
                    return; // already held here at least as long
                }
                self.own.remove(&g);
                self.remote.insert(g, (deadline, v.origin.clone()));
                writes.push((g, v.remaining_ms, v.origin));
            }
            EventType::Delete => {
                let Ok(g) = self.config.layout.parse_key(key) else {
                    return;
                };
                let last = self.etcd_origin.remove(&g);
                // A key leaving before the grant we wrote for it ends, from the origin we wrote
                // it for: revoked there. (A lease running out deletes the key after the grant.)
                let revoke = matches!(
                    (self.remote.get(&g), last),
                    (Some((d, o)), Some(l)) if *o == l && *d > Instant::now() + Duration::from_secs(1)
                );
                if revoke {
                    let (d, origin) = self
                        .remote
                        .remove(&g)
                        .unwrap_or((Instant::now(), String::new()));
                    let left = d.saturating_duration_since(Instant::now()).as_millis() as u64;
                    match self.nft.delete(&[element(g, left.max(1))]) {
                        Ok(()) => {
                            info!(grant = %g, origin = %origin, "revoked at its origin: removed here")
                        }
                        Err(e) => {
                            warn!(grant = %g, error = %e, "cannot remove a revoked remote grant")
                        }
                    }
                }
            }
        }
    }
}

fn element(g: GrantKey, timeout_ms: u64) -> Element {
    Element {
        addr: g.addr,
        access: g.access,
        timeout_ms,
        nat: None,
        gateway: None,
    }
}
