//! The server is SIGKILLed during a stream of pushes and restarted on the same database.
//! What must hold is exactly the protocol's promise: every update that got a 202 is stored
//! once, under its key, with the delta that was sent (and its key replays the same answer);
//! nothing is stored that no client sent; a push whose answer the kill cut off (one per
//! pusher at most) may be stored or not — it may have committed with its 202 still unsent —
//! and a retry of it is answered once. The stored state is consistent too: the global equals
//! the initial weights plus, round by round, the mean over clients of each client's summed
//! updates of that round (weighted by its update count, every update claiming one example),
//! recomputed here from the raw rows.
//!
//! Counting waits until the database can no longer change on its own: on Postgres a killed
//! server's backends outlive it, and one whose COMMIT was already sent still commits after
//! the kill; and the killed server may have stored the push that made a round due and died
//! before closing it, which the restarted server's timer then closes (moving rows from
//! pending to aggregated and adding a round).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sqlx::Row;
use tacit_rm::sync::protocol::UpdateAccepted;
use tacit_rm::Head;

const PUSHERS: usize = 4;
/// `--round-updates`: a round closes when this many distinct clients have updates pending.
const ROUND_UPDATES: i64 = 4;

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
            &ROUND_UPDATES.to_string(),
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
                // Every push sent, in order, and the 202s of a prefix of them: a pusher stops
                // at its first push without an answer.
                let mut sent = Vec::new();
                let mut answers = Vec::new();
                for k in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("p{i}-{k}");
                    let sent_values = values(n, (i * 100_000 + k) as u64, 0.01);
                    let body = delta(&config, sent_values.clone(), 1, 1)
                        .to_bytes()
                        .unwrap();
                    sent.push(Sent {
                        key: key.clone(),
                        body: body.clone(),
                        values: sent_values,
                    });
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
                        body,
                    };
                    match transport.send(&request) {
                        Ok(r) if r.status == 202 => answers.push(r.body),
                        Ok(r) => panic!("unexpected answer {} during the stream", r.status),
                        // The kill: connection refused or reset. The outcome of this push is
                        // unknown, as it would be for a real client.
                        Err(_) => break,
                    }
                }
                Pusher {
                    client: format!("pusher-{i}"),
                    token,
                    sent,
                    answers,
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<Pusher> = pushers.into_iter().map(|t| t.join().unwrap()).collect();
    let acked: usize = results.iter().map(|p| p.answers.len()).sum();
    let sent: usize = results.iter().map(|p| p.sent.len()).sum();
    for p in &results {
        // A 202 for every push but the last, which the kill may have cut off.
        assert!(p.sent.len() - p.answers.len() <= 1, "{}", p.client);
    }
    assert!(
        acked >= 20,
        "the stream was too short to test anything ({acked} acks)"
    );

    let orphans = wait_for_orphaned_backends(&db.url);
    server.restart();
    let due = wait_until_no_round_due(&db.url);

    let m = meta(&server, &admin, "m");
    let rows = read_rows(&db.url);
    let served = pull(&server, &admin, "m");
    assert_eq!(m.accepted_updates as usize, rows.len());
    assert_eq!(m.accepted_examples, m.accepted_updates);
    assert_eq!(m.version, 1 + m.rounds);
    assert_eq!(served.version, m.version);
    assert!(m.rounds >= 1);

    // Stored rows by key: each key once, and each a key some pusher sent, with its delta.
    let sent_by_key: BTreeMap<(&str, &str), &Sent> = results
        .iter()
        .flat_map(|p| {
            p.sent
                .iter()
                .map(move |s| ((p.client.as_str(), s.key.as_str()), s))
        })
        .collect();
    let mut stored_by_key: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (id, row) in &rows {
        let key = (row.client.as_str(), row.key.as_str());
        let pushed = sent_by_key
            .get(&key)
            .unwrap_or_else(|| panic!("update {id} ({key:?}) was stored but never sent"));
        assert_eq!(
            row.delta, pushed.values,
            "update {id} ({key:?}) stores another delta"
        );
        assert!(
            stored_by_key.insert(key, *id).is_none(),
            "{key:?} is stored twice"
        );
    }
    // Every 202 is there, as the update it named; an unanswered push may be there or not.
    let mut unanswered_stored = 0;
    for p in &results {
        for (s, answer) in p.sent.iter().zip(&p.answers) {
            let answer: UpdateAccepted = serde_json::from_slice(answer).unwrap();
            assert_eq!(
                stored_by_key.get(&(p.client.as_str(), s.key.as_str())),
                Some(&answer.update_id),
                "{} {} got a 202 (update {}) and is not stored as that",
                p.client,
                s.key,
                answer.update_id
            );
            assert_eq!((answer.base_version, answer.n_examples), (1, 1));
        }
        if let Some(s) = p.sent.get(p.answers.len()) {
            unanswered_stored +=
                usize::from(stored_by_key.contains_key(&(p.client.as_str(), s.key.as_str())));
        }
    }
    assert_eq!(rows.len(), acked + unanswered_stored);
    eprintln!(
        "{sent} pushes sent, {acked} acknowledged, {} stored ({unanswered_stored} of them \
         unanswered), {} rounds; waited for {orphans} backends of the killed server{}",
        rows.len(),
        m.rounds,
        if due {
            " and for the restarted server to close a due round"
        } else {
            ""
        }
    );

    for p in &results {
        for (s, answer) in p.sent.iter().zip(&p.answers) {
            let replay = push(&server, &p.token, "m", &s.key, s.body.clone());
            assert_eq!(replay.status, 202);
            assert_eq!(&replay.body, answer, "the same answer after the restart");
        }
    }
    // Replays store nothing and close nothing.
    let after = meta(&server, &admin, "m");
    assert_eq!(
        (after.accepted_updates, after.rounds, after.pending_updates),
        (m.accepted_updates, m.rounds, m.pending_updates)
    );

    // Round → client → (Σ deltas, update count).
    type Merged = BTreeMap<String, (Vec<f64>, f64)>;
    let mut by_round: BTreeMap<i64, Merged> = BTreeMap::new();
    for row in rows.values() {
        if row.status == "aggregated" {
            let (sum, count) = by_round
                .entry(row.round.expect("aggregated rows name their round"))
                .or_default()
                .entry(row.client.clone())
                .or_insert_with(|| (vec![0.0; n], 0.0));
            *count += 1.0;
            for (s, v) in sum.iter_mut().zip(&row.delta) {
                *s += f64::from(*v);
            }
        } else {
            assert_eq!(row.status, "pending");
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
    for (got, want) in served.head.to_flat().iter().zip(&expected) {
        // f32 storage between rounds: a few ulps per round.
        assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
    }

    // Each pusher retries its unanswered push, as a client that lost the answer does: it is
    // accepted once — as the update already stored, if it committed before the kill.
    for p in &results {
        let Some(s) = p.sent.get(p.answers.len()) else {
            continue;
        };
        let retry = push(&server, &p.token, "m", &s.key, s.body.clone());
        assert_eq!(
            retry.status,
            202,
            "{}",
            String::from_utf8_lossy(&retry.body)
        );
        let answer: UpdateAccepted = serde_json::from_slice(&retry.body).unwrap();
        if let Some(id) = stored_by_key.get(&(p.client.as_str(), s.key.as_str())) {
            assert_eq!(answer.update_id, *id);
        }
    }
    let rows = read_rows(&db.url);
    let keys: BTreeSet<(&str, &str)> = rows
        .values()
        .map(|r| (r.client.as_str(), r.key.as_str()))
        .collect();
    assert_eq!(keys.len(), rows.len());
    assert_eq!(keys, sent_by_key.keys().copied().collect());
    assert_eq!(meta(&server, &admin, "m").accepted_updates as usize, sent);
}

/// One push as its pusher sent it.
struct Sent {
    key: String,
    body: Vec<u8>,
    values: Vec<f32>,
}

/// What one pusher thread did: `answers[k]` is the 202 body of `sent[k]`.
struct Pusher {
    client: String,
    token: String,
    sent: Vec<Sent>,
    answers: Vec<Vec<u8>>,
}

/// Waits until the killed server's Postgres backends have ended. A backend outlives its
/// client: one that had read the COMMIT before the kill still commits (or was flushing the
/// WAL for it) after the process is gone. SQLite has nothing to wait for: a transaction of
/// a dead process is in the file or it is not. Returns how many were running at first.
fn wait_for_orphaned_backends(url: &str) -> i64 {
    if !url.starts_with("postgres") {
        return 0;
    }
    let mut first = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let others = query_i64(
            url,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend'",
        );
        let first = *first.get_or_insert(others);
        if others == 0 {
            return first;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{others} backends of the killed server are still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no round is due: the killed server may have stored the push that made one
/// due (`ROUND_UPDATES` clients pending) and died before closing it; the restarted server's
/// timer closes it. After that, with no new pushes and `--round-seconds` an hour away,
/// nothing changes the stored state. Returns whether a round was due.
fn wait_until_no_round_due(url: &str) -> bool {
    let mut waited = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let clients = query_i64(
            url,
            "SELECT CAST(COUNT(DISTINCT client) AS BIGINT) FROM updates \
             WHERE model = 'm' AND status = 'pending'",
        );
        if clients < ROUND_UPDATES {
            return waited;
        }
        waited = true;
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted server did not close the due round ({clients} clients pending)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stored update, as the database holds it.
#[derive(Debug)]
struct StoredRow {
    client: String,
    key: String,
    status: String,
    round: Option<i64>,
    delta: Vec<f32>,
}

/// Every stored update, by id.
fn read_rows(url: &str) -> BTreeMap<u64, StoredRow> {
    sqlx::any::install_default_drivers();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let rows =
            sqlx::query("SELECT id, client, idempotency_key, status, round, delta FROM updates")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.get("delta");
                let delta = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (
                    r.get::<i64, _>("id") as u64,
                    StoredRow {
                        client: r.get("client"),
                        key: r.get("idempotency_key"),
                        status: r.get("status"),
                        round: r.get("round"),
                        delta,
                    },
                )
            })
            .collect()
    })
}

on_both_backends!(sigkill_during_pushes);

/// A 202 needs the commit flushed: on Postgres the server's connections raise a database
/// default of `synchronous_commit = off` to `on`, and keep a stronger one as it is.
#[test]
fn postgres_connections_keep_synchronous_commit() {
    let Some(db) = database(Backend::Postgres, "sync_commit") else {
        return;
    };
    let name = db.url.rsplit('/').next().unwrap().to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (default, served) in [
        ("off", "on"),
        ("remote_apply", "remote_apply"),
        ("local", "local"),
    ] {
        execute(
            &db.url,
            &format!("ALTER DATABASE {name} SET synchronous_commit = {default}"),
        );
        // A plain connection sees the operator's default…
        let raw: String = runtime.block_on(async {
            let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
            let v = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            v
        });
        assert_eq!(raw, default);
        // …every connection of the server's pool the raised one.
        let seen: Vec<String> = runtime.block_on(async {
            let server = tacit_server::db::connect(&db.url, 3).await.unwrap();
            let mut conns = Vec::new();
            for _ in 0..3 {
                conns.push(server.pool.acquire().await.unwrap());
            }
            let mut seen = Vec::new();
            for c in &mut conns {
                seen.push(
                    sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
                        .fetch_one(&mut **c)
                        .await
                        .unwrap(),
                );
            }
            drop(conns);
            server.pool.close().await;
            seen
        });
        assert_eq!(
            seen,
            vec![served.to_string(); 3],
            "database default {default}"
        );
    }
}
