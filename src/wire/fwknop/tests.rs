//! Unit tests of the fwknop codec: real client packets, seal/open round trips, tampering,
//! prechecks, key rules, and property tests that parsing never panics.

use proptest::prelude::*;
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::digest::MAX_DIGEST_B64;
use super::open::RAW_BUF;
use super::*;
use crate::access::Proto;

const KEY_B64: &str = "oQIY1T7kis/kyV9QHh/Fe2cpnA0SvOAy995h7HWCMvE=";
const HMAC_B64: &str =
    "0XEuKA+PgGJcbHwjdGciHsjUhYIJGf2UD5OL69B+LyH8miyYeRuszycx4IFY3WPAnPwAO26cYeBjysAkd116QQ==";

fn key(ht: Option<HmacType>, mode: EncMode) -> FwknopKey {
    FwknopKey::new(
        Zeroizing::new(decode_b64_lenient(KEY_B64).unwrap()),
        ht.map(|_| Zeroizing::new(decode_b64_lenient(HMAC_B64).unwrap())),
        ht.unwrap_or_default(),
        mode,
    )
    .unwrap()
}

fn tcp(p: u16) -> Access {
    Access::new(Proto::Tcp, p).unwrap()
}

/// Packets made here with the Debian fwknop 2.6.10 client (`fwknop -T -B FILE --no-rc-file
/// -a 10.1.2.3 -D 127.0.0.1 -A tcp/22 --key-base64-rijndael KEY_B64 --key-base64-hmac
/// HMAC_B64` plus the option in the name), covering what the shared vectors do not: CFB,
/// OFB, ECB; HMAC md5/sha384/sha3_256/sha3_512; digests md5/sha384/sha3_256/sha3_512;
/// message types 4, 5, 6; a 439-character packet (9 ports, `-m sha512 --hmac-digest-type
/// sha512`) that fwknopd would not even try as Rijndael (≥ 400, §3.5).
const CLIENT_PACKETS: &[(&str, &str)] = &[
    ("big", "8Yvit8YAxNbIfYgZQ5Qv0EnywdKZpc45t2XxE4Fg9Jp8jZoyGkqJNlsLTUePtiFB1Tt5D7WRrDA7pmRRLr1L/DQo/ECA9TfxVAsHm2yvMKUyn80IAeE5uM9MPFkVVfOXEwky/lyR/aX2goPiMmFpgt2O1yHuQx7pu2SJazxbo7AiSPTS/4isFhRLONrKe2g2asX8ftz8JXEWClGoI8Asc3H6PYYe8v3Ik/LgVIV4R93xEYAhjI4/HNlCoKUuC1DTuh0FS4vAkSVOFb2R1XDnHuhHl1Jg7nXHFbyxlYxIelaeR4YBfa4aCbMzxZ1+s/C9t2+lzurJOrFxUZFR6UJXOpmfQIaEZ/ujISno1RpRIBrU9Q/x8EjghJLvVS42Ifjj0tg5wU1D/yFMExURDGBfUDZIll6FAqSgccB7K3cVAxH5r+1vEIjfmYg"),
    ("d_md5", "+UF+QbyWg0/RPZ9w5JGFsHJ0jeBEPXIrT1fn1BeOlSsbNCq+KuaROzZG3pf7BxjgtsvOopEtFZaYpQZIdD1WbmZ1y4T+wUQ066PGNcvVOou7hHRjpNLHEOT4bleKbnL0l6H4F+xzoxYg++h4nqtJsYHGZLcdibFPunVy9u4GRoKI76/6adT6VzQ"),
    ("d_sha384", "86xqdSaRlCxHydexGkg9R1pnwhB6+Nev9quf4MvdsGRl2I11iyAp3DnhXNyQHnsgu8MNiuI8HH+pP0NSulxEoSZUHSzx59+XdSl1R6rgAwWJMI7sruH+mGw4XjbJqewTm4Tu+fZ0O/tejLEEm4eJ+sP4Cz1tWo8hKg2EcoS4gfNwFruN5mUAjj0QrvXnvkiT5VprDsRPMvaAU6Kw/lUAltQNCCzjchhp+qmSSVLtatxqPXMVnTr3HZs"),
    ("d_sha3_256", "/wUKMemu2uZ7O/8D0q/tdKAO++WRsrLgvmvxxoQ3fK1gb36C91qa0Kly9EtH7OpE35YB5F8AOZri7sWNVC6gmkW5ribEDPgPWwX3iYpbq8eUbSC87icamK4BL1jq38UEsggACNXABVmdAUOzToX7lfHUvk2TAFDa4LN9530qBXTZCwtypbzssdzlMDtLYSpyyz0rxiTt8ccs"),
    ("d_sha3_512", "9/Hl/HevV+9hUhRpsixCTmbyVcDxlYLfRUenyf4ps7QKzMreiD8b537uDDIVq496l4p/dqd0mgyihi5mMAhjZqzZN7Pj1cBynEihD/S+PFFBsXoklBzTLnCieQN/8Bs5MypybNxfLkepHgz/aZa53Lvuif5Mb+WYBcou2csrMPxWnBXvE1pNwEg6jwyaphdtcUed3v74wm0tYNZ6Bok3m9CWdbN3thwzgJeoN1NI1QLVzdAs06jwoft4QNq4cAr051Mq4jVLUyho"),
    ("h_md5", "9kqrXeRMUbdL/4xxZWeXtmmyIof18A/Lkdrp03xjBrpA4CBZkWU1l6TN+0QJbFZYNOAktmJkRUlHooCKHN5X0gLSaMT1cKBh6Scp0WaBeD+nPPWWmWeHSQMa9AMIntfnd1Y+RR5ivJr5Y5WK74W/xQCC5fdE9wbI0xyEbs0ffti1sQfG3Helu3w"),
    ("h_sha384", "9yOWy2e2IdFn7S9oM7kg61TKlamFJnMtjcj2VVl0pEhblmfx11VVwhVAPmNpupH2r7deAxB0GbD2spMYXhXg9kQxknwy0dstnJM5Jzm/YFybyCdMf4QAoJZundtoxCId/so5Z6RjayC8mzlYk16cCUwzbvqQ2pHTsqjdqF065rR6qQmcTHBzdCcuM9ZfuGGP1yYMaI8gp3LttgdxHP9cuRwafNcngIwU+"),
    ("h_sha3_256", "+6ioJu/PYRnrQ2czmCCRSwxUSO6TkdcC5ETzlQh29xlow/ZUN4rDMY/hmlO8VV+fZLq8MTmtElw1UPJqiSZuzVzcMC+gtv6rq+5GcYCp15IrUzi0/+1iPe9XKY9pDLJDPc5ZLFo/V0JV8PwyKkYVRJxQg2z3MTOoYzSUZ7uUZyuYMJ8p3WPTtUbQ2pPd+FH3OEiDKYlxwCow"),
    ("h_sha3_512", "/Bj+USR8jwcSKUcWRqMTVPFsTLKXXSrCBxgGwVYrhNrAbHXVP1OwhZe2PYjClj/0sOA9XjpTP4fydUuIab25TIiSh39zqcxhI9cjDaoe8TgKG9aPMLLv+udbLM0Kobljpn/gc0co1ljgKkr9DSylFwZkCrMdaLAnwpDCdL966wcnyhmVCEeb49Du5HoeWA7AhMgNaDaTEiDiRUkuLytm8ObRoQQc1uaYY5sdKmJNkF7poIHPOZRkhZA"),
    ("m_cfb", "+aRf5Om+F63W6Ll88h7mjqIf+uvXg7wQcX9VCygf5H1wWt7n/FtToD1V9F9VWPGhVTxMHD3ldmhkHH31A9UW92zrG8aK2MmhX3JVrlRnMoZZt9bn88fQqbqc4cfnMhFyl/GeDaZLzu3gcHFCTOKl/eG0LI45FqJdsMVQO2nHOzaHhuJHKHTezJQve06ZZ0j/lEViFIzaIXdU"),
    ("m_ecb", "/k+zWzweqahi8kLDSX8NAAdPaSO+VtjWOaQ1FtelUQv2ssHmqcxr8N8WboIktUUNb8gu2z0mFcG48aqIVO5nbHIh+bpre1E3p6+FwbUlrSlSJCggkhDcayh5aG2pCjTJbs7hsP1XFUqlz/gZ+UPK/QHdm8QpeBvQAzTaeorBpJ4LvywtmoTfO3dP0glTfEujppUVpNhOscVk"),
    ("m_ofb", "9KyUTuujhtf+FtjTNUU/k/LU0bBI0oDaSeBkVqa0QMOfgx3z77CC23W8xrKrUtPnKrftohL2KmMYZtPpNCzzNOmlUR6UVdNfZXKdY4++nLD6kYQnqp3TpKPVrBGYCV4JXTV/ExwBXargkUek9BvLGgx5jpqGdKITskrvQHOdEngx4h9BZS6NIKH1jpohf9XzrPGSpLQJ0SDo"),
    ("t4", "/fRjBmh2D2OE2IXohY6B5HGN1laIHcFS0IEKdkguVP79tZSQyTD1lMuirr9fA6srGfXuMy4hHF/wky2v1VlxReJZwPNcPDdekDUHCeXV+10Oo5efVSVA/JWlUVQmymV+kS8YZFCdj4+De3aIGjBKgdOBPH6D+4y0ozJpyh0fgiONe+KWap3V+6P2Nhpa+wnRea2wzrLDgltQRLLpoJz8Wmf+SIg8bZS87ZMHzYCDzPtHnqqNhSUNp0g"),
    ("t5", "8BtE2YQ6/LozT57iN/GuLCzzErozqr+89LO1K6IZVzOMa3qG+RPtuvVaprE7hq2H40j8Gkob1OvyZ6AzUc+QkkjEbM6FeBBR3LZo2EemR/6v1G8ajme0xF+pHKjLYX7RnQkmplgC8ku2y+dtoY3sHmXkTooSiu7gJxKn6tD4FQNygNalgNsCOsfV+e0DJbpUzhTzsV3HgvMLOQJrdMXn1mLq3CvvYdB0U"),
    ("t6", "8iVmKoJYAHxY2wY794geW9SGR54bd6Y7WCfu0IsxKSasIqbYx6ZYVw26ZeH7HWTiRplJEADtIVmGppaTf8qSOFZj0el21X/xyLnaLdCxS77Ksa0CheTGBSCsfxw/SktiNUEQgzkTyUYKxKtUnZJGbLpzDGupuFP/rpDEOzX3BvK2wQDHxdBoqarqTOpYHuCymhV/ZOFB/beuluMWkzA8U3Dpiv6l55+OU"),
];

