//! Aggregation rounds. A round closes when `round_updates` updates are pending or the oldest
//! has waited `round_seconds`. Closing reads the pending updates, computes the step
//! ([`crate::aggregate`]), writes the new global at version + 1, marks the updates aggregated
//! and records the round — all in one transaction, under a row lock on the model (Postgres
//! `FOR UPDATE`; SQLite's single writer), so that replicas racing to close the same round
//! serialise: the second one finds nothing pending and does nothing. A crash at any point
//! leaves either the old state or the new one.

use std::time::Duration;

use sqlx::Row;
use tacit_rm::store::{self, Weights};

use crate::aggregate::{combine, Contribution};
use crate::config::Policy;
use crate::db::Db;

/// What closing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Not due (or nothing pending, or the model is gone).
    NotDue,
    Round {
        version: u64,
        n_updates: usize,
    },
}

/// Closes a round of `model` if one is due.
pub async fn close_if_due(db: &Db, policy: &Policy, model: &str) -> Result<Closed, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let Some(row) = sqlx::query(&format!(
        "SELECT version, weights, rounds FROM models WHERE name = $1{}",
        db.for_update()
    ))
    .bind(model)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(Closed::NotDue);
    };
    let version: i64 = row.try_get("version")?;
    let rounds: i64 = row.try_get("rounds")?;
    let weights_bytes: Vec<u8> = row.try_get("weights")?;
    let pending = sqlx::query(
        "SELECT id, n_examples, delta, received_at FROM updates \
         WHERE model = $1 AND status = 'pending' ORDER BY id",
    )
    .bind(model)
    .fetch_all(&mut *tx)
    .await?;
    if pending.is_empty() {
        return Ok(Closed::NotDue);
    }
    let oldest: i64 = pending
        .iter()
        .map(|r| r.try_get::<i64, _>("received_at"))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .min()
        .unwrap_or(0);
    let waited = Duration::from_millis(crate::now_ms().saturating_sub(oldest).max(0) as u64);
    if (pending.len() as u64) < policy.round_updates && waited.as_secs_f64() < policy.round_seconds
    {
        return Ok(Closed::NotDue);
    }
    let global = store::from_bytes(&weights_bytes).map_err(|e| decode(e.to_string()))?;
    let len = global.head.num_params();
    let mut ids = Vec::with_capacity(pending.len());
    let mut contributions = Vec::with_capacity(pending.len());
    let mut n_examples = 0i64;
    for r in &pending {
        let bytes: Vec<u8> = r.try_get("delta")?;
        if bytes.len() != 4 * len {
            return Err(decode(format!(
                "a stored delta has {} bytes, the model {} parameters",
                bytes.len(),
                len
            )));
        }
        let n: i64 = r.try_get("n_examples")?;
        n_examples += n;
        ids.push(r.try_get::<i64, _>("id")?);
        contributions.push(Contribution {
            delta: bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            n_examples: n as u64,
        });
    }
    let aggregation = policy.aggregation();
    let step = combine(&contributions, len, &aggregation, noise_seed());
    let flat: Vec<f32> = global
        .head
        .to_flat()
        .iter()
        .zip(&step)
        .map(|(g, s)| g + s)
        .collect();
    let mut head = global.head.clone();
    head.load_flat(&flat).map_err(|e| decode(e.to_string()))?;
    let new_version = version + 1;
    let served = store::to_bytes(&Weights {
        head,
        exposure_head: None,
        objective: global.objective,
        version: new_version as u64,
    })
    .map_err(|e| decode(e.to_string()))?;
    let round = rounds + 1;
    sqlx::query(
        "UPDATE models SET version = $1, weights = $2, rounds = $3, updated_at = $4 WHERE name = $5",
    )
    .bind(new_version)
    .bind(served)
    .bind(round)
    .bind(crate::now_ms())
    .bind(model)
    .execute(&mut *tx)
    .await?;
    // Ids are integers from the database itself: safe to inline, and one statement instead
    // of one per update.
    let id_list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    sqlx::query(&format!(
        "UPDATE updates SET status = 'aggregated', round = $1 WHERE id IN ({id_list})"
    ))
    .bind(round)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO rounds (model, round, version, n_updates, n_examples, aggregator, closed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(model)
    .bind(round)
    .bind(new_version)
    .bind(ids.len() as i64)
    .bind(n_examples)
    .bind(aggregation.aggregator.name())
    .bind(crate::now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(
        model,
        round,
        version = new_version,
        updates = ids.len(),
        n_examples,
        "round closed"
    );
    Ok(Closed::Round {
        version: new_version as u64,
        n_updates: ids.len(),
    })
}

/// A stored row that cannot be decoded is corruption, reported as a database error so that
/// the transaction rolls back and nothing is written.
fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(message)
}

/// Fresh OS randomness for each round's noise: predictable noise protects nothing.
fn noise_seed() -> u64 {
    let mut seed = [0u8; 8];
    // Without OS randomness fall back to the clock rather than refuse to aggregate.
    if getrandom::fill(&mut seed).is_err() {
        return crate::now_ms() as u64;
    }
    u64::from_le_bytes(seed)
}

/// Models with pending updates: what the timer looks at.
pub async fn models_with_pending(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT DISTINCT model FROM updates WHERE status = 'pending'")
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| r.try_get("model"))
        .collect()
}

/// Closes time-due rounds until `shutdown` fires. Runs on every replica; the row lock makes
/// that harmless.
pub async fn timer(db: Db, policy: Policy, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_secs_f64((policy.round_seconds / 4.0).clamp(0.05, 1.0));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        let models = match models_with_pending(&db).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "round timer cannot list models");
                continue;
            }
        };
        for model in models {
            if let Err(e) = close_if_due(&db, &policy, &model).await {
                tracing::warn!(model, error = %e, "round timer cannot close a round");
            }
        }
    }
}
