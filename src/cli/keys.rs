//! `nfknock keygen`: a new random client key, on stdout or in a new file of mode 0600; with
//! `--fwknop`, an fwknop key pair (like `fwknop --key-gen`) with the `access.conf` lines, the
//! nfknock `[[client]]` entry and, with `--qr`, a QR code for the Android Fwknop2 app.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use clap::Args;
use zeroize::Zeroizing;

use super::{qr, EXIT_OK};
use crate::crypto::{self, Rng};
use crate::sys::OsRng;
use crate::wire::fwknop::{keygen_hmac_len, HmacType, KEYGEN_KEY_LEN};

#[derive(Debug, Args)]
#[command(after_help = "\
Native key:  nfknock keygen --out /etc/nfknock/alice.key
fwknop keys: nfknock keygen --fwknop --name phone --qr
             prints KEY_BASE64/HMAC_KEY_BASE64 (as `fwknop --key-gen` does), an fwknopd
             access.conf stanza, the nfknock [[client]] entry, and a QR code the Android
             Fwknop2 app scans (its \"scan QR code\" menu fills in both keys).
             With --out PATH the keys go to PATH and PATH.hmac (mode 0600) instead, and the
             [[client]] entry names the files; use them with
             `nfknock knock --fwknop --key-file PATH --hmac-key-file PATH.hmac`.")]
pub struct KeygenArgs {
    /// Write the key to this file (mode 0600, refused if it exists) instead of stdout; with
    /// --fwknop the HMAC key goes to PATH.hmac.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Make an fwknop key pair (Rijndael key + HMAC key) instead of a native key.
    #[arg(long)]
    pub fwknop: bool,
    /// HMAC algorithm the keys are for (fwknop's --hmac-digest-type): md5, sha1, sha256,
    /// sha384, sha512, sha3_256, sha3_512. Sets the HMAC key length as fwknop does.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "sha256",
        requires = "fwknop"
    )]
    pub hmac_digest_type: HmacType,
    /// The client's name in the printed `[[client]]` entry.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "fwknop",
        requires = "fwknop"
    )]
    pub name: String,
    /// Also print a QR code of the keys for the Android Fwknop2 app (it shows the keys: print
    /// it only where nobody looks over your shoulder).
    #[arg(long, requires = "fwknop")]
    pub qr: bool,
    /// Draw the QR code for a light terminal background (dark modules drawn) instead of a
    /// dark one.
    #[arg(long, requires = "qr")]
    pub qr_light_background: bool,
}

pub(super) fn keygen(args: KeygenArgs) -> anyhow::Result<i32> {
    if args.fwknop {
        return keygen_fwknop(&args);
    }
    let key = crypto::generate_secret_base64(&mut OsRng);
    match args.out.as_deref() {
        None => println!("{}", key.as_str()),
        Some(path) => {
            let mut f = create_private(path)?;
            writeln!(f, "{}", key.as_str())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote a new key to {} (mode 0600)", path.display());
        }
    }
    Ok(EXIT_OK)
}

/// Create `path` for a secret: mode 0600, never over an existing file.
fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create key file {} (it must not exist yet)",
                path.display()
            )
        })
}

/// `n` random bytes as padded standard base64 (fwknop writes its keys so, and Fwknop2 refuses
/// base64 keys whose length is not a multiple of 4).
fn random_base64(rng: &mut dyn Rng, n: usize) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    rng.fill(&mut bytes);
    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()))
}

