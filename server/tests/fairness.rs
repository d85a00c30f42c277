//! One client is one voice. A client pushing many updates under distinct keys neither closes
//! rounds on its own nor outvotes the others: its updates of a round are merged into one
//! contribution (their sum, clipped like any other), and a round closes on distinct
//! clients. And a client is rate-limited: past its pushes per minute, 429 `rate_limited`
//! with `Retry-After`, the model unchanged, other clients unaffected.

mod common;

use std::time::Duration;

use common::*;
use tacit_rm::sync::protocol;
use tacit_rm::Head;

const CLIP: f64 = 1.0;

fn many_updates_from_one_client_count_once(backend: Backend) {
    let Some(db) = database(backend, "fairness_merge") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let mallory = token(&db.url, "mallory", false);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "10",
            "--round-seconds",
            "3600",
            "--aggregator",
            "median",
            "--clip-norm",
            &CLIP.to_string(),
            "--client-pushes-per-minute",
            "1000",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 61).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);

    // Ten updates from one token, each under the clip bound (norm ≈ 0.64): before the fix
    // they closed a round of their own, moving the global by the attacker's delta.
    let poison = vec![0.1f32; n];
    for k in 0..10 {
        let body = delta(&config, poison.clone(), 1, 10).to_bytes().unwrap();
        let r = push(&server, &mallory, "m", &format!("p{k}"), body);
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.pending_updates),
        (1, 10),
        "one client closed no round"
    );

    // Nine honest clients: the tenth distinct client closes the round.
    let mut contributions = Vec::new();
    for i in 0..9u64 {
        let d = values(n, 600 + i, 0.02);
        let t = token(&db.url, &format!("h{i}"), false);
        let body = delta(&config, d.clone(), 1, 10).to_bytes().unwrap();
        assert_eq!(push(&server, &t, "m", "k", body).status, 202);
        contributions.push(clip(&as_f64(&d), CLIP));
    }
    let honest = contributions.clone();
    // The attacker's one contribution: the sum of its ten deltas, clipped.
    contributions.push(clip(&vec![10.0 * f64::from(poison[0]); n], CLIP));
    let m = meta(&server, &admin, "m");
    assert_eq!((m.version, m.rounds, m.pending_updates), (2, 1, 0));

    let got = step(&base, &pull(&server, &admin, "m").head);
    let mut want = Vec::with_capacity(n);
    for j in 0..n {
        let mut column: Vec<f64> = contributions.iter().map(|c| c[j]).collect();
        column.sort_by(f64::total_cmp);
        want.push((column[4] + column[5]) / 2.0);
        // Within the honest clients' range: the median did not follow the attacker.
        let lo = honest.iter().map(|c| c[j]).fold(f64::INFINITY, f64::min);
        let hi = honest
            .iter()
            .map(|c| c[j])
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(got[j] >= lo - 1e-6 && got[j] <= hi + 1e-6, "coordinate {j}");
    }
    assert_close(&got, &clip(&want, CLIP), 1e-6);
}

fn a_client_over_its_rate_is_refused(backend: Backend) {
    let Some(db) = database(backend, "fairness_rate") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let bob = token(&db.url, "bob", false);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "100",
            "--round-seconds",
            "3600",
            "--client-pushes-per-minute",
            "3",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 62).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let body = |seed| {
        delta(&config, values(n, seed, 0.01), 1, 1)
            .to_bytes()
            .unwrap()
    };
    for k in 0..3 {
        assert_eq!(
            push(&server, &alice, "m", &format!("k{k}"), body(k)).status,
            202
        );
    }
    // A replay is an answer, not a push: it does not count and is not refused.
    let replay = push(&server, &alice, "m", "k0", body(0));
    assert_eq!(replay.status, 202);

    let fourth = body(3);
    let mut raw = format!(
        "POST {} HTTP/1.1\r\nHost: test\r\nAuthorization: {}\r\n{}: k3\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        protocol::updates_path("m"),
        bearer(&alice),
        protocol::IDEMPOTENCY_KEY,
        fourth.len()
    )
    .into_bytes();
    raw.extend_from_slice(&fourth);
    let answer = raw_exchange(&server, &raw, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("\"code\":\"rate_limited\""), "{answer}");
    let retry: u64 = raw_header(&answer, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // The same through the client's transport: a stable JSON code.
    let again = push(&server, &alice, "m", "k3", fourth);
    assert_eq!(
        (again.status, error_code(&again).as_str()),
        (429, "rate_limited")
    );

    // Another client is not held back; nothing of alice's fourth push was stored.
    assert_eq!(push(&server, &bob, "m", "k0", body(9)).status, 202);
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.pending_updates),
        (1, 4, 4)
    );
}

on_both_backends!(
    many_updates_from_one_client_count_once,
    a_client_over_its_rate_is_refused
);
