//! `GET /v1/models/{name}/meta` answers from one snapshot: its round count and its update
//! counts are read in one statement, so that a round closing meanwhile cannot pair the old
//! count of rounds with the new count of pending updates. With one pusher and
//! `--round-updates 1` every round aggregates exactly one update (the push's 202 waits for
//! the round it made due), so in any consistent state `accepted = rounds + pending`; a
//! reader polls the endpoint while the pusher runs and checks it every time. (Two separate
//! reads broke it whenever a round closed between them; the race is timing-dependent, so
//! this test cannot always catch a regression, but with one snapshot it never fails.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use tacit_rm::Head;

const PUSHES: u64 = 120;

fn meta_is_one_snapshot(backend: Backend) {
    let Some(db) = database(backend, "meta_snapshot") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let pusher = token(&db.url, "pusher", false);
    let server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "1",
            "--round-seconds",
            "3600",
            "--max-staleness",
            "1000000",
            "--client-pushes-per-minute",
            "1000000",
            "--client-pending-updates",
            "1000000",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    assert_eq!(
        put_model(&server, &admin, "m", &Head::init(&config, 3).unwrap()).status,
        200
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let m = meta(&server, &admin, "m");
                assert_eq!(
                    m.accepted_updates,
                    m.rounds + m.pending_updates,
                    "an inconsistent snapshot: {m:?}"
                );
                assert_eq!(m.version, 1 + m.rounds, "{m:?}");
                reads += 1;
            }
            reads
        });
        for k in 0..PUSHES {
            let body = delta(&config, values(n, k, 0.01), 1, 1).to_bytes().unwrap();
            assert_eq!(
                push(&server, &pusher, "m", &format!("k{k}"), body).status,
                202
            );
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 10, "only {reads} reads during the pushes");
    });
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.accepted_updates, m.rounds, m.pending_updates),
        (PUSHES, PUSHES, 0)
    );
}

on_both_backends!(meta_is_one_snapshot);
