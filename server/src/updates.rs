//! Accepting a push: validate the delta, then store it — or find the earlier answer to the
//! same idempotency key — in one transaction. The 202 is sent only after the commit returned,
//! i.e. after the database made the row durable.

use sha2::{Digest, Sha256};
use sqlx::Row;
use tacit_rm::sync::delta::{l2_norm, Delta};
use tacit_rm::sync::protocol::{ApiErrorCode, UpdateAccepted};

use crate::config::Policy;
use crate::db::Db;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::limits;
use crate::models::{self, Shape};
use crate::tokens::{hex, Principal};

/// The answer to a push, and whether it replays an earlier one.
pub struct Stored {
    pub answer: UpdateAccepted,
    pub replayed: bool,
}

pub async fn accept(
    db: &Db,
    policy: &Policy,
    model: &str,
    who: &Principal,
    key: &str,
    body: &[u8],
) -> ApiResult<Stored> {
    let delta = Delta::from_bytes(body).map_err(ApiError::from_weights_error)?;
    let content_sha = content_hash(&delta);
    // A retry of a stored push gets its first answer, whatever has happened since (rounds
    // closed, the base gone stale): it was accepted then, it is accepted now, and only once.
    if let Some(answer) = earlier_answer(db, model, who, key, &content_sha).await? {
        return Ok(Stored {
            answer,
            replayed: true,
        });
    }
    if delta.n_examples > policy.max_examples_per_update {
        return Err(ApiError::new(
            ErrorCode::ExamplesOverBound,
            format!(
                "n_examples {} is over the server's maximum of {} per update",
                delta.n_examples, policy.max_examples_per_update
            ),
        ));
    }
    // The policy caps the maximum at i64::MAX, the stored width; checked all the same.
    let n_examples = i64::try_from(delta.n_examples)
        .map_err(|_| ApiError::new(ErrorCode::ExamplesOverBound, "n_examples is over 2^63 - 1"))?;
    let (version, shape) = models::shape(db, model).await?;
    if Shape::of(&delta.config) != shape {
        return Err(ApiError::new(
            ApiErrorCode::DimsMismatch,
            format!(
                "the delta's head is {:?}, the model's is {:?}",
                Shape::of(&delta.config),
                shape
            ),
        ));
    }
    if delta.base_version > version {
        return Err(ApiError::new(
            ApiErrorCode::StaleBaseVersion,
            format!(
                "base version {} is newer than the model's {version}",
                delta.base_version
            ),
        ));
    }
    if version - delta.base_version > policy.max_staleness {
        return Err(ApiError::new(
            ApiErrorCode::StaleBaseVersion,
            format!(
                "base version {} is more than {} behind the model's {version}: pull and rebase",
                delta.base_version, policy.max_staleness
            ),
        ));
    }
    let norm = l2_norm(&delta.values);
    if norm > policy.max_update_norm {
        return Err(ApiError::new(
            ApiErrorCode::NormOverBound,
            format!(
                "the delta's L2 norm {norm:.4} is over the bound {}",
                policy.max_update_norm
            ),
        ));
    }
    let packed: Vec<u8> = delta.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut tx = db.pool.begin().await?;
    limits::lock_client(db, &mut tx, &who.client).await?;
    limits::check_rate(&mut tx, policy, &who.client).await?;
    limits::check_quota(&mut tx, policy, model, &who.client, packed.len() as u64).await?;
    // A concurrent push of the same key may commit between our check and this insert: the
    // unique constraint makes one insert win, and both then read the winner's row.
    let inserted = sqlx::query(
        "INSERT INTO updates (model, client, idempotency_key, content_sha256, base_version, \
           n_examples, objective, norm, delta, status, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10) \
         ON CONFLICT (model, client, idempotency_key) DO NOTHING",
    )
    .bind(model)
    .bind(&who.client)
    .bind(key)
    .bind(&content_sha)
    // At most the model's version (checked above), which is stored as i64.
    .bind(i64::try_from(delta.base_version).unwrap_or(i64::MAX))
    .bind(n_examples)
    .bind(delta.objective.name())
    .bind(norm)
    .bind(packed)
    .bind(crate::now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row = stored_row(&mut tx, model, who, key).await?;
    tx.commit().await?;
    let (_, sha, answer) = row.ok_or_else(|| {
        ApiError::new(
            ApiErrorCode::Internal,
            "the stored update could not be read back",
        )
    })?;
    if sha != content_sha {
        return Err(key_reused(key));
    }
    Ok(Stored {
        replayed: inserted == 0,
        answer,
    })
}

/// What a delta says, hashed: safetensors writers may order the JSON header differently for
/// the same content, and a retry must be recognised by content, not by bytes.
pub fn content_hash(delta: &Delta) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&Shape::of(&delta.config)).expect("plain fields serialise"));
    h.update(delta.base_version.to_le_bytes());
    h.update(delta.n_examples.to_le_bytes());
    h.update(delta.objective.name().as_bytes());
    for v in &delta.values {
        h.update(v.to_le_bytes());
    }
    hex(&h.finalize())
}

fn key_reused(key: &str) -> ApiError {
    ApiError::new(
        ApiErrorCode::IdempotencyKeyReused,
        format!("idempotency key '{key}' was used before with a different body"),
    )
}

/// Whether `who` stored an update under `key` for `model` (whatever its body).
pub async fn key_stored(db: &Db, model: &str, who: &Principal, key: &str) -> ApiResult<bool> {
    let mut conn = db.pool.acquire().await?;
    Ok(stored_row(&mut conn, model, who, key).await?.is_some())
}

async fn earlier_answer(
    db: &Db,
    model: &str,
    who: &Principal,
    key: &str,
    content_sha: &str,
) -> ApiResult<Option<UpdateAccepted>> {
    let mut conn = db.pool.acquire().await?;
    match stored_row(&mut conn, model, who, key).await? {
        Some((_, sha, _)) if sha != content_sha => Err(key_reused(key)),
        Some((_, _, answer)) => Ok(Some(answer)),
        None => Ok(None),
    }
}

type Row3 = (u64, String, UpdateAccepted);

async fn stored_row(
    conn: &mut sqlx::AnyConnection,
    model: &str,
    who: &Principal,
    key: &str,
) -> Result<Option<Row3>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, content_sha256, base_version, n_examples FROM updates \
         WHERE model = $1 AND client = $2 AND idempotency_key = $3",
    )
    .bind(model)
    .bind(&who.client)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let id = r.try_get::<i64, _>("id")? as u64;
        Ok((
            id,
            r.try_get("content_sha256")?,
            UpdateAccepted {
                update_id: id,
                base_version: r.try_get::<i64, _>("base_version")? as u64,
                n_examples: r.try_get::<i64, _>("n_examples")? as u64,
            },
        ))
    })
    .transpose()
}
