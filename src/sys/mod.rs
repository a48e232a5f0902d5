//! The operating system's side of the core's inputs, for the shells: the CSPRNG ([`OsRng`]),
//! files read with their checks made on the open descriptor ([`FsLoader`], the one
//! implementation of [`crate::config::Files`]: config files, key files, the importer's files),
//! the user database, and leaving root for the service user. (The clock is read in
//! `daemon::unix_now`.) The pure core only sees traits: [`crate::crypto::Rng`],
//! [`crate::config::Files`], [`Accounts`].

mod files;
mod privilege;
mod rng;
mod user;

pub use crate::config::is_link_refused;
pub use files::{open_regular, FsLoader, Links, RegularFile};
pub use privilege::{switch_user, SwitchError};
pub use rng::OsRng;
pub use user::{euid, user_by_name, Account, Accounts, SystemAccounts};
