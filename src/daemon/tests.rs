//! The real loop driven in-process: scripted packets in, a recording grant sink out.

use super::*;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::access::Access;
use crate::crypto::NativeKey;
use crate::engine::Engine;
use crate::grants::{Grant, GrantError, GrantSink};
use crate::netfilter::queue::QueueError;
use crate::sys::OsRng;
use crate::wire::native;

/// Packets the test pushes; readable through a socket pair like a real queue.
#[derive(Clone)]
struct Script {
    packets: Arc<Mutex<VecDeque<Vec<u8>>>>,
    dropped: Arc<Mutex<u32>>,
    bell: Arc<UnixStream>,
}

struct ScriptedQueue {
    script: Script,
    ring: UnixStream,
    next_id: u32,
}

impl Script {
    fn push(&self, packet: Vec<u8>) {
        self.packets.lock().unwrap().push_back(packet);
        let _ = (&*self.bell).write(&[1]);
    }
}

impl PacketSource for ScriptedQueue {
    fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        let _ = (&self.ring).read(&mut [0u8; 64]);
        let mut n = 0;
        while n < max {
            let Some(p) = self.script.packets.lock().unwrap().pop_front() else {
                break;
            };
            self.next_id += 1;
            f(self.next_id, &p);
            n += 1;
        }
        Ok(n)
    }
    fn drop_pending(&mut self) -> Result<(), QueueError> {
        *self.script.dropped.lock().unwrap() = self.next_id;
        Ok(())
    }
}

/// One re-creation of the recorder's objects: the ports they gate then, and the grants they
/// were given.
type Install = (Vec<Access>, Vec<Grant>);

/// One key-hint write: the hints, and whether they replaced the whole set.
type HintWrite = (Vec<[u8; 8]>, bool);

/// A grant backend that records what the loop asks of it. Built from the config as a real one
/// is: `protect` is what its objects gate, and a reload changes it. Its objects are "changed by
/// someone else" (a flush) when the test rings `flush`.
#[derive(Clone)]
struct Recorder {
    protect: Arc<Mutex<Vec<Access>>>,
    written: Arc<Mutex<Vec<Grant>>>,
    revoked: Arc<Mutex<Vec<Grant>>>,
    /// Flush repairs (and re-creations after a failed write).
    restores: Arc<Mutex<Vec<Install>>>,
    /// Reloads: the new config's gate and the grants it still authorises.
    reconfigures: Arc<Mutex<Vec<Install>>>,
    events: Arc<UnixStream>,
    /// How many of the next writes, and of the next re-creations, fail as a kernel out of
    /// memory would make them fail.
    fail_writes: Arc<AtomicU32>,
    fail_restores: Arc<AtomicU32>,
    fail_reconfigures: Arc<AtomicU32>,
    fail_revokes: Arc<AtomicU32>,
    /// Key-hint writes for the kernel's prefilter: the hints, and whether they replaced all.
    hints: Arc<Mutex<Vec<HintWrite>>>,
}

/// Counts one failure off `budget`; true if this call is to fail.
fn fails(budget: &AtomicU32) -> bool {
    budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What the kernel answers when it has no memory for a netlink message.
fn enobufs() -> crate::grants::Cause {
    Box::new(std::io::Error::from_raw_os_error(libc::ENOBUFS))
}

/// The byte the test writes to the recorder's event socket to make reading the changes fail.
const BROKEN_EVENTS: u8 = 2;

impl Recorder {
    fn new(config: &Config, events: UnixStream) -> Recorder {
        Recorder {
            protect: Arc::new(Mutex::new(config.server.protect.clone())),
            written: Default::default(),
            revoked: Default::default(),
            restores: Default::default(),
            reconfigures: Default::default(),
            events: Arc::new(events),
            fail_writes: Default::default(),
            fail_restores: Default::default(),
            fail_reconfigures: Default::default(),
            fail_revokes: Default::default(),
            hints: Default::default(),
        }
    }
}

impl GrantSink for Recorder {
    fn objects(&self) -> &str {
        "the recorder"
    }
    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        if fails(&self.fail_writes) {
            return Err(GrantError::Write {
                object: self.objects().into(),
                count: grants.len(),
                source: enobufs(),
            });
        }
        self.written.lock().unwrap().extend_from_slice(grants);
        Ok(())
    }
    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        if fails(&self.fail_revokes) {
            return Err(GrantError::Revoke {
                object: self.objects().into(),
                count: grants.len(),
                within_secs: 30,
                by_hand: "nft delete element ...".into(),
                source: enobufs(),
            });
        }
        self.revoked.lock().unwrap().extend_from_slice(grants);
        Ok(())
    }
    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        if fails(&self.fail_restores) {
            return Err(GrantError::Restore {
                object: self.objects().into(),
                count: grants.len(),
                source: enobufs(),
            });
        }
        let protect = self.protect.lock().unwrap().clone();
        self.restores
            .lock()
            .unwrap()
            .push((protect, grants.to_vec()));
        Ok(())
    }
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError> {
        if fails(&self.fail_reconfigures) {
            return Err(GrantError::Reconfigure {
                object: self.objects().into(),
                source: enobufs(),
            });
        }
        *self.protect.lock().unwrap() = config.server.protect.clone();
        self.reconfigures
            .lock()
            .unwrap()
            .push((config.server.protect.clone(), keep.to_vec()));
        Ok(())
    }
    fn event_fd(&self) -> Option<RawFd> {
        Some(self.events.as_raw_fd())
    }
    fn write_hints(
        &mut self,
        hints: &[crate::grants::KeyHint],
        replace: bool,
    ) -> Result<(), GrantError> {
        let keys = hints.iter().map(|(k, _)| *k).collect();
        self.hints.lock().unwrap().push((keys, replace));
        Ok(())
    }
    fn drain(&mut self) -> Result<bool, GrantError> {
        let mut buf = [0u8; 64];
        let n = (&*self.events).read(&mut buf).unwrap_or(0);
        if buf[..n].contains(&BROKEN_EVENTS) {
            return Err(GrantError::Watch {
                object: self.objects().into(),
                source: enobufs(),
            });
        }
        Ok(n > 0)
    }
}

