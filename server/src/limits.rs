//! Per-client and per-model limits on pushes, read from the stored rows themselves so that
//! every replica sharing the database enforces the same figures and a restart forgets
//! nothing:
//! - a client (all its tokens, all models) stores at most `client_pushes_per_minute`
//!   updates in any sliding minute (429 `rate_limited`, `Retry-After` = when the oldest of
//!   them leaves the window);
//! - a model holds at most `max_pending_bytes` of pending deltas, and one client at most
//!   `client_pending_updates` of them, so that one client cannot fill the model's quota for
//!   everyone (507 `quota_exceeded`, until a round closes and frees them).
//!
//! Both are checked inside the push's transaction; on Postgres a per-client advisory lock
//! makes one client's concurrent pushes check and insert one at a time, so the rate is
//! exact. (SQLite's single connection serialises everything anyway.)

use sqlx::Row;

use crate::config::Policy;
use crate::db::{Backend, Db};
use crate::error::{ApiError, ApiResult, ErrorCode};

const WINDOW_MS: i64 = 60_000;

/// Serialises `client`'s pushes until the transaction ends (Postgres; a no-op on SQLite).
pub async fn lock_client(
    db: &Db,
    conn: &mut sqlx::AnyConnection,
    client: &str,
) -> Result<(), sqlx::Error> {
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7357002, hashtext($1))")
            .bind(client)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Refuses when `client` stored its allowance of pushes in the last minute.
pub async fn check_rate(
    conn: &mut sqlx::AnyConnection,
    policy: &Policy,
    client: &str,
) -> ApiResult<()> {
    let now = crate::now_ms();
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MIN(received_at), 0) AS BIGINT) AS oldest \
         FROM updates WHERE client = $1 AND received_at > $2",
    )
    .bind(client)
    .bind(now - WINDOW_MS)
    .fetch_one(&mut *conn)
    .await?;
    let recent = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
    if recent < policy.client_pushes_per_minute {
        return Ok(());
    }
    let oldest: i64 = row.try_get("oldest")?;
    let wait_ms = (oldest + WINDOW_MS - now).max(0) as u64;
    Err(ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "client '{client}' stored {recent} updates in the last minute; the limit is {}",
            policy.client_pushes_per_minute
        ),
    )
    .retry_after(wait_ms.div_ceil(1000)))
}

/// Refuses when one more delta of `delta_bytes` would take `model`'s pending deltas over the
/// quota, or `client`'s share of them over its allowance. Every delta of a model has the
/// same size, so the pending bytes are a count.
pub async fn check_quota(
    conn: &mut sqlx::AnyConnection,
    policy: &Policy,
    model: &str,
    client: &str,
    delta_bytes: u64,
) -> ApiResult<()> {
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, \
           CAST(COALESCE(SUM(CASE WHEN client = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) AS mine \
         FROM updates WHERE model = $1 AND status = 'pending'",
    )
    .bind(model)
    .bind(client)
    .fetch_one(&mut *conn)
    .await?;
    let pending = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
    let mine = u64::try_from(row.try_get::<i64, _>("mine")?).unwrap_or(0);
    // A round closes at the latest when its oldest update is `round_seconds` old.
    let retry = policy.round_seconds.ceil() as u64;
    if mine >= policy.client_pending_updates {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "client '{client}' has {mine} updates of model '{model}' pending; the limit is {} until the next round closes",
                policy.client_pending_updates
            ),
        )
        .retry_after(retry));
    }
    let after = pending.saturating_add(1).saturating_mul(delta_bytes);
    if after <= policy.max_pending_bytes {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "model '{model}' holds {pending} pending updates of {delta_bytes} bytes; the quota is {} bytes until the next round closes",
            policy.max_pending_bytes
        ),
    )
    .retry_after(retry))
}
