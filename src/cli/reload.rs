//! `nfknock reload`: check the config, ask the running daemon to load it, and report whether it
//! is in force (the unit's `ExecReload=`, so `systemctl reload nfknock` tells the truth).

use std::path::Path;

use super::{check, EXIT_FAIL, EXIT_OK};
use crate::daemon;

pub(super) fn reload(path: &Path) -> anyhow::Result<i32> {
    // The same check as `nfknock check`: a config that fails it never reaches the daemon.
    if check::check(path)? != EXIT_OK {
        eprintln!(
            "error: nothing was reloaded; the nfknock daemon keeps serving its current config"
        );
        return Ok(EXIT_FAIL);
    }
    match daemon::request_reload() {
        Ok(Ok(notes)) => {
            for n in notes {
                eprintln!("warning: {n}");
            }
            println!("reloaded: the nfknock daemon's new config is in force");
            Ok(EXIT_OK)
        }
        Ok(Err(reason)) => {
            eprintln!(
                "error: the nfknock daemon refused the new config and keeps serving its current one:\n{reason}"
            );
            Ok(EXIT_FAIL)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(EXIT_FAIL)
        }
    }
}