const SRC: &str = "192.0.2.7";

/// What the daemon thread logs, every level, as the operator would read it (no colours, no
/// timestamps).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Harness {
    dir: tempfile::TempDir,
    /// alice's secret, as in the config.
    secret: String,
    key: NativeKey,
    script: Script,
    sink: Recorder,
    flush: UnixStream,
    handle: ControlHandle,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
    logs: Logs,
}

impl Harness {
    /// Ask the loop to stop and wait for it to end without error.
    fn stop(self) {
        self.handle.terminate();
        self.thread.join().unwrap().unwrap();
    }

    /// Signal a flush of the backend's objects and wait for the repair: the grants restored.
    fn flush_and_repair(&self) -> Vec<(IpAddr, String)> {
        (&self.flush).write_all(&[1]).unwrap();
        wait_for("the repair", || {
            !self.sink.restores.lock().unwrap().is_empty()
        });
        keys(&self.sink.restores.lock().unwrap()[0].1)
    }
}

fn write_config(dir: &Path, secret: &str, allow: &str) -> PathBuf {
    write_clients(dir, "", &[("alice", secret, allow)])
}

/// A config of `(name, secret, allow)` clients, `server` lines added to `[server]`.
fn write_clients(dir: &Path, server: &str, clients: &[(&str, &str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nfknock.toml");
    let mut text = format!(
        "[server]\nstate_dir = \"{}\"\n{server}\n",
        dir.join("state").display()
    );
    for (name, secret, allow) in clients {
        text.push_str(&format!(
            "\n[[client]]\nname = \"{name}\"\nkey = \"{secret}\"\nallow = [{allow}]\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn start() -> Harness {
    start_allowing("\"tcp/22\"")
}

/// alice may open `allow`.
fn start_allowing(allow: &str) -> Harness {
    start_with(allow, |script, ring| ScriptedQueue {
        script,
        ring,
        next_id: 0,
    })
}

/// A daemon reading packets from the queue `make` builds out of the script and the
/// readable end of its bell.
fn start_with<Q: PacketSource + Send + 'static>(
    allow: &str,
    make: impl FnOnce(Script, UnixStream) -> Q,
) -> Harness {
    start_with_sink(allow, make, |r| Box::new(r))
}

/// [`start_with`], the loop given the sink `wrap` makes of the recorder.
fn start_with_sink<Q: PacketSource + Send + 'static>(
    allow: &str,
    make: impl FnOnce(Script, UnixStream) -> Q,
    wrap: impl FnOnce(Recorder) -> Box<dyn GrantSink + Send>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let secret = crate::crypto::generate_secret_base64(&mut OsRng);
    let key = NativeKey::from_base64(&secret).unwrap();
    let path = write_config(dir.path(), &secret, allow);
    let config = Arc::new(load_config(&path).unwrap());
    let now = unix_now();
    crate::state::mark_first_start(&config.server.state_dir).unwrap();
    let (journal, cache, report) =
        ReplayJournal::open(&config.server.state_dir, now, config.server.max_age).unwrap();
    assert_eq!(report, LoadReport::FirstStart);
    let (bell, ring) = UnixStream::pair().unwrap();
    ring.set_nonblocking(true).unwrap();
    let script = Script {
        packets: Default::default(),
        dropped: Default::default(),
        bell: Arc::new(bell),
    };
    let (flush, events) = UnixStream::pair().unwrap();
    events.set_nonblocking(true).unwrap();
    let sink = Recorder::new(&config, events);
    let control = Control::new().unwrap();
    let handle = control.handle().unwrap();
    let engine = Engine::new(config, cache, 0, now);
    let queue = make(script.clone(), ring);
    // Boxed, as `serve` hands the backend to the loop.
    let boxed: Box<dyn GrantSink + Send> = wrap(sink.clone());
    let d = Daemon::new(engine, journal, queue, boxed, path);
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .without_time()
        .finish();
    let thread = std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || d.run(&control))
    });
    Harness {
        dir,
        secret: secret.to_string(),
        key,
        script,
        sink,
        flush,
        handle,
        thread,
        logs,
    }
}

