//! The shipped example configs load and mean what their comments say.
//!
//! Building a config derives native keys (`crypto::NativeKey::derive`); where this tree does not
//! have that yet, the assertions that need a built config are skipped with a note, the others
//! (refusals, which never derive) always run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nfknock::access::format_list;
use nfknock::config::{self, Credential};
use nfknock::sys::{FsLoader, SystemAccounts};

/// The knock client's file read from disk as whoever runs the tests, `~` unset.
fn knock_env() -> config::KnockEnv<'static> {
    config::KnockEnv {
        files: &FsLoader,
        euid: nfknock::sys::euid(),
        home: None,
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn native_keys_ready() -> bool {
    let ready = std::panic::catch_unwind(|| nfknock::crypto::NativeKey::derive(&[0u8; 32])).is_ok();
    if !ready {
        eprintln!("note: NativeKey::derive is not implemented in this tree; skipping the built-config assertions");
    }
    ready
}

/// A copy of an example with the given mode (the repository's copy is world-readable, as it
/// should be).
fn copy_with_mode(name: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(example(name), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

#[test]
fn render_example_is_examples_server_toml() {
    let on_disk = std::fs::read_to_string(example("server.toml")).unwrap();
    assert_eq!(config::render_example(), on_disk);
    assert!(
        on_disk.contains("EXAMPLE ONLY"),
        "the example keys must be marked as such"
    );
}

#[test]
fn server_example_loads_from_a_private_file() {
    let (_dir, path) = copy_with_mode("server.toml", 0o600);
    if !native_keys_ready() {
        return;
    }
    let cfg = config::load(&path, &FsLoader, &SystemAccounts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.server.port, config::DEFAULT_PORT);
    assert_eq!(format_list(&cfg.server.protect), "tcp/22,tcp/443");
    let names: Vec<_> = cfg.clients.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob-phone"]);
    assert!(matches!(cfg.clients[0].credential, Credential::Native(_)));
    assert!(matches!(cfg.clients[1].credential, Credential::Fwknop(_)));
    assert_eq!(cfg.clients[0].expires_at, Some(1_801_353_600));
    assert!(
        config::warnings(&cfg).is_empty(),
        "{:?}",
        config::warnings(&cfg)
    );
}

#[test]
fn server_example_with_inline_keys_is_refused_when_world_readable() {
    let (_dir, path) = copy_with_mode("server.toml", 0o644);
    let err = config::load(&path, &FsLoader, &SystemAccounts).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains(&format!("run `chmod 600 {}`", path.display())),
        "{shown}"
    );
}

#[test]
fn client_example_loads_from_a_private_file() {
    let (_dir, path) = copy_with_mode("client.toml", 0o600);
    if !native_keys_ready() {
        return;
    }
    let cfg = config::load_knock_profiles(&path, &knock_env()).unwrap_or_else(|e| panic!("{e}"));
    let home = cfg.stanza("home").expect("stanza home");
    assert_eq!(
        (home.server.as_str(), home.port, home.timeout),
        ("203.0.113.10", 62201, Some(60))
    );
    assert_eq!(home.allow_ip, config::AllowIp::Auto);
    assert_eq!(format_list(&home.access), "tcp/22");
}

#[test]
fn client_example_with_an_inline_key_is_refused_when_world_readable() {
    let (_dir, path) = copy_with_mode("client.toml", 0o644);
    let err = config::load_knock_profiles(&path, &knock_env()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}
