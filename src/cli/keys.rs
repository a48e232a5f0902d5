//! `nfknock keygen`: a new random client key, on stdout or in a new file of mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::EXIT_OK;
use crate::crypto;
use crate::sys::OsRng;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the key to this file (mode 0600, refused if it exists) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

pub(super) fn keygen(out: Option<&Path>) -> anyhow::Result<i32> {
    let key = crypto::generate_secret_base64(&mut OsRng);
    match out {
        None => println!("{}", key.as_str()),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create key file {} (it must not exist yet)",
                        path.display()
                    )
                })?;
            writeln!(f, "{}", key.as_str())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote a new key to {} (mode 0600)", path.display());
        }
    }
    Ok(EXIT_OK)
}
