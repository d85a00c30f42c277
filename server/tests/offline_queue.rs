//! The file-backed client (`tacit sync`'s engine) against the real server: an update made
//! while the server is down is queued on disk, pushed after the restart, aggregated, pulled
//! back — and never pushed twice.

mod common;

use std::time::Duration;

use common::*;
use tacit_rm::store;
use tacit_rm::sync::delta;
use tacit_rm::sync::files::{sync_files, FileSync};
use tacit_rm::sync::PullOutcome;
use tacit_rm::Head;

fn offline_update_is_pushed_once_after_restart(backend: Backend) {
    let Some(db) = database(backend, "offline") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let mut server = Server::start(&db.url, &["--round-updates", "1"]);
    let config = small_config();
    let base = Head::init(&config, 31).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let dir = tempfile::tempdir().unwrap();
    let args = |url: &str, retry_seconds: u64| FileSync {
        url: url.to_string(),
        token: alice.clone(),
        model: "m".into(),
        weights: dir.path().join("local.safetensors"),
        state_dir: dir.path().join("state"),
        n_examples: 4,
        clip_norm: 10.0,
        timeout: Duration::from_secs(10),
        retry_budget: Duration::from_secs(retry_seconds),
        round_wait: Duration::from_secs(10),
    };

    // First run: the local file is created from the global; nothing to push.
    let first = sync_files(&args(&server.url, 0)).unwrap();
    assert_eq!((first.pushed, first.still_queued), (0, 0));
    let weights = dir.path().join("local.safetensors");
    assert_eq!(store::load(&weights).unwrap().head, base);

    // Train (a known change), then sync while the server is down: queued on disk.
    let d = values(config.num_params(), 77, 0.01);
    let mut local = store::load(&weights).unwrap();
    local.head = delta::apply(&local.head, &d).unwrap();
    store::save(&weights, &local).unwrap();
    let old_url = server.url.clone();
    server.kill();
    let offline = sync_files(&args(&old_url, 0)).unwrap();
    assert_eq!((offline.pushed, offline.still_queued), (0, 1));
    assert!(offline.last_failure.is_some());
    let queued = std::fs::read_to_string(dir.path().join("state/queue.json")).unwrap();
    assert!(queued.contains("\"key\""));

    // Back online: pushed (after the backoff of the failed attempt, which the pass waits
    // for within its retry budget), the round closes (K = 1), the merged global comes back.
    server.restart();
    let online = sync_files(&args(&server.url, 5)).unwrap();
    assert_eq!((online.pushed, online.still_queued), (1, 0));
    assert_eq!(online.pull, Some(PullOutcome::Updated { version: 2 }));
    let global = pull(&server, &alice, "m");
    for ((g, b), dv) in global.head.to_flat().iter().zip(base.to_flat()).zip(&d) {
        assert!((f64::from(*g) - f64::from(b + dv)).abs() < 1e-6);
    }
    let synced = store::load(&weights).unwrap();
    assert_eq!(synced.head, global.head);
    assert_eq!(synced.version, 2);

    // Nothing new: nothing pushed, and the server counted the update once.
    let again = sync_files(&args(&server.url, 0)).unwrap();
    assert_eq!((again.pushed, again.still_queued), (0, 0));
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.accepted_updates, m.accepted_examples, m.version),
        (1, 4, 2)
    );
}

on_both_backends!(offline_update_is_pushed_once_after_restart);

/// `tacit sync`'s engine on a model the server aggregates securely (a cohort of one, so that
/// one client completes a round): the update goes masked, never as a plain push, the round's
/// release comes back into the local file, and the state on disk holds no round in flight.
fn file_sync_takes_part_in_a_secure_round(backend: Backend) {
    let Some(db) = database(backend, "file_secure") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let bob = token(&db.url, "bob", false);
    let server = Server::start(
        &db.url,
        &[
            "--secure-aggregation",
            "m",
            "--round-updates",
            "1",
            "--secagg-threshold",
            "1",
        ],
    );
    let config = small_config();
    let base = Head::init(&config, 32).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);
    let dir = tempfile::tempdir().unwrap();
    let args = FileSync {
        url: server.url.clone(),
        token: bob,
        model: "m".into(),
        weights: dir.path().join("local.safetensors"),
        state_dir: dir.path().join("state"),
        n_examples: 3,
        clip_norm: 10.0,
        timeout: Duration::from_secs(10),
        retry_budget: Duration::ZERO,
        round_wait: Duration::from_secs(30),
    };
    sync_files(&FileSync {
        n_examples: 0,
        ..args.clone()
    })
    .unwrap();
    let d = values(config.num_params(), 78, 0.01);
    let mut local = store::load(&args.weights).unwrap();
    local.head = delta::apply(&local.head, &d).unwrap();
    store::save(&args.weights, &local).unwrap();

    let report = sync_files(&args).unwrap();
    assert!(report.masked, "{report:?}");
    assert!(
        matches!(
            report.secure_round,
            Some(tacit_rm::sync::secagg::session::SecureOutcome::Counted { pushes: 1, .. })
        ),
        "{report:?}"
    );
    assert_eq!((report.pushed, report.still_queued), (1, 0));
    assert_eq!(report.pull, Some(PullOutcome::Updated { version: 2 }));
    let m = meta(&server, &admin, "m");
    assert!(m.secure_aggregation);
    assert_eq!(
        (m.accepted_updates, m.version),
        (0, 2),
        "no plain update was stored"
    );
    let global = pull(&server, &admin, "m");
    for ((g, b), dv) in global.head.to_flat().iter().zip(base.to_flat()).zip(&d) {
        // The quantisation bound for n = 1, C = 10 is 1/(2s) ≈ 2.3·10⁻⁹.
        assert!((f64::from(*g) - f64::from(b + dv)).abs() < 1e-6);
    }
    assert_eq!(store::load(&args.weights).unwrap().head, global.head);
    let queued = std::fs::read_to_string(dir.path().join("state/queue.json")).unwrap();
    assert!(!queued.contains("secureRound"), "{queued}");
}

on_both_backends!(file_sync_takes_part_in_a_secure_round);
