//! Reading a key never frees an unwiped copy of it.
//!
//! A `#[global_allocator]` looks at every block the program frees (or moves away from in a
//! `realloc`) while a key file is read, and counts the blocks that still hold the key's text.
//! Zeroizing buffers are wiped before they are freed, so a count above zero means a copy of the
//! key was left in freed heap memory: a buffer that grew by reallocation (`read_to_end`), a
//! temporary `String`, a decode buffer. Freed memory is handed out again to anything.
//!
//! Everything runs in one `#[test]` so the counter is never shared between cases.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use nfknock::sys::{FsLoader, SystemAccounts};

use nfknock::crypto::generate_secret_base64;
use nfknock::sys::OsRng;

struct Scanning;

/// The byte strings to look for (leaked boxes), and whether to look.
static NEEDLES: [(AtomicPtr<u8>, AtomicUsize); 2] = [
    (AtomicPtr::new(std::ptr::null_mut()), AtomicUsize::new(0)),
    (AtomicPtr::new(std::ptr::null_mut()), AtomicUsize::new(0)),
];
static ARMED: AtomicBool = AtomicBool::new(false);
/// Freed blocks that held a needle.
static UNWIPED: AtomicUsize = AtomicUsize::new(0);

/// Does the block at `ptr` (`len` bytes, about to be freed) hold a needle?
///
/// # Safety
/// `ptr` must be valid for reads of `len` bytes.
unsafe fn holds_needle(ptr: *const u8, len: usize) -> bool {
    NEEDLES.iter().any(|(n, nlen)| {
        let (n, nlen) = (n.load(Ordering::SeqCst), nlen.load(Ordering::SeqCst));
        if n.is_null() || nlen == 0 || len < nlen {
            return false;
        }
        // SAFETY: the caller guarantees `ptr..ptr+len`; a needle is a leaked box of `nlen` bytes.
        let (hay, needle) = unsafe {
            (
                std::slice::from_raw_parts(ptr, len),
                std::slice::from_raw_parts(n, nlen),
            )
        };
        hay.windows(nlen).any(|w| w == needle)
    })
}

