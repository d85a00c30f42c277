//! Aggregation rounds. A round closes when `round_updates` distinct clients have updates
//! pending or the oldest has waited `round_seconds`. Closing reads the pending updates,
//! merges each client's into one contribution (a client's deltas are increments on top of
//! each other — the client moves its reference by every delta it queues — so their sum is
//! what it learned since its last aggregated push, and it counts once however often it
//! pushed), computes the step ([`crate::aggregate`]), writes the new global at version + 1,
//! marks the updates aggregated, empties the deltas that fall out of the retention window
//! and records the round — all in one transaction, under a row lock on the model (Postgres
//! `FOR UPDATE`; SQLite's single writer), so that replicas racing to close the same round
//! serialise: the second one finds nothing pending and does nothing. A crash at any point
//! leaves either the old state or the new one.
//!
//! Under DP (`--dp-noise-multiplier`) the model's accountant ([`crate::privacy`]) is read in
//! the same transaction: a due round that would take ε over the budget is refused — nothing
//! is aggregated, the updates stay pending (stored, counted in `meta`, never dropped), the
//! model stays at its version, a warning is logged the first time and `/privacy` says
//! `exhausted` — and a released round advances the stored round count in the transaction
//! that writes the new global.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sqlx::Row;
use tacit_rm::store::{self, Weights};
use tacit_rm::sync::privacy::RoundDecision;

use crate::aggregate::{combine, Contribution};
use crate::config::Policy;
use crate::db::Db;

/// What closing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Not due (or nothing pending, or the model is gone).
    NotDue,
    /// Due, but the privacy budget refuses it: `rounds` were released under DP.
    Refused {
        rounds: u64,
    },
    Round {
        version: u64,
        n_updates: usize,
    },
}