/// Generated around Unix time 1795676642 (this machine's clock).
const CLIENT_TIME: u64 = 1_795_676_642;

#[test]
fn decodes_client_packets_of_every_mode_hmac_digest_and_type() {
    for &(name, wire) in CLIENT_PACKETS {
        let (ht, mode) = match name {
            "m_cfb" => (HmacType::Sha256, EncMode::Cfb),
            "m_ofb" => (HmacType::Sha256, EncMode::Ofb),
            "m_ecb" => (HmacType::Sha256, EncMode::Ecb),
            "h_md5" => (HmacType::Md5, EncMode::Cbc),
            "h_sha384" => (HmacType::Sha384, EncMode::Cbc),
            "h_sha3_256" => (HmacType::Sha3_256, EncMode::Cbc),
            "h_sha3_512" => (HmacType::Sha3_512, EncMode::Cbc),
            "big" => (HmacType::Sha512, EncMode::Cbc),
            _ => (HmacType::Sha256, EncMode::Cbc),
        };
        let k = key(Some(ht), mode);
        let m = open(&k, wire.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.username, "root", "{name}");
        assert!(m.timestamp.abs_diff(CLIENT_TIME) < 3600, "{name}");
        assert_eq!(m.version, PROTOCOL_VERSION, "{name}");
        assert_eq!(m.allow_ip, Ipv4Addr::new(10, 1, 2, 3), "{name}");
        let (t, nat, timeout) = match name {
            "t4" => (4, Some(("192.168.10.2", 2222)), 60),
            "t5" => (5, Some(("127.0.0.1", 22)), 0),
            "t6" => (6, Some(("127.0.0.1", 22)), 45),
            _ => (1, None, 0),
        };
        assert_eq!(
            (m.message_type, m.nat_target(), m.client_timeout),
            (t, nat, timeout),
            "{name}"
        );
        if name == "big" {
            assert!(wire.len() >= MIN_GNUPG_LEN, "fwknopd would call this GnuPG");
            assert_eq!(m.access.len(), 9);
        } else {
            assert_eq!(m.access, vec![tcp(22)], "{name}");
        }
        // Any other mode or HMAC type refuses it.
        for other in EncMode::ALL
            .into_iter()
            .filter(|&o| o != mode && o != EncMode::Legacy)
        {
            assert!(
                open(&key(Some(ht), other), wire.as_bytes()).is_err(),
                "{name} as {other}"
            );
        }
        for other in HmacType::ALL.into_iter().filter(|&o| o != ht) {
            assert_eq!(
                open(&key(Some(other), mode), wire.as_bytes()),
                Err(FwknopError::Hmac),
                "{name}"
            );
        }
    }
}

