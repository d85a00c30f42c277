//! Client-level DP-FedAvg's accountant per model (issue 14, DESIGN §12): the
//! [`PrivacyBudget`] of `tacit_rm::sync::privacy`, stored in `model_privacy` and advanced in
//! the transaction of every released round ([`crate::rounds`]).
//!
//! Parameters: the noise multiplier z, the sampling rate q = min(round-updates / population, 1)
//! and δ are fixed for a model's whole history: a server started with other values for a model
//! that has released rounds under DP refuses to start (a composition of rounds at different
//! parameters is not what the stored count means), and so does a server started without DP
//! (its rounds would be released without noise). The budget ε may change between starts (the
//! spent ε is what it is; the operator decides how much more to allow): the configured one
//! applies and is stored with the next round.

use serde::Serialize;
use sqlx::Row;
use tacit_rm::sync::privacy::{PrivacyBudget, PrivacyBudgetRecord, PrivacyReport};

use crate::config::Policy;
use crate::db::Db;
use crate::error::ApiResult;

/// A model's stored accountant.
#[derive(Debug, Clone)]
pub struct Stored {
    pub record: PrivacyBudgetRecord,
    /// Set (milliseconds) while the budget refuses the next round.
    pub exhausted_at: Option<i64>,
}

fn corrupt(message: String) -> sqlx::Error {
    sqlx::Error::Protocol(message)
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Stored, sqlx::Error> {
    let rounds: i64 = row.try_get("rounds")?;
    Ok(Stored {
        record: PrivacyBudgetRecord {
            noise_multiplier: row.try_get("noise_multiplier")?,
            sampling_rate: row.try_get("sampling_rate")?,
            delta: row.try_get("delta")?,
            budget_epsilon: row.try_get("budget_epsilon")?,
            rounds: u64::try_from(rounds)
                .map_err(|_| corrupt(format!("a stored DP round count is {rounds}")))?,
        },
        exhausted_at: row.try_get("exhausted_at")?,
    })
}

/// The stored accountant of `model`, if it has one.
pub async fn load(
    conn: &mut sqlx::AnyConnection,
    model: &str,
) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query(
        "SELECT noise_multiplier, sampling_rate, delta, budget_epsilon, rounds, exhausted_at \
         FROM model_privacy WHERE model = $1",
    )
    .bind(model)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Writes the accountant of `model` (insert or replace).
pub async fn store(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    record: &PrivacyBudgetRecord,
    exhausted_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    let rounds = i64::try_from(record.rounds).map_err(|_| corrupt("DP rounds overflow".into()))?;
    sqlx::query(
        "INSERT INTO model_privacy \
           (model, noise_multiplier, sampling_rate, delta, budget_epsilon, rounds, exhausted_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (model) DO UPDATE SET noise_multiplier = excluded.noise_multiplier, \
           sampling_rate = excluded.sampling_rate, delta = excluded.delta, \
           budget_epsilon = excluded.budget_epsilon, rounds = excluded.rounds, \
           exhausted_at = excluded.exhausted_at, updated_at = excluded.updated_at",
    )
    .bind(model)
    .bind(record.noise_multiplier)
    .bind(record.sampling_rate)
    .bind(record.delta)
    .bind(record.budget_epsilon)
    .bind(rounds)
    .bind(exhausted_at)
    .bind(crate::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The accountant the policy applies to a model with this stored state: the stored rounds
/// under the configured parameters and budget. `None` without DP.
pub fn budget(
    policy: &Policy,
    stored: Option<&Stored>,
) -> Result<Option<PrivacyBudget>, sqlx::Error> {
    let Some(fresh) = policy.privacy_budget() else {
        return Ok(None);
    };
    let Some(stored) = stored else {
        return Ok(Some(fresh));
    };
    if let Some(why) = mismatch(&fresh.record(), &stored.record) {
        // Start-up refuses this; a replica started with other flags would get here.
        return Err(corrupt(format!(
            "the stored DP parameters differ from this server's: {why}"
        )));
    }
    fresh
        .with_rounds(stored.record.rounds)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// What differs between the configured parameters and the stored ones (the budget may).
fn mismatch(configured: &PrivacyBudgetRecord, stored: &PrivacyBudgetRecord) -> Option<String> {
    let mut diffs = Vec::new();
    for (name, flag, c, s) in [
        (
            "noise multiplier",
            "--dp-noise-multiplier",
            configured.noise_multiplier,
            stored.noise_multiplier,
        ),
        (
            "sampling rate",
            "--round-updates / --population",
            configured.sampling_rate,
            stored.sampling_rate,
        ),
        ("delta", "--dp-delta", configured.delta, stored.delta),
    ] {
        if c != s {
            diffs.push(format!("{name} {c} configured ({flag}), {s} stored"));
        }
    }
    (!diffs.is_empty()).then(|| diffs.join("; "))
}

/// Start-up check of every stored accountant against the policy (see the module
/// documentation); warns about models whose budget refuses the next round.
pub async fn check_stored(db: &Db, policy: &Policy) -> Result<(), String> {
    let rows = sqlx::query(
        "SELECT model, noise_multiplier, sampling_rate, delta, budget_epsilon, rounds, exhausted_at \
         FROM model_privacy ORDER BY model",
    )
    .fetch_all(&db.pool)
    .await
    .map_err(|e| format!("cannot read the privacy accountants: {e}"))?;
    for row in &rows {
        let model: String = row.try_get("model").map_err(|e| e.to_string())?;
        let stored = from_row(row).map_err(|e| format!("model '{model}': {e}"))?;
        match policy.privacy_budget() {
            None if stored.record.rounds > 0 => {
                return Err(format!(
                    "model '{model}' has released {} rounds under differential privacy; \
                     starting without --dp-noise-multiplier would release its next rounds \
                     without noise (start with its DP settings: --dp-noise-multiplier {} \
                     --dp-delta {}, sampling rate {})",
                    stored.record.rounds,
                    stored.record.noise_multiplier,
                    stored.record.delta,
                    stored.record.sampling_rate
                ));
            }
            None => {}
            Some(fresh) => {
                if let Some(why) = mismatch(&fresh.record(), &stored.record) {
                    return Err(format!(
                        "model '{model}' has released {} rounds under other DP parameters, \
                         which its accounting assumes for every round: {why}",
                        stored.record.rounds
                    ));
                }
                let budget = fresh
                    .with_rounds(stored.record.rounds)
                    .map_err(|e| format!("model '{model}': {e}"))?;
                if stored.record.budget_epsilon != budget.budget_epsilon() {
                    tracing::warn!(
                        model,
                        stored = stored.record.budget_epsilon,
                        configured = budget.budget_epsilon(),
                        "the DP budget epsilon changed; the configured one applies"
                    );
                }
                if !budget.can_release_another_round() {
                    tracing::warn!(
                        model,
                        epsilon = budget.epsilon().epsilon,
                        rounds = budget.rounds(),
                        budget_epsilon = budget.budget_epsilon(),
                        "privacy budget exhausted: no further round of this model will be released"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The answer of `GET /v1/models/{name}/privacy` (the model exists).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    On {
        dp: bool,
        #[serde(flatten)]
        report: PrivacyReport,
        /// The next round would exceed the budget: it will not be released.
        exhausted: bool,
        /// The most rounds the budget allows in all.
        rounds_within_budget: u64,
    },
    Off {
        dp: bool,
    },
}

pub async fn answer(db: &Db, policy: &Policy, model: &str) -> ApiResult<Answer> {
    if policy.dp_noise_multiplier.is_none() {
        return Ok(Answer::Off { dp: false });
    }
    let stored = load(&mut *db.pool.acquire().await?, model).await?;
    let Some(budget) = budget(policy, stored.as_ref())? else {
        return Ok(Answer::Off { dp: false });
    };
    Ok(Answer::On {
        dp: true,
        report: budget.report(),
        exhausted: !budget.can_release_another_round(),
        rounds_within_budget: budget.rounds_within_budget(),
    })
}
