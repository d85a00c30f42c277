//! Two clients push through the crate's sync client, a round closes, and both pull the same
//! global, equal to base + the example-weighted mean of their deltas computed here.

mod common;

use std::time::Duration;

use common::*;
use tacit_rm::store::Weights;
use tacit_rm::sync::client::{PullOutcome, SyncClient, SyncConfig};
use tacit_rm::sync::delta;
use tacit_rm::sync::http::{sync_once, Transport};
use tacit_rm::sync::protocol;
use tacit_rm::{Head, ObjectiveKind};

fn client_for(server_weights: Weights, token: &str, name: &str) -> SyncClient {
    let mut config = SyncConfig::new(name, token);
    config.clip_norm = 1e6; // no client clipping: the reference mean below is exact
    SyncClient::new(
        config,
        server_weights,
        vec![],
        &format!("k{}", token.len()),
        0,
    )
    .unwrap()
}

fn round_trip(backend: Backend) {
    let Some(db) = database(backend, "round_trip") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let alice = token(&db.url, "alice", false);
    let bob = token(&db.url, "bob", false);
    let server = Server::start(
        &db.url,
        &["--round-updates", "2", "--round-seconds", "3600"],
    );
    let config = small_config();
    let base = Head::init(&config, 7).unwrap();
    let put = put_model(&server, &admin, "m", &base);
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));

    // Each client pulls the global, "trains" (a known perturbation), and syncs.
    let ips = ObjectiveKind::parse("ips").unwrap();
    let mut deltas = Vec::new();
    let mut locals = Vec::new();
    let mut clients = Vec::new();
    for (i, (token, n_examples)) in [(&alice, 3u64), (&bob, 1u64)].into_iter().enumerate() {
        let global = pull(&server, token, "m");
        assert_eq!(global.version, 1);
        let mut client = client_for(global.clone(), token, "m");
        let d = values(config.num_params(), 100 + i as u64, 0.01);
        let mut local = delta::apply(&global.head, &d).unwrap();
        let key = client.commit_local(&local, n_examples, ips, 0).unwrap();
        assert!(key.is_some());
        let report = sync_once(
            &mut client,
            &mut server.transport(),
            &mut local,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(report.pushed, 1);
        assert!(client.queue().is_empty());
        deltas.push((d, n_examples));
        locals.push(local);
        clients.push(client);
    }

    // Bob's push was the second: the round closed before his pull.
    let m = meta(&server, &admin, "m");
    assert_eq!(
        (m.version, m.rounds, m.pending_updates, m.accepted_updates),
        (2, 1, 0, 2)
    );
    assert_eq!(m.accepted_examples, 4);

    // Independent reference: base + Σ nᵢ dᵢ / Σ nᵢ, in f64.
    let total: f64 = deltas.iter().map(|(_, n)| *n as f64).sum();
    let expected: Vec<f64> = base
        .to_flat()
        .iter()
        .enumerate()
        .map(|(j, &b)| {
            f64::from(b)
                + deltas
                    .iter()
                    .map(|(d, n)| *n as f64 * f64::from(d[j]))
                    .sum::<f64>()
                    / total
        })
        .collect();

    // Alice pulls now (her sync ran before the round); both end on the same global.
    let mut alice_local = locals[0].clone();
    let answer = server.transport().send(&clients[0].pull_request());
    let outcome = clients[0]
        .on_pull_response(answer, &mut alice_local)
        .unwrap();
    assert_eq!(outcome, PullOutcome::Updated { version: 2 });
    let served = pull(&server, &alice, "m");
    assert_eq!(served.version, 2);
    for (got, want) in served.head.to_flat().iter().zip(&expected) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
    // Everything each client trained was pushed, so after the pull local == global.
    assert_eq!(alice_local.to_flat(), served.head.to_flat());
    assert_eq!(locals[1].to_flat(), served.head.to_flat());
    assert_eq!(clients[1].base_version(), 2);

    // A conditional GET at the current version is a 304 with the same ETag.
    let r = request(
        &server,
        "GET",
        &protocol::model_path("m"),
        &[
            ("Authorization", &bearer(&bob)),
            ("If-None-Match", &protocol::etag(2)),
        ],
        vec![],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.etag, Some(protocol::etag(2)));
    assert!(r.body.is_empty());
}

/// The health check answers without a token; SIGTERM shuts down cleanly (exit 0).
fn health_and_graceful_shutdown(backend: Backend) {
    let Some(db) = database(backend, "health") else {
        return;
    };
    let mut server = Server::start(&db.url, &[]);
    let r = request(&server, "GET", "/healthz", &[], vec![]);
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

on_both_backends!(round_trip, health_and_graceful_shutdown);
