//! The fwknop access.conf importer: arbitrary access.conf text (every `%include` reads the same
//! text again, so include depth and loop handling are exercised) and arbitrary fwknopd.conf
//! text after the first NUL byte. Whatever it converts must be a config `nfknock check` accepts.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use nfknock::fwknop_import::{import, Loader, Options};
use zeroize::Zeroizing;

const FWKNOPD: &str = "/fuzz/fwknopd.conf";

struct Texts<'a> {
    access: &'a str,
    fwknopd: &'a str,
}

impl Loader for Texts<'_> {
    fn read(&self, path: &Path) -> Result<Zeroizing<String>, String> {
        let text = if path == Path::new(FWKNOPD) {
            self.fwknopd
        } else {
            self.access
        };
        Ok(Zeroizing::new(text.to_string()))
    }
    fn conf_files(&self, dir: &Path) -> Result<Vec<PathBuf>, String> {
        Ok(vec![dir.join("a.conf")])
    }
}

fuzz_target!(|text: &str| {
    let (access, fwknopd) = text
        .split_once('\0')
        .map_or((text, None), |(a, f)| (a, Some(f)));
    let loader = Texts {
        access,
        fwknopd: fwknopd.unwrap_or(""),
    };
    let opts = Options {
        protect: Some(vec!["tcp/22".parse().unwrap()]),
    };
    let fwknopd_path = fwknopd.map(|_| Path::new(FWKNOPD));
    if let Ok(out) = import(&loader, Path::new("/fuzz/access.conf"), fwknopd_path, &opts) {
        if let Some(toml) = out.toml {
            // `command_user` names are looked up on the server; any name will do here.
            let files = nfknock::config::MemFiles::new();
            let path = Path::new("/fuzz/nfknock.toml");
            if let Err(e) = nfknock::config::parse(&toml, path, &files, &nfknock::config::AnyUser) {
                panic!(
                    "import produced a config that check refuses: {e}\n{}",
                    toml.as_str()
                );
            }
        }
    }
});
