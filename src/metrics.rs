//! The daemon's counters and their Prometheus text exposition (format 0.0.4). Pure: the daemon
//! counts here on its hot path (no allocation once a label set has been seen), passes in what
//! only it can read (the kernel's queue counters, the journal's size, the live grants) as a
//! [`Snapshot`], and writes the text [`Metrics::render`] returns (`daemon/metrics_file.rs`).
//! docs/METRICS.md lists every metric; a test keeps the two equal.

use std::fmt::Write as _;
use std::time::Duration;

/// Upper bounds (seconds) of the buckets of `nfknock_knock_seconds`: the time from the moment
/// the daemon read a knock off the queue to its verdict (engine, journal, grant write). A
/// native knock takes ≈ 10 µs, a grant's netlink batch ≈ 10 µs more; a burst of 256 fwknop
/// knocks tried under many keys reaches tens of milliseconds.
pub const KNOCK_SECONDS_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.1,
];

/// Every metric: name, type, help. docs/METRICS.md names each (test `metrics_are_documented`).
pub const METRICS: [(&str, &str, &str); 16] = [
    ("nfknock_build_info", "gauge", "Build of the running daemon (always 1; the version is a label)."),
    ("nfknock_start_time_seconds", "gauge", "Unix time the daemon started serving."),
    ("nfknock_knocks_total", "counter", "Knocks the daemon decided, by decision (grant, reject), reason (ok, or the reject reason code) and format (native, fwknop, unknown)."),
    ("nfknock_grants_written_total", "counter", "Grant elements (source . proto . port) written to the kernel, refreshes included."),
    ("nfknock_grant_write_failures_total", "counter", "Grant writes the kernel refused (each is retried once after re-creating the table)."),
    ("nfknock_knock_seconds", "histogram", "Time from reading a knock off the queue to its verdict, in the daemon (engine, journal, grant write)."),
    ("nfknock_live_grants", "gauge", "Grants this daemon wrote that have not expired yet, by address family (nftables sets allow_v4, allow_v6)."),
    ("nfknock_queue_socket_overruns_total", "counter", "ENOBUFS on the queue socket: the kernel dropped queued knocks because the daemon's receive buffer was full."),
    ("nfknock_queue_malformed_total", "counter", "Queue messages the daemon could not parse (dropped)."),
    ("nfknock_queue_kernel_dropped_total", "counter", "Knocks the kernel dropped because the NFQUEUE was full (queue_dropped in /proc/net/netfilter/nfnetlink_queue)."),
    ("nfknock_queue_kernel_user_dropped_total", "counter", "Knocks the kernel could not send to the daemon's socket (user_dropped in /proc/net/netfilter/nfnetlink_queue)."),
    ("nfknock_prefilter_dropped_total", "counter", "Packets the kernel's prefilter dropped before the queue, by kind: native (key hint not valid now) or fwknop (fwknop length from outside every fwknop client's sources)."),
    ("nfknock_prefilter_hints", "gauge", "Key hints the kernel's prefilter holds (set knock_hints)."),
    ("nfknock_replay_journal_bytes", "gauge", "Size of the replay journal file in state_dir."),
    ("nfknock_ruleset_repairs_total", "counter", "Times the daemon re-created its table after someone else removed or changed it (e.g. nft flush ruleset)."),
    ("nfknock_reloads_total", "counter", "Reloads (SIGHUP), by result: ok (the new config is in force) or failed (the old one stays)."),
];

/// What the daemon reads at the moment it writes the metrics (not counted on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub live_grants_v4: u64,
    pub live_grants_v6: u64,
    /// The kernel's queue counters, when the queue is bound and its /proc file readable.
    pub queue_kernel_dropped: Option<u64>,
    pub queue_user_dropped: Option<u64>,
    pub queue_overruns: u64,
    pub queue_malformed: u64,
    /// `None` when the journal file cannot be looked at.
    pub journal_bytes: Option<u64>,
    /// The kernel's prefilter: `None` when off or unreadable.
    pub prefilter: Option<crate::grants::PrefilterStats>,
}

/// One label set of `nfknock_knocks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KnockKey {
    decision: &'static str,
    reason: &'static str,
    format: &'static str,
}

/// The daemon's counters.
#[derive(Debug, Clone)]
pub struct Metrics {
    version: &'static str,
    start_time: u64,
    /// Few label sets (decision × reason × format ≈ 40 at most), in first-seen order: a linear
    /// scan that starts at the last hit beats hashing three strings per knock.
    knocks: Vec<(KnockKey, u64)>,
    last_hit: usize,
    grants_written: u64,
    grant_write_failures: u64,
    buckets: [u64; KNOCK_SECONDS_BUCKETS.len()],
    knock_count: u64,
    knock_sum: f64,
    repairs: u64,
    reloads_ok: u64,
    reloads_failed: u64,
}

