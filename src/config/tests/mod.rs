//! Tests of config: one per rule, each checking the line and the message a person
//! would read. Native keys are checked as bytes ([`check_str`]'s plan) because key
//! derivation lives in `crypto` and is tested there; full builds use fwknop clients.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::server::{Checked, Plan, Secret};
use super::*;
use crate::access::Proto;
use crate::sys::{FsLoader, SystemAccounts};
use crate::wire::fwknop::{EncMode, HmacType};

const PATH: &str = "/etc/nfknock/nfknock.toml";

/// The server config check reading the real file system and user database.
fn check_str(text: &str, path: &Path) -> Checked {
    server::check_text(text, path, &FsLoader, &SystemAccounts)
}

/// [`check_str`] with `[server] user` resolved against `accounts`.
fn check_str_with(text: &str, path: &Path, accounts: &dyn Accounts) -> Checked {
    server::check_text(text, path, &FsLoader, accounts)
}

/// [`super::load`] from the real file system and user database.
fn load(path: &Path) -> Result<Config, ConfigErrors> {
    super::load(path, &FsLoader, &SystemAccounts)
}

/// [`super::load`] from the real file system, `[server] user` resolved against `accounts`.
fn load_with(path: &Path, accounts: &dyn Accounts) -> Result<Config, ConfigErrors> {
    super::load(path, &FsLoader, accounts)
}

fn native_key() -> String {
    STANDARD.encode([1u8; 32])
}
fn fw_key() -> String {
    STANDARD.encode([2u8; 32])
}
fn fw_hmac() -> String {
    STANDARD.encode([3u8; 64])
}

/// Every problem of a text.
fn problems(text: &str) -> Vec<Problem> {
    let c = check_str(text, Path::new(PATH));
    assert!(!c.problems.is_empty(), "expected problems in:\n{text}");
    c.problems
}

/// The plan of a text that must be valid.
fn plan(text: &str) -> Plan {
    let c = check_str(text, Path::new(PATH));
    assert!(
        c.problems.is_empty(),
        "unexpected problems: {}",
        ConfigErrors(c.problems)
    );
    c.plan.expect("plan")
}

/// The one problem whose key is `key`.
fn at<'a>(ps: &'a [Problem], key: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no problem at `{key}` in:\n{}", ConfigErrors(ps.to_vec())))
}

fn a(s: &str) -> Access {
    s.parse().unwrap()
}

fn native_client(extra: &str) -> String {
    format!(
        "[[client]]\nname = \"alice\"\nkey = \"{}\"\nallow = [\"tcp/22\"]\n{extra}",
        native_key()
    )
}

fn fwknop_client(name: &str, fw_extra: &str) -> String {
    format!(
        "[[client]]\nname = \"{name}\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_base64 = \"{}\"\n{fw_extra}",
        fw_key(),
        fw_hmac()
    )
}

/// Write `content` to `path` with permission bits `mode`.
fn write_private(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

mod client_entry;
mod commands;
mod files;
mod fwknop_key;
mod gateway;
mod settings;
mod syntax;
mod users;
