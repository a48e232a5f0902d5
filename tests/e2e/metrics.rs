//! Issue 12 §4: the metrics file as Prometheus (node_exporter's textfile collector) reads it,
//! parsed by a real Prometheus text parser (Debian `python3-prometheus-client`), and
//! `nfknock status --metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;

/// One sample: metric name (as the parser names samples, `_total` and `_bucket` included) and
/// its labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// The parser's script: every sample of every family, one JSON object a line. The parser
/// raises on anything that is not valid text format (a sample without its family's TYPE, a bad
/// escape, a duplicate), which fails the test.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for fam in text_string_to_metric_families(sys.stdin.read()):
    if not fam.documentation:
        raise SystemExit("metric %s has no HELP" % fam.name)
    print(json.dumps({"family": fam.name, "type": fam.type}))
    for s in fam.samples:
        print(json.dumps({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels, "value": s.value}))
"#;

/// Parse `text` with `prometheus_client.parser.text_string_to_metric_families` (Debian's
/// python3 and python3-prometheus-client: the system interpreter, not another one on PATH).
fn parse(text: &str) -> (Samples, BTreeMap<String, String>) {
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run /usr/bin/python3 (Debian python3; scripts/common.sh installs it): {e}"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "the Prometheus parser is missing: install Debian's python3-prometheus-client (scripts/common.sh nfk_install_deps does)"
    );
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics:\n{err}\n--- text ---\n{text}"
    );
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        types.insert(
            v["family"].as_str().unwrap().to_string(),
            v["type"].as_str().unwrap().to_string(),
        );
        if v.get("name").is_none() {
            continue;
        }
        let labels = v["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        samples.insert(
            (v["name"].as_str().unwrap().to_string(), labels),
            v["value"].as_f64().unwrap(),
        );
    }
    (samples, types)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples.get(&(name.to_string(), labels)).copied()
}

/// The metrics file, parsed, once `cond` holds for it (the daemon rewrites it every 5 s).
fn metrics_when(path: &Path, what: &str, cond: impl Fn(&Samples) -> bool) -> Samples {
    let mut last = String::new();
    let found = wait_until(Duration::from_secs(12), || {
        last = std::fs::read_to_string(path).unwrap_or_default();
        !last.is_empty() && cond(&parse(&last).0)
    });
    assert!(found.is_some(), "{what}; the metrics file says:\n{last}");
    parse(&last).0
}

#[test]
fn knocks_move_the_counters_a_prometheus_parser_reads() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    let stranger_key = lab.keygen("stranger.key");
    let dir = lab.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let prom = dir.join("nfknock.prom");
    let config = lab.write_config(
        &format!("metrics_file = \"{}\"\n", prom.display()),
        &alice(&key, &alice_allows_both(), 30),
    );
    lab.start_daemon();

    // Before any knock: the file exists, parses, and says nothing was granted.
    let before = metrics_when(&prom, "no metrics file after start", |_| true);
    let (_, types) = parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(types["nfknock_knocks"], "counter");
    assert_eq!(types["nfknock_knock_seconds"], "histogram");
    assert_eq!(types["nfknock_live_grants"], "gauge");
    assert_eq!(
        value(
            &before,
            "nfknock_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&before, "nfknock_grants_written_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
        0o644,
        "node_exporter runs as another user: the file must be world-readable"
    );
    assert!(
        value(&before, "nfknock_queue_kernel_dropped_total", &[]).is_some(),
        "the kernel's queue counters are missing"
    );

    // One good knock, one with a key the server does not know.
    let _svc = echo_server(&lab.srv, sock("::", HOST_PORT));
    assert!(!client_open(&lab), "the port is open before the knock");
    knock_host(&lab, &key, &[]);
    assert!(
        opens(&lab.cli, sock(SRV4, HOST_PORT)),
        "the knock opened nothing"
    );
    knock_host(&lab, &stranger_key, &[]);
    let grant = [
        ("decision", "grant"),
        ("reason", "ok"),
        ("format", "native"),
    ];
    // The stranger's knock carries a key hint no client has: the kernel's prefilter drops it
    // before the queue (prefilter = true, the default), and the metrics say so.
    let unknown = [("kind", "native")];
    let after = metrics_when(&prom, "the knocks were not counted", |s| {
        value(s, "nfknock_knocks_total", &grant) == Some(1.0)
            && value(s, "nfknock_prefilter_dropped_total", &unknown) == Some(1.0)
    });
    assert!(
        value(&after, "nfknock_prefilter_hints", &[]).unwrap() >= 1.0,
        "the prefilter holds alice's hints"
    );
    assert_eq!(
        value(&after, "nfknock_grants_written_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&after, "nfknock_live_grants", &[("family", "ipv4")]),
        Some(1.0)
    );
    assert_eq!(value(&after, "nfknock_knock_seconds_count", &[]), Some(1.0));
    assert_eq!(
        value(&after, "nfknock_knock_seconds_bucket", &[("le", "+Inf")]),
        Some(1.0)
    );
    let sum = value(&after, "nfknock_knock_seconds_sum", &[]).unwrap();
    assert!(
        sum > 0.0 && sum < 1.0,
        "in-daemon time of one knock: {sum}s"
    );
    assert!(value(&after, "nfknock_replay_journal_bytes", &[]).unwrap() > 0.0);

    // A flush is repaired and counted; a reload is counted as ok.
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    reload(&lab);
    let later = metrics_when(&prom, "the repair and the reload were not counted", |s| {
        value(s, "nfknock_ruleset_repairs_total", &[]) == Some(1.0)
            && value(s, "nfknock_reloads_total", &[("result", "ok")]) == Some(1.0)
    });
    assert_eq!(
        value(&later, "nfknock_reloads_total", &[("result", "failed")]),
        Some(0.0)
    );

    // `status --metrics` prints the same file, which parses the same way.
    let out = lab.nfknock(
        &lab.srv,
        &["status", "--metrics", "--config", config.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = parse(&String::from_utf8_lossy(&out.stdout)).0;
    assert_eq!(
        value(&shown, "nfknock_knocks_total", &grant),
        Some(1.0),
        "status --metrics"
    );
}

/// Without `metrics_file`, no file and `status --metrics` says what to set.
#[test]
fn status_metrics_without_a_metrics_file_says_what_to_set() {
    let lab = Lab::new();
    let key = lab.keygen("alice.key");
    let config = lab.write_config("", &alice(&key, "\"tcp/2222\"", 30));
    let out = lab.nfknock(
        &lab.srv,
        &["status", "--metrics", "--config", config.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sets no `metrics_file`")
            && err.contains("metrics_file = \"/var/lib/prometheus/node-exporter/nfknock.prom\""),
        "{err}"
    );
}
