//! `nfknock import-fwknop`: convert fwknopd's access.conf (and fwknopd.conf) into an nfknock
//! config on stdout, with the importer's warnings and errors on stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{EXIT_FAIL, EXIT_OK, EXIT_USAGE};
use crate::access;

#[derive(Debug, Args)]
pub struct ImportFwknopArgs {
    /// fwknopd's access file (its %include, %include_folder and %include_keys are followed).
    #[arg(long, value_name = "PATH")]
    pub access_conf: PathBuf,
    /// fwknopd.conf, for the knock port (PCAP_FILTER, UDPSERV_PORT, NFQ_PORT) and MAX_SPA_PACKET_AGE.
    #[arg(long, value_name = "PATH")]
    pub fwknopd_conf: Option<PathBuf>,
    /// The `allow` list for stanzas without OPEN_PORTS (fwknopd let those open any port),
    /// e.g. `tcp/22,tcp/443`.
    #[arg(long, value_name = "LIST")]
    pub protect: Option<String>,
}

pub(super) fn import_fwknop(args: &ImportFwknopArgs) -> anyhow::Result<i32> {
    use crate::fwknop_import as fi;
    let protect = match &args.protect {
        None => None,
        Some(list) => match access::parse_list(list) {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) | Err(_) => {
                eprintln!("nfknock: --protect `{list}`: expected a list such as `tcp/22,tcp/443`");
                return Ok(EXIT_USAGE);
            }
        },
    };
    let opts = fi::Options { protect };
    let import = match fi::import(
        &crate::sys::FsLoader,
        &args.access_conf,
        args.fwknopd_conf.as_deref(),
        &opts,
    ) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("nfknock: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    for d in &import.diags {
        eprintln!("{d}");
    }
    if let Some(text) = &import.toml {
        std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write the config to stdout")?;
        eprintln!("{}", fi::secrecy_reminder(&args.access_conf));
    }
    eprintln!(
        "imported {} client{}{}",
        import.clients.len(),
        if import.clients.len() == 1 { "" } else { "s" },
        if import.failed > 0 {
            format!(
                "; {} stanza(s) could not be converted (see the errors above)",
                import.failed
            )
        } else {
            String::new()
        }
    );
    Ok(if import.complete() {
        EXIT_OK
    } else {
        EXIT_FAIL
    })
}
