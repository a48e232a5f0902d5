//! The command line: raw arguments are parsed by clap, then each subcommand resolves them into
//! validated settings and calls the library. Exit codes are documented in `--help`.
//!
//! This file holds what every command shares: the [`Cli`] and its [`Command`]s, the exit
//! codes, `--config` ([`ConfigArg`], defined once) and the dispatch ([`run`]). Each command
//! family lives in its own file:
//!
//! | file | commands |
//! | --- | --- |
//! | `serve.rs` | `serve` (its flags become [`crate::daemon::Options`]) |
//! | `check.rs` | `check` |
//! | `reload.rs` | `reload` (ask the running daemon over its control socket; the unit's `ExecReload=`) |
//! | `table.rs` | `ruleset`, `uninstall` (the `inet nfknock` table as a whole) |
//! | `status.rs` | `status` (the live grants) |
//! | `state.rs` | `init-state` |
//! | `keys.rs` | `keygen` (native and `--fwknop`; `qr.rs` draws its QR code) |
//! | `knock.rs` | `knock` (the client; its own client config, `--client-config` and `-n NAME`) |
//! | `verify.rs` | `verify` |
//! | `import.rs` | `import-fwknop` |

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::daemon;

mod check;
mod import;
mod keys;
mod knock;
mod qr;
mod reload;
mod serve;
mod state;
mod status;
mod table;
mod verify;

#[cfg(test)]
mod tests;

pub use import::ImportFwknopArgs;
pub use keys::KeygenArgs;
pub use knock::KnockArgs;
pub use serve::ServeArgs;
pub use state::InitStateArgs;
pub use status::StatusArgs;
pub use table::{RulesetArgs, UninstallArgs};
pub use verify::VerifyArgs;

/// Where the server config lives unless `--config` says otherwise (the systemd unit's path).
pub const DEFAULT_CONFIG: &str = "/etc/nfknock/nfknock.toml";

/// Exit codes.
pub const EXIT_OK: i32 = 0;
/// `check` found problems; `verify` decided "reject"; a runtime failure.
pub const EXIT_FAIL: i32 = 1;
/// Bad command line or unusable config; or `serve`/`uninstall` found another nfknock daemon
/// (or another program on the NFQUEUE) and changed nothing.
pub const EXIT_USAGE: i32 = 2;

/// The exit code for the error that ended a command: [`EXIT_USAGE`] when it stopped before
/// changing anything because the table or the queue is someone else's (another nfknock daemon,
/// another program on the NFQUEUE), [`EXIT_FAIL`] for every other failure.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    use crate::netfilter::queue::QueueError;
    let conflict = e.chain().any(|c| {
        c.is::<daemon::AlreadyRunning>()
            || c.is::<UsageError>()
            || matches!(c.downcast_ref(), Some(QueueError::Busy { .. }))
    });
    if conflict {
        EXIT_USAGE
    } else {
        EXIT_FAIL
    }
}

/// A command line that cannot be carried out as given (a flag missing or malformed beyond what
/// clap checks): exit status 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 failure (check found problems, verify rejected, runtime error);
2 usage or configuration error, or `serve`/`uninstall` found another nfknock daemon (or
another program on the NFQUEUE) and changed nothing.

Quick start (server):  nfknock keygen --out /etc/nfknock/alice.key      (mode 0600)
                       name it in /etc/nfknock/nfknock.toml (see examples/server.toml)
                       nfknock check --config /etc/nfknock/nfknock.toml
                       systemctl enable --now nfknock