#[test]
fn seal_open_round_trip_for_every_mode_hmac_and_digest() {
    let req = SealRequest::access(
        "alice",
        1_795_566_850,
        Ipv4Addr::new(192, 0, 2, 7),
        &[tcp(22), tcp(443)],
        0,
    );
    let mut n = 0u8;
    for mode in EncMode::ALL {
        let hmacs = HmacType::ALL.map(Some);
        for ht in hmacs.into_iter().chain([None]) {
            for dt in DigestType::ALL {
                n = n.wrapping_add(1);
                let k = key(ht, mode);
                let wire = seal(&k, &req, [n; 8], "1234567890123456", dt).unwrap();
                assert_eq!(precheck(wire.as_bytes()), Ok(()));
                let m =
                    open(&k, wire.as_bytes()).unwrap_or_else(|e| panic!("{mode} {ht:?} {dt}: {e}"));
                assert_eq!(m.username, "alice");
                assert_eq!(m.message, "192.0.2.7,tcp/22,tcp/443");
                assert_eq!(m.access, vec![tcp(22), tcp(443)]);
                assert_eq!(m.rand_value, "1234567890123456");
                // Length arithmetic of §4.5: tag appended exactly.
                let tag = ht.map_or(0, HmacType::b64_len);
                let pt = 16 + 1 + 5 + 10 + 5 + 1 + 32 + 5 + 1 + dt.b64_len() + 1;
                let raw = 16 + (pt / 16 + 1) * 16;
                assert_eq!(
                    wire.len(),
                    b64::encoded_len(raw) - 10 + tag,
                    "{mode} {ht:?} {dt}"
                );
            }
        }
    }
}

#[test]
fn seal_round_trips_every_message_type() {
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    let base = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let cases = [
        SealRequest {
            message_type: 0,
            message: "10.1.2.3,echo hello".into(),
            ..base.clone()
        },
        base.clone(),
        SealRequest {
            message_type: 2,
            nat_access: Some("192.168.10.2,22".into()),
            ..base.clone()
        },
        SealRequest {
            message_type: 3,
            client_timeout: 30,
            ..base.clone()
        },
        SealRequest {
            message_type: 4,
            nat_access: Some("h.example,2222".into()),
            client_timeout: 9,
            ..base.clone()
        },
        SealRequest {
            message_type: 5,
            nat_access: Some("127.0.0.1,22".into()),
            ..base.clone()
        },
        SealRequest {
            message_type: 6,
            nat_access: Some("127.0.0.1,22".into()),
            client_timeout: 65536,
            ..base.clone()
        },
        SealRequest {
            server_auth: Some("crypt,pw".into()),
            ..base.clone()
        },
        SealRequest {
            message_type: 4,
            nat_access: Some("h,1".into()),
            server_auth: Some("x".into()),
            client_timeout: 1,
            ..base.clone()
        },
    ];
    for req in cases {
        let wire = seal(&k, &req, [3; 8], "0000000000000000", DigestType::Sha256).unwrap();
        let m = open(&k, wire.as_bytes()).unwrap();
        assert_eq!(m.message_type, req.message_type);
        assert_eq!(m.message, req.message);
        assert_eq!(m.nat_access, req.nat_access);
        assert_eq!(m.server_auth, req.server_auth);
        assert_eq!(m.client_timeout, req.client_timeout);
    }
    let bad = [
        SealRequest {
            message_type: 2,
            ..base.clone()
        },
        SealRequest {
            nat_access: Some("h,1".into()),
            ..base.clone()
        },
        SealRequest {
            client_timeout: 5,
            ..base.clone()
        },
        SealRequest {
            message_type: 7,
            ..base.clone()
        },
        SealRequest {
            username: "a:b".into(),
            ..base.clone()
        },
        SealRequest {
            username: "u".repeat(49),
            ..base.clone()
        },
        SealRequest {
            message: "10.1.2.3,tcp/0".into(),
            ..base.clone()
        },
        SealRequest {
            version: "123456789".into(),
            ..base.clone()
        },
        SealRequest {
            message_type: 3,
            client_timeout: 65537,
            ..base.clone()
        },
    ];
    for req in bad {
        assert!(
            matches!(
                seal(&k, &req, [3; 8], "0000000000000000", DigestType::Sha256),
                Err(FwknopError::Malformed(_))
            ),
            "{req:?}"
        );
    }
    assert!(seal(&k, &base, [3; 8], "123", DigestType::Sha256).is_err());
    assert!(seal(&k, &base, [3; 8], "123456789012345x", DigestType::Sha256).is_err());
}

