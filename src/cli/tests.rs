//! The command line as a user meets it: every `--help` renders, `--config` means the same in
//! every server command, and clap's own consistency checks hold.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use super::{Cli, DEFAULT_CONFIG};

/// The commands that take a server config with `-c, --config PATH`.
const WITH_CONFIG: [&str; 8] = [
    "serve",
    "init-state",
    "check",
    "reload",
    "status",
    "verify",
    "ruleset",
    "uninstall",
];

/// The smallest valid command line for each of them (verify needs a source and a packet).
fn minimal(command: &str) -> Vec<&str> {
    let mut argv = vec!["nfknock", command];
    if command == "verify" {
        argv.extend(["--source", "192.0.2.1", "--packet", "x"]);
    }
    argv
}

fn config_of(argv: &[&str]) -> PathBuf {
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let (_, sub) = matches.subcommand().expect("a subcommand");
    sub.get_one::<PathBuf>("config")
        .unwrap_or_else(|| panic!("{argv:?}: no --config value"))
        .clone()
}

/// Duplicate flags, a `conflicts_with`/`requires` naming an argument that does not exist, two
/// arguments on one short flag: clap panics here instead of at a user's command line.
#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_help_renders() {
    for long in [false, true] {
        let flag = if long { "--help" } else { "-h" };
        let e = Cli::try_parse_from(["nfknock", flag]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("Exit status: 0 success"), "{e}");
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            let e = Cli::try_parse_from(["nfknock", name, flag]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "nfknock {name} {flag}");
            assert!(
                e.to_string().contains(&format!("Usage: nfknock {name}")),
                "nfknock {name} {flag}: {e}"
            );
        }
    }
}

/// `-c, --config PATH` is one flag with one default wherever it appears, and only the server
/// commands have it: `knock` reads the client's own file, named by `--client-config`.
#[test]
fn config_flag_is_the_same_in_every_server_command() {
    let cli = Cli::command();
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        let config = sub.get_arguments().find(|a| a.get_id() == "config");
        if !WITH_CONFIG.contains(&name) {
            assert!(config.is_none(), "nfknock {name} must not take --config");
            continue;
        }
        let config = config.unwrap_or_else(|| panic!("nfknock {name} lost --config"));
        assert_eq!(config.get_long(), Some("config"), "{name}");
        assert_eq!(config.get_short(), Some('c'), "{name}");
        assert_eq!(
            config.get_default_values(),
            [DEFAULT_CONFIG],
            "nfknock {name}"
        );
        assert!(
            config.get_help().is_some(),
            "nfknock {name}: --config has no help"
        );
    }
    let knock = cli.find_subcommand("knock").expect("knock");
    let client = knock
        .get_arguments()
        .find(|a| a.get_id() == "client_config")
        .expect("knock --client-config");
    assert_eq!(client.get_long(), Some("client-config"));
    assert_eq!(
        client.get_short(),
        None,
        "-c belongs to the server's --config"
    );
}

#[test]
fn config_defaults_and_overrides_alike_in_every_server_command() {
    for name in WITH_CONFIG {
        let argv = minimal(name);
        assert_eq!(config_of(&argv), PathBuf::from(DEFAULT_CONFIG), "{argv:?}");
        for flag in ["-c", "--config"] {
            let mut argv = minimal(name);
            argv.extend([flag, "/tmp/other.toml"]);
            assert_eq!(
                config_of(&argv),
                PathBuf::from("/tmp/other.toml"),
                "{argv:?}"
            );
        }
    }
}

#[test]
fn init_state_takes_a_config_or_a_state_dir_not_both() {
    let e = Cli::try_parse_from([
        "nfknock",
        "init-state",
        "-c",
        "/a.toml",
        "--state-dir",
        "/b",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{e}");
    // The default config does not count as given.
    Cli::try_parse_from(["nfknock", "init-state", "--state-dir", "/b"]).unwrap();
}

#[test]
fn serve_with_gate_needs_dry_run() {
    let e = Cli::try_parse_from(["nfknock", "serve", "--with-gate"]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{e}");
    Cli::try_parse_from(["nfknock", "serve", "--dry-run", "--with-gate"]).unwrap();
}