fn knock(h: &Harness, access: &str) -> Vec<u8> {
    let req = native::Plaintext {
        timestamp: unix_now(),
        timeout: 0,
        allow_ip: Some(SRC.parse().unwrap()),
        access: crate::access::parse_list(access).unwrap(),
    };
    let payload = native::seal(&h.key, &req, &mut OsRng).unwrap();
    wire::ip::build(
        SRC.parse().unwrap(),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        40000,
        62201,
        &payload,
    )
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn grants_once_drops_every_packet_restores_after_a_flush_and_stops_on_request() {
    let h = start();
    let packet = knock(&h, "tcp/22");
    h.script.push(packet.clone());
    wait_for("the grant", || !h.sink.written.lock().unwrap().is_empty());
    let g = h.sink.written.lock().unwrap()[0];
    assert_eq!(
        (g.addr, g.access.to_string(), g.timeout),
        (
            SRC.parse().unwrap(),
            "tcp/22".into(),
            Duration::from_secs(30)
        )
    );

    // The same packet again, and junk: no new grant, every packet dropped.
    h.script.push(packet);
    h.script.push(vec![0x45; 60]);
    wait_for("the verdicts", || *h.script.dropped.lock().unwrap() == 3);
    assert_eq!(
        h.sink.written.lock().unwrap().len(),
        1,
        "a replay or junk was granted"
    );

    // Someone flushes the ruleset: the gate comes back with the live grant's remaining time.
    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the re-install", || {
        !h.sink.restores.lock().unwrap().is_empty()
    });
    let (protect, restore) = h.sink.restores.lock().unwrap()[0].clone();
    assert_eq!(protect, vec!["tcp/22".parse().unwrap()]);
    assert_eq!(restore.len(), 1);
    assert!(
        restore[0].timeout > Duration::from_secs(25)
            && restore[0].timeout <= Duration::from_secs(30),
        "{restore:?}"
    );

    // A broken config on reload is refused; the daemon keeps serving the old one.
    std::fs::write(h.dir.path().join("nfknock.toml"), "[server]\nport = 0\n").unwrap();
    h.handle.reload();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("a grant after the refused reload", || {
        h.sink.written.lock().unwrap().len() == 2
    });
    assert!(
        h.sink.reconfigures.lock().unwrap().is_empty(),
        "a refused config reached the grant backend"
    );

    h.stop();
}

/// A backend that sends no change events (ipset): its objects gone, as its `drain` says.
struct Uneventful {
    inner: Recorder,
    gone: Arc<std::sync::atomic::AtomicBool>,
    asked: Arc<AtomicU32>,
}

impl GrantSink for Uneventful {
    fn objects(&self) -> &str {
        self.inner.objects()
    }
    fn write(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        self.inner.write(grants)
    }
    fn revoke(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        self.inner.revoke(grants)
    }
    fn restore(&mut self, grants: &[Grant]) -> Result<(), GrantError> {
        self.inner.restore(grants)
    }
    fn reconfigure(&mut self, config: &Config, keep: &[Grant]) -> Result<(), GrantError> {
        self.inner.reconfigure(config, keep)
    }
    fn event_fd(&self) -> Option<RawFd> {
        None
    }
    fn drain(&mut self) -> Result<bool, GrantError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self.gone.swap(false, Ordering::SeqCst))
    }
}

/// A backend without change events is asked once a tick whether its objects are still there;
/// when they are gone, they are restored with the live grants.
#[test]
fn a_backend_without_events_is_checked_on_the_tick_and_restored() {
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked = Arc::new(AtomicU32::new(0));
    let (g, a) = (gone.clone(), asked.clone());
    let h = start_with_sink(
        "\"tcp/22\"",
        |script, ring| ScriptedQueue {
            script,
            ring,
            next_id: 0,
        },
        move |inner| {
            Box::new(Uneventful {
                inner,
                gone: g,
                asked: a,
            })
        },
    );
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || !h.sink.written.lock().unwrap().is_empty());
    wait_for("a check on the tick", || asked.load(Ordering::SeqCst) > 0);
    assert!(
        h.sink.restores.lock().unwrap().is_empty(),
        "restored while present"
    );
    gone.store(true, Ordering::SeqCst);
    wait_for("the restore", || {
        !h.sink.restores.lock().unwrap().is_empty()
    });
    let (_, restored) = h.sink.restores.lock().unwrap()[0].clone();
    assert_eq!(keys(&restored), [src_grant("tcp/22")]);
    assert!(h.logs.text().contains("re-created it"), "{}", h.logs.text());
    h.stop();
}