/// The prepared path must answer exactly as `open` does, for every HMAC type (SHA-3 falls
/// back to per-packet keying), without an HMAC, under the wrong key, and for every flipped
/// character.
#[test]
fn open_prepared_agrees_with_open() {
    let req = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let kinds = HmacType::ALL.into_iter().map(Some).chain([None]);
    for ht in kinds {
        let k = key(ht, EncMode::Cbc);
        let p = PreparedKey::new(&k);
        assert_eq!(
            p.mac.is_some(),
            ht.is_some_and(|h| !matches!(h, HmacType::Sha3_256 | HmacType::Sha3_512)),
            "{ht:?}"
        );
        let wire = seal(&k, &req, [7; 8], "2222222222222222", DigestType::Sha256)
            .unwrap()
            .into_bytes();
        let ok = open_prepared(&p, prechecked(&wire).unwrap()).unwrap();
        assert_eq!(Ok(ok.message), open(&k, &wire), "{ht:?}");
        for i in (0..wire.len()).step_by(7) {
            let mut w = wire.clone();
            w[i] = if w[i] == b'A' { b'B' } else { b'A' };
            let by_prepared = prechecked(&w).and_then(|c| open_prepared(&p, c).map(|o| o.message));
            assert_eq!(by_prepared, open(&k, &w), "{ht:?} flip at {i}");
        }
        // Under another client's HMAC key of the same type: refused by both.
        if let Some(h) = ht {
            let other = FwknopKey::new(
                k.key.clone(),
                Some(Zeroizing::new(vec![9; 64])),
                h,
                EncMode::Cbc,
            )
            .unwrap();
            let po = PreparedKey::new(&other);
            assert_eq!(
                open_prepared(&po, prechecked(&wire).unwrap()),
                Err(FwknopError::Hmac),
                "{h:?}"
            );
            assert_eq!(open(&other, &wire), Err(FwknopError::Hmac), "{h:?}");
        }
    }
    // A prefixed packet never becomes `Prechecked`, so it never reaches a prepared key.
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    let wire = seal(&k, &req, [7; 8], "2222222222222222", DigestType::Sha256).unwrap();
    let prefixed = format!("U2FsdGVkX1{wire}");
    assert_eq!(
        prechecked(prefixed.as_bytes()),
        Err(FwknopError::SaltedPrefix)
    );
    assert_eq!(
        prechecked(wire.as_bytes()).map(|c| c.bytes()),
        Ok(wire.as_bytes())
    );
    assert!(!format!("{:?}", PreparedKey::new(&k)).contains(KEY_B64));
}

#[test]
fn tampering_anywhere_is_refused() {
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    let req = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let wire = seal(&k, &req, [1; 8], "1111111111111111", DigestType::Sha256)
        .unwrap()
        .into_bytes();
    for i in 0..wire.len() {
        let mut w = wire.clone();
        w[i] = if w[i] == b'A' { b'B' } else { b'A' };
        assert!(open(&k, &w).is_err(), "flip at {i}");
    }
    // Without HMAC, a flipped ciphertext byte still never yields a message silently
    // different from what was sealed: the inner digest catches what decryption lets through.
    let k = key(None, EncMode::Cbc);
    let wire = seal(&k, &req, [1; 8], "1111111111111111", DigestType::Sha256)
        .unwrap()
        .into_bytes();
    for i in 1..wire.len() {
        let mut w = wire.clone();
        w[i] = if w[i] == b'A' { b'B' } else { b'A' };
        if let Ok(m) = open(&k, &w) {
            assert_eq!(m.message, "10.1.2.3,tcp/22", "flip at {i}");
        }
    }
}

#[test]
fn precheck_rules() {
    let ok = format!("8{}", "A".repeat(199));
    assert_eq!(precheck(ok.as_bytes()), Ok(()));
    for c in ['9', '+', '/'] {
        assert_eq!(
            precheck(format!("{c}{}", "A".repeat(199)).as_bytes()),
            Ok(())
        );
    }
    assert_eq!(precheck(&ok.as_bytes()[..139]), Err(FwknopError::Length));
    assert_eq!(precheck(format!("8{}", "A".repeat(139)).as_bytes()), Ok(()));
    assert_eq!(
        precheck(format!("8{}", "A".repeat(1498)).as_bytes()),
        Ok(())
    );
    assert_eq!(
        precheck(format!("8{}", "A".repeat(1499)).as_bytes()),
        Err(FwknopError::Length)
    );
    assert_eq!(precheck(b""), Err(FwknopError::Length));
    for bad in ["=", "\n", " ", "-", "_", "!", "\0", "\u{e9}"] {
        let w = format!("8{}{bad}", "A".repeat(190));
        assert_eq!(precheck(w.as_bytes()), Err(FwknopError::Charset), "{bad:?}");
    }
    let prefixed = format!("U2FsdGVkX1{}", "A".repeat(190));
    assert_eq!(
        precheck(prefixed.as_bytes()),
        Err(FwknopError::SaltedPrefix)
    );
    assert_eq!(
        precheck(format!("A{}", "A".repeat(199)).as_bytes()),
        Err(FwknopError::NotRijndael)
    );
    let gpg = format!("hQEMA{}", "x".repeat(995));
    assert!(looks_like_gpg(gpg.as_bytes()));
    assert_eq!(precheck(gpg.as_bytes()), Err(FwknopError::Gpg));
    assert!(!looks_like_gpg(format!("8{}", "A".repeat(999)).as_bytes()));
    // open runs the same checks.
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    assert_eq!(
        open(&k, prefixed.as_bytes()),
        Err(FwknopError::SaltedPrefix)
    );
}

