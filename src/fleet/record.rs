//! The fleet's records in etcd, pure: the key of a grant
//! (`/<prefix>/<fleet>/grants/<family>/<addr>/<proto>/<port>`), its value (origin host and
//! remaining milliseconds, JSON), and the checks a record read from etcd must pass before the
//! relay writes it into this host's allow set. Nothing here does I/O or reads a clock.
//!
//! Contract: no key or value bytes make these functions panic; everything read from etcd is
//! hostile until [`check_remote`] accepted it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::access::{Access, Proto};

/// Version of the value format; a value of another version is refused (and logged).
pub const VALUE_VERSION: u32 = 1;
/// Longest key or value the relay reads; etcd allows far more, the fleet needs less than 200.
pub const MAX_RECORD_LEN: usize = 512;
/// Longest fleet name, prefix segment or host id.
pub const MAX_NAME_LEN: usize = 64;
/// The origin mark's prefix in an element's comment: `fleet:<host id>`.
pub const MARK_PREFIX: &str = "fleet:";

/// One grant as the fleet shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantKey {
    pub addr: IpAddr,
    pub access: Access,
}

impl fmt::Display for GrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.addr, self.access)
    }
}

/// The value stored under a grant's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantValue {
    /// [`VALUE_VERSION`].
    pub v: u32,
    /// Host id of the relay that published it (the host where the knock landed or was refreshed).
    pub origin: String,
    /// Milliseconds the grant had left when it was published. Remaining time, never a
    /// wall-clock deadline: hosts' clocks need not agree.
    pub remaining_ms: u64,
}

/// Where the fleet's records live: `/<prefix>/<fleet>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
    fleet: String,
}

/// Why a record read from etcd is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key is not `/<prefix>/<fleet>/grants/<ipv4|ipv6>/<addr>/<tcp|udp>/<port>` in canonical form")]
    Key,
    #[error("value is not {{\"v\":1,\"origin\":HOST,\"remaining_ms\":N}}: {0}")]
    Value(String),
    #[error("value version {0} is not {VALUE_VERSION}")]
    Version(u32),
    #[error("origin `{0}` is not a valid host id")]
    Origin(String),
    #[error("{0} is not protected on this host (not in its `protected` set)")]
    NotProtected(Access),
    #[error("remaining time {0} ms is over this host's max_timeout of {1} s")]
    TooLong(u64, u32),
    #[error("remaining time is 0")]
    Expired,
}

/// A valid fleet name, prefix segment or host id: 1..=64 of `[A-Za-z0-9._-]`, not `.`/`..`.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Layout {
    /// `None` unless both are [`valid_segment`]s.
    pub fn new(prefix: &str, fleet: &str) -> Option<Layout> {
        (valid_segment(prefix) && valid_segment(fleet)).then(|| Layout {
            prefix: prefix.to_string(),
            fleet: fleet.to_string(),
        })
    }

    /// The prefix every grant key starts with (what the relay reads and watches).
    pub fn grants_prefix(&self) -> String {
        format!("/{}/{}/grants/", self.prefix, self.fleet)
    }

    /// The prefix the fleet's etcd role must be limited to.
    pub fn fleet_prefix(&self) -> String {
        format!("/{}/{}/", self.prefix, self.fleet)
    }

    pub fn key(&self, g: &GrantKey) -> String {
        let family = if g.addr.is_ipv4() { "ipv4" } else { "ipv6" };
        format!(
            "{}{family}/{}/{}/{}",
            self.grants_prefix(),
            g.addr,
            g.access.proto.name(),
            g.access.port
        )
    }

    /// The grant a key names; only the canonical spelling [`Layout::key`] writes is accepted
    /// (one grant, one key: no two spellings of the same address or port).
    pub fn parse_key(&self, key: &[u8]) -> Result<GrantKey, RecordError> {
        if key.len() > MAX_RECORD_LEN {
            return Err(RecordError::Key);
        }
        let key = std::str::from_utf8(key).map_err(|_| RecordError::Key)?;
        let rest = key
            .strip_prefix(self.grants_prefix().as_str())
            .ok_or(RecordError::Key)?;
        let mut it = rest.split('/');
        let (Some(family), Some(addr), Some(proto), Some(port), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(RecordError::Key);
        };
        let addr: IpAddr = addr.parse().map_err(|_| RecordError::Key)?;
        let family_ok = match family {
            "ipv4" => addr.is_ipv4(),
            "ipv6" => addr.is_ipv6(),
            _ => false,
        };
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(RecordError::Key),
        };
        let port: u16 = port.parse().map_err(|_| RecordError::Key)?;
        let access = Access::new(proto, port).ok_or(RecordError::Key)?;
        let g = GrantKey { addr, access };
        // Canonical only: `010.0.0.1`, `+22`, `022`, `::FFFF` spellings are refused.
        if !family_ok || self.key(&g) != key {
            return Err(RecordError::Key);
        }
        Ok(g)
    }
}