/// A TOML basic string (quoted, escaped).
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn keygen_fwknop(args: &KeygenArgs) -> anyhow::Result<i32> {
    if !crate::config::valid_name(&args.name) {
        return Err(super::UsageError(format!(
            "--name `{}`: use 1 to 64 letters, digits and `_.@-`",
            args.name
        ))
        .into());
    }
    let hmac = args.hmac_digest_type;
    let key = random_base64(&mut OsRng, KEYGEN_KEY_LEN);
    let hmac_key = random_base64(&mut OsRng, keygen_hmac_len(hmac));

    // Room for the largest output (a version-10 QR code is about 7 KiB), so the buffer never
    // moves and leaves an unwiped copy of the keys behind.
    let mut out = Zeroizing::new(String::with_capacity(32 * 1024));
    let push = |out: &mut Zeroizing<String>, s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    let access_conf = |out: &mut Zeroizing<String>, k: &str, h: &str| {
        let _ = writeln!(
            out,
            "{:<20}ANY\n{:<20}{k}\n{:<20}{h}\n{:<20}{}\n",
            "SOURCE",
            "KEY_BASE64",
            "HMAC_KEY_BASE64",
            "HMAC_DIGEST_TYPE",
            hmac.name()
        );
    };
    let client_head = |out: &mut Zeroizing<String>| {
        push(
            out,
            "# nfknock serve: a client for /etc/nfknock/nfknock.toml (set `allow` to what it may open)",
        );
        push(out, "[[client]]");
        push(out, &format!("name = {}", toml_str(&args.name)));
        push(out, "allow = [\"tcp/22\"]");
        push(out, "[client.fwknop]");
    };
    match &args.out {
        None => {
            // Written straight into `out` (wiped on drop): no temporary copy of a key. Base64
            // needs no TOML escaping.
            let (k, h) = (key.as_str(), hmac_key.as_str());
            let _ = writeln!(out, "KEY_BASE64: {k}\nHMAC_KEY_BASE64: {h}\n");
            push(&mut out, "# fwknopd: a stanza for /etc/fwknop/access.conf");
            access_conf(&mut out, k, h);
            client_head(&mut out);
            let _ = writeln!(out, "key_base64 = \"{k}\"\nhmac_key_base64 = \"{h}\"");
        }
        Some(path) => {
            let hpath = hmac_path(path);
            write_key_pair(path, &key, &hpath, &hmac_key)?;
            let (p, hp) = (absolute(path), absolute(&hpath));
            eprintln!(
                "wrote the Rijndael key to {} and the HMAC key to {} (mode 0600)",
                p.display(),
                hp.display()
            );
            push(
                &mut out,
                "# fwknopd: a stanza for /etc/fwknop/access.conf (paste the keys from the files)",
            );
            access_conf(
                &mut out,
                &format!("<the line in {}>", p.display()),
                &format!("<the line in {}>", hp.display()),
            );
            client_head(&mut out);
            push(
                &mut out,
                &format!("key_file = {}", toml_str(&p.display().to_string())),
            );
            push(
                &mut out,
                &format!("hmac_key_file = {}", toml_str(&hp.display().to_string())),
            );
        }
    }
    push(&mut out, &format!("hmac = {}", toml_str(hmac.name())));
    if args.qr {
        let payload = qr::fwknop2_payload(&key, &hmac_key);
        let code = qr::half_blocks(payload.as_bytes(), !args.qr_light_background)
            .context("the keys do not fit a QR code")?;
        push(&mut out, "");
        push(
            &mut out,
            "# Fwknop2 (Android): menu \"Scan QR code\" fills in KEY_BASE64 and HMAC_KEY_BASE64",
        );
        out.push_str(&code);
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(EXIT_OK)
}

/// Where `--out PATH` puts the HMAC key: `PATH.hmac`.
fn hmac_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".hmac");
    PathBuf::from(s)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Write both key files, or neither: each is created new (mode 0600); if the second cannot be
/// made, the first is removed again.
fn write_key_pair(kpath: &Path, key: &str, hpath: &Path, hmac: &str) -> anyhow::Result<()> {
    if hpath.symlink_metadata().is_ok() {
        anyhow::bail!(
            "cannot create key file {} (it must not exist yet)",
            hpath.display()
        );
    }
    let mut kf = create_private(kpath)?;
    let written = writeln!(kf, "{key}")
        .with_context(|| format!("cannot write {}", kpath.display()))
        .and_then(|()| {
            let mut hf = create_private(hpath)?;
            writeln!(hf, "{hmac}").with_context(|| format!("cannot write {}", hpath.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(kpath);
    }
    written
}
