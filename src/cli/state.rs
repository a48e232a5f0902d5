//! `nfknock init-state`: declare a new state directory (the `first-start` marker), so the first
//! `serve` there grants knocks at once.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{ConfigArg, EXIT_FAIL, EXIT_OK};
use crate::daemon;

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| a.help("Take `state_dir` from this config")))]
pub struct InitStateArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The state directory itself, without reading a config (what the installer uses).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
}

pub(super) fn init_state(config: &Path, state_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    use crate::state::{mark_first_start, MarkOutcome, StateError};
    let dir = match state_dir {
        Some(dir) => dir,
        None => daemon::load_config(config)?.server.state_dir,
    };
    match mark_first_start(&dir) {
        Ok(MarkOutcome::Marked) => eprintln!(
            "{} is marked as a new state directory: the next `nfknock serve` starts a new replay journal there and grants at once",
            dir.display()
        ),
        Ok(MarkOutcome::AlreadyMarked) => eprintln!(
            "{} is already marked as a new state directory; nothing changed",
            dir.display()
        ),
        Err(e @ StateError::HasJournal { .. }) => {
            eprintln!("nfknock: {e}");
            return Ok(EXIT_FAIL);
        }
        Err(e) => return Err(e.into()),
    }
    Ok(EXIT_OK)
}