/// Security issue item 1: the identity follows the authenticated message, not its spelling;
/// non-canonical base64 is refused before decryption.
#[test]
fn replay_id_is_the_message_not_its_spelling() {
    let req = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let id = |k: &FwknopKey, w: &[u8]| {
        open_prepared(&PreparedKey::new(k), prechecked(w)?).map(|o| o.replay_id)
    };
    for mode in EncMode::ALL {
        let k = key(None, mode);
        let wire = seal(&k, &req, [7; 8], "1234567890123456", DigestType::Sha256).unwrap();
        let first = id(&k, wire.as_bytes()).unwrap();
        // Another packet with the same request: fresh random digits, another identity.
        let other = seal(&k, &req, [7; 8], "1234567890123457", DigestType::Sha256).unwrap();
        assert_ne!(id(&k, other.as_bytes()).unwrap(), first, "{mode:?}");
        // Non-canonical spellings of the same ciphertext are refused.
        let n = SALTED_PREFIX.len() + wire.len();
        let mut respelled = Vec::new();
        if n % 4 == 0 {
            respelled.push(format!("{wire}A"));
        } else {
            let last = wire.as_bytes()[wire.len() - 1];
            let v = b64::sextet(last).unwrap() ^ 1;
            let mut w = wire.clone().into_bytes();
            *w.last_mut().unwrap() = b64::ALPHABET[usize::from(v)];
            respelled.push(String::from_utf8(w).unwrap());
        }
        for r in respelled {
            assert_eq!(
                id(&k, r.as_bytes()),
                Err(FwknopError::NonCanonical),
                "{mode:?}"
            );
        }
        // Re-spelled padding that still opens (stream modes): the same identity.
        let mut raw = vec![0u8; RAW_BUF];
        let len = b64::decode_into(&[SALTED_PREFIX, wire.as_bytes()], &mut raw).unwrap();
        raw.truncate(len);
        let mut opened_variants = 0;
        for p in 1..=16u8 {
            let mut v = raw.clone();
            let at = v.len() - usize::from(p);
            v[at] ^= p;
            let w = b64::encode_string(&v);
            if let Ok(other) = id(&k, &w.as_bytes()[SALTED_PREFIX.len()..]) {
                assert_eq!(other, first, "{mode:?} padding {p}");
                opened_variants += 1;
            }
        }
        // In a stream mode exactly one guess of the padding length opens (CBC and ECB garble
        // the whole block, which only rarely still opens — then with the same identity).
        if matches!(mode, EncMode::Ctr | EncMode::Cfb | EncMode::Ofb) {
            assert_eq!(opened_variants, 1, "{mode:?}");
        }
    }
    // An HMAC'd packet with its tag cut off, under a no-HMAC key with the same Rijndael key.
    let hk = key(Some(HmacType::Sha256), EncMode::Cbc);
    let wire = seal(&hk, &req, [7; 8], "1234567890123456", DigestType::Sha256).unwrap();
    let body = &wire.as_bytes()[..wire.len() - HmacType::Sha256.b64_len()];
    assert_eq!(id(&hk, wire.as_bytes()), id(&key(None, EncMode::Cbc), body));
    // The identity is not fwknopd's replay digest (SHA-256 of the wire text).
    let wire_digest: [u8; 32] = sha2::Sha256::digest(wire.as_bytes()).into();
    assert_ne!(id(&hk, wire.as_bytes()).unwrap(), wire_digest);
}

/// Without an HMAC, a packet whose padding fills a whole block (one in sixteen) can be
/// re-spelled even in CBC and ECB: alter the last ciphertext block until its garbage
/// plaintext starts with NUL (about one try in 256), and libfko's C-string cut drops it.
/// The identity is the same.
#[test]
fn full_padding_block_respelled_in_cbc_and_ecb_keeps_its_identity() {
    for mode in [EncMode::Cbc, EncMode::Ecb, EncMode::Legacy] {
        let k = key(None, mode);
        let pk = PreparedKey::new(&k);
        // A user name that makes `encoded ":" digest` a whole number of blocks.
        let req = (1..=16)
            .map(|n| {
                SealRequest::access(
                    &"u".repeat(n),
                    42,
                    Ipv4Addr::new(10, 1, 2, 3),
                    &[tcp(22)],
                    0,
                )
            })
            .find(|r| {
                let encoded = fields::build(r, "1234567890123456").unwrap();
                (encoded.len() + 1 + DigestType::Sha256.b64_len()) % cipher::BLOCK == 0
            })
            .unwrap();
        let wire = seal(&k, &req, [7; 8], "1234567890123456", DigestType::Sha256).unwrap();
        let first = open_prepared(&pk, prechecked(wire.as_bytes()).unwrap()).unwrap();
        let mut raw = vec![0u8; RAW_BUF];
        let len = b64::decode_into(&[SALTED_PREFIX, wire.as_bytes()], &mut raw).unwrap();
        raw.truncate(len);
        let at = len - cipher::BLOCK;
        let found = (1..=u16::MAX).find_map(|x| {
            let mut v = raw.clone();
            v[at] ^= x as u8;
            v[at + 1] ^= (x >> 8) as u8;
            let w = b64::encode_string(&v);
            open_prepared(&pk, prechecked(&w.as_bytes()[SALTED_PREFIX.len()..]).ok()?).ok()
        });
        let other = found.expect("some altered last block opens");
        assert_eq!(other.message, first.message, "{mode:?}");
        assert_eq!(other.replay_id, first.replay_id, "{mode:?}");
    }
}

#[test]
fn names_parse_in_fwknop_spellings() {
    assert_eq!("sha256".parse::<HmacType>(), Ok(HmacType::Sha256));
    assert_eq!("SHA256".parse::<HmacType>(), Ok(HmacType::Sha256));
    assert_eq!("sha3_256".parse::<HmacType>(), Ok(HmacType::Sha3_256));
    assert_eq!("SHA3-512".parse::<HmacType>(), Ok(HmacType::Sha3_512));
    assert!("sha224".parse::<HmacType>().is_err());
    assert_eq!("CBC".parse::<EncMode>(), Ok(EncMode::Cbc));
    assert_eq!("cbc".parse::<EncMode>(), Ok(EncMode::Cbc));
    assert_eq!("legacy".parse::<EncMode>(), Ok(EncMode::Legacy));
    assert_eq!("LEGACY".parse::<EncMode>(), Ok(EncMode::Legacy));
    assert!("Asymmetric"
        .parse::<EncMode>()
        .unwrap_err()
        .to_string()
        .contains("GnuPG"));
    assert!("PCBC".parse::<EncMode>().is_err());
    assert_eq!("md5".parse::<DigestType>(), Ok(DigestType::Md5));
    assert_eq!("SHA3_512".parse::<DigestType>(), Ok(DigestType::Sha3_512));
    for t in HmacType::ALL {
        assert_eq!(t.to_string().parse::<HmacType>(), Ok(t));
    }
    for m in EncMode::ALL {
        assert_eq!(m.to_string().parse::<EncMode>(), Ok(m));
    }
    for d in DigestType::ALL {
        assert_eq!(d.to_string().parse::<DigestType>(), Ok(d));
    }
    // §4.1 table.
    let lens: Vec<usize> = HmacType::ALL.iter().map(|t| t.b64_len()).collect();
    assert_eq!(lens, [22, 27, 43, 64, 86, 43, 86]);
    let lens: Vec<usize> = DigestType::ALL.iter().map(|t| t.b64_len()).collect();
    assert_eq!(lens, [22, 27, 43, 64, 86, 43, 86]);
}