/// Closes a round of `model` if one is due.
pub async fn close_if_due(db: &Db, policy: &Policy, model: &str) -> Result<Closed, sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    let Some(row) = sqlx::query(&format!(
        "SELECT version, weights, rounds, deltas_purged_through FROM models WHERE name = $1{}",
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
    let purged_through: i64 = row.try_get("deltas_purged_through")?;
    let weights_bytes: Vec<u8> = row.try_get("weights")?;
    // Whether a round is due, without the deltas (a refused round must stay cheap: the
    // timer asks again every period).
    let waiting = sqlx::query(
        "SELECT client, received_at FROM updates WHERE model = $1 AND status = 'pending'",
    )
    .bind(model)
    .fetch_all(&mut *tx)
    .await?;
    if waiting.is_empty() {
        return Ok(Closed::NotDue);
    }
    let mut oldest = i64::MAX;
    let mut clients = BTreeSet::<String>::new();
    for r in &waiting {
        oldest = oldest.min(r.try_get::<i64, _>("received_at")?);
        clients.insert(r.try_get::<String, _>("client")?);
    }
    let waited = Duration::from_millis(crate::now_ms().saturating_sub(oldest).max(0) as u64);
    if (clients.len() as u64) < policy.round_updates && waited.as_secs_f64() < policy.round_seconds
    {
        return Ok(Closed::NotDue);
    }
    let stored_privacy = match policy.dp_noise_multiplier {
        Some(_) => crate::privacy::load(&mut tx, model).await?,
        None => None,
    };
    let mut privacy = crate::privacy::budget(policy, stored_privacy.as_ref())?;
    if let Some(budget) = &privacy {
        if !budget.can_release_another_round() {
            let rounds = budget.rounds();
            let spent = budget.epsilon().epsilon;
            let next = budget
                .epsilon_after(rounds + 1)
                .map_or(f64::INFINITY, |e| e.epsilon);
            if stored_privacy
                .as_ref()
                .is_some_and(|s| s.exhausted_at.is_some())
            {
                tracing::debug!(model, rounds, "round refused: privacy budget exhausted");
            } else {
                tracing::warn!(
                    model,
                    rounds,
                    epsilon = spent,
                    epsilon_if_released = next,
                    budget_epsilon = budget.budget_epsilon(),
                    pending = waiting.len(),
                    version,
                    "round refused: releasing it would exceed the privacy budget; the model \
                     stays at its version and its pending updates stay pending"
                );
                crate::privacy::store(&mut tx, model, &budget.record(), Some(crate::now_ms()))
                    .await?;
                tx.commit().await?;
            }
            return Ok(Closed::Refused { rounds });
        }
    }
    let pending = sqlx::query(
        "SELECT id, client, n_examples, delta, received_at FROM updates \
         WHERE model = $1 AND status = 'pending' ORDER BY id",
    )
    .bind(model)
    .fetch_all(&mut *tx)
    .await?;
    if pending.is_empty() {
        return Ok(Closed::NotDue);
    }
    let global = store::from_bytes(&weights_bytes).map_err(|e| decode(e.to_string()))?;
    let len = global.head.num_params();
    let mut ids = Vec::with_capacity(pending.len());
    // Per client: the sum of its deltas (f64) and of its example counts (saturating: a
    // sum of client-supplied counts must never overflow into a panic).
    let mut merged = BTreeMap::<String, (Vec<f64>, u64)>::new();
    let mut n_examples = 0u64;
    for r in &pending {
        let bytes: Vec<u8> = r.try_get("delta")?;
        if bytes.len() != 4 * len {
            return Err(decode(format!(
                "a stored delta has {} bytes, the model {} parameters",
                bytes.len(),
                len
            )));
        }
        let n = u64::try_from(r.try_get::<i64, _>("n_examples")?).unwrap_or(0);
        n_examples = n_examples.saturating_add(n);
        ids.push(r.try_get::<i64, _>("id")?);
        let (sum, examples) = merged
            .entry(r.try_get("client")?)
            .or_insert_with(|| (vec![0.0; len], 0));
        *examples = examples.saturating_add(n);
        for (s, b) in sum.iter_mut().zip(bytes.chunks_exact(4)) {
            *s += f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
    let contributions: Vec<Contribution> = merged
        .into_values()
        .map(|(sum, n)| Contribution {
            delta: sum.into_iter().map(|v| v as f32).collect(),
            n_examples: n,
        })
        .collect();
    let aggregation = policy.aggregation();
    let step = combine(&contributions, len, &aggregation, noise_seed());
    let (new_version, round) =
        write_global(&mut tx, model, &global, version, rounds, &step).await?;
    // Ids are integers from the database itself: safe to inline, and one statement instead
    // of one per update.
    let id_list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    sqlx::query(&format!(
        "UPDATE updates SET status = 'aggregated', round = $1 WHERE id IN ({id_list})"
    ))
    .bind(round)
    .execute(&mut *tx)
    .await?;
    purge_deltas(&mut tx, policy, model, round, purged_through).await?;
    record_round(
        &mut tx,
        model,
        round,
        new_version,
        ids.len(),
        n_examples,
        &aggregation.aggregator.name(),
    )
    .await?;
    let mut epsilon = None;
    if let Some(budget) = &mut privacy {
        match budget.record_round() {
            RoundDecision::Released(e) => epsilon = Some(e.epsilon),
            // Checked above, under the same lock: unreachable, but never release it.
            RoundDecision::Refused { .. } => {
                return Err(decode("the privacy budget refused a checked round".into()))
            }
        }
        crate::privacy::store(&mut tx, model, &budget.record(), None).await?;
    }
    tx.commit().await?;
    tracing::info!(
        model,
        round,
        version = new_version,
        updates = ids.len(),
        clients = contributions.len(),
        n_examples,
        dp_epsilon = epsilon,
        "round closed"
    );
    Ok(Closed::Round {
        version: new_version as u64,
        n_updates: ids.len(),
    })
}

/// Adds `step` to the stored global `global` (at `version`, after `rounds` rounds) and writes
/// it as version + 1 with the round count + 1; returns both. Plain and secure rounds alike.
pub(crate) async fn write_global(
    tx: &mut sqlx::AnyConnection,
    model: &str,
    global: &Weights,
    version: i64,
    rounds: i64,
    step: &[f32],
) -> Result<(i64, i64), sqlx::Error> {
    let flat: Vec<f32> = global
        .head
        .to_flat()
        .iter()
        .zip(step)
        .map(|(g, s)| g + s)
        .collect();
    let mut head = global.head.clone();
    head.load_flat(&flat).map_err(|e| decode(e.to_string()))?;
    let new_version = version
        .checked_add(1)
        .ok_or_else(|| decode("version overflow".into()))?;
    let served = store::to_bytes(&Weights {
        head,
        exposure_head: None,
        objective: global.objective,
        version: new_version as u64,
        personal: None,
    })
    .map_err(|e| decode(e.to_string()))?;
    let round = rounds
        .checked_add(1)
        .ok_or_else(|| decode("round overflow".into()))?;
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
    Ok((new_version, round))
}

/// The row of a closed round in `rounds`.
pub(crate) async fn record_round(
    tx: &mut sqlx::AnyConnection,
    model: &str,
    round: i64,
    version: i64,
    n_updates: usize,
    n_examples: u64,
    aggregator: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rounds (model, round, version, n_updates, n_examples, aggregator, closed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(model)
    .bind(round)
    .bind(version)
    .bind(n_updates as i64)
    .bind(i64::try_from(n_examples).unwrap_or(i64::MAX))
    .bind(aggregator)
    .bind(crate::now_ms())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Empties the deltas of the rounds that left the retention window (those after
/// `purged_through`, up to `round - delta_retention_rounds`): the rows stay for idempotent
/// replays and audit; the bytes, which nothing reads again, go.
async fn purge_deltas(
    tx: &mut sqlx::AnyConnection,
    policy: &Policy,
    model: &str,
    round: i64,
    purged_through: i64,
) -> Result<(), sqlx::Error> {
    let retention = i64::try_from(policy.delta_retention_rounds).unwrap_or(i64::MAX);
    let through = round.saturating_sub(retention);
    if through <= purged_through {
        return Ok(());
    }
    sqlx::query("UPDATE updates SET delta = $1 WHERE model = $2 AND round > $3 AND round <= $4")
        .bind(Vec::<u8>::new())
        .bind(model)
        .bind(purged_through)
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE models SET deltas_purged_through = $1 WHERE name = $2")
        .bind(through)
        .bind(model)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A stored row that cannot be decoded is corruption, reported as a database error so that
/// the transaction rolls back and nothing is written.
pub(crate) fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(message)
}

/// Fresh OS randomness for each round's noise: predictable noise protects nothing.
pub(crate) fn noise_seed() -> u64 {
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
            close_isolated(&db, &policy, model).await;
        }
        // Secure-aggregation rounds whose phase ran out of time move on (or fail) even when
        // no member asks.
        crate::secagg::advance_due(&db, &policy).await;
    }
}

/// Closes a round of `model` if one is due, in a task of its own: an error is logged, and so
/// is a panic — which then ends that one attempt, not the caller (the timer serving every
/// model, or a push whose update is already stored and acknowledged).
pub async fn close_isolated(db: &Db, policy: &Policy, model: String) {
    let (db, policy, name) = (db.clone(), policy.clone(), model.clone());
    match tokio::spawn(async move { close_if_due(&db, &policy, &name).await }).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(model, error = %e, "cannot close a round"),
        Err(e) => tracing::error!(model, error = %e, "closing a round panicked"),
    }
}
