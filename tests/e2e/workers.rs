//! `queue = "3-4"` (issue 11 §4): the kernel spreads knocks over both queues by flow, each
//! queue has its own worker, every knock is granted, and a knock replayed so that it lands on
//! the other queue is still refused as a replay (one replay cache behind the workers).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use nfknock::access::Access;
use nfknock::crypto::NativeKey;
use nfknock::sys::OsRng;
use nfknock::wire::native;

use super::flood::queue_stats;
use super::*;

/// Client sources on the client's veth: 10.77.0.10 … 10.77.0.(10+n-1).
fn sources(lab: &Lab, n: u8) -> Vec<IpAddr> {
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| format!("10.77.0.{}", 10 + u16::from(i)).parse().unwrap())
        .collect();
    lab.add_client_addresses("workers.batch", &addrs);
    addrs
}

fn knock_for(key: &NativeKey, allow_ip: IpAddr) -> Vec<u8> {
    let req = native::Plaintext {
        timestamp: nfknock::daemon::unix_now(),
        timeout: 0,
        allow_ip: Some(allow_ip),
        access: vec![format!("tcp/{HOST_PORT}").parse::<Access>().unwrap()],
    };
    native::seal(key, &req, &mut OsRng).unwrap().to_vec()
}

/// Send `pkt` from `src` in the client namespace.
fn send_from(lab: &Lab, src: IpAddr, pkt: Vec<u8>) {
    in_ns(&lab.cli, move || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
        s.send_to(&pkt, sock(SRV4, KNOCK_PORT)).unwrap();
    });
}

/// Which queue of 3 and 4 took the packet `send` sends (by the kernel's counters).
fn landed_on(lab: &Lab, send: impl FnOnce()) -> u16 {
    let before = [3, 4].map(|q| queue_stats(lab, q).queued_total);
    send();
    let mut seen = None;
    wait_until(Duration::from_secs(2), || {
        let after = [3, 4].map(|q| queue_stats(lab, q).queued_total);
        seen = match (after[0] > before[0], after[1] > before[1]) {
            (true, false) => Some(3),
            (false, true) => Some(4),
            _ => None,
        };
        seen.is_some()
    });
    seen.unwrap_or_else(|| {
        panic!(
            "the knock reached neither queue 3 nor 4 alone:\n{}",
            lab.log()
        )
    })
}

#[test]
fn a_queue_range_spreads_knocks_over_its_workers_and_a_replay_on_the_other_queue_is_refused() {
    let mut lab = Lab::new();
    let key_path = lab.keygen("alice.key");
    // require_source_match = false: a replay from another address is refused for being a
    // replay, not for its source.
    let client = format!(
        "[[client]]\nname = \"alice\"\nkey_file = \"{}\"\nallow = [\"tcp/{HOST_PORT}\"]\ntimeout = 60\nrequire_source_match = false\n",
        key_path.display()
    );
    lab.write_config_queue(
        "\"3-4\"",
        &format!("{}rate_limit = 0\n", default_server()),
        &client,
    );
    let listed_rule = {
        lab.start_daemon();
        wait_until(Duration::from_secs(5), || {
            lab.nft_list().contains("queue num 3-4")
        });
        lab.nft_list()
    };
    assert!(
        listed_rule.contains("queue num 3-4"),
        "the knock rule does not spread over 3-4:\n{listed_rule}"
    );
    let key = nfknock::config::read_native_key_file(
        &nfknock::sys::FsLoader,
        &key_path,
        nfknock::sys::euid(),
    )
    .unwrap();

    // 24 sources, each knocking for itself: both queues take some, and all are granted.
    let srcs = sources(&lab, 24);
    let mut queue_of = HashMap::new();
    let mut saved = HashMap::new();
    for &src in &srcs {
        let pkt = knock_for(&key, src);
        saved.insert(src, pkt.clone());
        let q = landed_on(&lab, || send_from(&lab, src, pkt));
        queue_of.insert(src, q);
    }
    let on = |q: u16| srcs.iter().filter(|s| queue_of[*s] == q).count();
    assert!(
        on(3) > 0 && on(4) > 0,
        "every knock landed on one queue: {queue_of:?}"
    );
    let all_granted = || {
        let t = lab.nft_list();
        srcs.iter().all(|s| t.contains(&s.to_string()))
    };
    assert!(
        wait_until(Duration::from_secs(3), all_granted).is_some(),
        "not every knock was granted ({} on queue 3, {} on queue 4):\n{}\n{}",
        on(3),
        on(4),
        lab.nft_list(),
        lab.log()
    );
    let grants = grant_lines(&lab.log());
    assert_eq!(grants, srcs.len(), "{}", lab.log());

    // Replay a's knock from a source the kernel sends to the other queue.
    let a = srcs[0];
    let b = *srcs.iter().find(|s| queue_of[*s] != queue_of[&a]).unwrap();
    let replays = rejections(&lab.log(), "replay");
    let q = landed_on(&lab, || send_from(&lab, b, saved[&a].clone()));
    assert_ne!(
        q, queue_of[&a],
        "the replay landed on the queue of the original"
    );
    assert!(
        wait_until(Duration::from_secs(2), || rejections(&lab.log(), "replay")
            > replays)
        .is_some(),
        "a knock replayed to the other queue was not refused as a replay:\n{}",
        lab.log()
    );
    assert_eq!(grant_lines(&lab.log()), grants, "the replay was granted");

    // Reload, flush repair and SIGTERM stay on the main loop: a reload leaves both workers
    // serving, a flushed ruleset comes back with the range, and SIGTERM does not wait for them.
    lab.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(3), || lab
            .log()
            .contains("config reloaded"))
        .is_some(),
        "{}",
        lab.log()
    );
    for &src in &srcs {
        send_from(&lab, src, knock_for(&key, src));
    }
    assert!(
        wait_until(Duration::from_secs(3), || grant_lines(&lab.log())
            == grants + srcs.len())
        .is_some(),
        "after a reload not every knock was granted:\n{}",
        lab.log()
    );
    lab.run(&lab.srv, &["nft", "flush", "ruleset"]);
    assert!(
        wait_until(RESTORED_WITHIN, || lab.nft_list().contains("queue num 3-4")).is_some(),
        "the flushed table did not come back with the queue range:\n{}",
        lab.log()
    );
    let (took, status) = lab.stop_daemon();
    assert!(status.success(), "{}", lab.log());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
}
