//! The disk holds what is still needed. An aggregated update keeps its row (idempotent
//! replays, audit) and loses its delta bytes once out of the retention window; a model's
//! pending deltas have a quota (507 `quota_exceeded`, the model unchanged) that frees when
//! a round closes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tacit_rm::Head;

/// Delta bytes stored for `model` in rows of `status`.
fn delta_bytes(url: &str, status: &str) -> i64 {
    query_i64(
        url,
        &format!(
            "SELECT CAST(COALESCE(SUM(LENGTH(delta)), 0) AS BIGINT) FROM updates \
             WHERE model = 'm' AND status = '{status}'"
        ),
    )
}

fn rows(url: &str) -> i64 {
    query_i64(url, "SELECT CAST(COUNT(*) AS BIGINT) FROM updates")
}

fn aggregated_deltas_are_emptied(backend: Backend) {
    let Some(db) = database(backend, "retention_purge") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let clients: Vec<String> = (0..2)
        .map(|i| token(&db.url, &format!("c{i}"), false))
        .collect();
    let server = Server::start(
        &db.url,
        &["--round-updates", "2", "--round-seconds", "3600"],
    );
    let config = small_config();
    let n = config.num_params();
    let size = 4 * n as i64;
    assert_eq!(
        put_model(&server, &admin, "m", &Head::init(&config, 71).unwrap()).status,
        200
    );
    // A steady stream: ten rounds of two clients. After each round the stored delta bytes
    // are back to zero; the rows stay.
    for round in 0..10u64 {
        for (i, t) in clients.iter().enumerate() {
            let body = delta(
                &config,
                values(n, round * 10 + i as u64, 0.01),
                1 + round,
                1,
            )
            .to_bytes()
            .unwrap();
            let key = format!("r{round}");
            let r = push(&server, t, "m", &key, body.clone());
            assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
            if i == 0 {
                assert_eq!(delta_bytes(&db.url, "pending"), size);
            }
            // The emptied row still answers a retry with its first answer.
            let replay = push(&server, t, "m", &key, body);
            assert_eq!((replay.status, &replay.body), (202, &r.body));
        }
        assert_eq!(meta(&server, &admin, "m").version, 2 + round);
        assert_eq!(delta_bytes(&db.url, "aggregated"), 0);
        assert_eq!(delta_bytes(&db.url, "pending"), 0);
    }
    assert_eq!(rows(&db.url), 20);
}

fn deltas_are_kept_for_the_retention_window(backend: Backend) {
    let Some(db) = database(backend, "retention_window") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let server = Server::start(
        &db.url,
        &["--round-updates", "1", "--delta-retention-rounds", "1"],
    );
    let config = small_config();
    let n = config.num_params();
    let size = 4 * n as i64;
    assert_eq!(
        put_model(&server, &admin, "m", &Head::init(&config, 72).unwrap()).status,
        200
    );
    let in_round = |round: i64| {
        query_i64(
            &db.url,
            &format!(
                "SELECT CAST(COALESCE(SUM(LENGTH(delta)), 0) AS BIGINT) FROM updates WHERE round = {round}"
            ),
        )
    };
    for round in 1..=3i64 {
        let body = delta(&config, values(n, round as u64, 0.01), round as u64, 1)
            .to_bytes()
            .unwrap();
        assert_eq!(
            push(&server, &alice, "m", &format!("k{round}"), body).status,
            202
        );
        // The round just closed keeps its delta; the one before it is emptied.
        assert_eq!(in_round(round), size);
        if round > 1 {
            assert_eq!(in_round(round - 1), 0);
        }
    }
}

fn pending_quota_refuses_and_frees(backend: Backend) {
    let Some(db) = database(backend, "retention_quota") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let bob = token(&db.url, "bob", false);
    let config = small_config();
    let n = config.num_params();
    // Room for two pending deltas, not three.
    let quota = (4 * n * 5 / 2).to_string();
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "2",
            "--round-seconds",
            "2",
            "--max-pending-bytes",
            &quota,
        ],
    );
    let base = Head::init(&config, 73).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let body = |seed| {
        delta(&config, values(n, seed, 0.01), 1, 1)
            .to_bytes()
            .unwrap()
    };
    assert_eq!(push(&server, &alice, "m", "k0", body(0)).status, 202);
    assert_eq!(push(&server, &alice, "m", "k1", body(1)).status, 202);
    for (t, key) in [(&alice, "k2"), (&bob, "k0")] {
        let r = push(&server, t, "m", key, body(2));
        assert_eq!(r.status, 507, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(error_code(&r), "quota_exceeded");
    }
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.pending_updates),
        (1, 2, 2)
    );
    assert_eq!(pull(&server, &admin, "m").head, base);

    // The round closes on time (alice alone) and frees the quota.
    let start = Instant::now();
    while meta(&server, &admin, "m").version == 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "no round closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(push(&server, &bob, "m", "k0", body(3)).status, 202);
    assert_eq!(delta_bytes(&db.url, "aggregated"), 0);
}

/// One client cannot fill a model's quota for everyone: past its own allowance of pending
/// updates it is refused, and another client is still accepted.
fn one_client_cannot_fill_the_quota(backend: Backend) {
    let Some(db) = database(backend, "retention_client_quota") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let bob = token(&db.url, "bob", false);
    let config = small_config();
    let n = config.num_params();
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "3",
            "--round-seconds",
            "3600",
            "--client-pending-updates",
            "2",
        ],
    );
    let base = Head::init(&config, 74).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let body = |seed| {
        delta(&config, values(n, seed, 0.01), 1, 1)
            .to_bytes()
            .unwrap()
    };
    assert_eq!(push(&server, &alice, "m", "k0", body(0)).status, 202);
    assert_eq!(push(&server, &alice, "m", "k1", body(1)).status, 202);
    let r = push(&server, &alice, "m", "k2", body(2));
    assert_eq!((r.status, error_code(&r).as_str()), (507, "quota_exceeded"));
    assert_eq!(push(&server, &bob, "m", "k0", body(3)).status, 202);
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.accepted_updates, m.pending_updates),
        (1, 3, 3)
    );
}

on_both_backends!(
    one_client_cannot_fill_the_quota,
    aggregated_deltas_are_emptied,
    deltas_are_kept_for_the_retention_window,
    pending_quota_refuses_and_frees
);
