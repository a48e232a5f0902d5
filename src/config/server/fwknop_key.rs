//! `[client.fwknop]`: an fwknop client's key material (key, HMAC key, digest, mode), checked
//! as fwknopd checks `access.conf` keys.

use std::ops::Range;

use toml::Spanned;
use zeroize::Zeroizing;

use super::*;
use crate::config::raw::{self, join, RawFwknop, Section, Shape, Sink};
use crate::config::secret::{self};
use crate::wire::fwknop::{
    decode_key_base64, EncMode, FwknopKey, HmacType, MAX_HMAC_KEY_LEN, MAX_KEY_LEN, PLACEHOLDER_KEY,
};

pub(super) const FWKNOP: Shape = Shape {
    header: "[client.fwknop]",
    nested: &[],
    hint: fwknop_hint,
};

fn fwknop_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "key_base64" | "hmac_key_base64" => "the quoted base64 text printed by `fwknop --key-gen`",
        "key" | "hmac_key" => "a quoted passphrase",
        "key_file" | "hmac_key_file" => "a quoted path to a file holding one line of base64",
        "hmac" => "one of \"md5\", \"sha1\", \"sha256\", \"sha384\", \"sha512\", \"sha3_256\", \"sha3_512\"",
        "mode" => "one of \"cbc\", \"ctr\", \"cfb\", \"ofb\", \"ecb\", \"legacy\"",
        "no_hmac" => "`true` or `false`",
        _ => return None,
    })
}

/// Which of three mutually exclusive ways to give a key was used.
enum KeySpec<'a> {
    Base64(&'a Spanned<raw::SecretText>),
    Text(&'a Spanned<raw::SecretText>),
    File(&'a Spanned<String>),
}

/// The three ways a key may be given, as found in the raw table.
struct KeyFields<'a>(
    Option<&'a Spanned<raw::SecretText>>,
    Option<&'a Spanned<raw::SecretText>>,
    Option<&'a Spanned<String>>,
);

/// Pick one of `(base64, text, file)`; report if several are given.
fn one_of<'a>(
    sink: &mut Sink<'_>,
    prefix: &str,
    names: [&str; 3],
    given: KeyFields<'a>,
) -> Option<KeySpec<'a>> {
    let mut found: Vec<(KeySpec<'a>, &str, Range<usize>)> = Vec::new();
    if let Some(v) = given.0 {
        found.push((KeySpec::Base64(v), names[0], v.span()));
    }
    if let Some(v) = given.1 {
        found.push((KeySpec::Text(v), names[1], v.span()));
    }
    if let Some(v) = given.2 {
        found.push((KeySpec::File(v), names[2], v.span()));
    }
    let mut it = found.into_iter();
    let first = it.next()?;
    for (_, name, span) in it {
        sink.at(
            Some(span),
            &join(prefix, name),
            format!(
                "`{}` is already given; use exactly one of `{}`, `{}` or `{}`",
                first.1, names[0], names[1], names[2]
            ),
        );
    }
    Some(first.0)
}

/// Decode one fwknop key (Rijndael or HMAC) into bytes, reporting problems at its key.
fn fwknop_bytes(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    names: [&str; 3],
    spec: KeySpec<'_>,
) -> Option<(Zeroizing<Vec<u8>>, Range<usize>, String)> {
    match spec {
        KeySpec::Base64(v) => {
            cx.inline_secret = true;
            let key = join(prefix, names[0]);
            match decode_key_base64(&v.get_ref().0) {
                Some(b) => Some((b, v.span(), key)),
                None => {
                    sink.at(
                        Some(v.span()),
                        &key,
                        "is not valid base64; paste the value printed by `fwknop --key-gen`",
                    );
                    None
                }
            }
        }
        KeySpec::Text(v) => {
            cx.inline_secret = true;
            Some((
                Zeroizing::new(v.get_ref().0.as_bytes().to_vec()),
                v.span(),
                join(prefix, names[1]),
            ))
        }
        KeySpec::File(f) => {
            let key = join(prefix, names[2]);
            let r = secret::resolve(f.get_ref(), cx.path, None).and_then(|p| {
                let text = secret::read_key_file(cx.files, &p, &cx.owner)?;
                decode_key_base64(&text)
                    .ok_or_else(|| format!("key file {} is not valid base64; it must hold the base64 value printed by `fwknop --key-gen`", p.display()))
            });
            match r {
                Ok(b) => Some((b, f.span(), key)),
                Err(m) => {
                    sink.at(Some(f.span()), &key, m);
                    None
                }
            }
        }
    }
}