Quick start (client):  nfknock knock --server HOST --key-file alice.key --access tcp/22
                       ssh HOST     (within the grant's timeout)
Logs: stderr (journald under systemd); NFKNOCK_LOG=debug shows every rejected knock.";

#[derive(Debug, Parser)]
#[command(
    name = "nfknock",
    version,
    about = "Single Packet Authorization for nftables hosts",
    long_about = "nfknock opens firewall ports for one encrypted UDP packet.\n\n\
        The server (`nfknock serve`) receives knocks through an NFQUEUE, authenticates them \
        in-process and adds `source . proto . port` to an nftables set with a timeout; a \
        drop-only gate in table `inet nfknock` keeps protected ports closed to everyone else. \
        Native knocks (`nfknock knock`) and fwknop 2.x clients are accepted on the same port.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a new random 256-bit client key (base64) for a `[[client]]` entry and its key file;
    /// with --fwknop, an fwknop key pair, its access.conf and nfknock lines, and a QR code for
    /// the Android Fwknop2 app (--qr).
    Keygen(KeygenArgs),
    /// Run the daemon in the foreground (logs to stderr; journald-friendly).
    Serve(ServeArgs),
    /// Declare a new state directory, so the first `serve` there grants knocks at once.
    ///
    /// A state directory without a replay journal is otherwise taken for one whose journal was
    /// lost (wiped, on a tmpfs, or `state_dir` changed): knocks stamped before start + max_age
    /// are refused, because knocks accepted before could be replayed. This creates the
    /// directory (0700) if needed and puts the `first-start` marker in it; the daemon removes
    /// the marker once its journal exists. scripts/install runs it when it creates
    /// /var/lib/nfknock.
    ///
    /// Run it only for a directory that never served, or after giving every client a new key:
    /// knocks captured while the old journal existed would be accepted again. Refused (exit
    /// status 1) if the directory holds a replay journal.
    InitState(InitStateArgs),
    /// Validate a server config; print every problem with file, line and key.
    Check(ConfigArg),
    /// Check the config, then have the running daemon load it; wait for its answer.
    ///
    /// Exit status 0 only once the daemon serves the new config (warnings, e.g. a `queue`
    /// change that waits for a restart, are printed); 1 with the reason when the config fails
    /// the check or the daemon refused it (it keeps serving its current config), or when no
    /// daemon answers within 30 s. The unit's `ExecReload=`: `systemctl reload nfknock`.
    /// The daemon answers root and its own user only. SIGHUP still reloads, without an answer.
    Reload(ConfigArg),
    /// Send one knock: native, or an fwknop 2.x packet with --fwknop (for fwknopd or an
    /// nfknock `[client.fwknop]` entry).
    Knock(KnockArgs),
    /// List live grants from the kernel: source, proto/port, seconds left (or, with
    /// `--metrics`, the daemon's Prometheus metrics).
    Status(StatusArgs),
    /// Explain offline what the daemon would do with one packet (no kernel, no replay cache).
    Verify(VerifyArgs),
    /// Print the nftables ruleset the daemon installs for a config (to load it yourself with
    /// `nft -f` and `manage_ruleset = false`, or to review it); with `--iptables` or
    /// `--ip6tables`, the rules of an iptables host for `backend = "ipset"`.
    Ruleset(RulesetArgs),
    /// Remove table `inet nfknock` (the gate and every grant) from the kernel, or with
    /// `backend = "ipset"` in the config the two ipsets. Refused (exit 2) while `nfknock serve`
    /// runs in this network namespace: it would re-create them.
    Uninstall(UninstallArgs),
    /// Convert fwknopd's access.conf (and fwknopd.conf) into an nfknock config on stdout.
    ///
    /// The output holds the keys: `umask 077; nfknock import-fwknop ... > /etc/nfknock/nfknock.toml`.
    /// Exit status: 0 everything converted (warnings on stderr); 1 some stanza could not be
    /// converted (the rest is printed); 2 a file could not be read, or a bad command line.
    ImportFwknop(ImportFwknopArgs),
}

/// `-c, --config PATH`: the server config, for every command that reads one. Flattened into
/// each command's arguments so its flags, default and help are written once.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The server's config file (TOML).
    #[arg(
        long,
        short = 'c',
        value_name = "PATH",
        default_value = DEFAULT_CONFIG
    )]
    pub config: PathBuf,
}

impl ConfigArg {
    /// The config file to read.
    pub fn path(&self) -> &Path {
        &self.config
    }
}

/// Run a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Keygen(args) => keys::keygen(args),
        Command::Serve(args) => serve::serve(args),
        Command::InitState(args) => state::init_state(args.config.path(), args.state_dir),
        Command::Check(config) => check::check(config.path()),
        Command::Reload(config) => reload::reload(config.path()),
        Command::Knock(args) => knock::knock(args),
        Command::Status(args) if args.metrics => status::metrics(args.config.path()),
        Command::Status(args) => status::status(args.config.path(), args.json),
        Command::Verify(args) => verify::verify(args),
        Command::Ruleset(args) => table::ruleset(&args),
        Command::Uninstall(args) => table::uninstall(args.config.path()),
        Command::ImportFwknop(args) => import::import_fwknop(&args),
    }
}