// SAFETY: every call is forwarded to the system allocator; the scan only reads a block that is
// still allocated, before it is freed.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes until the dealloc below.
        if ARMED.load(Ordering::SeqCst) && unsafe { holds_needle(ptr, layout.size()) } {
            UNWIPED.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: `ptr` came from `alloc`/`realloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Always move: a grown buffer that stayed in place would hide the copy a move leaves.
        // SAFETY: a valid layout for the new size (same alignment, size checked by the caller).
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and at least min(old, new) bytes long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

/// Count the unwiped blocks freed while `f` runs (and while its result drops) that hold a
/// fragment of `secret` (base64 text): its first 16 characters, or its first 12 decoded bytes.
fn unwiped_copies<R>(secret: &str, f: impl FnOnce() -> R) -> usize {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .unwrap();
    for ((ptr, len), fragment) in NEEDLES
        .iter()
        .zip([&secret.as_bytes()[..16], &decoded[..12]])
    {
        let boxed: &'static mut [u8] = Box::leak(fragment.to_vec().into_boxed_slice());
        len.store(boxed.len(), Ordering::SeqCst);
        ptr.store(boxed.as_mut_ptr(), Ordering::SeqCst);
    }
    UNWIPED.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    drop(f());
    ARMED.store(false, Ordering::SeqCst);
    UNWIPED.load(Ordering::SeqCst)
}

/// Write a private file from `parts`, one after the other: the test itself makes no heap copy
/// of a secret (one it freed unwiped would turn up later in a reused block, and be blamed on
/// the code under test).
fn write_private(path: &Path, parts: &[&str]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    for p in parts {
        f.write_all(p.as_bytes()).unwrap();
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn reading_key_files_frees_no_unwiped_copy_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    let config = dir.path().join("nfknock.toml");
    let head = format!(
        "[server]\nstate_dir = \"{}\"\n\n[[client]]\nname = \"alice\"\nallow = [\"tcp/22\"]\n",
        dir.path().join("state").display()
    );

    // The client's key file (`nfknock knock --key-file`).
    let secret = generate_secret_base64(&mut OsRng);
    write_private(&key, &["  ", &secret, "\n"]);
    let n = unwiped_copies(&secret, || {
        nfknock::config::read_native_key_file(&FsLoader, &key, nfknock::sys::euid()).unwrap()
    });
    assert_eq!(
        n, 0,
        "reading a native key file freed {n} unwiped copies of the key"
    );

    // The server's native key file, through the config that names it.
    let secret = generate_secret_base64(&mut OsRng);
    write_private(&key, &[&secret, "\n"]);
    let line = format!("key_file = \"{}\"\n", key.display());
    write_private(&config, &[&head, &line]);
    let n = unwiped_copies(&secret, || {
        nfknock::config::load(&config, &FsLoader, &SystemAccounts).unwrap()
    });
    assert_eq!(
        n, 0,
        "loading a config with a key file freed {n} unwiped copies of the key"
    );

    // An fwknop client's key files.
    let secret = generate_secret_base64(&mut OsRng);
    let hmac_secret = generate_secret_base64(&mut OsRng);
    let hmac = dir.path().join("alice.hmac");
    write_private(&key, &[&secret, "\n"]);
    write_private(&hmac, &[&hmac_secret, "\n"]);
    let table = format!(
        "[client.fwknop]\nkey_file = \"{}\"\nhmac_key_file = \"{}\"\n",
        key.display(),
        hmac.display()
    );
    write_private(&config, &[&head, &table]);
    let n = unwiped_copies(&secret, || {
        nfknock::config::load(&config, &FsLoader, &SystemAccounts).unwrap()
    });
    assert_eq!(
        n, 0,
        "loading fwknop key files freed {n} unwiped copies of the key"
    );

    // The fwknop knock client's key files (`nfknock knock --fwknop --key-file/--hmac-key-file`).
    let secret = generate_secret_base64(&mut OsRng);
    write_private(&key, &[&secret, "\n"]);
    let n = unwiped_copies(&secret, || {
        nfknock::config::read_fwknop_key_file(&FsLoader, &key, nfknock::sys::euid()).unwrap()
    });
    assert_eq!(
        n, 0,
        "reading an fwknop client key file freed {n} unwiped copies of the key"
    );

    // A `format = "fwknop"` stanza of the knock client's file naming both key files.
    let secret = generate_secret_base64(&mut OsRng);
    let hmac_secret = generate_secret_base64(&mut OsRng);
    write_private(&key, &[&secret, "\n"]);
    write_private(&hmac, &[&hmac_secret, "\n"]);
    let profile = dir.path().join("client.toml");
    let stanza = format!(
        "[server.gw]\nformat = \"fwknop\"\nserver = \"192.0.2.1\"\nkey_file = \"{}\"\nhmac_key_file = \"{}\"\naccess = [\"tcp/22\"]\n",
        key.display(),
        hmac.display()
    );
    write_private(&profile, &[&stanza]);
    let env = nfknock::config::KnockEnv {
        files: &FsLoader,
        euid: nfknock::sys::euid(),
        home: None,
    };
    for s in [&secret, &hmac_secret] {
        let n = unwiped_copies(s, || {
            nfknock::config::load_knock_profiles(&profile, &env).unwrap()
        });
        assert_eq!(
            n, 0,
            "loading an fwknop knock profile freed {n} unwiped copies of a key"
        );
    }

    // A key inline in the config (the config file is read the same way).
    let secret = generate_secret_base64(&mut OsRng);
    write_private(&config, &[&head, "key = \"", &secret, "\"\n"]);
    let n = unwiped_copies(&secret, || {
        nfknock::config::load(&config, &FsLoader, &SystemAccounts).unwrap()
    });
    assert_eq!(
        n, 0,
        "loading a config with an inline key freed {n} unwiped copies of the key"
    );
}
