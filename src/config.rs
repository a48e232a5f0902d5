//! Server configuration: TOML → raw serde structs (`deny_unknown_fields`) → validated
//! [`Config`]. Every error names the file, the line and the key, and says what to do.
//!
//! SKELETON: the config helper owns this file. The validated types below are the contract the
//! engine and daemon use; the raw layer and loading are the helper's.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::access::Access;
use crate::crypto::NativeKey;
use crate::wire::fwknop::FwknopKey;

/// Defaults (also documented in the example config and `--help`).
pub const DEFAULT_PORT: u16 = 62201;
pub const DEFAULT_QUEUE: u16 = 0;
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nfknock";
pub const DEFAULT_MAX_AGE: u64 = 120;
pub const DEFAULT_TIMEOUT: u32 = 30;
pub const DEFAULT_MAX_TIMEOUT: u32 = 3600;

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub server: Server,
    pub clients: Vec<Client>,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// UDP port knocks arrive on.
    pub port: u16,
    /// NFQUEUE number.
    pub queue: u16,
    pub state_dir: PathBuf,
    /// Protected proto/ports (default: union of all clients' `allow`), sorted, deduplicated.
    pub protect: Vec<Access>,
    /// Seconds a knock's timestamp may differ from now (either direction).
    pub max_age: u64,
    /// Create/refresh the `inet nfknock` table at start (else it must be loaded by the admin).
    pub manage_ruleset: bool,
    /// Gate DNAT-published ports in the forward hook too.
    pub gate_forward: bool,
    /// Per-source knock rate limit in the kernel, packets per second (burst = 2×).
    pub rate_limit: u32,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub credential: Credential,
    /// Accesses this client may open. A knock asking for anything else is refused whole.
    pub allow: Vec<Access>,
    /// Accesses never granted (fwknop `RESTRICT_PORTS`).
    pub deny: Vec<Access>,
    /// Grant length when the knock asks for none.
    pub timeout: u32,
    /// Cap on what a knock may ask for.
    pub max_timeout: u32,
    /// Knocks are accepted only from these source networks.
    pub sources: Vec<IpNet>,
    /// If non-empty, knocks must be addressed to one of these (fwknop `DESTINATION`).
    pub destinations: Vec<IpNet>,
    /// The allow-IP inside the packet must equal the packet's source.
    pub require_source_match: bool,
    /// fwknop `REQUIRE_USERNAME`.
    pub require_username: Option<String>,
    /// Unix time after which this client is refused (fwknop `ACCESS_EXPIRE(_EPOCH)`).
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum Credential {
    Native(NativeKey),
    Fwknop(FwknopKey),
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `client[2].key_file`.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found (loading does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

/// Read and validate a server config (and the key files it names).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let _ = path;
    unimplemented!("config helper")
}

/// Legal but risky settings, logged at start.
pub fn warnings(config: &Config) -> Vec<String> {
    let _ = config;
    unimplemented!("config helper")
}