#[test]
fn key_validation_follows_fwknopd() {
    let z = |v: &[u8]| Zeroizing::new(v.to_vec());
    let new =
        |k: &[u8], h: Option<&[u8]>| FwknopKey::new(z(k), h.map(z), HmacType::Sha256, EncMode::Cbc);
    assert!(new(b"k", None).is_ok());
    assert!(new(&[7; 32], Some(&[8; 136])).is_ok());
    assert_eq!(new(b"", None).unwrap_err(), FwknopKeyError::KeyLength(0));
    assert_eq!(
        new(&[7; 33], None).unwrap_err(),
        FwknopKeyError::KeyLength(33)
    );
    assert_eq!(
        new(b"k", Some(b"")).unwrap_err(),
        FwknopKeyError::HmacKeyLength(0)
    );
    assert_eq!(
        new(b"k", Some(&[8; 137])).unwrap_err(),
        FwknopKeyError::HmacKeyLength(137)
    );
    assert_eq!(
        new(b"same", Some(b"same")).unwrap_err(),
        FwknopKeyError::SameKeys
    );
    // Keys built by hand bypassing `new` are still refused by open/seal, not used.
    let mut k = key(Some(HmacType::Sha256), EncMode::Cbc);
    k.key = z(&[1; 40]);
    assert_eq!(
        open(&k, format!("8{}", "A".repeat(199)).as_bytes()),
        Err(FwknopError::Key)
    );
    // Debug never shows key bytes.
    let dbg = format!("{:?}", key(Some(HmacType::Sha256), EncMode::Cbc));
    assert!(dbg.contains("redacted") && !dbg.contains("161"), "{dbg}");
}

/// Key errors name fwknop's limits, which live once in `MAX_KEY_LEN` / `MAX_HMAC_KEY_LEN`.
#[test]
fn key_errors_name_the_limits() {
    let msg = FwknopKeyError::KeyLength(33).to_string();
    assert!(
        msg.contains("33 bytes") && msg.contains("1 to 32 bytes"),
        "{msg}"
    );
    let msg = FwknopKeyError::HmacKeyLength(137).to_string();
    assert!(
        msg.contains("137 bytes") && msg.contains("1 to 136 bytes"),
        "{msg}"
    );
    assert_eq!(
        FwknopError::Key.to_string(),
        "unusable key (Rijndael key must be 1-32 bytes, HMAC key 1-136 bytes)"
    );
    assert_eq!((MIN_WIRE_LEN, MAX_WIRE_LEN), (140, 1499));
    assert!(plausible_len(140) && plausible_len(1499));
    assert!(!plausible_len(139) && !plausible_len(1500));
}

