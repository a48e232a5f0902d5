//! `nfknock`: thin entry point. Parses the command line, sets up logging, runs the command,
//! prints the whole error chain and exits with the documented code.

use clap::Parser;

fn main() {
    // The command runner `nfknock serve` executes (src/command/runner.rs): not a command of
    // the command line, and useless without the socket it is handed on descriptor 3.
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(nfknock::command::runner::RUNNER_ARG)) {
        init_logging();
        let max = args.next().unwrap_or_default();
        nfknock::command::runner::runner_main(&max.to_string_lossy());
    }
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
