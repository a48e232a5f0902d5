//! Generates nfknock's man pages and shell completions from the clap definitions, so they can
//! never drift from `--help`. A build tool, not part of the daemon: `clap_mangen` and
//! `clap_complete` are dev-dependencies, and the `nfknock` binary carries neither (issue 12 §2).
//! Measured (release, stripped, 2026-11-30): this tool is 812 KiB against 615 KiB for the same
//! program rendering only `--help`: ≈ 200 KiB the daemon would carry for a hidden subcommand.
//!
//! ```text
//! cargo run --example gen_docs -- OUT_DIR
//! ```
//!
//! writes, under OUT_DIR (created if needed):
//!
//! | path | what |
//! | --- | --- |
//! | `man/nfknock.8` | the command and its subcommands (clap_mangen) |
//! | `man/nfknock-SUBCOMMAND.8` | one page per subcommand, e.g. `nfknock-serve.8` |
//! | `man/nfknock.toml.5` | the config file, copied from the hand-written `man/nfknock.toml.5` |
//! | `completions/nfknock.bash` | bash (install as `/usr/share/bash-completion/completions/nfknock`) |
//! | `completions/_nfknock` | zsh (`/usr/share/zsh/vendor-completions/_nfknock`) |
//! | `completions/nfknock.fish` | fish (`/usr/share/fish/vendor_completions.d/nfknock.fish`) |
//!
//! The output depends on nothing but the sources (no date, no path): the same tree gives the
//! same bytes. `tests/docs.rs` keeps the pages in step with `--help` and the config parser.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// The section of nfknock's own pages: a daemon and its administration commands.
const SECTION: &str = "8";

/// Write every page and completion under `out`; returns the files written, sorted.
pub fn generate(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut written = Vec::new();

    let cmd = nfknock::cli::Cli::command();
    let version = env!("CARGO_PKG_VERSION");
    let page = |cmd: clap::Command, file: PathBuf| -> std::io::Result<PathBuf> {
        let mut bytes = Vec::new();
        clap_mangen::Man::new(cmd)
            .section(SECTION)
            .source(format!("nfknock {version}"))
            .manual("System Administration")
            .render(&mut bytes)?;
        std::fs::write(&file, bytes)?;
        Ok(file)
    };
    written.push(page(cmd.clone(), man.join("nfknock.8"))?);
    for sub in cmd.get_subcommands() {
        // clap names are `&'static str` (without its `string` feature); this tool runs once.
        let name: &'static str = Box::leak(format!("nfknock-{}", sub.get_name()).into_boxed_str());
        let sub = sub
            .clone()
            .name(name)
            .bin_name(format!("nfknock {}", sub.get_name()));
        written.push(page(sub, man.join(format!("{name}.8")))?);
    }
    written.push(page(
        nfknock::fleet::Cli::command(),
        man.join("nfknock-fleet.8"),
    )?);
    let toml5 = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/nfknock.toml.5");
    std::fs::copy(&toml5, man.join("nfknock.toml.5"))?;
    written.push(man.join("nfknock.toml.5"));

    for (shell, file) in [
        (clap_complete::Shell::Bash, "nfknock.bash"),
        (clap_complete::Shell::Zsh, "_nfknock"),
        (clap_complete::Shell::Fish, "nfknock.fish"),
    ] {
        let mut cmd = nfknock::cli::Cli::command();
        let mut bytes = Vec::new();
        clap_complete::generate(shell, &mut cmd, "nfknock", &mut bytes);
        let path = completions.join(file);
        std::fs::write(&path, bytes)?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[allow(dead_code)] // `tests/docs.rs` includes this file for `generate`
fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: cargo run --example gen_docs -- OUT_DIR");
        std::process::exit(2);
    };
    match generate(Path::new(&out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
        }
        Err(e) => {
            eprintln!(
                "gen_docs: cannot write under {}: {e}",
                Path::new(&out).display()
            );
            std::process::exit(1);
        }
    }
}
