//! The `format = "fwknop"` half of a knock profile stanza: the HMAC key, the algorithms and
//! the user name an fwknop packet needs (`nfknock knock -n NAME` sending fwknop 2.x packets),
//! checked as fwknop's client and fwknopd check them; and the native stanza that names them by
//! mistake.

use std::ops::Range;
use std::path::Path;

use zeroize::Zeroizing;

use super::super::raw::{join, RawProfile, Section, Sink};
use super::super::secret;
use super::{pick, FwknopProfile, KnockEnv};
use crate::wire::fwknop::{
    decode_key_base64, valid_username, DigestType, EncMode, FwknopKey, HmacType, MAX_HMAC_KEY_LEN,
    MAX_KEY_LEN, MAX_USERNAME_LEN, PLACEHOLDER_KEY,
};

/// The fwknop-only keys a stanza itself gives, with where. (A `[default]` holding fwknop
/// settings is fine while some stanzas are fwknop ones.)
fn fwknop_keys_given(sec: &Section<'_, RawProfile>, prefix: &str) -> Vec<(Range<usize>, String)> {
    let r = &sec.raw;
    let spans = |p: &RawProfile| {
        [
            ("hmac_key", p.hmac_key.as_ref().map(|v| v.span())),
            ("hmac_key_file", p.hmac_key_file.as_ref().map(|v| v.span())),
            ("hmac", p.hmac.as_ref().map(|v| v.span())),
            ("digest", p.digest.as_ref().map(|v| v.span())),
            ("mode", p.mode.as_ref().map(|v| v.span())),
            ("user", p.user.as_ref().map(|v| v.span())),
        ]
    };
    let mut out = Vec::new();
    for (name, span) in spans(r) {
        if let Some(span) = span {
            out.push((span, join(prefix, name)));
        }
    }
    out
}

/// A native stanza given fwknop settings: each is a mistake worth naming.
pub(super) fn native_only(sink: &mut Sink<'_>, prefix: &str, sec: &Section<'_, RawProfile>) {
    for (span, key) in fwknop_keys_given(sec, prefix) {
        sink.at(
            Some(span),
            &key,
            "applies only to fwknop stanzas; add `format = \"fwknop\"` to send fwknop packets, or remove it",
        );
    }
}

/// The fwknop settings of a stanza other than its Rijndael key.
pub(super) struct FwknopSettings {
    hmac_key: Zeroizing<Vec<u8>>,
    hmac_span: Range<usize>,
    hmac_key_name: String,
    hmac: HmacType,
    digest: DigestType,
    mode: EncMode,
    user: Option<String>,
}