#[test]
fn a_valid_reload_changes_what_is_allowed_and_the_gate() {
    let h = start();
    let secret_path = h.dir.path().join("nfknock.toml");
    h.script.push(knock(&h, "tcp/443"));
    wait_for("the verdict", || *h.script.dropped.lock().unwrap() == 1);
    assert!(
        h.sink.written.lock().unwrap().is_empty(),
        "tcp/443 granted before it was allowed"
    );

    // Same key, now also tcp/443: the reload gives the backend the new protect list.
    let text = std::fs::read_to_string(&secret_path).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("key = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    write_config(h.dir.path(), &secret, "\"tcp/22\", \"tcp/443\"");
    h.handle.reload();
    wait_for("the re-install", || {
        !h.sink.reconfigures.lock().unwrap().is_empty()
    });
    assert_eq!(h.sink.reconfigures.lock().unwrap()[0].0.len(), 2);
    h.script.push(knock(&h, "tcp/443"));
    wait_for("the grant", || !h.sink.written.lock().unwrap().is_empty());

    h.stop();
}

/// A flood the daemon never catches up with: every receive hands over as many junk
/// packets as asked for, and the descriptor is always readable. Runs dry after `until`, so
/// a loop that never looks up does end (and the test fails instead of hanging).
struct EndlessQueue {
    ring: UnixStream,
    received: Arc<std::sync::atomic::AtomicU64>,
    until: Instant,
    next_id: u32,
    junk: Vec<u8>,
}

impl PacketSource for EndlessQueue {
    fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
    fn recv_batch(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u32, &[u8]),
    ) -> Result<usize, QueueError> {
        if Instant::now() >= self.until {
            return Ok(0);
        }
        for _ in 0..max {
            self.next_id = self.next_id.wrapping_add(1);
            f(self.next_id, &self.junk);
        }
        self.received.fetch_add(max as u64, Ordering::SeqCst);
        Ok(max)
    }
    fn drop_pending(&mut self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Issue "security", item 5: a flood that outpaces the daemon keeps the queue readable
/// forever; signals, ruleset events and the tick must still be served between bursts.
#[test]
fn a_queue_that_never_runs_dry_still_repairs_a_flush_and_stops_on_request() {
    use crate::crypto::Rng;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = received.clone();
    let h = start_with("\"tcp/22\"", move |script, ring| {
        // Rung once and never read: the descriptor stays readable, as under a flood.
        let _ = (&*script.bell).write(&[1]);
        let mut junk = vec![0u8; native::PACKET_LEN];
        OsRng.fill(&mut junk);
        EndlessQueue {
            ring,
            received: count,
            until: Instant::now() + Duration::from_secs(20),
            next_id: 0,
            junk: wire::ip::build(
                SRC.parse().unwrap(),
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                40000,
                62201,
                &junk,
            ),
        }
    });
    wait_for("the flood", || received.load(Ordering::SeqCst) > 10_000);

    (&h.flush).write_all(&[1]).unwrap();
    let flushed = Instant::now();
    wait_for("the re-install", || {
        !h.sink.restores.lock().unwrap().is_empty()
    });
    let took = flushed.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "flush repaired after {took:?}"
    );
    let at_repair = received.load(Ordering::SeqCst);
    wait_for("packets after the repair", || {
        received.load(Ordering::SeqCst) > at_repair + 10_000
    });

    let Harness { handle, thread, .. } = h;
    handle.terminate();
    let asked = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(thread.join()));
    let result = rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_else(|_| panic!("terminate not honoured within 1 s under a flood"));
    result.unwrap().unwrap();
    eprintln!("stopped {:?} after the request", asked.elapsed());
}

/// `(addr, access)` of grants, sorted: what a test compares.
fn keys(grants: &[Grant]) -> Vec<(IpAddr, String)> {
    let mut v: Vec<_> = grants
        .iter()
        .map(|e| (e.addr, e.access.to_string()))
        .collect();
    v.sort();
    v
}

fn src_grant(access: &str) -> (IpAddr, String) {
    (SRC.parse().unwrap(), access.to_string())
}

/// Wait until the daemon has judged `n` packets in all.
fn judged(h: &Harness, n: u32) {
    wait_for("the verdicts", || *h.script.dropped.lock().unwrap() >= n);
}