impl GrantValue {
    pub fn new(origin: &str, remaining_ms: u64) -> GrantValue {
        GrantValue {
            v: VALUE_VERSION,
            origin: origin.to_string(),
            remaining_ms,
        }
    }

    pub fn encode(&self) -> String {
        // Serialising three plain fields cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse strictly: unknown fields, another version or an invalid origin are refused.
    pub fn parse(value: &[u8]) -> Result<GrantValue, RecordError> {
        if value.len() > MAX_RECORD_LEN {
            return Err(RecordError::Value("longer than 512 bytes".into()));
        }
        let v: GrantValue =
            serde_json::from_slice(value).map_err(|e| RecordError::Value(e.to_string()))?;
        if v.v != VALUE_VERSION {
            return Err(RecordError::Version(v.v));
        }
        if !valid_segment(&v.origin) {
            return Err(RecordError::Origin(v.origin.chars().take(80).collect()));
        }
        Ok(v)
    }
}

/// What this host lets a remote grant ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    /// The proto/ports this host's gate closes (its `protected` set): a remote grant for any
    /// other port is refused (it would open nothing here, or something an admin opened on
    /// purpose without nfknock).
    pub protected: Vec<Access>,
    /// Longest grant, seconds (the largest `max_timeout` of this host's clients).
    pub max_timeout: u32,
}

/// Check a remote grant against this host's caps; `Ok` is what may be written here.
pub fn check_remote(g: &GrantKey, remaining_ms: u64, caps: &Caps) -> Result<(), RecordError> {
    if remaining_ms == 0 {
        return Err(RecordError::Expired);
    }
    if remaining_ms > u64::from(caps.max_timeout) * 1000 {
        return Err(RecordError::TooLong(remaining_ms, caps.max_timeout));
    }
    if !caps.protected.contains(&g.access) {
        return Err(RecordError::NotProtected(g.access));
    }
    Ok(())
}

/// The lease TTL (whole seconds, etcd's unit) for a grant with `remaining_ms` left: rounded up,
/// so the key never disappears before the grant it describes. (etcd may raise it to its
/// minimum lease TTL; the value's `remaining_ms`, not the lease, says how long the grant runs.)
pub fn lease_ttl_secs(remaining_ms: u64) -> i64 {
    i64::try_from(remaining_ms.div_ceil(1000))
        .unwrap_or(i64::MAX)
        .max(1)
}

/// Time left of a grant read back from etcd (a full read after a start or a reconnect, when
/// the value's `remaining_ms` is as old as its last write), never more than the truth:
/// `granted_s` is the TTL the lease was granted (≥ the grant's time at publication: the lease
/// is rounded up and may be raised to etcd's minimum), `ttl_s` what etcd says is left of it
/// (rounded up). The grant has left the lease's time minus the lease's surplus at
/// publication; taking the lease's time one second lower than its rounded-up figure gives a
/// lower bound. `None`: nothing meaningful left (under 100 ms).
pub fn remaining_from_lease(value_ms: u64, granted_s: i64, ttl_s: i64) -> Option<u64> {
    if ttl_s <= 0 || granted_s <= 0 {
        return None;
    }
    let granted_ms = u64::try_from(granted_s).ok()?.saturating_mul(1000);
    let surplus = granted_ms.saturating_sub(value_ms);
    let lease_left_low = u64::try_from(ttl_s - 1).ok()?.saturating_mul(1000);
    let left = lease_left_low.saturating_sub(surplus).min(value_ms);
    (left >= 100).then_some(left)
}

/// The origin mark written as the comment of every element the relay writes for `origin`.
pub fn mark(origin: &str) -> String {
    format!("{MARK_PREFIX}{origin}")
}

/// Whether an element comment is a fleet origin mark (the relay wrote it for another host).
pub fn is_mark(comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with(MARK_PREFIX))
}

#[cfg(test)]
mod tests;
