//! Wiring: queue → engine → grants → verdict, plus signals, reload, sd_notify, privileges.
//!
//! The only place a [`Decision`](crate::policy::Decision) becomes a grant, through the
//! [`grants`] seam (which backend holds the grants is the config's choice). One thread, one
//! `poll(2)` over the queue socket (with `queue = "a-b"`: an eventfd the queue workers signal,
//! see `workers.rs`), the grant backend's event socket and a signal pipe: a
//! signal never waits for a packet, and a turn of the loop spends at most `TURN` (50 ms) on
//! packets before it serves signals, backend events and the tick again, so a flood never
//! starves them. One daemon per network namespace ([`InstanceLock`]); a reload revokes the live
//! grants the new config no longer authorises.
//!
//! Per burst of queued packets: every packet goes through the pure [`Engine`]; the replay
//! records of authenticated packets are appended to the journal (before any grant, so a crash
//! can never forget a packet that opened something); all grants go to the backend in one write
//! (one netlink batch for nftables); then one batch verdict drops every packet of the burst — a
//! knock is never delivered and the host never answers.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`serve`]: the wiring at start (config, lock, journal, queue, grant backend, privileges); clocks |
//! | `run.rs` | [`Daemon`]: the loop, with a budget per turn; [`PacketSource`] |
//! | `workers.rs` | [`Queues`]: one queue on the loop, or `queue = "a-b"`: one worker thread per queue ([`Fanin`]) receiving and dropping, the loop deciding |
//! | `reload.rs` | a reload, and the revocation of grants the new config no longer authorises |
//! | `live_grants.rs` | the grants this daemon wrote, to restore after a flush and to revoke |
//! | `commands.rs` | command cycles and command messages: jobs for the runner (`crate::command::runner`), pending closes on disk, run from the tick |
//! | `metrics_file.rs` | the metrics file for node_exporter, replaced whole (tmp + rename) |
//! | `control.rs` | [`Control`]: SIGTERM/SIGINT/SIGHUP, or a [`ControlHandle`] (tests, requests); each reload's outcome for whoever asked |
//! | `requests.rs` | the control socket (the instance lock's): `nfknock reload` asks, the daemon answers ok or why not |
//! | `instance.rs` | [`InstanceLock`]: one daemon per network namespace |
//! | `privileges.rs` | the switch to the service user ([`leave_root`]) and [`drop_privileges`] |
//! | `tests.rs` | the real loop driven in-process, against a recording [`GrantSink`](crate::grants::GrantSink) |

mod commands;
mod control;
mod instance;
mod live_grants;
mod metrics_file;
mod privileges;
mod reload;
mod requests;
mod run;
mod workers;

#[cfg(test)]
mod tests;

pub use control::{Control, ControlHandle, ReloadOutcome};
pub use instance::{Action, AlreadyRunning, InstanceLock};
pub use privileges::drop_privileges;
use privileges::leave_root;
pub use requests::{request_reload, RequestError, RELOAD_WAIT};
pub use run::{Daemon, PacketSource};
pub use workers::{Fanin, Queues};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::engine::Engine;
use crate::grants;
use crate::state::{LoadReport, ReplayJournal};
use crate::wire;

/// `nfknock serve` options.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// Decide and log every knock, write no grant.
    pub dry_run: bool,
    /// With `dry_run`: install the gate rules too (without it a dry run closes nothing).
    pub with_gate: bool,
}

pub use crate::sys::clock::{monotonic_secs, unix_now};

/// Load a config or explain every problem.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    config::load(path, &crate::sys::FsLoader, &crate::sys::SystemAccounts).map_err(|e| {
        let hint = format!(
            "fix the problems above and run `nfknock check --config {}`",
            path.display()
        );
        anyhow::Error::new(e).context(hint)
    })
}

