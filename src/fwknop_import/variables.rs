//! The access.conf variables the import maps ([`MAPPED`]), and what it does with each of the
//! others: warn ([`unmapped`]).

/// What to do instead of GnuPG SPA, for every message about a GnuPG setting.
pub(super) const GPG_ADVICE: &str = "GnuPG SPA is not supported; issue Rijndael+HMAC keys with `fwknop --key-gen` and give them to this client";

/// What the import does with a variable it does not map.
pub(super) enum Unmapped {
    /// Warn whenever it is present.
    Always(&'static str),
}

/// The import's answer for an unmapped variable; `None` for one fwknopd does not know either.
pub(super) fn unmapped(var: &str) -> Option<Unmapped> {
    use Unmapped::*;
    Some(match var {
        _ if var.starts_with("GPG_") => Always(GPG_ADVICE),
        _ => return None,
    })
}

/// Variables the converter maps.
pub(super) const MAPPED: &[&str] = &[
    "SOURCE",
    "DESTINATION",
    "OPEN_PORTS",
    "RESTRICT_PORTS",
    "KEY",
    "KEY_BASE64",
    "HMAC_KEY",
    "HMAC_KEY_BASE64",
    "HMAC_DIGEST_TYPE",
    "ENCRYPTION_MODE",
    "FW_ACCESS_TIMEOUT",
    "MAX_FW_TIMEOUT",
    "REQUIRE_USERNAME",
    "REQUIRE_SOURCE_ADDRESS",
    "REQUIRE_SOURCE",
    "ACCESS_EXPIRE",
    "ACCESS_EXPIRE_EPOCH",
    // Commands: `super::commands`.
    "CMD_CYCLE_OPEN",
    "CMD_CYCLE_CLOSE",
    "CMD_CYCLE_TIMER",
    "ENABLE_CMD_EXEC",
    "CMD_EXEC_USER",
    "CMD_EXEC_GROUP",
    "CMD_REGEX",
    "ENABLE_CMD_SUDO_EXEC",
    "CMD_SUDO_EXEC_USER",
    "CMD_SUDO_EXEC_GROUP",
    "FORCE_NAT",
    "FORCE_SNAT",
    "FORCE_MASQUERADE",
    "DISABLE_DNAT",
    "FORWARD_ALL",
];
