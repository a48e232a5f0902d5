//! `[client.fwknop]` key material: limits, passphrases, base64 as fwknopd reads it.

use super::*;

#[test]
fn fwknop_needs_an_hmac_key_unless_told_otherwise() {
    let no_hmac =
        fwknop_client("b", "").replace(&format!("hmac_key_base64 = \"{}\"\n", fw_hmac()), "");
    let ps = problems(&no_hmac);
    let p = at(&ps, "client[1].fwknop.hmac_key_base64");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("no_hmac = true"), "{}", p.message);

    let config = parse_str(&format!("{no_hmac}no_hmac = true\n"), Path::new(PATH)).unwrap();
    let w = warnings(&config);
    assert!(
        w.iter()
            .any(|w| w.contains("client `b`: no HMAC") && w.contains("any address")),
        "{w:?}"
    );

    let ps = problems(&fwknop_client("b", "no_hmac = true\n"));
    assert!(at(&ps, "client[1].fwknop.no_hmac")
        .message
        .contains("contradicts"));
}

#[test]
fn fwknop_key_limits() {
    let long_key = fwknop_client("b", "").replace(&fw_key(), &STANDARD.encode([2u8; 33]));
    let p = problems(&long_key);
    let p = at(&p, "client[1].fwknop.key_base64");
    assert_eq!(p.line, Some(5));
    assert!(
        p.message.contains("33 bytes") && p.message.contains("1 to 32"),
        "{}",
        p.message
    );

    let long_hmac = fwknop_client("b", "").replace(&fw_hmac(), &STANDARD.encode([3u8; 137]));
    assert!(
        at(&problems(&long_hmac), "client[1].fwknop.hmac_key_base64")
            .message
            .contains("1 to 136")
    );
    let ok = fwknop_client("b", "").replace(&fw_hmac(), &STANDARD.encode([3u8; 136]));
    plan(&ok);

    let same = fwknop_client("b", "").replace(&fw_hmac(), &fw_key());
    assert!(at(&problems(&same), "client[1].fwknop.hmac_key_base64")
        .message
        .contains("same as the encryption key"));

    let both = fwknop_client("b", "key = \"pass\"\n");
    assert!(at(&problems(&both), "client[1].fwknop.key")
        .message
        .contains("exactly one of"));

    let placeholder =
        "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey = \"__CHANGEME__\"\nhmac_key = \"h\"\n";
    assert!(at(&problems(placeholder), "client[1].fwknop.key")
        .message
        .contains("placeholder"));

    let bad_hmac = fwknop_client("b", "hmac = \"sha2\"\n");
    let ps = problems(&bad_hmac);
    let p = at(&ps, "client[1].fwknop.hmac");
    assert!(p.message.contains("sha3_256"), "{}", p.message);

    let legacy = fwknop_client("b", "mode = \"legacy\"\n");
    assert!(at(&problems(&legacy), "client[1].fwknop.hmac_key_base64")
        .message
        .contains("legacy"));
}

#[test]
fn fwknop_passphrases_are_taken_as_bytes() {
    let text = "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey = \"correct horse\"\nhmac_key = \"battery staple\"\nhmac = \"sha1\"\n";
    let config = parse_str(text, Path::new(PATH)).unwrap();
    let Credential::Fwknop(k) = &config.clients[0].credential else {
        panic!()
    };
    assert_eq!(k.key.as_slice(), b"correct horse");
    assert_eq!(
        k.hmac_key.as_deref().map(|v| v.as_slice()),
        Some(&b"battery staple"[..])
    );
    assert!(warnings(&config).iter().any(|w| w.contains("weak digest")));
}