/// Issue "security", item 10: a reload that removes a client revokes its live grants at
/// once, and a later flush repair does not bring them back.
#[test]
fn a_reload_that_removes_a_client_revokes_its_grants_and_a_flush_does_not_restore_them() {
    let h = start();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);

    // alice leaves; carol (another key, same allow) stays: the gate itself is unchanged.
    let carol = crate::crypto::generate_secret_base64(&mut OsRng);
    write_clients(h.dir.path(), "", &[("carol", &carol, "\"tcp/22\"")]);
    h.handle.reload();
    wait_for("the revocation", || {
        !h.sink.revoked.lock().unwrap().is_empty()
    });
    assert_eq!(keys(&h.sink.revoked.lock().unwrap()), [src_grant("tcp/22")]);
    // The backend is told the gate is unchanged and that no grant is kept. (That the nftables
    // backend then re-installs nothing: grants::nft_set's
    // `a_reload_changes_the_ruleset_only_where_the_config_did`.)
    let (protect, keep) = h.sink.reconfigures.lock().unwrap()[0].clone();
    assert_eq!(protect, vec!["tcp/22".parse().unwrap()], "the gate changed");
    assert_eq!(keys(&keep), [], "a revoked grant was kept");

    // Someone flushes the ruleset: the table comes back without the revoked grant.
    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the re-install", || {
        !h.sink.restores.lock().unwrap().is_empty()
    });
    assert_eq!(keys(&h.sink.restores.lock().unwrap()[0].1), []);

    // alice's knocks are refused from now on.
    h.script.push(knock(&h, "tcp/22"));
    judged(&h, 2);
    assert_eq!(h.sink.written.lock().unwrap().len(), 1);
    h.stop();
}

/// A reload that narrows `allow` revokes the grants it no longer allows and keeps the
/// others — also through the re-install that the changed gate needs (that re-install used
/// to restore no grant at all), and through a later flush repair.
#[test]
fn a_reload_that_narrows_allow_revokes_only_what_it_no_longer_allows() {
    let h = start_allowing("\"tcp/22\", \"tcp/443\"");
    h.script.push(knock(&h, "tcp/22,tcp/443"));
    wait_for("the grants", || h.sink.written.lock().unwrap().len() == 2);

    write_config(h.dir.path(), &h.secret, "\"tcp/443\"");
    h.handle.reload();
    wait_for("the re-install", || {
        !h.sink.reconfigures.lock().unwrap().is_empty()
    });
    let (protect, keep) = h.sink.reconfigures.lock().unwrap()[0].clone();
    assert_eq!(protect, vec!["tcp/443".parse().unwrap()]);
    assert_eq!(keys(&keep), [src_grant("tcp/443")]);
    wait_for("the revocation", || {
        !h.sink.revoked.lock().unwrap().is_empty()
    });
    assert_eq!(keys(&h.sink.revoked.lock().unwrap()), [src_grant("tcp/22")]);

    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the repair", || !h.sink.restores.lock().unwrap().is_empty());
    let (protect, restore) = h.sink.restores.lock().unwrap()[0].clone();
    assert_eq!(protect, vec!["tcp/443".parse().unwrap()]);
    assert_eq!(keys(&restore), [src_grant("tcp/443")]);
    h.stop();
}

/// `revoke_on_reload = false`: grants outlive their client's removal until they expire,
/// flush repairs included.
#[test]
fn revoke_on_reload_false_keeps_the_grants_of_a_removed_client() {
    let h = start();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);
    let carol = crate::crypto::generate_secret_base64(&mut OsRng);
    write_clients(
        h.dir.path(),
        "revoke_on_reload = false",
        &[("carol", &carol, "\"tcp/22\"")],
    );
    h.handle.reload();
    // alice is unknown once the reload is done: her next knock is refused.
    h.script.push(knock(&h, "tcp/22"));
    judged(&h, 2);
    assert_eq!(h.sink.written.lock().unwrap().len(), 1, "reload not done");
    assert!(h.sink.revoked.lock().unwrap().is_empty());
    assert_eq!(h.flush_and_repair(), [src_grant("tcp/22")]);
    h.stop();
}

/// The kernel refuses a grant once (e.g. ENOBUFS): the daemon re-creates its objects and
/// writes the grant again, and that grant is live (a later flush restores it).
#[test]
fn a_grant_the_kernel_refuses_once_is_written_again_after_a_re_creation() {
    let h = start();
    h.sink.fail_writes.store(1, Ordering::SeqCst);
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the second write", || {
        h.sink.written.lock().unwrap().len() == 1
    });
    assert_eq!(keys(&h.sink.written.lock().unwrap()), [src_grant("tcp/22")]);
    let restores = h.sink.restores.lock().unwrap().clone();
    assert_eq!(restores.len(), 1, "re-created once before the second write");
    assert!(
        restores[0].1.is_empty(),
        "no grant was live yet: {restores:?}"
    );

    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the repair", || h.sink.restores.lock().unwrap().len() == 2);
    assert_eq!(
        keys(&h.sink.restores.lock().unwrap()[1].1),
        [src_grant("tcp/22")]
    );
    h.stop();
}

