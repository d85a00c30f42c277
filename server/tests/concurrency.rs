//! 50 clients push at once, each update sent three times under one idempotency key (twice
//! concurrently, once more afterwards): every update is counted exactly once, every copy gets
//! the same answer. Rounds count clients: every client pushes its first update, then (after
//! a barrier) its second, so the round that closes at 50 clients holds the first updates and
//! the next one the second updates, each equal to the example-weighted mean computed here.
//! On Postgres the clients are split across two replicas sharing the database.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use tacit_rm::sync::protocol::UpdateAccepted;
use tacit_rm::Head;

const CLIENTS: usize = 50;
const UPDATES_PER_CLIENT: usize = 2;

fn fifty_concurrent_clients(backend: Backend) {
    let Some(db) = database(backend, "concurrency") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|i| token(&db.url, &format!("client-{i}"), false))
        .collect();
    let clients = CLIENTS.to_string();
    let args = [
        "--round-updates",
        clients.as_str(),
        "--round-seconds",
        "3600",
    ];
    let replicas: Vec<Arc<Server>> = match backend {
        Backend::Sqlite => vec![Arc::new(Server::start(&db.url, &args))],
        Backend::Postgres => (0..2)
            .map(|_| Arc::new(Server::start(&db.url, &args)))
            .collect(),
    };
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 11).unwrap();
    assert_eq!(put_model(&replicas[0], &admin, "m", &base).status, 200);

    // Client i's update u: distinct values and example counts.
    let update = |i: usize, u: usize| {
        let seed = (i * UPDATES_PER_CLIENT + u) as u64;
        delta(&config, values(n, 1000 + seed, 0.01), 1, 1 + seed % 7)
    };
    let phase = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let server = replicas[i % replicas.len()].clone();
            let token = token.clone();
            let phase = phase.clone();
            let bodies: Vec<Vec<u8>> = (0..UPDATES_PER_CLIENT)
                .map(|u| update(i, u).to_bytes().unwrap())
                .collect();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for (u, body) in bodies.into_iter().enumerate() {
                    // Every client's update u is stored before any client's update u + 1.
                    phase.wait();
                    // The same keys for every client: keys are scoped per client.
                    let key = format!("update-{u}");
                    let copies: Vec<_> = (0..2)
                        .map(|_| {
                            let (server, token, key, body) =
                                (server.clone(), token.clone(), key.clone(), body.clone());
                            std::thread::spawn(move || push(&server, &token, "m", &key, body))
                        })
                        .collect();
                    let mut answers: Vec<_> =
                        copies.into_iter().map(|t| t.join().unwrap()).collect();
                    answers.push(push(&server, &token, "m", &key, body));
                    for a in &answers {
                        assert_eq!(a.status, 202, "{}", String::from_utf8_lossy(&a.body));
                        assert_eq!(a.body, answers[0].body, "every copy gets the same answer");
                    }
                    let accepted: UpdateAccepted =
                        serde_json::from_slice(&answers[0].body).unwrap();
                    ids.push(accepted.update_id);
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        CLIENTS * UPDATES_PER_CLIENT,
        "distinct update ids"
    );

    let m = meta(&replicas[0], &admin, "m");
    let examples: u64 = (0..CLIENTS)
        .flat_map(|i| (0..UPDATES_PER_CLIENT).map(move |u| (i, u)))
        .map(|(i, u)| update(i, u).n_examples)
        .sum();
    assert_eq!(m.accepted_updates as usize, CLIENTS * UPDATES_PER_CLIENT);
    assert_eq!(m.accepted_examples, examples);
    let rounds = UPDATES_PER_CLIENT as u64;
    assert_eq!(
        (m.rounds, m.version, m.pending_updates),
        (rounds, 1 + rounds, 0)
    );

    // Round u + 1 holds every client's update u once: base + Σ_u Σᵢ nᵢᵤ dᵢᵤ / Σᵢ nᵢᵤ.
    let mut expected: Vec<f64> = base.to_flat().iter().map(|&b| f64::from(b)).collect();
    for u in 0..UPDATES_PER_CLIENT {
        let mut sum: Vec<f64> = vec![0.0; n];
        let mut weight = 0.0;
        for i in 0..CLIENTS {
            let d = update(i, u);
            weight += d.n_examples as f64;
            for (s, v) in sum.iter_mut().zip(&d.values) {
                *s += d.n_examples as f64 * f64::from(*v);
            }
        }
        for (e, s) in expected.iter_mut().zip(&sum) {
            *e += s / weight;
        }
    }
    let served = pull(replicas.last().unwrap(), &admin, "m");
    for (got, want) in served.head.to_flat().iter().zip(&expected) {
        assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
    }
}

on_both_backends!(fifty_concurrent_clients);