#[test]
fn legacy_mode_uses_16_byte_keys() {
    // fwknopd truncates a legacy key to 16 bytes; so does the client: a key that only
    // differs after byte 16 opens the same packets.
    let z = |v: &[u8]| Zeroizing::new(v.to_vec());
    let long = FwknopKey::new(
        z(b"0123456789abcdefXXXX"),
        None,
        HmacType::Sha256,
        EncMode::Legacy,
    )
    .unwrap();
    let short = FwknopKey::new(
        z(b"0123456789abcdef"),
        None,
        HmacType::Sha256,
        EncMode::Legacy,
    )
    .unwrap();
    let req = SealRequest::access("root", 1, Ipv4Addr::UNSPECIFIED, &[tcp(22)], 0);
    let wire = seal(&long, &req, [5; 8], "9999999999999999", DigestType::Sha256).unwrap();
    assert!(open(&short, wire.as_bytes()).is_ok());
    assert_eq!(
        open(&short, wire.as_bytes()).unwrap().allow_ip,
        Ipv4Addr::UNSPECIFIED
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn open_and_precheck_never_panic_on_bytes(wire in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = precheck(&wire);
        let _ = open(&key(Some(HmacType::Sha256), EncMode::Cbc), &wire);
        let _ = open(&key(None, EncMode::Ctr), &wire);
        let _ = looks_like_gpg(&wire);
    }

    #[test]
    fn open_never_panics_on_base64_text(
        first in prop::sample::select(vec![b'8', b'9', b'+', b'/']),
        body in "[A-Za-z0-9+/]{139,1498}",
        mode in prop::sample::select(EncMode::ALL.to_vec()),
    ) {
        let mut wire = vec![first];
        wire.extend_from_slice(body.as_bytes());
        // Without HMAC every such packet reaches decryption and the parser.
        let _ = open(&key(None, mode), &wire);
    }

    /// The parser sees arbitrary (digest-valid) plaintext: build it by sealing arbitrary
    /// printable field text under a no-HMAC key, bypassing `fields::build`'s validation.
    #[test]
    fn parser_never_panics_on_arbitrary_plaintext(text in "[0-9]{16}:[ -~]{19,400}", mode in prop::sample::select(EncMode::ALL.to_vec())) {
        let k = key(None, mode);
        if let Some(wire) = seal_raw_plaintext(&k, &text) {
            let _ = open(&k, wire.as_bytes());
        }
    }

    #[test]
    fn seal_open_round_trip(
        user in "[A-Za-z0-9_.-]{1,48}",
        ts in 0u64..=999_999_999_999,
        ports in proptest::collection::vec(1u16..=65535, 1..6),
        timeout in 0u32..=65536,
        salt in any::<[u8; 8]>(),
        rand in "[0-9]{16}",
    ) {
        let k = key(Some(HmacType::Sha256), EncMode::Cbc);
        let access: Vec<Access> = ports.iter().map(|&p| tcp(p)).collect();
        let req = SealRequest::access(&user, ts, Ipv4Addr::new(10, 0, 0, 1), &access, timeout);
        let wire = seal(&k, &req, salt, &rand, DigestType::Sha256).unwrap();
        let m = open(&k, wire.as_bytes()).unwrap();
        prop_assert_eq!(m.username, user);
        prop_assert_eq!(m.timestamp, ts);
        prop_assert_eq!(m.access, access);
        prop_assert_eq!(m.client_timeout, timeout);
        prop_assert_eq!(m.rand_value, rand);
    }
}

/// Encrypt `text` + `:` + its SHA-256 digest as a no-HMAC packet, with no field checks.
fn seal_raw_plaintext(k: &FwknopKey, text: &str) -> Option<String> {
    let mut d = [0u8; MAX_DIGEST_B64];
    let n = DigestType::Sha256.b64_into(text.as_bytes(), &mut d);
    let mut raw = SALTED_MAGIC.to_vec();
    raw.extend_from_slice(&[9; 8]);
    raw.extend_from_slice(text.as_bytes());
    raw.push(b':');
    raw.extend_from_slice(&d[..n]);
    let pad = 16 - (raw.len() % 16);
    raw.resize(raw.len() + pad, pad as u8);
    cipher::PacketCipher::derive(&k.key, &[9; 8], k.mode).encrypt(k.mode, &mut raw[16..]);
    let s = b64::encode_string(&raw);
    let wire = s.get(10..)?.to_string();
    plausible_len(wire.len()).then_some(wire)
}

/// A packet whose plaintext is exactly `pt` (PKCS#7-padded; no digest, no field checks) with
/// the HMAC of `k` when it has an HMAC key: what a client holding the keys can send.
fn seal_plaintext_bytes(k: &FwknopKey, pt: &[u8]) -> String {
    let salt = [5u8; 8];
    let mut raw = SALTED_MAGIC.to_vec();
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(pt);
    let pad = 16 - raw.len() % 16;
    raw.resize(raw.len() + pad, pad as u8);
    cipher::PacketCipher::derive(&k.key, &salt, k.mode).encrypt(k.mode, &mut raw[16..]);
    let enc = b64::encode_string(&raw);
    let mut wire = enc[SALTED_PREFIX.len()..].to_string();
    if let Some(hk) = &k.hmac_key {
        let mut tag = [0u8; hmac::MAX_TAG_B64];
        let n = hmac::hmac_b64(k.hmac_type, hk, &[enc.as_bytes()], &mut tag).unwrap();
        wire.push_str(std::str::from_utf8(&tag[..n]).unwrap());
    }
    wire
}

/// Post-authentication bytes are hostile too. With a SHA-512 HMAC the shortest wire packet
/// (140 characters) carries only 32 bytes of ciphertext, so a key holder can authenticate a
/// plaintext shorter than any fwknop message; and libfko reads the plaintext as a C string,
/// so a NUL can cut a long one short. Both are refused as malformed before any field is read.
#[test]
fn authenticated_plaintext_shorter_than_a_message_is_refused() {
    let short = FwknopError::Malformed("plaintext length out of range");
    let k = key(Some(HmacType::Sha512), EncMode::Cbc);
    let wire = seal_plaintext_bytes(&k, b"1234567890123456:tiny");
    assert_eq!(wire.len(), MIN_WIRE_LEN);
    assert_eq!(precheck(wire.as_bytes()), Ok(()));
    assert_eq!(open(&k, wire.as_bytes()), Err(short));

    let mut text = b"1234567890123456:\0".to_vec();
    text.extend_from_slice(&[b'a'; 120]);
    for k in [
        key(Some(HmacType::Sha256), EncMode::Cbc),
        key(None, EncMode::Ctr),
    ] {
        let wire = super::seal_raw_plaintext(&k, &text, [2; 8], None).unwrap();
        assert_eq!(open(&k, wire.as_bytes()), Err(short), "{:?}", k.mode);
        // The same bytes without the NUL reach the field checks (and fail there).
        let whole = text
            .iter()
            .map(|&b| if b == 0 { b'x' } else { b })
            .collect::<Vec<_>>();
        let wire = super::seal_raw_plaintext(&k, &whole, [2; 8], None).unwrap();
        assert_eq!(
            open(&k, wire.as_bytes()),
            Err(FwknopError::Malformed("too few fields"))
        );
    }
}

/// The encoder refuses what it cannot seal correctly instead of writing it: an unusable key
/// (built by hand, bypassing `FwknopKey::new`) and plaintexts outside libfko's length range.
#[test]
fn seal_refuses_unusable_keys_and_out_of_range_plaintexts() {
    let req = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let mut bad = key(Some(HmacType::Sha256), EncMode::Cbc);
    bad.key = Zeroizing::new(vec![1; MAX_KEY_LEN + 1]);
    let mut bad_hmac = key(Some(HmacType::Sha256), EncMode::Cbc);
    bad_hmac.hmac_key = Some(Zeroizing::new(Vec::new()));
    for k in [&bad, &bad_hmac] {
        assert_eq!(
            seal(k, &req, [1; 8], "1234567890123456", DigestType::Sha256),
            Err(FwknopError::Key)
        );
        assert_eq!(
            super::seal_raw_plaintext(k, &[b'1'; 64], [1; 8], None),
            Err(FwknopError::Key)
        );
    }
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    let range = FwknopError::Malformed("plaintext length out of range");
    for len in [0, MIN_PLAINTEXT - 1, MAX_PLAINTEXT] {
        assert_eq!(
            super::seal_raw_plaintext(&k, &vec![b'1'; len], [1; 8], None),
            Err(range),
            "{len} bytes"
        );
    }
    // With a digest, the digest and its `:` count towards the length.
    let md5_len = DigestType::Md5.b64_len() + 1;
    assert_eq!(
        super::seal_raw_plaintext(
            &k,
            &vec![b'1'; MIN_PLAINTEXT - md5_len - 1],
            [1; 8],
            Some(DigestType::Md5)
        ),
        Err(range)
    );
}

/// `command()` is the command of a command message (type 0) and nothing for any other type,
/// whatever its message text holds.
#[test]
fn only_a_command_message_has_a_command() {
    let k = key(Some(HmacType::Sha256), EncMode::Cbc);
    let base = SealRequest::access("root", 42, Ipv4Addr::new(10, 1, 2, 3), &[tcp(22)], 0);
    let cmd = SealRequest {
        message_type: 0,
        message: "10.1.2.3,echo hi,there".into(),
        ..base.clone()
    };
    let open_req = |r: &SealRequest| {
        let wire = seal(&k, r, [4; 8], "1234567890123456", DigestType::Sha256).unwrap();
        open(&k, wire.as_bytes()).unwrap()
    };
    assert_eq!(open_req(&cmd).command(), Some("echo hi,there"));
    let access = open_req(&base);
    assert_eq!(access.message, "10.1.2.3,tcp/22");
    assert_eq!(access.command(), None);
}

/// An unknown digest name says which names exist (`DIGEST_TYPE` in a vector file or config).
#[test]
fn unknown_digest_type_names_the_choices() {
    let e = "sha224".parse::<DigestType>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown digest type `sha224`; expected one of: md5, sha1, sha256, sha384, sha512, sha3_256, sha3_512"
    );
    assert!("SHA-224".parse::<DigestType>().is_err());
    assert_eq!("SHA3-256".parse::<DigestType>(), Ok(DigestType::Sha3_256));
}

