//! Bearer tokens: 32 random bytes from the OS, shown once at creation; only their SHA-256 is
//! stored, so a leaked database does not leak credentials. (A fast hash is enough for
//! 256-bit random secrets: there is nothing to brute-force.) Revocation marks the rows, so
//! that the history of who pushed what stays readable. A client token may be restricted to
//! named models (`token_models`); the restriction is part of the token, fixed at creation.

use sha2::{Digest, Sha256};
use sqlx::Row;
use tacit_rm::sync::protocol;

use crate::db::Db;

/// Every token starts with this, so that one is recognisable in a config file or a leak scan.
pub const PREFIX: &str = "tacit_";

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client: String,
    pub admin: bool,
    /// The models the token is restricted to (`token create --model`); `None`: every model.
    pub models: Option<Vec<String>>,
}

impl Principal {
    /// Whether the token may read or push `model` (admin tokens are never restricted).
    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
}

pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Client names: what idempotency keys are scoped by and what logs show.
pub fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Creates a token for `client` and returns it (the only time it exists in clear). With
/// `models`, the token may use those models only; the token and its scope are stored in one
/// transaction, so that a failure never leaves an unrestricted token behind.
pub async fn create(
    db: &Db,
    client: &str,
    admin: bool,
    models: &[String],
) -> Result<String, String> {
    if !valid_client_name(client) {
        return Err(format!(
            "client name '{client}' must be 1-128 characters of [A-Za-z0-9._@-]"
        ));
    }
    if admin && !models.is_empty() {
        return Err("an admin token may use every model: --model is for client tokens".into());
    }
    let mut models: Vec<&str> = models.iter().map(String::as_str).collect();
    if let Some(bad) = models.iter().find(|m| !protocol::valid_model_name(m)) {
        return Err(format!(
            "model name '{bad}' must be 1-{} characters of [A-Za-z0-9._-]",
            protocol::MAX_MODEL_NAME
        ));
    }
    models.sort_unstable();
    models.dedup();
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no OS randomness: {e}"))?;
    let token = format!("{PREFIX}{}", hex(&secret));
    let stored = async {
        let mut tx = db.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO tokens (client, token_sha256, admin, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(client)
        .bind(hash(&token))
        .bind(i64::from(admin))
        .bind(crate::now_ms())
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        for model in &models {
            sqlx::query("INSERT INTO token_models (token_id, model) VALUES ($1, $2)")
                .bind(id)
                .bind(*model)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    };
    stored
        .await
        .map_err(|e: sqlx::Error| format!("cannot store the token: {e}"))?;
    Ok(token)
}

/// Revokes every live token of `client`; returns how many.
pub async fn revoke(db: &Db, client: &str) -> Result<u64, String> {
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE client = $2 AND revoked_at IS NULL")
        .bind(crate::now_ms())
        .bind(client)
        .execute(&db.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| format!("cannot revoke: {e}"))
}

/// The principal of a live token, `None` for an unknown or revoked one. One query for the
/// token and its scope: one row per scoped model, or one row with a NULL model when the
/// token is unrestricted.
pub async fn verify(db: &Db, token: &str) -> Result<Option<Principal>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT t.client, t.admin, s.model FROM tokens t \
         LEFT JOIN token_models s ON s.token_id = t.id \
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_all(&db.pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut models = Vec::new();
    for row in &rows {
        if let Some(model) = row.try_get::<Option<String>, _>("model")? {
            models.push(model);
        }
    }
    Ok(Some(Principal {
        client: first.try_get("client")?,
        admin: first.try_get::<i64, _>("admin")? != 0,
        models: (!models.is_empty()).then_some(models),
    }))
}