/// A grant the kernel refuses twice is lost: nothing opens, the daemon keeps serving, and a
/// later repair does not bring back a grant that never reached the kernel.
#[test]
fn a_grant_the_kernel_refuses_twice_is_lost_and_never_restored() {
    let h = start();
    h.sink.fail_writes.store(2, Ordering::SeqCst);
    h.script.push(knock(&h, "tcp/22"));
    wait_for("both writes", || {
        h.sink.fail_writes.load(Ordering::SeqCst) == 0 && h.sink.restores.lock().unwrap().len() == 1
    });
    judged(&h, 1);
    assert!(h.sink.written.lock().unwrap().is_empty());
    wait_for("the log line", || h.logs.text().contains("grants lost"));
    let logs = h.logs.text();
    assert!(
        logs.contains("ERROR nfknock::daemon::run: cannot write 1 grant(s) to the recorder: No buffer space available (os error 105); re-creating the recorder")
            && logs.contains("ERROR nfknock::daemon::run: grants lost: cannot write 1 grant(s) to the recorder: No buffer space available (os error 105)"),
        "{logs}"
    );

    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the repair", || h.sink.restores.lock().unwrap().len() == 2);
    assert!(
        h.sink.restores.lock().unwrap()[1].1.is_empty(),
        "a lost grant was restored"
    );
    // The next knock is granted as usual.
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the next grant", || {
        h.sink.written.lock().unwrap().len() == 1
    });
    h.stop();
}

/// A repair the kernel refuses, and changes the daemon cannot read, are logged and do not stop
/// the daemon: knocks are still granted, and the next flush is repaired with the live grants.
#[test]
fn a_failed_repair_or_unreadable_changes_do_not_stop_the_daemon() {
    let h = start();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);

    h.sink.fail_restores.store(1, Ordering::SeqCst);
    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the failed repair", || {
        h.sink.fail_restores.load(Ordering::SeqCst) == 0
    });
    (&h.flush).write_all(&[BROKEN_EVENTS]).unwrap();
    h.script.push(knock(&h, "tcp/80"));
    // alice may not open tcp/80: judged and dropped, nothing written.
    judged(&h, 2);
    h.script.push(knock(&h, "tcp/22"));
    wait_for("a grant after the failures", || {
        h.sink.written.lock().unwrap().len() == 2
    });
    assert!(h.sink.restores.lock().unwrap().is_empty());

    assert_eq!(h.flush_and_repair(), [src_grant("tcp/22")]);
    h.stop();
}

/// A reload the grant backend cannot apply is refused as a whole: the running config stays in
/// force (what it allows is granted, what only the new one allows is not) and nothing live is
/// revoked.
#[test]
fn a_reload_the_backend_cannot_apply_keeps_the_running_config() {
    let h = start();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);

    h.sink.fail_reconfigures.store(1, Ordering::SeqCst);
    write_config(h.dir.path(), &h.secret, "\"tcp/443\"");
    h.handle.reload();
    wait_for("the refused reload", || {
        h.sink.fail_reconfigures.load(Ordering::SeqCst) == 0
    });
    h.script.push(knock(&h, "tcp/443"));
    judged(&h, 2);
    h.script.push(knock(&h, "tcp/22"));
    wait_for("a grant under the old config", || {
        h.sink.written.lock().unwrap().len() == 2
    });
    assert_eq!(
        keys(&h.sink.written.lock().unwrap()),
        [src_grant("tcp/22"), src_grant("tcp/22")],
        "tcp/443 was granted by a refused config"
    );
    assert!(h.sink.reconfigures.lock().unwrap().is_empty());
    assert!(h.sink.revoked.lock().unwrap().is_empty());
    h.stop();
}

/// A revocation the kernel refuses after a reload: the new config is in force all the same,
/// and the revoked grant is forgotten, so a flush repair does not bring it back.
#[test]
fn a_revocation_the_kernel_refuses_is_not_restored_by_a_repair() {
    let h = start_allowing("\"tcp/22\", \"tcp/443\"");
    h.script.push(knock(&h, "tcp/22,tcp/443"));
    wait_for("the grants", || h.sink.written.lock().unwrap().len() == 2);

    h.sink.fail_revokes.store(1, Ordering::SeqCst);
    write_config(h.dir.path(), &h.secret, "\"tcp/443\"");
    h.handle.reload();
    wait_for("the refused revocation", || {
        h.sink.fail_revokes.load(Ordering::SeqCst) == 0
    });
    assert!(h.sink.revoked.lock().unwrap().is_empty());
    assert_eq!(h.sink.reconfigures.lock().unwrap().len(), 1);

    assert_eq!(h.flush_and_repair(), [src_grant("tcp/443")]);
    h.stop();
}

