//! `nfknock`: thin entry point. Parses the command line, sets up logging, runs the command,
//! prints the whole error chain and exits with the documented code.

use clap::Parser;

fn main() {
    let cli = match nfknock::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                nfknock::cli::EXIT_USAGE
            } else {
                nfknock::cli::EXIT_OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging();
    match nfknock::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Config problems are listed one per line, then what to do.
            if let Some(problems) = e
                .chain()
                .find_map(|c| c.downcast_ref::<nfknock::config::ConfigErrors>())
            {
                eprintln!("nfknock: error: the configuration is not valid:");
                for p in &problems.0 {
                    eprintln!("  {p}");
                }
                eprintln!("{e}");
                std::process::exit(nfknock::cli::EXIT_USAGE);
            }
            eprintln!("nfknock: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::exit(nfknock::cli::exit_code(&e));
        }
    }
}

/// Logs go to stderr, which journald captures; `NFKNOCK_LOG` (or `RUST_LOG`) sets the filter,
/// default `info`. Under systemd (JOURNAL_STREAM set) timestamps are left to the journal.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("NFKNOCK_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}
