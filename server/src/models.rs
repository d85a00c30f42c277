//! Models: create or replace (admin), read the global weights, describe.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tacit_rm::store::{self, Values, Weights};
use tacit_rm::sync::protocol::{ApiErrorCode, ModelMeta};
use tacit_rm::HeadConfig;

use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// A head's shape as stored beside the model, to check every delta against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub dim: usize,
    pub hidden: Vec<usize>,
    pub activation: String,
    pub outputs: usize,
}

impl Shape {
    pub fn of(config: &HeadConfig) -> Self {
        Shape {
            dim: config.dim,
            hidden: config.hidden.clone(),
            activation: config.activation.name().to_string(),
            outputs: config.outputs,
        }
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain fields serialise")
    }

    fn decode(text: &str) -> Result<Self, sqlx::Error> {
        serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// Creates the model at version 1, or replaces its weights at version + 1. Pending updates
/// of a replaced model were computed against weights that no longer exist: they are marked
/// `discarded` (kept, so that a retried push still gets its original answer) and their
/// deltas, which nothing will read, are emptied.
pub async fn put(db: &Db, name: &str, body: &[u8]) -> ApiResult<u64> {
    let (weights, _) = store::parse(body, Values::Any).map_err(ApiError::from_weights_error)?;
    if !weights.head.is_finite() {
        return Err(ApiError::new(
            ApiErrorCode::NonFinite,
            "the weights hold NaN or infinite values",
        ));
    }
    if weights.exposure_head.is_some() {
        return Err(ApiError::new(
            ApiErrorCode::Malformed,
            "a served model holds the reward head only (no exposure head)",
        ));
    }
    let shape = Shape::of(&weights.head.config);
    let mut tx = db.pool.begin().await?;
    let current = sqlx::query(&format!(
        "SELECT version FROM models WHERE name = $1{}",
        db.for_update()
    ))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| r.try_get::<i64, _>("version"))
    .transpose()?;
    let version = current.map_or(1, |v| v + 1);
    // The stored bytes carry the served version, so that a client reads it from the file too.
    let served = store::to_bytes(&Weights {
        head: weights.head,
        exposure_head: None,
        objective: weights.objective,
        version: version as u64,
        // A global model is the shared part only.
        personal: None,
    })
    .map_err(ApiError::from_weights_error)?;
    let now = crate::now_ms();
    if current.is_some() {
        sqlx::query(
            "UPDATE models SET version = $1, shape = $2, num_params = $3, weights = $4, \
             updated_at = $5 WHERE name = $6",
        )
        .bind(version)
        .bind(shape.encode())
        .bind(num_params(&shape) as i64)
        .bind(served)
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE updates SET status = 'discarded', delta = $1 \
             WHERE model = $2 AND status = 'pending'",
        )
        .bind(Vec::<u8>::new())
        .bind(name)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO models (name, version, shape, num_params, weights, rounds, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(name)
        .bind(version)
        .bind(shape.encode())
        .bind(num_params(&shape) as i64)
        .bind(served)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(version as u64)
}

fn num_params(shape: &Shape) -> usize {
    let mut fan_in = shape.dim;
    let mut n = 0;
    for &width in shape.hidden.iter().chain([&shape.outputs]) {
        n += fan_in * width + width;
        fan_in = width;
    }
    n
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ApiErrorCode::NotFound, format!("no model named '{name}'"))
}

/// The current version of a model (cheap: no weights read).
pub async fn version(db: &Db, name: &str) -> ApiResult<u64> {
    let row = sqlx::query("SELECT version FROM models WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| not_found(name))?;
    Ok(row.try_get::<i64, _>("version")? as u64)
}

/// The served safetensors bytes and their version.
pub async fn weights(db: &Db, name: &str) -> ApiResult<(u64, Vec<u8>)> {
    let row = sqlx::query("SELECT version, weights FROM models WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| not_found(name))?;
    Ok((
        row.try_get::<i64, _>("version")? as u64,
        row.try_get("weights")?,
    ))
}

/// The model's shape, for checking deltas.
pub async fn shape(db: &Db, name: &str) -> ApiResult<(u64, Shape)> {
    let row = sqlx::query("SELECT version, shape FROM models WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?
        .ok_or_else(|| not_found(name))?;
    Ok((
        row.try_get::<i64, _>("version")? as u64,
        Shape::decode(&row.try_get::<String, _>("shape")?)?,
    ))
}

pub async fn meta(db: &Db, name: &str) -> ApiResult<ModelMeta> {
    // One statement, hence one snapshot on both databases: the round count and the update
    // counts are read together, so that a round closing meanwhile cannot pair the old count
    // of rounds with the new count of pending updates (or the reverse).
    // Counts as BIGINT on both databases (Postgres's COUNT is BIGINT, SUM of BIGINT is
    // NUMERIC: cast it back). Examples are summed as doubles: a sum of client-supplied
    // counts must not overflow (SQLite's integer SUM fails on overflow); exact to 2^53,
    // saturating at u64::MAX beyond.
    let row = sqlx::query(
        "SELECT m.version, m.shape, m.num_params, m.rounds, \
           CAST(COUNT(u.id) AS BIGINT) AS accepted, \
           CAST(COALESCE(SUM(CASE WHEN u.status = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
           CAST(COALESCE(SUM(CAST(u.n_examples AS DOUBLE PRECISION)), 0) AS DOUBLE PRECISION) AS examples \
         FROM models m LEFT JOIN updates u ON u.model = m.name \
         WHERE m.name = $1 \
         GROUP BY m.name, m.version, m.shape, m.num_params, m.rounds",
    )
    .bind(name)
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(|| not_found(name))?;
    let shape = Shape::decode(&row.try_get::<String, _>("shape")?)?;
    Ok(ModelMeta {
        name: name.to_string(),
        version: row.try_get::<i64, _>("version")? as u64,
        num_params: row.try_get::<i64, _>("num_params")? as usize,
        rounds: row.try_get::<i64, _>("rounds")? as u64,
        dim: shape.dim,
        hidden: shape.hidden,
        activation: shape.activation,
        outputs: shape.outputs,
        pending_updates: row.try_get::<i64, _>("pending")? as u64,
        accepted_updates: row.try_get::<i64, _>("accepted")? as u64,
        // A float-to-integer `as` saturates (and maps NaN to 0).
        accepted_examples: row.try_get::<f64, _>("examples")? as u64,
        // The policy's, not the database's: `api::get_meta` says it.
        secure_aggregation: false,
    })
}