/// A flood of rejected knocks: the first ten a second are logged at `warn` with the source
/// (what fail2ban reads), the rest at `debug` only, and the next tick says how many were left
/// out of `warn`. (21 knocks: even if a tick falls amid them, one second sees more than ten.)
#[test]
fn rejected_knocks_are_logged_at_warn_ten_a_second_then_summed_up() {
    let h = start();
    for _ in 0..21 {
        h.script.push(knock(&h, "tcp/80"));
    }
    judged(&h, 21);
    // (warned, debugged, suppressed according to the summaries) in what the daemon logged.
    let count = |logs: &str| {
        let rejected = |level: &str| {
            logs.lines()
                .filter(|l| {
                    l.starts_with(level) && l.contains("rejected knock: tcp/80 is not allowed")
                })
                .inspect(|l| assert!(l.contains(&format!("src={SRC}")), "{l}"))
                .count()
        };
        let summary = " WARN nfknock::daemon::run: rejected knocks not logged at warn in the last \
                       second (see debug) suppressed=";
        let suppressed: usize = logs
            .lines()
            .filter_map(|l| l.strip_prefix(summary))
            .map(|n| n.parse::<usize>().unwrap())
            .sum();
        (rejected(" WARN"), rejected("DEBUG"), suppressed)
    };
    wait_for("the summaries at the next ticks", || {
        let (_, debugged, suppressed) = count(&h.logs.text());
        debugged > 0 && suppressed == debugged
    });
    let logs = h.logs.text();
    let (warned, debugged, _) = count(&logs);
    assert_eq!(warned + debugged, 21, "{logs}");
    assert!((10..=20).contains(&warned), "{logs}");
    assert!(h.sink.written.lock().unwrap().is_empty());
    h.stop();
}

/// What `serve` logs about a state directory whose journal is gone (it exists, without a
/// journal, and a `first-start` that is a directory): an error that says knocks stamped before
/// when are refused, that the odd marker was ignored, and the `init-state` command for this
/// config; restarted within `max_age`, that the refusal still holds.
#[test]
fn a_lost_journal_is_logged_with_what_is_refused_and_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = crate::crypto::generate_secret_base64(&mut OsRng);
    let path = write_config(dir.path(), &secret, "\"tcp/22\"");
    let config = load_config(&path).unwrap();
    let state = &config.server.state_dir;
    std::fs::create_dir_all(state.join(crate::state::FIRST_START_MARKER)).unwrap();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let now = 1_800_000_000;
    let open = || {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let (_, cache) =
            tracing::subscriber::with_default(subscriber, || open_journal(&config, &path, now))
                .unwrap();
        (cache.refuse_before(), logs.text())
    };
    let (refuse_before, logs) = open();
    assert_eq!(refuse_before, now + config.server.max_age);
    assert!(
        logs.starts_with("ERROR nfknock::daemon: no replay journal and no first-start marker in the state directory (it exists, without a journal)")
            && logs.contains(&format!("knocks stamped before {refuse_before} are refused for the next {}s", config.server.max_age))
            && logs.contains("; a `first-start` entry that is not a regular file was ignored")
            && logs.contains(&format!("`nfknock init-state --config {}`", path.display())),
        "{logs}"
    );
    let (again, logs) = open();
    assert_eq!(again, refuse_before);
    assert!(
        logs.contains(&format!(" WARN nfknock::daemon: the replay journal was lost or set aside less than max_age ago: knocks stamped before {refuse_before} are still refused")),
        "{logs}"
    );
}

/// `nfknock verify` names the format it recognised, or says it recognised none.
#[test]
fn describe_format_names_native_fwknop_or_unknown() {
    assert_eq!(describe_format(&[0u8; native::PACKET_LEN]), "unknown");
    let mut p = [0u8; native::PACKET_LEN];
    p[0] = native::VERSION;
    assert_eq!(describe_format(&p), "native");
    assert_eq!(
        describe_format(&[b'A'; crate::wire::fwknop::MIN_WIRE_LEN]),
        "fwknop"
    );
    assert_eq!(describe_format(&[]), "unknown");
}

/// A state_dir that cannot hold a journal (a file where the directory should be) stops the
/// start with the setting to check; a corrupt journal is set aside and logged with what is
/// refused until when.
#[test]
fn open_journal_names_state_dir_on_failure_and_logs_a_corrupt_journal() {
    let dir = tempfile::tempdir().unwrap();
    let secret = crate::crypto::generate_secret_base64(&mut OsRng);
    let path = write_config(dir.path(), &secret, "\"tcp/22\"");
    let config = load_config(&path).unwrap();
    let state = config.server.state_dir.clone();
    std::fs::write(&state, "not a directory").unwrap();
    let e = format!(
        "{:#}",
        open_journal(&config, &path, 1_800_000_000).unwrap_err()
    );
    assert!(
        e.starts_with("cannot open the replay journal; check `state_dir` and its permissions: "),
        "{e}"
    );
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join(crate::state::JOURNAL_FILE), [0xffu8; 64]).unwrap();
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let now = 1_800_000_000;
    let (_, cache) =
        tracing::subscriber::with_default(subscriber, || open_journal(&config, &path, now))
            .unwrap();
    assert_eq!(cache.refuse_before(), now + config.server.max_age);
    let logs = logs.text();
    assert!(
        logs.starts_with("ERROR nfknock::daemon: replay journal was corrupt and has been set aside; knocks stamped before")
            && logs.contains(&format!("refused for the next {}s", config.server.max_age)),
        "{logs}"
    );
}

