//! Issue 12 §2: the man pages and completions that `examples/gen_docs.rs` generates stay in
//! step with `--help` (every subcommand and flag the real binary prints is in them), the output
//! is the same bytes every time, and the hand-written nfknock.toml(5) names every key the
//! config parser accepts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[path = "../examples/gen_docs.rs"]
mod gen_docs;

fn nfknock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nfknock"))
        .args(args)
        .output()
        .unwrap()
}

fn help(args: &[&str]) -> String {
    let out = nfknock(args);
    assert!(out.status.success(), "nfknock {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `nfknock --help` lists (its `Commands:` section, less `help`).
fn subcommands() -> Vec<String> {
    let text = help(&["--help"]);
    let section = text
        .split("Commands:\n")
        .nth(1)
        .expect("`nfknock --help` has a Commands: section");
    let names: Vec<String> = section
        .lines()
        .take_while(|l| !l.trim().is_empty())
        // A command's line is indented by two; wrapped help text by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_string)
        .collect();
    assert!(names.len() >= 8, "too few subcommands parsed: {names:?}");
    names
}

/// The long flags `nfknock ARGS --help` prints (`--flag`), less `--help`.
fn long_flags(args: &[&str]) -> BTreeSet<String> {
    let mut all = args.to_vec();
    all.push("--help");
    let text = help(&all);
    let options = text.split("Options:\n").nth(1).unwrap_or_default();
    options
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        // The flags end where two spaces start the description (which may quote other
        // programs' flags, e.g. `iptables-restore --noflush`).
        .filter_map(|l| l.trim_start().split("  ").next())
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ',' || c == '='))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|w| w != "--help" && w != "--version")
        .collect()
}

#[test]
fn pages_and_completions_cover_every_subcommand_and_flag_of_help() {
    let dir = tempfile::tempdir().unwrap();
    gen_docs::generate(dir.path()).unwrap();
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    let main_page = read("man/nfknock.8");
    let bash = read("completions/nfknock.bash");
    let zsh = read("completions/_nfknock");
    let fish = read("completions/nfknock.fish");
    for sub in subcommands() {
        let page = read(&format!("man/nfknock-{sub}.8"));
        // roff writes a hyphen as `\-`.
        let sub_roff = sub.replace('-', "\\-");
        assert!(
            page.contains(&format!("nfknock {sub_roff}")),
            "nfknock-{sub}.8 has no synopsis for `nfknock {sub}`"
        );
        assert!(
            main_page.contains(&format!("nfknock\\-{sub_roff}(8)")),
            "nfknock.8 does not list nfknock-{sub}(8)"
        );
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(
                text.contains(sub.as_str()),
                "{shell} completion lacks `{sub}`"
            );
        }
        for flag in long_flags(&[&sub]) {
            let roff = flag.replace('-', "\\-");
            assert!(
                page.contains(&roff),
                "nfknock-{sub}.8 lacks `{flag}` that `nfknock {sub} --help` shows"
            );
            assert!(bash.contains(&flag), "bash completion lacks `{sub} {flag}`");
            let bare = flag.trim_start_matches('-');
            assert!(
                fish.contains(&format!("-l {bare}")),
                "fish completion lacks `{sub} {flag}`"
            );
            assert!(zsh.contains(&flag), "zsh completion lacks `{sub} {flag}`");
        }
    }
    // The metrics flag this issue added is among them (the parse above is not vacuous).
    assert!(long_flags(&["status"]).contains("--metrics"));
}

#[test]
fn generated_output_is_the_same_bytes_every_time() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fa = gen_docs::generate(a.path()).unwrap();
    let fb = gen_docs::generate(b.path()).unwrap();
    let rel = |d: &Path, f: &[std::path::PathBuf]| -> Vec<String> {
        f.iter()
            .map(|p| p.strip_prefix(d).unwrap().display().to_string())
            .collect()
    };
    assert_eq!(rel(a.path(), &fa), rel(b.path(), &fb));
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(
            std::fs::read(x).unwrap(),
            std::fs::read(y).unwrap(),
            "{} differs between two runs",
            x.display()
        );
    }
    assert!(rel(a.path(), &fa).contains(&"man/nfknock.toml.5".to_string()));
}

/// The keys `nfknock check` says a table accepts: its "unknown field" message lists them.
fn accepted_keys(config: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bogus.toml");
    std::fs::write(&path, config).unwrap();
    let out = nfknock(&["check", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let list = text
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key list in:\n{text}"));
    let list = list.split(';').next().unwrap();
    let keys: Vec<String> = list
        .split(", ")
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect();
    assert!(keys.len() >= 5, "{keys:?}");
    keys
}

#[test]
fn config_page_names_every_key_the_parser_accepts() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/nfknock.toml.5"))
        .unwrap();
    for (table, config) in [
        ("[server]", "[server]\nno_such_key = 1\n"),
        ("[[client]]", "[[client]]\nno_such_key = 1\n"),
        (
            "[client.fwknop]",
            "[[client]]\nname = \"a\"\n[client.fwknop]\nno_such_key = 1\n",
        ),
    ] {
        let section = format!(".SH \"{table}\"");
        let body = page
            .split(&section)
            .nth(1)
            .unwrap_or_else(|| panic!("nfknock.toml.5 has no section {section}"));
        let body = body.split("\n.SH ").next().unwrap();
        for key in accepted_keys(config) {
            assert!(
                body.contains(&format!(".BR {key} ")) || body.contains(&format!(".BR {key}\n")),
                "nfknock.toml.5 does not describe `{key}` in {table}"
            );
        }
    }
}

/// The package (Cargo.toml `[package.metadata.deb] assets`) ships what the generator writes:
/// every `debian/gen/` asset names generated files, and every generated file is shipped.
#[test]
fn the_package_ships_every_generated_page_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    gen_docs::generate(dir.path()).unwrap();
    let mut generated = BTreeSet::new();
    for sub in ["man", "completions"] {
        for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            generated.insert(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    let manifest: toml::Value = toml::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap(),
    )
    .unwrap();
    let mut shipped = BTreeSet::new();
    for a in manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap()
    {
        let Some(rel) = a[0].as_str().unwrap().strip_prefix("debian/gen/") else {
            continue;
        };
        let matched: Vec<&String> = match rel.strip_suffix("*.8") {
            Some(prefix) => generated
                .iter()
                .filter(|g| g.starts_with(prefix) && g.ends_with(".8"))
                .collect(),
            None => generated.iter().filter(|g| *g == rel).collect(),
        };
        assert!(
            !matched.is_empty(),
            "asset debian/gen/{rel} matches no generated file"
        );
        shipped.extend(matched.into_iter().cloned());
    }
    assert_eq!(
        shipped, generated,
        "generated files the package does not ship"
    );
}