/// A deterministic RNG for the client encoder: a xorshift stream from a seed.
struct SeededRng(u64);

impl crate::crypto::Rng for SeededRng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// What `nfknock knock --fwknop` sends (salt and random value from the RNG) opens under the
/// same key with our own decoder, for every mode × HMAC (and none) × inner digest, and for
/// message types 1 and 3; two packets of the same request differ (salt, random digits).
#[test]
fn client_packets_open_for_every_mode_hmac_digest_and_type() {
    let mut rng = SeededRng(0x9e37_79b9_7f4a_7c15);
    for mode in EncMode::ALL {
        for ht in HmacType::ALL.map(Some).into_iter().chain([None]) {
            if mode == EncMode::Legacy && ht.is_some() {
                continue; // fwknop refuses legacy + HMAC; so does our config
            }
            for dt in DigestType::ALL {
                for timeout in [0u32, 45] {
                    let k = key(ht, mode);
                    let req = SealRequest::access(
                        "bob",
                        1_795_566_850,
                        Ipv4Addr::new(198, 51, 100, 7),
                        &[tcp(22), Access::new(Proto::Udp, 53).unwrap()],
                        timeout,
                    );
                    let a = seal_random(&k, &req, dt, &mut rng).unwrap();
                    let b = seal_random(&k, &req, dt, &mut rng).unwrap();
                    assert_ne!(a, b, "two knocks must differ");
                    let m = open(&k, a.as_bytes())
                        .unwrap_or_else(|e| panic!("{mode} {ht:?} {dt} t={timeout}: {e}"));
                    assert_eq!(m.message_type, if timeout > 0 { 3 } else { 1 });
                    assert_eq!(m.client_timeout, timeout);
                    assert_eq!(m.version, PROTOCOL_VERSION);
                    assert_eq!(m.message, "198.51.100.7,tcp/22,udp/53");
                    assert_eq!(m.rand_value.len(), 16);
                    assert!(m.rand_value.bytes().all(|c| c.is_ascii_digit()));
                    // The tag is the configured HMAC's; a different HMAC type does not open it.
                    if let Some(h) = ht {
                        let other = HmacType::ALL.into_iter().find(|&o| o != h).unwrap();
                        let mut wrong = k.clone();
                        wrong.hmac_type = other;
                        assert!(open(&wrong, a.as_bytes()).is_err(), "{h} opened as {other}");
                    }
                }
            }
        }
    }
}

#[test]
fn random_digits_are_sixteen_uniform_digits() {
    let mut rng = SeededRng(7);
    let mut counts = [0u32; 10];
    for _ in 0..2000 {
        let d = random_digits(&mut rng);
        assert_eq!(d.len(), 16);
        for c in d.bytes() {
            counts[usize::from(c - b'0')] += 1;
        }
    }
    // 32 000 digits: each of the ten is drawn 3 200 times on average.
    assert!(
        counts.iter().all(|&n| (2_900..3_500).contains(&n)),
        "{counts:?}"
    );
}

proptest! {
    #[test]
    fn client_seal_open_round_trip(
        seed in 1u64..,
        user in "[A-Za-z0-9_.-]{1,48}",
        ts in 0u64..=2_147_483_647,
        allow in any::<[u8; 4]>(),
        accesses in proptest::collection::vec((any::<bool>(), 1u16..=65535), 1..8),
        timeout in 0u32..=65536,
        mode in prop::sample::select(EncMode::ALL.to_vec()),
        ht in prop::sample::select(HmacType::ALL.to_vec()),
        dt in prop::sample::select(DigestType::ALL.to_vec()),
    ) {
        let mode = if mode == EncMode::Legacy { EncMode::Cbc } else { mode };
        let k = key(Some(ht), mode);
        let access: Vec<Access> = accesses
            .iter()
            .map(|&(udp, p)| Access::new(if udp { Proto::Udp } else { Proto::Tcp }, p).unwrap())
            .collect();
        let req = SealRequest::access(&user, ts, Ipv4Addr::from(allow), &access, timeout);
        let wire = seal_random(&k, &req, dt, &mut SeededRng(seed)).unwrap();
        let m = open(&k, wire.as_bytes()).unwrap();
        prop_assert_eq!(m.username, user);
        prop_assert_eq!(m.timestamp, ts);
        prop_assert_eq!(m.allow_ip, Ipv4Addr::from(allow));
        prop_assert_eq!(m.access, access);
        prop_assert_eq!(m.client_timeout, timeout);
    }
}