pub(super) fn settings(
    sink: &mut Sink<'_>,
    path: &Path,
    env: &KnockEnv<'_>,
    prefix: &str,
    sec: &Section<'_, RawProfile>,
    default: &RawProfile,
) -> Option<FwknopSettings> {
    let raw = &sec.raw;
    let mut ok = true;
    let (text, file) = if raw.hmac_key.is_some() || raw.hmac_key_file.is_some() {
        (
            raw.hmac_key.as_ref().map(|k| (k, join(prefix, "hmac_key"))),
            raw.hmac_key_file
                .as_ref()
                .map(|f| (f, join(prefix, "hmac_key_file"))),
        )
    } else {
        (
            default
                .hmac_key
                .as_ref()
                .map(|k| (k, join("default", "hmac_key"))),
            default
                .hmac_key_file
                .as_ref()
                .map(|f| (f, join("default", "hmac_key_file"))),
        )
    };
    let hmac_key = match (text, file) {
        (Some(_), Some((f, key))) => {
            sink.at(
                Some(f.span()),
                &key,
                "`hmac_key` is already given; use either `hmac_key` or `hmac_key_file`, not both",
            );
            None
        }
        (Some((k, key)), None) => match decode_key_base64(&k.get_ref().0) {
            Some(b) => Some((b, k.span(), key)),
            None => {
                sink.at(Some(k.span()), &key, "is not valid base64; use the HMAC_KEY_BASE64 value printed by `nfknock keygen --fwknop`");
                None
            }
        },
        (None, Some((f, key))) => {
            let r = secret::resolve(f.get_ref(), path, env.home).and_then(|p| {
                let owner = secret::Owner::running_as(env.euid);
                let text = secret::read_key_file(env.files, &p, &owner)?;
                decode_key_base64(&text).ok_or_else(|| format!("key file {} is not valid base64; it must hold the HMAC key written by `nfknock keygen --fwknop --out`", p.display()))
            });
            match r {
                Ok(b) => Some((b, f.span(), key)),
                Err(m) => {
                    sink.at(Some(f.span()), &key, m);
                    None
                }
            }
        }
        (None, None) => {
            if !sec.failed("hmac_key") && !sec.failed("hmac_key_file") {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "hmac_key_file"),
                    format!("fwknop stanza `{prefix}` has no HMAC key; add e.g. `hmac_key_file = \"~/.config/nfknock/home.key.hmac\"` (from `nfknock keygen --fwknop --out`); packets without an HMAC are not sent"),
                );
            }
            None
        }
    };
    let hmac_key = hmac_key.and_then(|(b, span, key)| {
        if b.is_empty() || b.len() > MAX_HMAC_KEY_LEN {
            sink.at(Some(span), &key, format!("is {} bytes long; an fwknop HMAC key is 1 to {MAX_HMAC_KEY_LEN} bytes; generate one with `nfknock keygen --fwknop`", b.len()));
            None
        } else {
            Some((b, span, key))
        }
    });
    let hmac = pick(&raw.hmac, &default.hmac, prefix, "hmac")
        .map_or(HmacType::Sha256, |(h, _)| *h.get_ref());
    let digest = pick(&raw.digest, &default.digest, prefix, "digest")
        .map_or(DigestType::Sha256, |(d, _)| *d.get_ref());
    let mode = match pick(&raw.mode, &default.mode, prefix, "mode") {
        Some((m, key)) if *m.get_ref() == EncMode::Legacy => {
            // fwknop clients refuse legacy mode with an HMAC (FWKNOP-WIRE.md §3.1), and this
            // client always sends one.
            sink.at(Some(m.span()), &key, "legacy mode cannot be used with an HMAC (fwknop refuses it too); use \"cbc\" and update the server's stanza");
            ok = false;
            EncMode::Cbc
        }
        Some((m, _)) => *m.get_ref(),
        None => EncMode::Cbc,
    };
    let user = match pick(&raw.user, &default.user, prefix, "user") {
        Some((u, key)) => {
            let name = u.get_ref();
            if name.len() > MAX_USERNAME_LEN || !valid_username(name.as_bytes()) {
                sink.at(Some(u.span()), &key, format!("`{name}` is not a user name fwknop accepts; use 1 to {MAX_USERNAME_LEN} letters, digits and `_.-@`"));
                ok = false;
                None
            } else {
                Some(name.clone())
            }
        }
        None => None,
    };
    let (hmac_key, hmac_span, hmac_key_name) = hmac_key?;
    ok.then_some(FwknopSettings {
        hmac_key,
        hmac_span,
        hmac_key_name,
        hmac,
        digest,
        mode,
        user,
    })
}

/// A `format = "fwknop"` stanza's credentials and settings, its Rijndael key being `key`.
#[allow(clippy::too_many_arguments)]
pub(super) fn profile(
    sink: &mut Sink<'_>,
    path: &Path,
    env: &KnockEnv<'_>,
    prefix: &str,
    sec: &Section<'_, RawProfile>,
    default: &RawProfile,
    key: Zeroizing<Vec<u8>>,
    key_span: Range<usize>,
    key_name: &str,
) -> Option<FwknopProfile> {
    let settings = settings(sink, path, env, prefix, sec, default);
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        sink.at(Some(key_span), key_name, format!("is {} bytes long; an fwknop key is 1 to {MAX_KEY_LEN} bytes; generate one with `nfknock keygen --fwknop`", key.len()));
        return None;
    }
    if key.as_slice() == PLACEHOLDER_KEY.as_bytes() {
        sink.at(Some(key_span), key_name, "is fwknop's placeholder `__CHANGEME__`; generate a real key with `nfknock keygen --fwknop`");
        return None;
    }
    let s = settings?;
    if s.hmac_key.as_slice() == key.as_slice() {
        sink.at(Some(s.hmac_span), &s.hmac_key_name, "is the same as the encryption key; use two different keys (`nfknock keygen --fwknop` makes both)");
        return None;
    }
    let key = FwknopKey::new(key, Some(s.hmac_key), s.hmac, s.mode).ok()?;
    Some(FwknopProfile {
        key,
        digest: s.digest,
        user: s.user,
    })
}