/// Issue 12 §4: the metrics file counts reloads by result and knocks by decision, and the
/// daemon writes it one last time as it stops, so the final counts are not lost.
#[test]
fn metrics_count_reloads_by_result_and_are_written_at_shutdown() {
    let h = start();
    let prom = h.dir.path().join("nfknock.prom");
    let path = write_clients(
        h.dir.path(),
        &format!("metrics_file = \"{}\"", prom.display()),
        &[("alice", &h.secret, "\"tcp/22\"")],
    );
    h.handle.reload();
    wait_for("the good reload", || {
        !h.sink.reconfigures.lock().unwrap().is_empty()
    });
    std::fs::write(&path, "[server]\nport = 0\n").unwrap();
    h.handle.reload();
    h.script.push(knock(&h, "tcp/22"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);
    // Stopped, not dropped: the metrics file lives in the harness's directory.
    h.handle.terminate();
    h.thread.join().unwrap().unwrap();
    let text = std::fs::read_to_string(&prom).unwrap();
    for line in [
        "nfknock_reloads_total{result=\"ok\"} 1",
        "nfknock_reloads_total{result=\"failed\"} 1",
        "nfknock_knocks_total{decision=\"grant\",reason=\"ok\",format=\"native\"} 1",
        "nfknock_grants_written_total 1",
        "nfknock_knock_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
}

/// Issue 12 §3: a reload requested through the handle (what the control socket's thread does
/// for `nfknock reload`) gets the loop's answer: `Ok` once the new config is in force (the
/// next knock is judged by it), `Err` with the reason when the config is broken or the backend
/// refuses it, and the running config stays.
#[test]
fn a_requested_reload_answers_ok_only_once_the_new_config_is_in_force() {
    let h = start();
    let wait = Duration::from_secs(10);

    write_config(h.dir.path(), &h.secret, "\"tcp/22\", \"tcp/443\"");
    assert_eq!(h.handle.reload_and_wait(wait), Some(Ok(vec![])));
    // No waiting: the answer came after the new config was in force.
    h.script.push(knock(&h, "tcp/443"));
    wait_for("the grant", || h.sink.written.lock().unwrap().len() == 1);

    std::fs::write(h.dir.path().join("nfknock.toml"), "[server]\nport = 0\n").unwrap();
    let refused = h.handle.reload_and_wait(wait).unwrap().unwrap_err();
    assert!(
        refused.contains("nfknock.toml") && refused.contains("port"),
        "{refused}"
    );

    h.sink.fail_reconfigures.store(1, Ordering::SeqCst);
    write_config(h.dir.path(), &h.secret, "\"tcp/80\"");
    let refused = h.handle.reload_and_wait(wait).unwrap().unwrap_err();
    assert!(!refused.is_empty());
    // The config of the first reload still serves.
    h.script.push(knock(&h, "tcp/443"));
    wait_for("a grant under the running config", || {
        h.sink.written.lock().unwrap().len() == 2
    });
}

/// Issue 11: the kernel's key-hint set gets the whole window (replacing what it held) before
/// the first packet, after a flush repair, and after a reload, which swaps a removed client's
/// hints for the new client's.
#[test]
fn the_kernel_hint_set_is_written_at_start_and_replaced_on_repair_and_reload() {
    let h = start();
    let hint = |key: &NativeKey| native::hint(key, native::epoch_of(unix_now()));
    let writes = |h: &Harness| h.sink.hints.lock().unwrap().clone();
    wait_for("the first hints", || !writes(&h).is_empty());
    let (first, replace) = writes(&h)[0].clone();
    assert!(replace && first.contains(&hint(&h.key)), "{first:?}");

    (&h.flush).write_all(&[1]).unwrap();
    wait_for("the hints after the repair", || writes(&h).len() >= 2);
    assert!(writes(&h)[1].1, "a repair replaces the whole set");

    let bob = crate::crypto::generate_secret_base64(&mut OsRng);
    write_clients(h.dir.path(), "", &[("bob", &bob, "\"tcp/22\"")]);
    h.handle.reload();
    let bob_key = NativeKey::from_base64(&bob).unwrap();
    wait_for("bob's hints", || {
        writes(&h)
            .iter()
            .any(|(keys, _)| keys.contains(&hint(&bob_key)))
    });
    let (after, replace) = writes(&h).last().unwrap().clone();
    assert!(replace && !after.contains(&hint(&h.key)), "{after:?}");

    h.stop();
}