/// fwknopd reads `KEY_BASE64` with libfko's `b64_decode` after checking every character is in
/// `[A-Za-z0-9+/=]` (server/access.c, `is_base64`): decoding stops at the first `=` and a
/// final lone character is dropped. A key fwknopd accepts is read here to the same bytes; a
/// character fwknopd refuses is refused.
#[test]
fn fwknop_base64_keys_decode_as_fwknopd_does() {
    let key = |b64: &str| {
        let text = fwknop_client("b", "").replace(&fw_key(), b64);
        match &parse_str(&text, Path::new(PATH))
            .unwrap_or_else(|e| panic!("{b64}: {e}"))
            .clients[0]
            .credential
        {
            Credential::Fwknop(k) => k.key.to_vec(),
            Credential::Native(_) => unreachable!("an fwknop client"),
        }
    };
    let full = STANDARD.encode([2u8; 32]);
    // Characters after the padding are ignored, as by fwknopd.
    assert_eq!(key(&format!("{full}==AAAA")), [2u8; 32]);
    // A final lone character (5 mod 4) is dropped: "cm9vZ" is "roo".
    assert_eq!(key("cm9vZ"), b"roo");
    // fwknopd refuses a character outside the base64 alphabet, even after `=`.
    let text = fwknop_client("b", "").replace(&fw_key(), &format!("{full}=!"));
    assert!(at(&problems(&text), "client[1].fwknop.key_base64")
        .message
        .contains("base64"));
}

/// fwknop key files must hold base64; a broken HMAC key file fails the client, not silently
/// drops its HMAC.
#[test]
fn fwknop_key_files_that_are_not_base64_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not base64!\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("nfknock.toml");
    let text = format!(
        "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_file = \"bad.key\"\nhmac_key_base64 = \"{}\"\n",
        fw_hmac()
    );
    let ps = check_str(&text, &config).problems;
    let p = at(&ps, "client[1].fwknop.key_file");
    assert_eq!(
        p.message,
        format!("key file {} is not valid base64; it must hold the base64 value printed by `fwknop --key-gen`", bad.display())
    );
    assert_eq!(p.line, Some(5));
    let text = format!(
        "[[client]]\nname = \"b\"\nallow = [\"tcp/22\"]\n[client.fwknop]\nkey_base64 = \"{}\"\nhmac_key_file = \"bad.key\"\n",
        fw_key()
    );
    let ps = check_str(&text, &config).problems;
    let p = at(&ps, "client[1].fwknop.hmac_key_file");
    assert!(p.message.contains("is not valid base64"), "{}", p.message);
    assert_eq!(p.line, Some(6));
}

/// `hmac = ...` with `no_hmac = true` is a contradiction, not a silent no-op.
#[test]
fn an_hmac_type_without_an_hmac_key_is_refused() {
    let text = fwknop_client("b", "no_hmac = true\nhmac = \"sha256\"\n")
        .replace(&format!("hmac_key_base64 = \"{}\"\n", fw_hmac()), "");
    let ps = problems(&text);
    let p = at(&ps, "client[1].fwknop.hmac");
    assert_eq!(
        p.message,
        "is set but this client has no HMAC key (`no_hmac = true`); remove `hmac` or add an HMAC key"
    );
    assert_eq!(p.line, Some(7));
}

/// Weak settings that are allowed still warn, each with what to do instead.
#[test]
fn weak_fwknop_settings_warn_with_the_fix() {
    let no_hmac = fwknop_client("b", "no_hmac = true\nmode = \"legacy\"\n")
        .replace(&format!("hmac_key_base64 = \"{}\"\n", fw_hmac()), "")
        .replace(
            "allow = [\"tcp/22\"]\n",
            "allow = [\"tcp/22\"]\nsources = [\"192.0.2.0/24\"]\n",
        );
    let w = warnings(&parse_str(&no_hmac, Path::new(PATH)).unwrap());
    assert!(
        w.iter().any(|w| w.contains(
            "fwknop packets from its `sources` are decrypted before they are authenticated"
        )),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w == "client `b`: mode = \"legacy\" is for fwknop < 2.5 clients and cannot use an HMAC; upgrade the client and switch to \"cbc\" with an HMAC key"),
        "{w:?}"
    );
}