impl Metrics {
    /// Counters at zero for a daemon of `version` that started at unix time `start_time`.
    pub fn new(version: &'static str, start_time: u64) -> Metrics {
        Metrics {
            version,
            start_time,
            knocks: Vec::with_capacity(64),
            last_hit: 0,
            grants_written: 0,
            grant_write_failures: 0,
            buckets: [0; KNOCK_SECONDS_BUCKETS.len()],
            knock_count: 0,
            knock_sum: 0.0,
            repairs: 0,
            reloads_ok: 0,
            reloads_failed: 0,
        }
    }

    /// One knock decided: `reason` is `None` for a grant, the reject reason's code otherwise;
    /// `format` is `None` when the packet matched no format.
    pub fn knock(&mut self, reason: Option<&'static str>, format: Option<&'static str>) {
        let key = KnockKey {
            decision: if reason.is_some() { "reject" } else { "grant" },
            reason: reason.unwrap_or("ok"),
            format: format.unwrap_or("unknown"),
        };
        if let Some((k, n)) = self.knocks.get_mut(self.last_hit) {
            if *k == key {
                *n += 1;
                return;
            }
        }
        match self.knocks.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.last_hit = i;
                if let Some((_, n)) = self.knocks.get_mut(i) {
                    *n += 1;
                }
            }
            None => {
                self.last_hit = self.knocks.len();
                self.knocks.push((key, 1));
            }
        }
    }

    /// Time one knock spent in the daemon.
    pub fn observe_knock(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = KNOCK_SECONDS_BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(n) = self.buckets.get_mut(i) {
                *n += 1;
            }
        }
        self.knock_count += 1;
        self.knock_sum += secs;
    }

    /// `n` grant elements went to the kernel.
    pub fn grants_written(&mut self, n: usize) {
        self.grants_written += n as u64;
    }

    pub fn grant_write_failed(&mut self) {
        self.grant_write_failures += 1;
    }

    /// The table was re-created after someone else removed or changed it.
    pub fn repaired(&mut self) {
        self.repairs += 1;
    }

    /// A reload ended: `ok` when the new config is in force.
    pub fn reloaded(&mut self, ok: bool) {
        if ok {
            self.reloads_ok += 1;
        } else {
            self.reloads_failed += 1;
        }
    }

    /// The Prometheus text exposition of every metric, with `HELP` and `TYPE` lines.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut s = String::with_capacity(4096);
        let head = |s: &mut String, name: &str| {
            if let Some((n, ty, help)) = METRICS.iter().find(|(n, _, _)| *n == name) {
                let _ = writeln!(s, "# HELP {n} {help}\n# TYPE {n} {ty}");
            }
        };
        head(&mut s, "nfknock_build_info");
        let _ = writeln!(
            s,
            "nfknock_build_info{{version=\"{}\"}} 1",
            escape(self.version)
        );
        head(&mut s, "nfknock_start_time_seconds");
        let _ = writeln!(s, "nfknock_start_time_seconds {}", self.start_time);

        head(&mut s, "nfknock_knocks_total");
        let mut knocks = self.knocks.clone();
        knocks.sort_by_key(|(k, _)| (k.decision, k.reason, k.format));
        for (k, n) in &knocks {
            let _ = writeln!(
                s,
                "nfknock_knocks_total{{decision=\"{}\",reason=\"{}\",format=\"{}\"}} {n}",
                k.decision,
                escape(k.reason),
                k.format
            );
        }
        head(&mut s, "nfknock_grants_written_total");
        let _ = writeln!(s, "nfknock_grants_written_total {}", self.grants_written);
        head(&mut s, "nfknock_grant_write_failures_total");
        let _ = writeln!(
            s,
            "nfknock_grant_write_failures_total {}",
            self.grant_write_failures
        );

        head(&mut s, "nfknock_knock_seconds");
        let mut cumulative = 0;
        for (le, n) in KNOCK_SECONDS_BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(
                s,
                "nfknock_knock_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            s,
            "nfknock_knock_seconds_bucket{{le=\"+Inf\"}} {}",
            self.knock_count
        );
        let _ = writeln!(s, "nfknock_knock_seconds_sum {}", self.knock_sum);
        let _ = writeln!(s, "nfknock_knock_seconds_count {}", self.knock_count);

        head(&mut s, "nfknock_live_grants");
        let _ = writeln!(
            s,
            "nfknock_live_grants{{family=\"ipv4\"}} {}\nnfknock_live_grants{{family=\"ipv6\"}} {}",
            snap.live_grants_v4, snap.live_grants_v6
        );
        head(&mut s, "nfknock_queue_socket_overruns_total");
        let _ = writeln!(
            s,
            "nfknock_queue_socket_overruns_total {}",
            snap.queue_overruns
        );
        head(&mut s, "nfknock_queue_malformed_total");
        let _ = writeln!(s, "nfknock_queue_malformed_total {}", snap.queue_malformed);
        // Absent rather than a made-up zero when the kernel's counters cannot be read.
        if let Some(n) = snap.queue_kernel_dropped {
            head(&mut s, "nfknock_queue_kernel_dropped_total");
            let _ = writeln!(s, "nfknock_queue_kernel_dropped_total {n}");
        }
        if let Some(n) = snap.queue_user_dropped {
            head(&mut s, "nfknock_queue_kernel_user_dropped_total");
            let _ = writeln!(s, "nfknock_queue_kernel_user_dropped_total {n}");
        }
        if let Some(p) = snap.prefilter {
            head(&mut s, "nfknock_prefilter_dropped_total");
            let _ = writeln!(
                s,
                "nfknock_prefilter_dropped_total{{kind=\"native\"}} {}\nnfknock_prefilter_dropped_total{{kind=\"fwknop\"}} {}",
                p.junk_native.0, p.junk_fwknop.0
            );
            head(&mut s, "nfknock_prefilter_hints");
            let _ = writeln!(s, "nfknock_prefilter_hints {}", p.hints);
        }
        if let Some(n) = snap.journal_bytes {
            head(&mut s, "nfknock_replay_journal_bytes");
            let _ = writeln!(s, "nfknock_replay_journal_bytes {n}");
        }
        head(&mut s, "nfknock_ruleset_repairs_total");
        let _ = writeln!(s, "nfknock_ruleset_repairs_total {}", self.repairs);
        head(&mut s, "nfknock_reloads_total");
        let _ = writeln!(
            s,
            "nfknock_reloads_total{{result=\"ok\"}} {}\nnfknock_reloads_total{{result=\"failed\"}} {}",
            self.reloads_ok, self.reloads_failed
        );
        s
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_label_set_and_renders_help_type_and_samples() {
        let mut m = Metrics::new("1.2.3", 1_700_000_000);
        m.knock(None, Some("native"));
        m.knock(Some("replay"), Some("native"));
        m.knock(Some("replay"), Some("native"));
        m.knock(Some("bad-length"), None);
        m.knock(None, Some("native"));
        m.grants_written(2);
        m.observe_knock(Duration::from_micros(7));
        m.observe_knock(Duration::from_micros(300));
        m.observe_knock(Duration::from_secs(1));
        m.repaired();
        m.reloaded(true);
        m.reloaded(false);
        m.reloaded(false);
        let text = m.render(&Snapshot {
            live_grants_v4: 3,
            queue_kernel_dropped: Some(5),
            journal_bytes: Some(64),
            ..Snapshot::default()
        });
        for line in [
            "nfknock_build_info{version=\"1.2.3\"} 1",
            "nfknock_knocks_total{decision=\"grant\",reason=\"ok\",format=\"native\"} 2",
            "nfknock_knocks_total{decision=\"reject\",reason=\"replay\",format=\"native\"} 2",
            "nfknock_knocks_total{decision=\"reject\",reason=\"bad-length\",format=\"unknown\"} 1",
            "nfknock_grants_written_total 2",
            "nfknock_knock_seconds_bucket{le=\"0.00001\"} 1",
            "nfknock_knock_seconds_bucket{le=\"0.0005\"} 2",
            "nfknock_knock_seconds_bucket{le=\"0.1\"} 2",
            "nfknock_knock_seconds_bucket{le=\"+Inf\"} 3",
            "nfknock_knock_seconds_count 3",
            "nfknock_live_grants{family=\"ipv4\"} 3",
            "nfknock_queue_kernel_dropped_total 5",
            "nfknock_replay_journal_bytes 64",
            "nfknock_ruleset_repairs_total 1",
            "nfknock_reloads_total{result=\"ok\"} 1",
            "nfknock_reloads_total{result=\"failed\"} 2",
            "# TYPE nfknock_knock_seconds histogram",
            "# TYPE nfknock_knocks_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // A counter that cannot be read is left out, not reported as zero (here: the user
        // drop counter, and the prefilter, which the snapshot does not have).
        let absent = [
            "nfknock_queue_kernel_user_dropped_total",
            "nfknock_prefilter_dropped_total",
            "nfknock_prefilter_hints",
        ];
        for name in absent {
            assert!(!text.contains(name), "{name}");
        }
        // Every sample belongs to a metric with HELP and TYPE, each given once.
        for (name, _, _) in METRICS.iter().filter(|(n, _, _)| !absent.contains(n)) {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn metrics_are_documented() {
        let doc = include_str!("../docs/METRICS.md");
        for (name, ty, _) in METRICS {
            assert!(
                doc.contains(&format!("`{name}`")) && doc.contains(ty),
                "docs/METRICS.md does not describe `{name}` ({ty})"
            );
        }
    }
}