pub(super) fn fwknop_key(
    sink: &mut Sink<'_>,
    cx: &mut Cx<'_>,
    prefix: &str,
    sec: Section<'_, RawFwknop>,
) -> Option<FwknopKey> {
    let raw = &sec.raw;
    const KEY: [&str; 3] = ["key_base64", "key", "key_file"];
    const HMAC: [&str; 3] = ["hmac_key_base64", "hmac_key", "hmac_key_file"];

    let key_spec = one_of(
        sink,
        prefix,
        KEY,
        KeyFields(
            raw.key_base64.as_ref(),
            raw.key.as_ref(),
            raw.key_file.as_ref(),
        ),
    );
    let key = match key_spec {
        Some(spec) => fwknop_bytes(sink, cx, prefix, KEY, spec),
        None => {
            if !KEY.iter().any(|k| sec.failed(k)) {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "key_base64"),
                    "this fwknop client has no key; add `key_base64 = \"...\"` (from `fwknop --key-gen`), `key = \"passphrase\"` or `key_file = PATH`",
                );
            }
            None
        }
    };
    let key = key.and_then(|(bytes, span, name)| {
        if bytes.is_empty() || bytes.len() > MAX_KEY_LEN {
            sink.at(
                Some(span),
                &name,
                format!("is {} bytes long; an fwknop key is 1 to {MAX_KEY_LEN} bytes (fwknop's RIJNDAEL_MAX_KEYSIZE); generate one with `fwknop --key-gen`", bytes.len()),
            );
            None
        } else if bytes.as_slice() == PLACEHOLDER_KEY.as_bytes() {
            sink.at(Some(span), &name, "is fwknop's placeholder `__CHANGEME__`; generate a real key with `fwknop --key-gen`");
            None
        } else {
            Some((bytes, span))
        }
    });

    let hmac_spec = one_of(
        sink,
        prefix,
        HMAC,
        KeyFields(
            raw.hmac_key_base64.as_ref(),
            raw.hmac_key.as_ref(),
            raw.hmac_key_file.as_ref(),
        ),
    );
    let hmac_given = hmac_spec.is_some() || HMAC.iter().any(|k| sec.failed(k));
    let no_hmac = raw.no_hmac.unwrap_or(false);
    let mode = raw.mode.as_ref().map_or(EncMode::Cbc, |m| *m.get_ref());
    let mut ok = key.is_some();

    let hmac_key = match hmac_spec {
        Some(spec) => match fwknop_bytes(sink, cx, prefix, HMAC, spec) {
            Some((bytes, span, name)) => {
                if bytes.is_empty() || bytes.len() > MAX_HMAC_KEY_LEN {
                    sink.at(
                        Some(span),
                        &name,
                        format!("is {} bytes long; an fwknop HMAC key is 1 to {MAX_HMAC_KEY_LEN} bytes (fwknop's MAX_DIGEST_BLOCK_LEN); generate one with `fwknop --key-gen`", bytes.len()),
                    );
                    ok = false;
                } else if key
                    .as_ref()
                    .is_some_and(|(k, _)| k.as_slice() == bytes.as_slice())
                {
                    // fwknopd refuses this too (server/access.c acc_data_is_valid): one secret
                    // must not key both the cipher and the MAC.
                    sink.at(Some(span), &name, "is the same as the encryption key; use two different keys (`fwknop --key-gen` prints both)");
                    ok = false;
                } else if no_hmac {
                    sink.at(
                        Some(span),
                        &join(prefix, "no_hmac"),
                        "`no_hmac = true` contradicts the HMAC key given; remove one of them",
                    );
                    ok = false;
                } else if mode == EncMode::Legacy {
                    // fwknop clients refuse legacy mode with an HMAC (shared/FWKNOP-WIRE.md §3.1).
                    sink.at(Some(span), &name, "legacy mode cannot be used with an HMAC (fwknop clients refuse it); remove the HMAC key and set `no_hmac = true`, or use mode \"cbc\"");
                    ok = false;
                }
                Some(bytes)
            }
            None => {
                ok = false;
                None
            }
        },
        None => {
            if !hmac_given && !no_hmac {
                sink.at(
                    Some(sec.span.clone()),
                    &join(prefix, "hmac_key_base64"),
                    "this fwknop client has no HMAC key; add `hmac_key_base64 = \"...\"` (from `fwknop --key-gen`), or set `no_hmac = true` to accept unauthenticated packets from it",
                );
                ok = false;
            }
            None
        }
    };
    if raw.hmac.is_some() && hmac_key.is_none() && no_hmac {
        if let Some(h) = &raw.hmac {
            sink.at(Some(h.span()), &join(prefix, "hmac"), "is set but this client has no HMAC key (`no_hmac = true`); remove `hmac` or add an HMAC key");
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let (key, _) = key?;
    Some(FwknopKey {
        key,
        hmac_key,
        hmac_type: raw.hmac.as_ref().map_or(HmacType::Sha256, |h| *h.get_ref()),
        mode,
    })
}
