//! `nfknock-fleet`: the fleet relay (docs/FLEET.md). Shares this host's nfknock grants with the
//! other hosts of its fleet through etcd, and writes theirs here. A binary of its own so that
//! the SPA daemon (`nfknock`) never links the etcd, gRPC and TLS client code.

use std::process::ExitCode;

use clap::Parser;
use nfknock::fleet::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nfknock-fleet: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    use anyhow::Context;
    let text = std::fs::read_to_string(&cli.config).with_context(|| {
        format!(
            "cannot read {} (see examples/fleet.toml)",
            cli.config.display()
        )
    })?;
    let config = nfknock::fleet::settings::parse(&text, &cli.config).map_err(anyhow::Error::msg)?;
    let tls = nfknock::fleet::relay::read_tls(&config)?;
    if cli.check {
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    nfknock::fleet::relay::run(config, tls)
}

/// Logs go to stderr (journald captures them); `NFKNOCK_LOG` or `RUST_LOG` sets the filter.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("NFKNOCK_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
