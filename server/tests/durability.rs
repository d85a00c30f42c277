//! The server is SIGKILLed during a stream of pushes and restarted on the same database:
//! every update that got a 202 is still there (its key replays the same answer), and the
//! stored state is consistent — the global equals the initial weights plus, round by round,
//! the mean over clients of each client's summed updates of that round (weighted by its
//! update count, every update claiming one example), recomputed here from the raw rows.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sqlx::Row;
use tacit_rm::sync::protocol::UpdateAccepted;
use tacit_rm::Head;

const PUSHERS: usize = 4;

fn sigkill_during_pushes(backend: Backend) {
    let Some(db) = database(backend, "durability") else {
        return;
    };
    let admin = token(&db.url, "admin", true);
    let tokens: Vec<String> = (0..PUSHERS)
        .map(|i| token(&db.url, &format!("pusher-{i}"), false))
        .collect();
    let mut server = Server::start(
        &db.url,
        &[
            "--round-updates",
            "4",
            "--round-seconds",
            "3600",
            "--max-staleness",
            "1000000",
            // A stream as fast as the machine allows, and every delta kept to recompute.
            "--client-pushes-per-minute",
            "1000000",
            "--client-pending-updates",
            "1000000",
            "--delta-retention-rounds",
            "1000000",
        ],
    );
    let config = small_config();
    let n = config.num_params();
    let base = Head::init(&config, 5).unwrap();
    assert_eq!(put_model(&server, &admin, "m", &base).status, 200);

    let url = server.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let pushers: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let (token, url, stop) = (token.clone(), url.clone(), stop.clone());
            let config = config.clone();
            std::thread::spawn(move || {
                use tacit_rm::sync::http::{Transport, UreqTransport};
                let mut transport = UreqTransport::new(&url, Duration::from_secs(10));
                let mut acked = Vec::new();
                let mut attempted = 0usize;
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("p{i}-{k}");
                    let body = delta(&config, values(n, (i * 100_000 + k) as u64, 0.01), 1, 1)
                        .to_bytes()
                        .unwrap();
                    attempted += 1;
                    let request = tacit_rm::sync::HttpRequest {
                        method: "POST",
                        path: tacit_rm::sync::protocol::updates_path("m"),
                        headers: vec![
                            ("Authorization".into(), bearer(&token)),
                            (
                                tacit_rm::sync::protocol::IDEMPOTENCY_KEY.into(),
                                key.clone(),
                            ),
                        ],
                        body: body.clone(),
                    };
                    match transport.send(&request) {
                        Ok(r) if r.status == 202 => acked.push((key, body, r.body)),
                        Ok(r) => panic!("unexpected answer {} during the stream", r.status),
                        // The kill: connection refused or reset. The outcome of this push is
                        // unknown, as it would be for a real client.
                        Err(_) => break,
                    }
                }
                (token, acked, attempted)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = pushers.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: usize = results.iter().map(|(_, a, _)| a.len()).sum();
    let attempted: usize = results.iter().map(|(_, _, n)| n).sum();
    assert!(
        acked >= 20,
        "the stream was too short to test anything ({acked} acks)"
    );

    server.restart();
    let m = meta(&server, &admin, "m");
    // Every 202 is there; at most the pushes in flight at the kill were added on top.
    assert!(
        m.accepted_updates as usize >= acked && m.accepted_updates as usize <= attempted,
        "{} stored, {acked} acknowledged, {attempted} attempted",
        m.accepted_updates
    );
    assert_eq!(m.accepted_examples, m.accepted_updates);
    assert_eq!(m.version, 1 + m.rounds);
    assert!(m.rounds >= 1);
    for (token, acks, _) in &results {
        for (key, body, answer) in acks {
            let replay = push(&server, token, "m", key, body.clone());
            assert_eq!(replay.status, 202);
            assert_eq!(&replay.body, answer, "the same answer after the restart");
        }
    }
    assert_eq!(
        meta(&server, &admin, "m").accepted_updates,
        m.accepted_updates
    );

    // Recompute the global from the raw rows: initial + Σ_rounds mean(round's deltas).
    let rows = read_rows(&db.url);
    let acked_ids: Vec<u64> = results
        .iter()
        .flat_map(|(_, acks, _)| acks)
        .map(|(_, _, a)| {
            serde_json::from_slice::<UpdateAccepted>(a)
                .unwrap()
                .update_id
        })
        .collect();
    for id in &acked_ids {
        assert!(rows.contains_key(id), "acknowledged update {id} is missing");
    }
    // Round → client → (Σ deltas, update count).
    type Merged = BTreeMap<String, (Vec<f64>, f64)>;
    let mut by_round: BTreeMap<i64, Merged> = BTreeMap::new();
    for (status, round, client, delta) in rows.values() {
        if status == "aggregated" {
            let (sum, count) = by_round
                .entry(round.expect("aggregated rows name their round"))
                .or_default()
                .entry(client.clone())
                .or_insert_with(|| (vec![0.0; n], 0.0));
            *count += 1.0;
            for (s, v) in sum.iter_mut().zip(delta) {
                *s += f64::from(*v);
            }
        } else {
            assert_eq!(status, "pending");
        }
    }
    assert_eq!(by_round.len() as u64, m.rounds);
    assert_eq!(
        by_round.keys().copied().collect::<Vec<_>>(),
        (1..=m.rounds as i64).collect::<Vec<_>>()
    );
    let mut expected: Vec<f64> = base.to_flat().iter().map(|&v| f64::from(v)).collect();
    for clients in by_round.values() {
        let weight: f64 = clients.values().map(|(_, count)| count).sum();
        for (j, e) in expected.iter_mut().enumerate() {
            *e += clients
                .values()
                .map(|(sum, count)| count * sum[j])
                .sum::<f64>()
                / weight;
        }
    }
    let served = pull(&server, &admin, "m");
    for (got, want) in served.head.to_flat().iter().zip(&expected) {
        // f32 storage between rounds: a few ulps per round.
        assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
    }
}

/// Every stored update: id → (status, round, client, delta values).
type StoredRow = (String, Option<i64>, String, Vec<f32>);

fn read_rows(url: &str) -> BTreeMap<u64, StoredRow> {
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let rows = sqlx::query("SELECT id, status, round, client, delta FROM updates")
            .fetch_all(&pool)
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.get("delta");
                let values = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (
                    r.get::<i64, _>("id") as u64,
                    (r.get("status"), r.get("round"), r.get("client"), values),
                )
            })
            .collect()
    })
}

on_both_backends!(sigkill_during_pushes);
