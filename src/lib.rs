//! nfknock — Single Packet Authorization for nftables hosts.
//!
//! A client sends one encrypted UDP datagram; the kernel diverts it through an NFQUEUE to the
//! daemon, which authenticates it in-process and writes `source . proto . port` into an nftables
//! set with an element timeout. The kernel enforces the gate and expires the grant.
//!
//! # Map of the modules
//!
//! Pure core (no I/O, no clock, no RNG of its own, never panics on input):
//!
//! | module | role |
//! | --- | --- |
//! | [`access`] | `proto/port` values shared by every layer |
//! | [`wire`] | packet formats: [`wire::ip`] (IP/UDP headers from the queue), [`wire::native`] (nfknock v1, AES-256-GCM), [`wire::fwknop`] (fwknop 2.x) |
//! | [`crypto`] | keys (zeroized on drop), key derivation, the [`crypto::Rng`] trait |
//! | [`replay`] | replay cache bounded by time, and the encoding of its on-disk journal |
//! | [`policy`] | `(knock, packet, client, now) -> Decision`; [`policy::Knock`] is what an authenticated knock asks, whatever its format |
//! | [`engine`] | the whole per-packet pipeline: parse → key lookup → authenticate → replay → policy; `engine/` has one file per format path and one for the native key-hint index |
//! | [`config`] | pure: TOML bytes → validated [`config::Config`] (the daemon's) and [`config::KnockProfiles`] (the knock client's own file); reads files only through the [`config::Files`] it is given; every error names the file, line and key |
//! | [`fwknop_import`] | translator: fwknopd's `access.conf`/`fwknopd.conf` → nfknock TOML with warnings; reads through the [`fwknop_import::Loader`] it is given |
//! | [`command`] (`mod.rs`, `template.rs`, `split.rs`, `proto.rs`) | command cycles and command messages: per-client settings, argv templates with per-argument substitution, splitting a command string without a shell, the daemon → runner message format |
//! | [`metrics`] | the daemon's counters and their Prometheus text exposition; the daemon passes in what it reads (kernel queue counters, journal size, live grants) |
//! | [`fleet::record`], [`fleet::settings`] | the fleet relay's etcd records (key layout, value, the caps a remote grant must pass, lease arithmetic) and its `fleet.toml`, as pure functions |
//! | [`grants`] (`grants/mod.rs`) | the grant seam: [`grants::Grant`] (with its NAT target, if forwarded), [`grants::GrantError`], the [`grants::GrantSink`] and [`grants::GrantStore`] traits, the [`grants::DryRun`] wrapper; [`grants::open`] and [`grants::existing`] only pick the backend `[server] backend` names, whose own file does the I/O |
//!
//! Shells (I/O, nothing clever):
//!
//! | module | role |
//! | --- | --- |
//! | [`netfilter::netlink`] | the one netlink layer: socket, message builder, parser (never panics), batches |
//! | [`netfilter::queue`] | NFQUEUE over that layer: receive, verdict; the kernel's queue counters |
//! | [`netfilter::nft`] | nftables over that layer: the owned table, grants with timeouts, listing, events |
//! | [`state`] | the replay journal on disk (append, compact by write-then-rename); `state_dir` checks |
//! | [`sys`] | the I/O edge: the CSPRNG behind the core's `Rng`; [`sys::FsLoader`], the one implementation of [`config::Files`] (config, key and importer files, opened once, checked on the descriptor, size-capped, regular files only); [`sys::replace_file`], the one way a file is replaced whole (tmp, `O_EXCL`, rename); the user database; the switch from root to the service user |
//! | [`grants::nft_set`] | the `nftables` grant backend (default): grants as set elements with timeouts (forwarded ones also as DNAT map and SNAT/masquerade elements, gateway ones as timed `source . network` ranges), the owned table and its gate, through [`netfilter::nft`] |
//! | [`command::runner`], [`command::pending`] | the privilege-separated command runner (forked before the daemon drops root, `runner/jobs.rs` its job loop: execs named commands as their user, with timeouts and bounded output); the pending `on_expire` commands in `state_dir` |
//! | [`netfilter::ipset`] | ipset over that layer: `hash:ip,port` sets, elements with timeouts (a re-add refreshes), listing |
//! | [`netfilter::iptables`] | pure: the iptables-restore text of an iptables host's capture and gate, for the ipset backend |
//! | [`grants::ipset`] | the `ipset` grant backend (iptables/firewalld hosts): grants as elements with timeouts in two ipsets it owns, through [`netfilter::ipset`] |
//! | [`daemon`] | wiring: queue → engine → grants → verdict; one worker thread per queue for `queue = "a-b"`; signals, reload, sd_notify, the control socket `nfknock reload` asks (on its own thread, so the loop never waits for a requester), the switch to the service user |
//! | `fleet::relay` (feature `fleet`) | the fleet relay of the `nfknock-fleet` binary: etcd client, the allow sets' events, the loop; the `nfknock` daemon binary never links it |
//! | [`cli`] | the command line: [`cli::Cli`], exit codes, `--config` and the dispatch in `cli/mod.rs`, one file per command family; `main.rs` is thin |
//!
//! Unit tests live beside their code: inline `#[cfg(test)] mod tests { … }` while they are
//! short (about 150 lines), otherwise `mod tests;` in a `tests.rs` beside the file (`foo/tests.rs`
//! for `foo.rs` or `foo/mod.rs`). `tests/e2e/` is the one end-to-end binary.
//!
//! `wire`, `crypto`, `replay`, `policy`, `engine` and `config` import neither `netfilter` nor
//! `daemon`. Only `daemon` turns a [`policy::Decision`] into grants, through the [`grants`]
//! seam; only the backends under `grants/` know what holds them.

pub mod access;
pub mod cli;
pub mod command;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod engine;
pub mod fleet;
pub mod fwknop_import;
pub mod grants;
pub mod metrics;
pub mod netfilter;
pub mod policy;
pub mod replay;
pub mod state;
pub mod sys;
pub mod wire;