/// Open the replay journal and log what was found: which case applied and, where knocks are
/// refused, until when and what the operator can do.
fn open_journal(
    config: &Config,
    config_path: &Path,
    now: u64,
) -> anyhow::Result<(ReplayJournal, crate::replay::ReplayCache)> {
    let dir = &config.server.state_dir;
    let max_age = config.server.max_age;
    let (journal, cache, report) = ReplayJournal::open(dir, now, max_age)
        .context("cannot open the replay journal; check `state_dir` and its permissions")?;
    // Every "refused" case below refuses knocks stamped before start + max_age: a knock
    // accepted before may carry a timestamp up to max_age ahead of the clock.
    match &report {
        LoadReport::FirstStart => info!(
            dir = %dir.display(),
            "first start of this state directory (first-start marker found): new replay journal, marker removed"
        ),
        LoadReport::Missing {
            refuse_before,
            dir_created,
            marker_ignored,
        } => error!(
            dir = %dir.display(),
            "no replay journal and no first-start marker in the state directory ({}): taken for \
             a lost journal (directory wiped or on a tmpfs, or `state_dir` changed), so knocks \
             stamped before {refuse_before} are refused for the next {max_age}s (no replay \
             window opens){}; after that knocks work again, nothing else to do. A new state \
             directory meant as such grants at once if prepared before its first start with \
             `nfknock init-state --config {}` (scripts/install does this)",
            if *dir_created { "it did not exist" } else { "it exists, without a journal" },
            if *marker_ignored {
                "; a `first-start` entry that is not a regular file was ignored"
            } else {
                ""
            },
            config_path.display()
        ),
        LoadReport::Loaded { live, torn_tail } => {
            info!(live, torn_tail, "replay journal loaded");
            if cache.refuse_before() > now {
                warn!(
                    "the replay journal was lost or set aside less than max_age ago: knocks \
                     stamped before {} are still refused",
                    cache.refuse_before()
                );
            }
        }
        LoadReport::Upgraded {
            from_version,
            live,
            refuse_before,
        } => warn!(
            live,
            "replay journal rewritten from format {from_version}, which does not say which knocks \
             it had already forgotten: knocks stamped before {refuse_before} are refused for the \
             next {max_age}s (no replay window opens)"
        ),
        LoadReport::Corrupt {
            reason,
            refuse_before,
        } => error!(
            %reason,
            "replay journal was corrupt and has been set aside; knocks stamped before \
             {refuse_before} are refused for the next {max_age}s (no replay window opens)"
        ),
    }
    Ok((journal, cache))
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn serve(opts: &Options) -> anyhow::Result<()> {
    let config = Arc::new(load_config(&opts.config)?);
    for w in config::warnings(&config) {
        warn!("{w}");
    }
    // Before anything in the kernel or the state directory is touched: a running daemon must
    // see no change at all.
    let instance = InstanceLock::acquire(Action::Serve)?;
    // The command runner is forked while the daemon is still root and has one thread: after
    // `leave_root` nothing could run a command as another user (crate::command::runner).
    let runner = if opts.dry_run {
        None
    } else {
        crate::command::runner::spawn(&config, config.server.user.switch_to(crate::sys::euid()))
            .context("cannot start the command runner")?
    };
    // Started as root (no unit's User=): become the service user before anything is created in
    // state_dir, so every file there is its own, as under systemd. The netlink work below
    // needs only the CAP_NET_ADMIN it keeps. (After the lock: a missing state_dir is created.)
    leave_root(&config, &opts.config)?;
    let now = unix_now();
    let (journal, cache) = open_journal(&config, &opts.config, now)?;
    let pending = crate::command::pending::Pending::open(&config.server.state_dir).context(
        "cannot read the pending on_expire commands; nfknock does not start without them",
    )?;
    let commands = commands::Commands::new(runner, pending, opts.dry_run);

    // The queue before any nftables change: if another program holds the number, nothing has
    // been diverted to it or gated in its name.
    let queues = Queues::open(config.server.queue, config.server.queue_count)?;
    // The grant backend sets up its objects (for nftables: installs the table and the gate).
    let gate = !opts.dry_run || opts.with_gate;
    let grants = grants::open(
        &config,
        grants::Options {
            dry_run: opts.dry_run,
            gate,
        },
    )?;

    let control = Control::register()?;
    drop_privileges()?;
    // The lock's socket answers `nfknock reload` from here on, on a thread that inherits the
    // dropped privileges; it holds the lock for the process's life.
    requests::spawn(instance, control.handle()?)?;
    // Workers (queue = "a-b") start after the drop: threads inherit the capabilities of the
    // thread that starts them.
    let queue = Queues::start(queues).context("cannot start the queue worker threads")?;
    // No extra refusal bound: the cache carries it (and its journal keeps it across restarts).
    let engine = Engine::new(config.clone(), cache, 0, now);
    release_freed_memory();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    info!(
        clients = config.clients.len(),
        dry_run = opts.dry_run,
        "nfknock serving"
    );
    let result = Daemon::new(engine, journal, queue, grants, opts.config.clone())
        .with_commands(commands)
        .run(&control);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    result
}

/// Give the heap that parsing a large config used back to the kernel: glibc keeps freed memory
/// in its arenas, and a 10 000-client TOML parse leaves megabytes there for the daemon's life.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; no pointers of ours are involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Parse a knock payload file or hex (for `verify`): raw bytes of the UDP payload.
pub fn describe_format(payload: &[u8]) -> &'static str {
    wire::detect(payload).map_or("unknown", |f| f.name())
}
